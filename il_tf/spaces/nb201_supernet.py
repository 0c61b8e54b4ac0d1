"""The NAS-Bench-201 search space as a Keras supernet (the benchmark's macro skeleton).

The skeleton follows the benchmark's networks: a stem (conv 3×3 + BN), three
stages of ``cells_per_stage`` search cells with C, 2C and 4C channels, a
residual reduction block between the stages (ReLU-conv3×3 s2-BN, ReLU-conv3×3-BN,
shortcut avg-pool 2×2 s2 + conv 1×1), then BN + ReLU and global average pooling,
so ``feature_dim == 4 * channels``. Every BN of the search network is a
:class:`~il_tf.spaces.ops.SearchBatchNorm` (no affine parameters, batch
statistics, exact second-order gradients).

A cell has 4 nodes; node i is the sum of the mixed ops on its edges from every
node j < i, in the edge order of :data:`~il_tf.spaces.nb201_genotype.NB201_EDGES`.
All cells share one architecture tensor ``arch["cell"]`` of shape
``(6, len(ops))`` (logits; the softmax is taken inside :meth:`NB201Supernet.call`).

The operations are the benchmark's: ``none`` (zero; skipped in the sums, where it
contributes exactly 0), ``skip_connect`` (identity), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU-Conv-BN) and ``avg_pool_3x3`` (average pooling that
ignores the padding, with no BN after it, unlike DARTS). Where an op changes
the channel count (only with ``stem_channels != channels``, on the first cell's
edges out of its input) they follow the benchmark's rules: ``skip_connect``
becomes conv 1×1 + BN and ``avg_pool_3x3`` gets a ReLU-conv1×1-BN in front.

Any input size works, odd ones included (stride-2 layers give ceil(H/2)).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from il_tf.spaces.architecture import AUX_SKIP
from il_tf.spaces.nb201_genotype import (
    NB201_DERIVATIONS,
    NB201_EDGES,
    NB201_NUM_EDGES,
    NB201_OPS,
    NB201_SPACE,
    NB201Genotype,
    NB201GenotypeError,
    derive_nb201_genotype,
)
from il_tf.spaces.ops import (
    Conv,
    FactorizedReduce,
    Identity,
    Sequential,
    avg_pool,
    batch_norm,
    get_activation,
    relu_conv_bn,
)
from il_tf.spaces.space import Segment, run_segments

__all__ = [
    "NB201MixedOp",
    "NB201Pool",
    "NB201SearchCell",
    "NB201Supernet",
    "NB201Zero",
    "ResidualReductionBlock",
    "make_nb201_op",
]


class _Container(keras.layers.Layer):
    """A layer made of sub-layers that build themselves when ``call`` first runs them.

    Without a ``build`` method, Keras builds a layer that has state by first running
    its ``call`` on symbolic inputs, and it does so again at every nesting level, so
    the first call of a supernet ran every op once per level above it.
    """

    def build(self, input_shape=None):
        self.built = True


class NB201Zero(keras.layers.Layer):
    """The ``none`` op: zeros of the op's output shape (``c_out`` channels)."""

    def __init__(self, c_out: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.c_out = c_out
        self.stride = stride

    def call(self, x):
        s = self.stride
        shape = tf.shape(x[:, ::s, ::s, :])
        return tf.zeros(tf.concat([shape[:3], [self.c_out]], 0), dtype=x.dtype)


class NB201Pool(_Container):
    """``avg_pool_3x3``: optional ReLU-conv1×1-BN (when channels change), then pooling.

    The pooling ignores the padding (PyTorch ``count_include_pad=False``); there is
    no BN after it, as in the benchmark's search and final networks.
    """

    def __init__(self, stride: int, preprocess: keras.layers.Layer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.preprocess = preprocess

    def call(self, x):
        if self.preprocess is not None:
            x = self.preprocess(x)
        return avg_pool(x, 3, self.stride)


def make_nb201_op(
    name: str,
    c_in: int,
    c_out: int,
    stride: int = 1,
    search: bool = True,
    activation: str = "relu",
) -> keras.layers.Layer:
    """Builds NAS-Bench-201 operation ``name`` mapping ``c_in`` to ``c_out`` channels.

    ``search=True`` gives the search-network form (BN without affine parameters on
    batch statistics), ``search=False`` the final-network form (Keras BN).
    """
    if name not in NB201_OPS:
        raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; known: {list(NB201_OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    get_activation(activation)
    if name == "none":
        return NB201Zero(c_out, stride)
    if name == "skip_connect":
        if stride == 1 and c_in == c_out:
            return Identity()
        if stride == 2:
            return FactorizedReduce(c_out, search, activation)
        # The benchmark's stride-1 "FactorizedReduce": conv 1×1 + BN, no ReLU.
        return Sequential([Conv(c_out, 1, 1), batch_norm(search)])
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
        kernel_size = 1 if name == "nor_conv_1x1" else 3
        return relu_conv_bn(c_out, kernel_size, stride, search, activation)
    # avg_pool_3x3
    preprocess = None if c_in == c_out else relu_conv_bn(c_out, 1, 1, search, activation)
    return NB201Pool(stride, preprocess)


class NB201MixedOp(_Container):
    """The weighted sum of the candidate ops on one edge (weights = softmax of α)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        ops: Sequence[str] = NB201_OPS,
        activation: str = "relu",
        stride: int = 1,
        search: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.op_names = tuple(ops)
        self.c_in, self.c_out = c_in, c_out
        # `none` contributes exactly zero to the sum (and to every gradient): skip it.
        self.op_indices = [i for i, name in enumerate(self.op_names) if name != "none"]
        if not self.op_indices:
            raise ValueError(f"a mixed op needs at least one op other than 'none', got {ops}")
        self.ops = [
            make_nb201_op(self.op_names[i], c_in, c_out, stride, search, activation)
            for i in self.op_indices
        ]

    def call(self, x, weights, aux_skip=None):
        """Σ_o w_o·o(x), plus ``aux_skip``·x (the auxiliary skip of DARTS-) when given.

        On an edge that changes the channel count the auxiliary path is the edge's own
        ``skip_connect`` op (conv 1×1 + BN, its weights shared with the candidate), and
        there is none when the edge has no ``skip_connect`` candidate.
        """
        # One unstack instead of a slice per op keeps the graph small.
        w = tf.unstack(weights, num=len(self.op_names))
        terms, skip_out = [], None
        for i, op in zip(self.op_indices, self.ops, strict=True):
            y = op(x)
            if self.op_names[i] == "skip_connect":
                skip_out = y
            terms.append(w[i] * y)
        if aux_skip is not None:
            if self.c_in == self.c_out:
                terms.append(aux_skip * x)
            elif skip_out is not None:
                terms.append(aux_skip * skip_out)
        return tf.add_n(terms)


class NB201SearchCell(_Container):
    """A NAS-Bench-201 search cell: 4 nodes, a mixed op on each of the 6 edges.

    ``call(x, weights, aux_skip=None)`` takes the op weights (softmax of α), shape
    ``(6, n_ops)``, rows in :data:`NB201_EDGES` order, and the auxiliary skip weight
    (:class:`NB201MixedOp`), and returns node 3. Edges out of node 0 map
    ``c_in`` to ``c_out`` channels; the others keep ``c_out``. ``ops`` and ``activation``
    are the supernet's (every edge's mixed op has them).
    """

    def __init__(self, c_in: int, c_out: int, ops: Sequence[str], activation: str, **kwargs):
        super().__init__(**kwargs)
        self.c_in = c_in
        self.c_out = c_out
        self.edges = [
            NB201MixedOp(c_in if frm == 0 else c_out, c_out, ops, activation)
            for _, frm in NB201_EDGES
        ]

    def call(self, x, weights, aux_skip=None):
        edge_weights = tf.unstack(weights, num=NB201_NUM_EDGES)
        nodes = [x]
        for to in range(1, 4):
            nodes.append(
                tf.add_n(
                    [
                        self.edges[e](nodes[frm], edge_weights[e], aux_skip)
                        for e, (t, frm) in enumerate(NB201_EDGES)
                        if t == to
                    ]
                )
            )
        return nodes[-1]


class ResidualReductionBlock(_Container):
    """The benchmark's reduction block between stages (a ResNet basic block, stride 2).

    ``ReLU-conv3×3 s2-BN → ReLU-conv3×3-BN`` plus the shortcut ``avg-pool 2×2 s2 →
    conv 1×1`` (no BN, no ReLU). The pooling pads odd sizes at the end (TF ``SAME``,
    padding not counted), so both paths give ceil(H/2).
    """

    def __init__(self, c_out: int, search: bool = True, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.c_out = c_out
        self.conv_a = relu_conv_bn(c_out, 3, 2, search, activation)
        self.conv_b = relu_conv_bn(c_out, 3, 1, search, activation)
        self.shortcut = Conv(c_out, 1, 1)

    def call(self, x):
        residual = self.shortcut(tf.nn.avg_pool2d(x, 2, 2, "SAME"))
        return residual + self.conv_b(self.conv_a(x))


class NB201Supernet(keras.layers.Layer):
    """The NAS-Bench-201 search encoder: stem, 3 stages of search cells, global pooling.

    ``call(images, arch)`` takes the architecture logits as a mapping
    ``{"cell": [6, n_ops]}`` (shared by every cell) and returns features
    ``[B, feature_dim]`` with ``feature_dim == 4 * channels``. The benchmark's
    network is ``channels=16, cells_per_stage=5`` on 32×32 images; smaller
    settings (e.g. ``channels=8, cells_per_stage=1`` on 16×16) fit a CPU.
    ``stem_channels`` (default ``channels``) sets the stem's output channels.
    ``derivation`` is the rule of :meth:`derive`: ``argmax`` (the benchmark's,
    ``none`` a candidate) or ``exclude_none`` (never ``none``, as in DARTS).
    With ``arch["aux_skip"]`` (``il_tf.spaces.architecture.AuxSkipSettings``) every
    edge adds that weight times its input (:class:`NB201MixedOp`).
    """

    space = NB201_SPACE
    genotype_type = NB201Genotype
    #: Every edge adds ``arch["aux_skip"]``·x when the mapping has it (DARTS-).
    reads_aux_skip = True

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 5,
        ops: Sequence[str] = NB201_OPS,
        activation: str = "relu",
        stem_channels: int | None = None,
        derivation: str = "argmax",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if derivation not in NB201_DERIVATIONS:
            raise ValueError(
                f"nb201_supernet.derivation must be one of {list(NB201_DERIVATIONS)}, got "
                f"{derivation!r} (in gin: nb201_supernet.derivation = 'exclude_none')"
            )
        self.derivation = derivation
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if cells_per_stage < 1:
            raise ValueError(f"cells_per_stage must be >= 1, got {cells_per_stage}")
        ops = tuple(ops)
        unknown = [op for op in ops if op not in NB201_OPS]
        if unknown or not ops or len(set(ops)) != len(ops):
            raise ValueError(
                f"ops must be distinct NAS-Bench-201 ops; got {list(ops)}, allowed: "
                f"{list(NB201_OPS)}"
            )
        if all(op == "none" for op in ops):
            raise ValueError("ops must contain at least one op other than 'none'")
        stem_channels = channels if stem_channels is None else stem_channels
        if stem_channels < 1:
            raise ValueError(f"stem_channels must be positive, got {stem_channels}")
        get_activation(activation)
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.op_names = ops
        self.activation_name = activation
        self.stem_channels = stem_channels

        self.stem_conv = Conv(stem_channels, 3, 1)
        self.stem_bn = batch_norm(search=True)
        # `blocks` is the sequence of cells (one per stage step) and reduction blocks.
        self.blocks = []
        c_prev = stem_channels
        for stage in range(3):
            c = channels * 2**stage
            if stage > 0:
                self.blocks.append(ResidualReductionBlock(c, search=True, activation=activation))
                c_prev = c
            for _ in range(cells_per_stage):
                self.blocks.append(NB201SearchCell(c_prev, c, ops, activation))
                c_prev = c
        self.last_bn = batch_norm(search=True)
        self.last_activation = get_activation(activation)
        self.feature_dim = 4 * channels

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the architecture logits this supernet takes."""
        return {"cell": (NB201_NUM_EDGES, len(self.op_names))}

    def call(self, images, arch: Mapping[str, tf.Tensor]):
        return run_segments(self, images, arch)

    def segment_context(self, images):
        """None: the NAS-Bench-201 supernet has no per-example randomness."""
        return None

    def segments(self) -> list[Segment]:
        """Stem, one segment per cell or reduction block, the last BN and pooling.

        The cells of a stage (same widths in and out) are one kind of segment,
        compiled once.
        """
        return [
            Segment(self.stem_conv.trainable_variables, self._stem),
            *(
                Segment(
                    block.trainable_variables,
                    functools.partial(self._block, block),
                    kind=("nb201_cell", block.c_in, block.c_out)
                    if isinstance(block, NB201SearchCell)
                    else None,
                )
                for block in self.blocks
            ),
            Segment([], self._head),
        ]

    def _stem(self, state, arch, context):
        (images,) = state
        return (self.stem_bn(self.stem_conv(tf.cast(images, self.compute_dtype))),)

    def _block(self, block, state, arch, context):
        (x,) = state
        if isinstance(block, NB201SearchCell):
            weights = tf.nn.softmax(tf.cast(arch["cell"], x.dtype), axis=-1)
            aux = arch.get(AUX_SKIP)
            return (block(x, weights, None if aux is None else tf.cast(aux, x.dtype)),)
        return (block(x),)

    def _head(self, state, arch, context):
        (x,) = state
        return (tf.reduce_mean(self.last_activation(self.last_bn(x)), axis=[1, 2]),)

    def derive(self, arch: Mapping[str, np.ndarray]) -> NB201Genotype:
        """The discrete cell of the logits: each edge keeps its strongest op.

        As in the benchmark's own DARTS/GDAS code (and
        :func:`~il_tf.spaces.nb201_genotype.derive_nb201_genotype`), ``none`` is a
        candidate unless ``derivation="exclude_none"``; ties go to the op listed first
        in ``ops``.
        """
        alpha = np.asarray(arch["cell"], dtype=np.float64)
        if self.op_names == NB201_OPS:
            return derive_nb201_genotype(alpha, self.derivation)
        shape = (NB201_NUM_EDGES, len(self.op_names))
        if alpha.shape != shape:
            raise NB201GenotypeError(
                f"alpha must have shape {shape} (edges x ops {list(self.op_names)}), "
                f"got shape {alpha.shape}"
            )
        if not np.all(np.isfinite(alpha)):
            raise NB201GenotypeError("alpha has non-finite values (NaN or inf)")
        if self.derivation == "exclude_none" and "none" in self.op_names:
            alpha = alpha.copy()
            alpha[:, self.op_names.index("none")] = -np.inf
        return NB201Genotype(tuple(self.op_names[int(i)] for i in np.argmax(alpha, axis=1)))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
            "ops": list(self.op_names),
            "activation": self.activation_name,
            "stem_channels": self.stem_channels,
            "derivation": self.derivation,
        }
