"""The DARTS search space as a Keras supernet: mixed ops, search cells, the encoder.

The encoder maps images to pooled features; per-learner heads sit on top of it
(``il_tf.models.heads``). Architecture logits are not weights of the encoder: the
encoder takes them as a call argument, so the hypergradient methods can pass
tensors (or differentiate through them) and the optimizer of the weights never
sees them. They live in an :class:`~il_tf.spaces.architecture.Architecture`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.genotypes import DARTS_OPS, num_edges
from il_tf.spaces.ops import Conv, FactorizedReduce, batch_norm, make_op, relu_conv_bn


class MixedOp(keras.layers.Layer):
    """The weighted sum of all candidate ops on one edge (weights = softmax of α)."""

    def __init__(
        self, channels: int, stride: int, ops: Sequence[str], activation: str = "relu", **kwargs
    ):
        super().__init__(**kwargs)
        self.op_names = tuple(ops)
        # `none` contributes exactly zero to the sum (and to every gradient): skip it.
        self.op_indices = [i for i, name in enumerate(self.op_names) if name != "none"]
        self.ops = [
            make_op(self.op_names[i], channels, stride, search=True, activation=activation)
            for i in self.op_indices
        ]

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def call(self, x, weights):
        # One unstack instead of a slice per op keeps the graph small.
        w = tf.unstack(weights)
        return tf.add_n([w[i] * op(x) for i, op in zip(self.op_indices, self.ops, strict=True)])


class SearchCell(keras.layers.Layer):
    """A DARTS search cell: 2 inputs, ``steps`` nodes, each summing mixed edges."""

    def __init__(
        self,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        ops: Sequence[str],
        steps: int = 4,
        multiplier: int = 4,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        # The cell before a reduction cell has twice the resolution of s1: reduce s0.
        self.preprocess0 = (
            FactorizedReduce(channels, search=True, activation=activation)
            if reduction_prev
            else relu_conv_bn(channels, 1, 1, search=True, activation=activation)
        )
        self.preprocess1 = relu_conv_bn(channels, 1, 1, search=True, activation=activation)
        self.edges = []
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(channels, stride, ops, activation))

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def call(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        edge_weights = tf.unstack(weights)
        offset = 0
        for _ in range(self.steps):
            node = tf.add_n(
                [self.edges[offset + j](h, edge_weights[offset + j]) for j, h in enumerate(states)]
            )
            offset += len(states)
            states.append(node)
        return tf.concat(states[-self.multiplier :], axis=-1)


class DartsSupernet(keras.layers.Layer):
    """The DARTS search encoder: stem, normal and reduction search cells, global pooling.

    Reduction cells (stride 2, channels doubled) sit at 1/3 and 2/3 of the depth.
    Works for any input size (odd ones too). ``call(images, arch)`` takes the
    architecture logits as a mapping ``{"normal": [E, n_ops], "reduce": [E, n_ops]}``
    and returns features ``[B, feature_dim]``.
    """

    space = "darts"

    def __init__(
        self,
        channels: int = 16,
        num_cells: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        ops: Sequence[str] = DARTS_OPS,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_cells < 1:
            raise ValueError(f"num_cells must be >= 1, got {num_cells}")
        if channels < 1 or channels % 2:
            raise ValueError(f"channels must be a positive even number, got {channels}")
        unknown = [op for op in ops if op not in DARTS_OPS]
        if unknown:
            raise ValueError(f"unknown DARTS ops {unknown}; allowed: {list(DARTS_OPS)}")
        if not [op for op in ops if op != "none"]:
            raise ValueError(f"ops {list(ops)} need at least one operation other than 'none'")
        self.channels = channels
        self.num_cells = num_cells
        self.steps = steps
        self.multiplier = multiplier
        self.op_names = tuple(ops)
        c_curr = stem_multiplier * channels
        self.stem_conv = Conv(c_curr, 3, 1)
        self.stem_bn = batch_norm(search=True)
        c = channels
        reduction_prev = False
        self.cells = []
        self.reduction_indices = reduction_cell_indices(num_cells)
        for i in range(num_cells):
            reduction = i in self.reduction_indices
            if reduction:
                c *= 2
            self.cells.append(
                SearchCell(
                    c, reduction, reduction_prev, self.op_names, steps, multiplier, activation
                )
            )
            reduction_prev = reduction
        self.feature_dim = multiplier * c

    def build(self, input_shape=None):
        # Sub-layers build on first call (see SearchCell.build).
        self.built = True

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the architecture logits this supernet takes."""
        shape = (num_edges(self.steps), len(self.op_names))
        return {"normal": shape, "reduce": shape}

    def call(self, images, arch: Mapping[str, tf.Tensor]):
        weights = {
            name: tf.nn.softmax(tf.cast(arch[name], images.dtype), axis=-1)
            for name in ("normal", "reduce")
        }
        s0 = s1 = self.stem_bn(self.stem_conv(images))
        for cell in self.cells:
            w = weights["reduce"] if cell.reduction else weights["normal"]
            s0, s1 = s1, cell(s0, s1, w)
        return tf.reduce_mean(s1, axis=[1, 2])

    def derive(self, arch: Mapping[str, np.ndarray]) -> genotypes_lib.Genotype:
        """The discrete genotype of architecture logits (DARTS derivation rule)."""
        return genotypes_lib.derive_genotype(
            np.asarray(arch["normal"]),
            np.asarray(arch["reduce"]),
            ops=self.op_names,
            steps=self.steps,
            multiplier=self.multiplier,
        )


def reduction_cell_indices(num_cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth (as in DARTS)."""
    if num_cells < 3:
        # Too shallow for two reductions: reduce once in the middle, if at all.
        return (num_cells // 2,) if num_cells == 2 else ()
    return (num_cells // 3, 2 * num_cells // 3)
