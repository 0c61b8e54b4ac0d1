"""A MobileNetV2-style backbone whose blocks are searched (kernel, expansion, depth).

Every inverted-residual block (1×1 expansion, k×k depthwise, 1×1 projection, each
with BatchNormalization) chooses its depthwise kernel (``block3/kernel``: ``k3``,
``k5``, ``k7``) and its expansion ratio (``block3/expansion``: ``e3``, ``e6``); a block
that keeps its input's shape (stride 1, same channels) may also be dropped
(``block3/keep``: ``keep`` or ``skip``, the block then being the identity). The kernel
choice is one decision applied inside both expansion candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras
from keras import layers

from il_tf.spaces.choices import Choice

# Moving statistics that follow within an epoch: short trainings (the digits) need it.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int, kernel: int = 1, stride: int = 1, relu: bool = True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU(6.0)(x) if relu else x


def _depthwise(kernel: int, stride: int):
    def apply(x):
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False)(x)
        return layers.ReLU(6.0)(layers.BatchNormalization(momentum=BN_MOMENTUM)(x))

    return apply


def inverted_residual(
    x,
    name: str,
    channels: int,
    stride: int,
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (3, 6),
):
    """One searched block: expansion and kernel choices, a residual when shapes allow."""
    c_in = x.shape[-1]
    kernel = Choice(f"{name}/kernel", {f"k{k}": _depthwise(k, stride) for k in kernels})

    def body(expansion: int):
        def apply(t):
            h = _conv_bn(t, expansion * c_in)
            return _conv_bn(kernel(h), channels, relu=False)

        return apply

    y = Choice(f"{name}/expansion", {f"e{e}": body(e) for e in expansions})(x)
    return layers.Add()([x, y]) if stride == 1 and c_in == channels else y


@gin.configurable
def mobilenet_v2_backbone(
    images: keras.KerasTensor,
    stem: int = 16,
    stages: Sequence[Sequence[int]] = ((16, 1, 1), (24, 2, 2), (32, 2, 2)),
    last: int = 64,
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (3, 6),
) -> keras.KerasTensor:
    """Stem, searched inverted-residual blocks, 1×1 conv, global pooling.

    ``stages`` lists ``(channels, blocks, stride of the first block)``; blocks are named
    ``block1``, ``block2``, ... in order.
    """
    x = _conv_bn(images, stem, 3)
    index = 0
    for channels, blocks, stride in stages:
        for b in range(blocks):
            index += 1
            name, s = f"block{index}", stride if b == 0 else 1

            def block(t, name=name, channels=channels, s=s):
                return inverted_residual(t, name, channels, s, kernels, expansions)

            if s == 1 and x.shape[-1] == channels:
                x = Choice(f"{name}/keep", {"keep": block, "skip": lambda t: t})(x)
            else:
                x = block(x)
    x = _conv_bn(x, last)
    return layers.GlobalAveragePooling2D()(x)
