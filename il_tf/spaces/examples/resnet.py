"""A small ResNet whose blocks choose their width, whether they exist, and what they read.

Basic residual blocks (two 3×3 convolutions with BatchNormalization, a projection
shortcut where the shape changes). Each block chooses its inner width
(``stage1/block2/width``: ``w8``, ``w16``, ``w32`` for 16 channels and the default
``widths``); each block after a stage's first may be dropped (``.../keep``: ``keep``
or ``skip``); and from a stage's third block on, a block reads either the previous
block's output or the one before it (``.../input``: ``previous`` or ``earlier``, an
``InputChoice``: a skip over one block, as in DenseNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras
from keras import layers

from il_tf.spaces.choices import Choice, InputChoice

# Moving statistics that follow within an epoch: short trainings (the digits) need it.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int, kernel: int, stride: int = 1):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False)(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM)(x)


def basic_block(x, name: str, channels: int, stride: int, widths: Sequence[float]):
    """conv3×3-BN-ReLU-conv3×3-BN with a searched inner width, plus the shortcut, ReLU."""

    def body(width: int):
        def apply(t):
            h = layers.ReLU()(_conv_bn(t, width, 3, stride))
            return _conv_bn(h, channels, 3)

        return apply

    inner = {max(1, round(w * channels)) for w in widths}
    y = Choice(f"{name}/width", {f"w{w}": body(w) for w in sorted(inner)})(x)
    shortcut = x if stride == 1 and x.shape[-1] == channels else _conv_bn(x, channels, 1, stride)
    return layers.ReLU()(layers.Add()([shortcut, y]))


@gin.configurable
def resnet_backbone(
    images: keras.KerasTensor,
    stem: int = 16,
    stages: Sequence[Sequence[int]] = ((16, 3, 1), (32, 3, 2)),
    widths: Sequence[float] = (0.5, 1.0, 2.0),
) -> keras.KerasTensor:
    """Stem, stages of searched basic blocks, global pooling.

    ``stages`` lists ``(channels, blocks, stride of the first block)``.
    """
    x = layers.ReLU()(_conv_bn(images, stem, 3))
    for s, (channels, blocks, stride) in enumerate(stages, start=1):
        outputs = []
        for b in range(1, blocks + 1):
            name = f"stage{s}/block{b}"

            def block(t, name=name, channels=channels, stride=stride if b == 1 else 1):
                return basic_block(t, name, channels, stride, widths)

            if b == 1:
                x = block(x)
            else:
                if b >= 3:
                    x = InputChoice(f"{name}/input")(
                        {"previous": outputs[-1], "earlier": outputs[-2]}
                    )
                x = Choice(f"{name}/keep", {"keep": block, "skip": lambda t: t})(x)
            outputs.append(x)
    return layers.GlobalAveragePooling2D()(x)
