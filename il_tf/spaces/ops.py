"""Candidate operations of the DARTS-family search spaces, as Keras layers (NHWC).

All spatial ops pad symmetrically by ``dilation * (kernel - 1) // 2`` (as the
reference PyTorch code does), so a stride-2 op maps an H×W input to
ceil(H/2)×ceil(W/2) for any H, W, odd sizes included, and every op on an edge
samples the same input positions.

Every op here has exact second-order gradients in graph mode (the unrolled
hypergradient differentiates through gradients): max-pooling routes gradients to
the argmax positions with differentiable ops because ``tf.nn.max_pool2d``'s double
gradient is wrong inside ``tf.function`` on CPU (under XLA, which has no argmax
pooling kernel, it is the maximum over shifted slices), and the search-time batch
normalization computes its moments without ``tf.nn.moments``' ``stop_gradient``.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

BN_EPSILON = 1e-5
# The widest input (channels) of a grouped 1×1 convolution computed as one block-diagonal
# matmul; wider ones run one matmul per group (a block-diagonal matrix of wide inputs
# would multiply mostly zeros).
MAX_BLOCK_DIAGONAL = 128
# PyTorch's BatchNorm2d momentum 0.1 == Keras momentum 0.9.
BN_MOMENTUM = 0.9


def _pad_amount(kernel_size: int, dilation: int = 1) -> int:
    return dilation * (kernel_size - 1) // 2


def symmetric_pad(x: tf.Tensor, amount: int, value: float = 0.0) -> tf.Tensor:
    """Pads the two spatial axes of an NHWC tensor by ``amount`` on each side."""
    if amount == 0:
        return x
    return tf.pad(x, [[0, 0], [amount, amount], [amount, amount], [0, 0]], constant_values=value)


def in_xla_compilation() -> bool:
    """Whether ops are being traced for XLA (inside a ``jit_compile=True`` function)."""
    # TF has no public API for this; tf.function(jit_compile=True) traces in an XLA
    # control-flow context, which is what TF's own ops check to pick XLA-friendly forms.
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _max_over_shifted_slices(padded: tf.Tensor, pool_size: int, stride: int) -> tf.Tensor:
    # tf.maximum sends the gradient of a tie to its first argument, so folding the
    # window in row-major order routes it to the first maximum, as the argmax does.
    def size(axis: int):
        n = padded.shape[axis]
        n = tf.shape(padded)[axis] if n is None else n
        return (n - pool_size) // stride + 1

    ho, wo = size(1), size(2)
    y = None
    for i in range(pool_size):
        for j in range(pool_size):
            view = padded[
                :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
            ]
            y = view if y is None else tf.maximum(y, view)
    return y


def max_pool(x: tf.Tensor, pool_size: int = 3, stride: int = 1) -> tf.Tensor:
    """Max-pooling with symmetric padding whose double gradient is exact.

    ``tf.nn.max_pool2d``'s second-order gradient is wrong inside ``tf.function`` on
    CPU, and ``max_pool_with_argmax`` has none; the gradient here routes the
    incoming gradient to the argmax positions with differentiable ops instead.
    XLA has no argmax pooling kernel: traced for XLA, the result is the maximum over
    the shifted strided slices of the padded input (same values and gradients).
    """
    low = -6e4 if x.dtype == tf.float16 else -1e9
    padded = symmetric_pad(x, _pad_amount(pool_size), value=low)
    if in_xla_compilation():
        return _max_over_shifted_slices(padded, pool_size, stride)

    @tf.custom_gradient
    def pool(inputs):
        y, argmax = tf.nn.max_pool_with_argmax(
            inputs, pool_size, stride, "VALID", include_batch_in_index=True
        )

        def grad(upstream):
            flat = tf.math.unsorted_segment_sum(
                tf.reshape(upstream, [-1]),
                tf.reshape(argmax, [-1]),
                tf.size(inputs, out_type=argmax.dtype),
            )
            return tf.reshape(flat, tf.shape(inputs))

        return y, grad

    return pool(padded)


def avg_pool(x: tf.Tensor, pool_size: int = 3, stride: int = 1) -> tf.Tensor:
    """Average pooling that ignores the padding (PyTorch ``count_include_pad=False``)."""
    p = _pad_amount(pool_size)
    summed = tf.nn.avg_pool2d(symmetric_pad(x, p), pool_size, stride, "VALID")
    h, w = x.shape[1], x.shape[2]
    if p == 0:
        return summed
    # The number of real (unpadded) inputs under each window; a constant of the shape.
    ones = tf.ones([1, h, w, 1], dtype=x.dtype)
    counts = tf.nn.avg_pool2d(symmetric_pad(ones, p), pool_size, stride, "VALID")
    return summed / counts


def block_diagonal(kernels: tf.Tensor, groups: int) -> tf.Tensor:
    """``[C, groups·D]`` side-by-side blocks as the ``[groups·C, groups·D]`` block diagonal."""
    c, width = kernels.shape
    d = width // groups
    mask = np.kron(np.eye(groups), np.ones([c, d])).astype(kernels.dtype.as_numpy_dtype)
    # Three ops for any number of groups (a tile and a constant mask).
    return tf.tile(kernels, [groups, 1]) * mask


def convolve(
    x: tf.Tensor,
    kernel: tf.Tensor,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    depthwise: bool = False,
) -> tf.Tensor:
    """A bias-free convolution of NHWC ``x`` with symmetric padding (what :class:`Conv` does).

    ``kernel`` is ``[k, k, C_in, C_out]`` (dense) or ``[k, k, C_in, 1]`` (depthwise). A
    1×1 stride-1 kernel with fewer input channels than ``x`` is a grouped convolution
    with ``x.shape[-1] // C_in`` groups: group g reads and writes the g-th block of
    channels (a block-diagonal matmul up to :data:`MAX_BLOCK_DIAGONAL` input channels,
    one matmul per group above; TF's grouped convolution has no gradient on CPU).
    """
    p = _pad_amount(kernel_size, dilation)
    s, d = stride, dilation
    c_in, c_x = kernel.shape[2], x.shape[-1]
    groups = 1
    if not depthwise and c_in != c_x:
        if c_x is None or c_x % c_in or kernel_size != 1 or s != 1:
            raise ValueError(
                f"convolve: a {kernel_size}×{kernel_size} stride-{s} kernel for {c_in} input "
                f"channels cannot read {c_x} channels (grouped: 1×1, stride 1 and a multiple "
                f"of {c_in} channels only)"
            )
        groups = c_x // c_in
    if kernel_size == 1 and s == 1 and not depthwise:
        # A 1×1 convolution is a matrix product over the channels. On small
        # feature maps the CPU's matmul kernel costs a fraction of the convolution
        # kernel (whose per-call overhead dominates there); on large ones they are
        # equal. A reshape, not a slice, of the kernel: its
        # gradient is one op.
        matrix = tf.reshape(kernel, kernel.shape[2:])
        rows = tf.reshape(x, [-1, c_x])
        if groups == 1:
            y = tf.matmul(rows, matrix)
        elif c_x <= MAX_BLOCK_DIAGONAL:
            # Small groups: one matmul with the block diagonal (groups times the
            # multiply-adds, but one op instead of 2·groups + 2, and faster on CPU).
            y = tf.matmul(rows, block_diagonal(matrix, groups))
        else:
            # Large groups: the multiply-adds dominate; one matmul per group.
            y = tf.concat(
                [
                    tf.matmul(part, block)
                    for part, block in zip(
                        tf.split(rows, groups, axis=1),
                        tf.split(matrix, groups, axis=1),
                        strict=True,
                    )
                ],
                axis=1,
            )
        filters = matrix.shape[1]
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [filters]], 0))
        return tf.reshape(y, [-1, h, w, filters])
    if s == 1:
        # Stride 1: TF's SAME padding is symmetric for odd effective kernels.
        padding, x_in = "SAME", x
    else:
        padding, x_in = "VALID", symmetric_pad(x, p)
    if depthwise:
        if s > 1 and d > 1:
            # TF's depthwise conv cannot combine stride and dilation: subsample.
            y = tf.nn.depthwise_conv2d(x_in, kernel, [1, 1, 1, 1], padding, dilations=[d, d])
            return y[:, ::s, ::s, :]
        return tf.nn.depthwise_conv2d(x_in, kernel, [1, s, s, 1], padding, dilations=[d, d])
    return tf.nn.conv2d(x_in, kernel, s, padding, dilations=d)


class SearchBatchNorm(keras.layers.Layer):
    """Batch normalization without affine parameters that always uses batch statistics.

    This is the BN of DARTS search networks. Unlike ``tf.nn.moments`` it keeps the
    gradient of the mean inside the variance, so second-order gradients are exact.
    Under a ``tf.distribute`` strategy the moments are taken over the global batch
    (synchronized), so N replicas compute what one device computes on the whole
    batch; ``synchronized=False`` uses per-replica moments, saving one all-reduce
    per layer.
    """

    def __init__(self, epsilon: float = BN_EPSILON, synchronized: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.synchronized = synchronized

    def call(self, x):
        axes = [0, 1, 2]
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if self.synchronized and replicas > 1:
            # Each replica's count, mean and sum of squared deviations, gathered exactly
            # (every replica fills its own row, the others add zeros), then combined as
            # in Chan et al.'s parallel variance: the two-pass statistics one device takes,
            # up to summation order. (E[x²] - E[x]² would lose float32 digits whenever the
            # mean is large against the spread.)
            channels = tf.shape(x)[-1]
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
            local_mean = tf.reduce_mean(x, axes)
            local_m2 = tf.reduce_sum(tf.square(x - local_mean), axes)
            local = tf.concat([count[None], local_mean, local_m2], 0)
            row = tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=x.dtype)
            rows = ctx.all_reduce(tf.distribute.ReduceOp.SUM, row[:, None] * local[None, :])
            counts, means = rows[:, :1], rows[:, 1 : 1 + channels]
            n = tf.reduce_sum(counts)
            mean = tf.reduce_sum(counts * means, 0) / n
            spread = tf.reduce_sum(counts * tf.square(means - mean), 0)
            var = (tf.reduce_sum(rows[:, 1 + channels :], 0) + spread) / n
        elif x.dtype in (tf.float32, tf.float16, tf.bfloat16):
            # One fused op instead of ~10: a much smaller graph, and its gradient
            # of gradient is exact (checked against float64 in the tests).
            channels = x.shape[-1]
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                tf.ones([channels], tf.float32),
                tf.zeros([channels], tf.float32),
                epsilon=self.epsilon,
                is_training=True,
            )
            return y
        else:
            mean = tf.reduce_mean(x, axes)
            var = tf.reduce_mean(tf.square(x - mean), axes)
        return (x - mean) * tf.math.rsqrt(var + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "synchronized": self.synchronized}


def batch_norm(search: bool, name: str | None = None) -> keras.layers.Layer:
    """The BN of search networks (no affine, batch statistics) or of final networks."""
    if search:
        return SearchBatchNorm(name=name)
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


class Conv(keras.layers.Layer):
    """A bias-free 2-D convolution (dense or depthwise) with symmetric padding."""

    def __init__(
        self,
        filters: int | None,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        depthwise: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not depthwise and filters is None:
            raise ValueError("a dense Conv needs `filters`")
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.depthwise = depthwise

    def build(self, input_shape):
        cin = int(input_shape[-1])
        k = self.kernel_size
        shape = (k, k, cin, 1) if self.depthwise else (k, k, cin, self.filters)
        self.kernel = self.add_weight(
            name="kernel", shape=shape, initializer=keras.initializers.HeNormal(), trainable=True
        )

    def call(self, x):
        kernel = tf.cast(self.kernel, x.dtype)
        return convolve(x, kernel, self.kernel_size, self.stride, self.dilation, self.depthwise)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "dilation": self.dilation,
            "depthwise": self.depthwise,
        }


class Sequential(keras.layers.Layer):
    """Applies a list of layers (or plain functions) in order."""

    def __init__(self, steps: list, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def call(self, x):
        for step in self.steps:
            x = step(x)
        return x


# The nonlinearity of every op. ReLU is DARTS's; a smooth one (softplus) makes the
# search objective differentiable everywhere, which finite-difference checks need.
ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "relu": tf.nn.relu,
    "softplus": tf.nn.softplus,
    "swish": tf.nn.silu,
    "gelu": tf.nn.gelu,
}


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation function called ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def relu_conv_bn(
    c_out: int,
    kernel_size: int,
    stride: int,
    search: bool,
    activation: str = "relu",
    name: str | None = None,
) -> Sequential:
    """ReLU → convolution → BN, the DARTS preprocessing block."""
    return Sequential(
        [get_activation(activation), Conv(c_out, kernel_size, stride), batch_norm(search)],
        name=name,
    )


def sep_conv(
    c: int, kernel_size: int, stride: int, search: bool, activation: str = "relu"
) -> Sequential:
    """DARTS separable convolution: (ReLU, depthwise, pointwise, BN) applied twice."""
    act = get_activation(activation)
    return Sequential(
        [
            act,
            Conv(None, kernel_size, stride, depthwise=True),
            Conv(c, 1),
            batch_norm(search),
            act,
            Conv(None, kernel_size, 1, depthwise=True),
            Conv(c, 1),
            batch_norm(search),
        ]
    )


def dil_conv(
    c: int, kernel_size: int, stride: int, search: bool, activation: str = "relu"
) -> Sequential:
    """DARTS dilated separable convolution (dilation 2): ReLU, depthwise, pointwise, BN."""
    return Sequential(
        [
            get_activation(activation),
            Conv(None, kernel_size, stride, dilation=2, depthwise=True),
            Conv(c, 1),
            batch_norm(search),
        ]
    )


class FactorizedReduce(keras.layers.Layer):
    """Halves the resolution with two stride-2 1×1 convs on offset grids (ReLU first)."""

    def __init__(self, c_out: int, search: bool, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.activation = get_activation(activation)
        self.conv_a = Conv(c_out // 2, 1, 2)
        self.conv_b = Conv(c_out // 2, 1, 2)
        self.bn = batch_norm(search)

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def call(self, x):
        x = self.activation(x)
        # Shift by one pixel; pad at the end so odd sizes give ceil(H/2) on both paths.
        shifted = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
        y = tf.concat([self.conv_a(x), self.conv_b(shifted)], axis=-1)
        return self.bn(y)


class Identity(keras.layers.Layer):
    """Returns its input."""

    def call(self, x):
        return x


class Zero(keras.layers.Layer):
    """Returns zeros of the op's output shape (the `none` op)."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, x):
        return tf.zeros_like(x[:, :: self.stride, :: self.stride, :])


class Pool(keras.layers.Layer):
    """3×3 max or average pooling, optionally followed by a (search) BN."""

    def __init__(self, kind: str, stride: int, bn: keras.layers.Layer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.stride = stride
        self.bn = bn

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def call(self, x):
        y = max_pool(x, 3, self.stride) if self.kind == "max" else avg_pool(x, 3, self.stride)
        return self.bn(y) if self.bn is not None else y


# (channels, stride, search, activation) -> layer
OpFactory = Callable[[int, int, bool, str], keras.layers.Layer]


def _skip(c: int, stride: int, search: bool, act: str) -> keras.layers.Layer:
    return Identity() if stride == 1 else FactorizedReduce(c, search, act)


def _pool(kind: str) -> OpFactory:
    # DARTS puts a BN (no affine) after pooling inside the search network's mixed op.
    return lambda c, stride, search, act: Pool(kind, stride, SearchBatchNorm() if search else None)


OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, search, act: Zero(stride),
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, search, act: sep_conv(c, 3, stride, search, act),
    "sep_conv_5x5": lambda c, stride, search, act: sep_conv(c, 5, stride, search, act),
    "dil_conv_3x3": lambda c, stride, search, act: dil_conv(c, 3, stride, search, act),
    "dil_conv_5x5": lambda c, stride, search, act: dil_conv(c, 5, stride, search, act),
}


def make_op(
    name: str, channels: int, stride: int, search: bool, activation: str = "relu"
) -> keras.layers.Layer:
    """Builds candidate operation ``name`` with ``channels`` in and out channels.

    ``search=True`` gives the search-network form (BN without affine parameters on
    batch statistics; BN after pooling), ``search=False`` the final-network form.
    """
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; known operations: {sorted(OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    get_activation(activation)
    return OPS[name](channels, stride, search, activation)
