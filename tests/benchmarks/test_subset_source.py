"""benchmarks/subset_source.py: a seeded fraction of each class's training images."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.subset_source import ClassFractionSource
from il_tf.data.learners import Learner, build_learner_data
from il_tf.data.sources import DigitsSource


def test_keeps_a_seeded_fraction_of_each_class():
    base = DigitsSource()
    src = ClassFractionSource(base, 0.1, seed=3)
    labels = base.labels("train")
    kept = src.kept()
    assert list(kept) == sorted(set(kept.tolist()))
    for c in range(10):
        assert (labels[kept] == c).sum() == max(1, round(0.1 * (labels == c).sum()))
    assert np.array_equal(src.labels("train"), labels[kept])
    assert src.num_examples("train") == len(kept)
    # The same seed keeps the same images, another seed others; the test split is whole.
    assert np.array_equal(ClassFractionSource(base, 0.1, seed=3).kept(), kept)
    assert not np.array_equal(ClassFractionSource(base, 0.1, seed=4).kept(), kept)
    assert src.num_examples("test") == base.num_examples("test")
    assert np.array_equal(src.labels("test"), base.labels("test"))
    assert "0.1 of each class's train images (seed 3)" in src.description
    # Graph-side and Python-side reads give the kept example.
    image, label = src.reader("train").read(tf.constant(5, tf.int64))
    want_image, want_label = base.example("train", int(kept[5]))
    assert np.array_equal(image.numpy(), want_image) and int(label) == want_label
    assert np.array_equal(src.example("train", 5)[0], want_image)
    with pytest.raises(IndexError, match="out of range"):
        src.example("train", len(kept))


def test_a_learner_sees_only_the_kept_images_of_its_classes():
    src = ClassFractionSource(DigitsSource(), 0.5, seed=0)
    data = build_learner_data(Learner("a", src, classes=[0, 1], val_fraction=0.5), seed=0)
    labels = src.labels("train")
    assert data.num_train + data.num_val == int(np.isin(labels, [0, 1]).sum())


def test_rejects_a_bad_fraction():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got"):
            ClassFractionSource(DigitsSource(), bad, seed=0)
