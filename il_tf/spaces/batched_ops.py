"""One candidate op of several edges that read the same input, applied as one wide op.

In a DARTS cell every edge that leaves a state applies the same candidate ops to
the same tensor, each edge with its own weights. Placed side by side along the
channel axis, the n edges' kernels make one convolution per layer instead of n:
depthwise kernels are concatenated (over the input tiled n times), pointwise and
dense kernels become the groups of one grouped convolution (dense on the shared
input: one convolution with n·C_out filters), and the search batch norm (per
channel, no affine parameters) of n edges is one batch norm over n·C channels.
The values are those of the n separate ops; a cell's gradient graph has about a third
fewer ops, and a compiled function's tracing time and memory grow with its op count.

Layout of a *wide* tensor: ``[B, H, W, n·C]``, edge m's channels at
``[m·C, (m+1)·C)``. A *shared* tensor ``[B, H, W, C]`` is one every edge has alike
(the input, or the output of weightless layers applied to it).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from il_tf.spaces.ops import Conv, FactorizedReduce, SearchBatchNorm, Sequential, convolve


def _built(conv: Conv, input_shape) -> Conv:
    # A layer builds on its first call; here its kernel is read without calling it.
    if not conv.built:
        conv.build(input_shape)
    return conv


def wide_conv(convs: Sequence[Conv], x: tf.Tensor, wide: bool) -> tf.Tensor:
    """The n equally configured ``convs`` as one convolution: a wide tensor.

    ``x`` is wide (edge m's input in block m) or shared (every edge's input).
    """
    first, n = convs[0], len(convs)
    if any(c.get_config() | {"name": None} != first.get_config() | {"name": None} for c in convs):
        raise ValueError("wide_conv: the edges' convolutions differ in configuration")
    c_in = x.shape[-1] // n if wide else x.shape[-1]
    shape = [*x.shape[:-1], c_in]
    kernels = [tf.cast(_built(c, shape).kernel, x.dtype) for c in convs]
    # Side by side along the channel axis the kernels are laid out on (input channels
    # of a depthwise kernel, output channels of a dense one). A stack and a reshape,
    # not a concat: their gradient is two ops for any n, a concat's is n slices.
    axis = 2 if first.depthwise else 3
    shape = kernels[0].shape.as_list()
    shape[axis] *= n
    kernel = tf.reshape(tf.stack(kernels, axis=axis), shape)
    if first.depthwise and not wide:
        x = tf.tile(x, [1, 1, 1, n])
    # A dense kernel on a wide input is a grouped convolution (n groups); on a
    # shared one, a plain convolution with n·C_out filters.
    return convolve(x, kernel, first.kernel_size, first.stride, first.dilation, first.depthwise)


def _wide_factorized_reduce(layers: Sequence[FactorizedReduce], x: tf.Tensor) -> tf.Tensor:
    """n edges' :class:`FactorizedReduce` of the shared ``x``, as a wide tensor."""
    n = len(layers)
    x = layers[0].activation(x)
    shifted = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
    a = wide_conv([layer.conv_a for layer in layers], x, wide=False)
    b = wide_conv([layer.conv_b for layer in layers], shifted, wide=False)
    # Edge m's output is [a_m, b_m]: interleave the two wide halves block by block.
    dims = [d if d is not None else tf.shape(a)[i] for i, d in enumerate(a.shape[:-1])]
    half = a.shape[-1] // n
    y = tf.concat([tf.reshape(a, [*dims, n, half]), tf.reshape(b, [*dims, n, half])], axis=-1)
    return layers[0].bn(tf.reshape(y, [*dims, n * 2 * half]))


def _wide_sequential(layers: Sequence[Sequential], x: tf.Tensor, memo: dict) -> tf.Tensor:
    """n edges' equally structured :class:`Sequential` of the shared ``x``, wide."""
    n, wide, steps = len(layers), False, layers[0].steps
    start = 0
    if len(steps) > 1 and not isinstance(steps[0], keras.layers.Layer):
        # The activation of the shared input (tiled for a depthwise kernel) is the
        # same for every op that starts with it: computed once per state.
        act, conv = steps[0], steps[1]
        tiled = isinstance(conv, Conv) and conv.depthwise
        key = (act, n if tiled else 1)
        if key not in memo:
            memo[key] = tf.tile(act(x), [1, 1, 1, n]) if tiled else act(x)
        x, wide, start = memo[key], tiled, 1
    for position in range(start, len(steps)):
        step = steps[position]
        if isinstance(step, Conv):
            x = wide_conv([layer.steps[position] for layer in layers], x, wide)
            wide = True
        elif isinstance(step, SearchBatchNorm) or not isinstance(step, keras.layers.Layer):
            # Per channel (the search BN) or elementwise: the same on n·C channels.
            x = step(x)
        else:
            raise ValueError(f"no wide form of layer {type(step).__name__} in a Sequential")
    return x if wide else tf.tile(x, [1, 1, 1, n])


def wide_op(
    layers: Sequence[keras.layers.Layer], x: tf.Tensor, memo: dict | None = None
) -> tf.Tensor:
    """The n edges' instances of one candidate op on the shared ``x``: a wide tensor.

    ``layers`` are the op's layer in each edge (as :func:`il_tf.spaces.ops.make_op`
    builds them): separable and dilated convolutions and the stride-2 skip
    (:class:`FactorizedReduce`). Weightless ops are shared and need no wide form.
    ``memo``: one dict per input ``x``, shared by the calls of its ops (it keeps
    their common first steps).
    """
    memo = {} if memo is None else memo
    first = layers[0]
    if any(type(layer) is not type(first) for layer in layers):
        raise ValueError("wide_op: the edges' layers are not the same op")
    if isinstance(first, FactorizedReduce):
        return _wide_factorized_reduce(layers, x)
    if isinstance(first, Sequential):
        return _wide_sequential(layers, x, memo)
    raise ValueError(f"no wide form of op layer {type(first).__name__}")
