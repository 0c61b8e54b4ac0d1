"""DARTS augmentation: stateless, shape-preserving; crop, flip and cutout do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.data.augment import (
    Augmentation,
    Normalization,
    compute_normalization,
    cutout,
    pad_and_random_crop,
    random_flip,
    standard_normalization,
)

IDENTITY = Normalization(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
IMAGE = tf.constant(np.random.default_rng(0).integers(1, 256, (12, 10, 3)), tf.float32)


def seeds(count: int) -> list[tf.Tensor]:
    return [tf.constant([7, k], tf.int64) for k in range(count)]


def test_augmentation_keeps_shape_and_is_a_function_of_the_seed() -> None:
    augment = Augmentation(crop_padding=4, cutout_length=4)
    out = augment(tf.cast(IMAGE, tf.uint8), seeds(1)[0], IDENTITY)
    assert out.shape == IMAGE.shape and out.dtype == tf.float32
    again = augment(tf.cast(IMAGE, tf.uint8), seeds(1)[0], IDENTITY)
    np.testing.assert_array_equal(out, again)
    others = [augment(tf.cast(IMAGE, tf.uint8), seed, IDENTITY) for seed in seeds(6)[1:]]
    assert any(not np.array_equal(out, other) for other in others)


def test_flip_mirrors_for_some_seeds_and_not_others() -> None:
    outcomes = set()
    for seed in seeds(16):
        out = random_flip(IMAGE, seed).numpy()
        if np.array_equal(out, IMAGE.numpy()):
            outcomes.add("kept")
        else:
            np.testing.assert_array_equal(out, IMAGE.numpy()[:, ::-1])
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}


def test_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    padded = np.pad(IMAGE.numpy(), [(4, 4), (4, 4), (0, 0)])
    offsets = set()
    for seed in seeds(12):
        out = pad_and_random_crop(IMAGE, 4, seed).numpy()
        assert out.shape == IMAGE.shape
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(out, padded[dy : dy + 12, dx : dx + 10])
        ]
        assert matches, "the crop is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1 and offsets != {(4, 4)}
    np.testing.assert_array_equal(pad_and_random_crop(IMAGE, 0, seeds(1)[0]), IMAGE)


@pytest.mark.parametrize("length", [4, 6])
def test_cutout_zeroes_one_square_clipped_at_the_border(length: int) -> None:
    ones = tf.ones([16, 16, 3])
    for seed in seeds(20):
        out = cutout(ones, length, seed).numpy()
        zero = out[..., 0] == 0
        assert np.array_equal(zero, out[..., 1] == 0)  # all channels
        rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
        # A full rectangle of zeros, at most length x length and at least half of it per side.
        assert zero.sum() == len(rows) * len(cols)
        assert length // 2 <= len(rows) <= length and length // 2 <= len(cols) <= length
        assert np.all(out[~zero] == 1)
    np.testing.assert_array_equal(cutout(ones, 0, seeds(1)[0]), ones)


def test_cutout_comes_after_normalization() -> None:
    image = tf.fill([8, 8, 3], 100.0)
    normalization = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = Augmentation(random_crop=False, flip=False, cutout_length=4)(
        image, seeds(1)[0], normalization
    ).numpy()
    normalized = (100 / 255 - 0.5) / 0.25
    values = np.unique(out)
    assert len(values) == 2 and values[1] == 0.0
    np.testing.assert_allclose(values[0], normalized, rtol=1e-6)


def test_standard_normalization_names() -> None:
    assert standard_normalization("cifar10").mean == (0.4914, 0.4822, 0.4465)
    assert standard_normalization("cifar100").std == (0.2673, 0.2564, 0.2762)
    imagenet = standard_normalization("imagenet2012")
    assert imagenet.mean == (0.485, 0.456, 0.406)
    assert standard_normalization("imagenet_resized/32x32") == imagenet
    assert standard_normalization("cifar10_corrupted/brightness_1") == standard_normalization(
        "cifar10"
    )
    assert standard_normalization("mnist") is None


def test_compute_normalization_in_unit_range() -> None:
    batch = np.zeros((2, 2, 2, 3), np.uint8)
    batch[0] = 255
    batch[..., 2] = 51
    result = compute_normalization([batch[:1], batch[1:]])
    np.testing.assert_allclose(result.mean, (0.5, 0.5, 0.2))
    np.testing.assert_allclose(result.std, (0.5, 0.5, 1 / 255))  # constant channel: floor
    with pytest.raises(ValueError, match="no images"):
        compute_normalization([])


def test_augmentation_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="crop_padding must be >= 0, got -1"):
        Augmentation(crop_padding=-1)
    with pytest.raises(ValueError, match="cutout_length must be >= 0 .*got -2"):
        Augmentation(cutout_length=-2)
