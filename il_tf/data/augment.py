"""DARTS training augmentation and per-data-set normalization.

Augmentation (in this order, as in the DARTS reference code): zero-pad and random crop back to
the input size, random horizontal flip, normalization, cutout (a square set to zero after
normalization). Every random choice is stateless: it is a function of the seed passed in, which
the pipelines derive from (run seed, global example position), so a pipeline is a pure function
of (seed, position) and can resume anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Normalization(NamedTuple):
    """Per-channel mean and standard deviation of pixel values scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images: tf.Tensor) -> tf.Tensor:
        """Maps pixel values in [0, 255] (any dtype, channels last) to float32 normalized values."""
        images = tf.cast(images, tf.float32) / 255.0
        return (images - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)


_CIFAR10 = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100 = Normalization(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
_IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# The constants the DARTS family uses (RGB, values in [0, 1]).
STANDARD_NORMALIZATION: dict[str, Normalization] = {
    "cifar10": _CIFAR10,
    "cifar100": _CIFAR100,
    "imagenet": _IMAGENET,
}

# Images (a fixed deterministic sample) used to estimate the normalization of a data set
# without standard constants.
MAX_NORMALIZATION_SAMPLES = 5000


def standard_normalization(dataset_name: str) -> Normalization | None:
    """The standard RGB constants for a tfds data set name, or None when there are none.

    `cifar10` (and variants `cifar10_*`), `cifar100` (`cifar100_*`) and every ImageNet-derived
    data set (`imagenet2012`, `imagenet_resized/32x32`, `imagenet2012_subset`, ...) have them.
    """
    base = dataset_name.split("/")[0].split(":")[0].strip().lower()
    if base == "cifar100" or base.startswith("cifar100_"):
        return _CIFAR100
    if base == "cifar10" or base.startswith("cifar10_"):
        return _CIFAR10
    if base.startswith("imagenet") or base == "downsampled_imagenet":
        return _IMAGENET
    return None


def compute_normalization(batches: Iterable[np.ndarray]) -> Normalization:
    """Per-channel mean and std of uint8 image batches [B, H, W, C], in [0, 1] units.

    Accumulates in float64 so that thousands of images sum without loss. A channel without
    variation gets std 1/255 rather than 0, so normalization never divides by zero.
    """
    total = total_sq = None
    count = 0
    for batch in batches:
        pixels = np.asarray(batch, np.float64).reshape(-1, np.shape(batch)[-1]) / 255.0
        if total is None:
            total = np.zeros(pixels.shape[1])
            total_sq = np.zeros(pixels.shape[1])
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += pixels.shape[0]
    if not count:
        raise ValueError("cannot compute a normalization from no images")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    std = np.maximum(std, 1.0 / 255.0)
    return Normalization(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def pad_and_random_crop(image: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pads `padding` pixels on every side, then crops a random window of the input size."""
    if padding <= 0:
        return image
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed)
    cropped.set_shape(image.shape)  # keep the static shape that tf.shape() loses
    return cropped


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors the image left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def cutout(image: tf.Tensor, length: int, seed: tf.Tensor) -> tf.Tensor:
    """Sets a `length` x `length` square around a uniformly random centre to zero.

    As in DARTS, the square is clipped at the border (so it can be smaller there) and spans
    `[c - length // 2, c + length // 2)` on each axis.
    """
    if length <= 0:
        return image
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    centre_y = tf.random.stateless_uniform([], seed, 0, height, dtype=tf.int32)
    # A second, distinct seed so the two coordinates are independent.
    seed_x = tf.random.experimental.stateless_fold_in(seed, 1)
    centre_x = tf.random.stateless_uniform([], seed_x, 0, width, dtype=tf.int32)
    half = length // 2
    rows = tf.range(height)[:, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :]
    inside = (
        (rows >= centre_y - half)
        & (rows < centre_y + half)
        & (cols >= centre_x - half)
        & (cols < centre_x + half)
    )
    return tf.where(inside[:, :, tf.newaxis], tf.zeros_like(image), image)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The DARTS training augmentation of one learner.

    Attributes:
      random_crop: zero-pad by `crop_padding` and crop back to the input size at random.
      crop_padding: pixels of zero padding on each side for the random crop.
      flip: random horizontal flip.
      cutout_length: side of the cutout square; 0 turns cutout off.
    """

    random_crop: bool = True
    crop_padding: int = 4
    flip: bool = True
    cutout_length: int = 0

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding!r}")
        if self.cutout_length < 0:
            raise ValueError(f"cutout_length must be >= 0 (0 = off), got {self.cutout_length!r}")

    def __call__(
        self, image: tf.Tensor, seed: tf.Tensor, normalization: Normalization
    ) -> tf.Tensor:
        """Augments and normalizes one image [H, W, C] with pixel values in [0, 255].

        Args:
          image: one image, channels last, any numeric dtype, values in [0, 255].
          seed: a stateless seed, shape [2] (int32 or int64); the same seed gives the same result.
          normalization: applied after crop and flip and before cutout, as in DARTS.

        Returns:
          The augmented image, float32, same shape.
        """
        crop_seed, flip_seed, cutout_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=3)
        )
        image = tf.cast(image, tf.float32)
        if self.random_crop:
            image = pad_and_random_crop(image, self.crop_padding, crop_seed)
        if self.flip:
            image = random_flip(image, flip_seed)
        image = normalization.apply(image)
        return cutout(image, self.cutout_length, cutout_seed)
