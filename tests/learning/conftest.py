"""Tiny search models and float64 settings for the learning tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.spaces.darts_supernet import DartsSupernet

# Operations without kinks: with softplus activations the whole search objective
# is smooth, so central finite differences converge.
SMOOTH_OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")


def build_tiny_model(
    num_classes=(3, 4),
    ops=SMOOTH_OPS,
    activation="softplus",
    channels=4,
    num_cells=2,
    image_size=8,
    seed=0,
    arch_scale=0.5,
) -> SearchModel:
    """A 2-cell supernet (one normal, one reduction cell) with one head per learner."""
    model = build_search_model(
        DartsSupernet(channels=channels, num_cells=num_cells, ops=ops, activation=activation),
        num_classes,
        (image_size, image_size, 3),
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    # Logits away from uniform, so every op matters in the gradient.
    for v in model.arch.arch_variables:
        v.assign(arch_scale * rng.normal(size=v.shape))
    return model


def random_batch(rng, num_classes, batch=4, image_size=8, dtype="float64"):
    images = tf.constant(rng.normal(size=(batch, image_size, image_size, 3)).astype(dtype))
    labels = tf.constant(rng.integers(0, num_classes, batch).astype(np.int32))
    return images, labels
