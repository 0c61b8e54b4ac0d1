"""Tiny Keras builders with choice points for the tests, and the same mixture by hand.

Module-level functions, so that genotypes can name them (``tests.spaces._choice_builders``).
Every layer is named after the candidate that holds it, so weights can be matched
between the supernet, the hand-written mixture and the found network. Softplus and
average pooling keep the search objective smooth (central differences converge).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.spaces.choice_space import ChoiceSupernet, SearchBatchNormalization
from il_tf.spaces.choices import Choice, InputChoice
from il_tf.spaces.space import Segment, run_segments

WIDTH = 4
CLASSES = (3, 4)
IMAGE = (8, 8, 3)


def _conv(filters, kernel, name):
    return layers.Conv2D(filters, kernel, padding="same", name=name)


def tiny_builder(images, width: int = WIDTH):
    """Stem; block1 picks an op; block2 is kept or skipped and picks a kernel; the head
    reads block1's or block2's output."""
    x = _conv(width, 3, "stem")(images)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x1 = Choice(
        "block1/op",
        {
            "conv": lambda t: layers.Activation("softplus")(_conv(width, 3, "block1_conv")(t)),
            "pool": lambda t: layers.AveragePooling2D(3, 1, "same", name="block1_pool")(t),
        },
    )(x)
    kernel = Choice(
        "block2/kernel",
        {"k1": _conv(width, 1, "block2_k1"), "k3": _conv(width, 3, "block2_k3")},
    )
    y = Choice(
        "block2/keep",
        {
            "keep": lambda t: layers.Activation("softplus")(
                layers.BatchNormalization(name="block2_bn")(kernel(t))
            ),
            "skip": lambda t: t,
        },
    )(x1)
    x2 = layers.Add(name="block2_add")([x1, y])
    z = InputChoice("head/input")({"block1": x1, "block2": x2})
    z = _conv(6, 1, "head_conv")(z)
    return layers.GlobalAveragePooling2D(name="pool")(z)


class HandMixture(keras.layers.Layer):
    """``tiny_builder``'s supernet written by hand: the same layers, mixed explicitly."""

    space = "hand"
    genotype_type = dict
    op_names = ("a", "b")
    feature_dim = 6

    def __init__(self, width: int = WIDTH, **kwargs):
        super().__init__(**kwargs)
        self.stem = _conv(width, 3, "stem")
        self.stem_bn = SearchBatchNormalization(epsilon=1e-3, name="stem_bn")
        self.block1_conv = _conv(width, 3, "block1_conv")
        self.block2_k1 = _conv(width, 1, "block2_k1")
        self.block2_k3 = _conv(width, 3, "block2_k3")
        self.block2_bn = SearchBatchNormalization(epsilon=1e-3, name="block2_bn")
        self.head_conv = _conv(6, 1, "head_conv")

    def arch_shapes(self):
        return {
            "block1.op": (1, 2),
            "block2.keep": (1, 2),
            "block2.kernel": (1, 2),
            "head.input": (1, 2),
        }

    def derive(self, arch):
        return {k: int(np.argmax(v)) for k, v in arch.items()}

    def segments(self):
        return [Segment(self.trainable_variables, self._forward)]

    def segment_context(self, images):
        return None

    def call(self, images, arch):
        return run_segments(self, images, arch)

    def _forward(self, state, arch, context):
        (images,) = state

        def w(name):
            return tf.unstack(tf.nn.softmax(tf.cast(tf.reshape(arch[name], [-1]), images.dtype)))

        x = self.stem_bn(self.stem(images))
        pool = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 1, "VALID")
        # Keras's 'same' average pooling counts only the real inputs under a window.
        ones = tf.pad(tf.ones_like(x[:1, :, :, :1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
        pool = pool / tf.nn.avg_pool2d(ones, 3, 1, "VALID")
        a, b = w("block1.op")
        x1 = a * tf.nn.softplus(self.block1_conv(x)) + b * pool
        k1, k3 = w("block2.kernel")
        kernel = k1 * self.block2_k1(x1) + k3 * self.block2_k3(x1)
        keep, skip = w("block2.keep")
        x2 = x1 + keep * tf.nn.softplus(self.block2_bn(kernel)) + skip * x1
        h1, h2 = w("head.input")
        z = self.head_conv(h1 * x1 + h2 * x2)
        return (tf.reduce_mean(z, axis=[1, 2]),)


def build_model(supernet, seed: int = 0) -> SearchModel:
    """A search model of ``supernet`` on 8×8 RGB images with the test's two learners."""
    return build_search_model(supernet, CLASSES, IMAGE, seed=seed)


def choice_model(seed: int = 0, arch_scale: float = 0.5) -> SearchModel:
    """The choice supernet of ``tiny_builder`` with logits away from uniform."""
    model = build_model(ChoiceSupernet(tiny_builder), seed)
    rng = np.random.default_rng(seed)
    for v in model.arch.arch_variables:
        v.assign(arch_scale * rng.normal(size=v.shape))
    return model


def layer_weight_name(variable) -> str:
    """``layer/weight`` of a variable, whatever layers hold its layer."""
    return "/".join(variable.path.split("/")[-2:])


def copy_weights(source: SearchModel, target: SearchModel) -> None:
    """Gives ``target`` the weights (matched by layer name), heads and logits of ``source``."""
    by_name: Mapping[str, keras.Variable] = {
        layer_weight_name(v): v for v in source.encoder.trainable_variables
    }
    for v in target.encoder.trainable_variables:
        v.assign(by_name[layer_weight_name(v)])
    for h_src, h_dst in zip(source.heads, target.heads, strict=True):
        for a, b in zip(h_src.trainable_variables, h_dst.trainable_variables, strict=True):
            b.assign(a)
    values = source.arch.numpy()
    target.arch.assign(values)
