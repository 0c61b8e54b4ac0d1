"""Model size and cost: trainable parameters and multiply-adds (MACs) of a built network.

Parameters are counted from the model's trainable variables, without the auxiliary head
(it is used in training only), BN scale/offset included: the number the reference DARTS
code prints (``utils.count_parameters_in_MB``). DARTS_V2 gives 3.349342 M (CIFAR-10, 20
cells, 36 channels) and 4.718752 M (ImageNet, 14 cells, 48 channels), both exactly the
reference code's numbers.

Multiply-adds are counted from the traced inference graph (batch 1, ``training=False``):
every ``Conv2D``, ``DepthwiseConv2dNative`` and ``MatMul`` contributes output positions ×
kernel size × input channels (× output channels for dense convs; × multiplier for depthwise
convs), read from the ops' static shapes, so any genotype and input size is covered without a
per-layer formula. Not counted: pooling (max and average; comparisons/additions, at most one
multiplication per output), batch normalization (folded into the preceding convolution at
inference), activations, additions and concatenations. A dilated conv that TensorFlow runs on
a space-to-batch padded input, or at stride 1 followed by subsampling, is counted at the
positions it finally produces: the cost of the reference operation.

DARTS_V2 on ImageNet at 224×224 gives 529.9 M, not the paper's 574 M. The parameter count
matches the reference exactly, so the network is the same; the reference repository never
published its counter (quark0/darts issue #46: others get 523 M counting convolutions and
fully-connected layers, and 544.6 M with ptflops, which adds BN, ReLU and pooling).
Counting every BN, ReLU, addition, concatenation and pooling element here too adds only
about 18 M, so no usual convention reaches 574 M.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from il_tf.models.networks import AUXILIARY_HEAD_NAME, NetworkConfig, build_network
from il_tf.spaces.genotypes import Genotype


@dataclasses.dataclass(frozen=True)
class Complexity:
    """Size and cost of a network at one input size."""

    params: int  # trainable parameters, auxiliary head excluded
    macs: int  # multiply-adds of one inference forward pass of one image
    image_shape: tuple[int, int, int]

    @property
    def params_m(self) -> float:
        """Parameters in millions, rounded to 3 decimals (as papers report them)."""
        return round(self.params / 1e6, 3)

    @property
    def macs_m(self) -> float:
        """Multiply-adds in millions, rounded to 1 decimal."""
        return round(self.macs / 1e6, 1)

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "params_m": self.params_m,
            "macs": self.macs,
            "macs_m": self.macs_m,
            "image_shape": list(self.image_shape),
        }


def count_parameters(model: keras.Model, include_auxiliary: bool = False) -> int:
    """Trainable parameters of ``model``; the auxiliary head's only if ``include_auxiliary``."""
    total = 0
    for variable in model.trainable_variables:
        if not include_auxiliary and f"/{AUXILIARY_HEAD_NAME}/" in f"/{variable.path}/":
            continue
        total += int(np.prod(variable.shape))
    return total


def _static(shape: tf.TensorShape, what: str) -> list[int]:
    dims = shape.as_list()
    if any(d is None for d in dims):
        raise ValueError(f"cannot count multiply-adds: {what} has a dynamic shape {dims}")
    return dims


# Ops that only rearrange or subsample a convolution's output: a dilated conv runs on a
# space-to-batch transformed input (padded up to a multiple of the rate) and a strided
# dilated depthwise conv is subsampled afterwards; the cost of the operation itself is
# that of the positions that come out at the end.
_REARRANGING_OPS = ("BatchToSpaceND", "StridedSlice")


def _output_positions(op: tf.Operation) -> int:
    """Batch × height × width of what a conv op finally produces (see _REARRANGING_OPS)."""
    output = op.outputs[0]
    while True:
        consumers = output.consumers()
        if len(consumers) != 1 or consumers[0].type not in _REARRANGING_OPS:
            break
        output = consumers[0].outputs[0]
    dims = _static(output.shape, op.name)
    return dims[0] * dims[1] * dims[2]


def graph_macs(graph: tf.Graph) -> int:
    """Multiply-adds of the convolutions and matrix products of ``graph`` (static shapes)."""
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            kh, kw, cin, cout = _static(op.inputs[1].shape, op.name)
            total += _output_positions(op) * kh * kw * cin * cout
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, cin, multiplier = _static(op.inputs[1].shape, op.name)
            total += _output_positions(op) * kh * kw * cin * multiplier
        elif op.type == "MatMul":
            a = _static(op.inputs[0].shape, op.name)
            b = _static(op.inputs[1].shape, op.name)
            m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
            n = b[0] if op.get_attr("transpose_b") else b[1]
            total += m * k * n
    return total


def count_macs(model: keras.Model, image_shape: Sequence[int]) -> int:
    """Multiply-adds of one inference pass of ``model`` on one image of ``image_shape``."""
    shape = tuple(int(d) for d in image_shape)
    spec = tf.TensorSpec((1, *shape), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return graph_macs(graph)


def complexity(model: keras.Model, image_shape: Sequence[int]) -> Complexity:
    """Trainable parameters (no auxiliary head) and multiply-adds of ``model``."""
    shape = tuple(int(d) for d in image_shape)
    return Complexity(count_parameters(model), count_macs(model, shape), shape)  # type: ignore[arg-type]


def network_complexity(
    genotype: Genotype,
    num_classes: int,
    image_shape: Sequence[int],
    config: NetworkConfig | None = None,
) -> Complexity:
    """Parameters and multiply-adds of ``genotype``'s evaluation network at ``image_shape``.

    E.g. ``network_complexity(get_published("DARTS_V2"), 10, (32, 32, 3))`` for the DARTS
    CIFAR network (3.349 M parameters).
    """
    model = build_network(genotype, num_classes, image_shape, config)
    return complexity(model, image_shape)
