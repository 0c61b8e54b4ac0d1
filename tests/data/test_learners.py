"""Learners and their pipelines: shapes, determinism, resumption, splits, settings checks, gin."""

from __future__ import annotations

import gin
import numpy as np
import pytest
import tensorflow as tf

from il_tf.data.learners import Learner, LearnerData, build_learner_data, check_unique_names
from il_tf.data.sources import DigitsSource, Source, TfdsSource

DIGITS = DigitsSource()


def take(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(dataset.take(count).as_numpy_iterator())


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)


@pytest.fixture(scope="module")
def digits16() -> LearnerData:
    learner = Learner("digits", DIGITS, image_size=16, batch_size=8, cutout_length=4)
    return build_learner_data(learner, seed=1)


def test_embedded_default_yields_configured_batches(digits16: LearnerData) -> None:
    images, labels = next(iter(digits16.train_dataset()))
    assert images.shape == (8, 16, 16, 3) and images.dtype == tf.float32
    assert labels.shape == (8,) and labels.dtype == tf.int32
    assert digits16.image_shape == (16, 16, 3)
    assert (digits16.num_train, digits16.num_val, digits16.num_test) == (719, 718, 360)
    assert digits16.steps_per_epoch == 719 // 8
    assert digits16.num_classes == 10 and digits16.class_names == tuple("0123456789")
    val_images, _ = next(iter(digits16.val_dataset()))
    assert val_images.shape == (8, 16, 16, 3)
    test_batches = take(digits16.test_dataset(), 100)
    assert sum(len(labels) for _, labels in test_batches) == 360  # remainder kept
    assert test_batches[-1][0].shape == (360 % 8 or 8, 16, 16, 3)


def test_default_learner_needs_only_a_name() -> None:
    data = build_learner_data(Learner("quick", batch_size=4), seed=0)
    assert data.image_shape == (8, 8, 3)  # the digits' own size
    assert isinstance(data.learner.source, DigitsSource)


def test_pipelines_are_deterministic_per_seed(digits16: LearnerData) -> None:
    rebuilt = build_learner_data(digits16.learner, seed=1)
    assert_same_batches(take(digits16.train_dataset(), 3), take(rebuilt.train_dataset(), 3))
    assert_same_batches(take(digits16.val_dataset(), 3), take(rebuilt.val_dataset(), 3))
    other = build_learner_data(digits16.learner, seed=2)
    first, second = take(digits16.train_dataset(), 1)[0], take(other.train_dataset(), 1)[0]
    assert not np.array_equal(first[0], second[0])
    assert not np.array_equal(digits16.source_indices("val"), other.source_indices("val"))


def test_start_batch_resumes_exactly_across_epochs() -> None:
    # 72 train examples, batch 8: 9 batches per epoch; batches 7..11 cross the epoch boundary.
    learner = Learner("pair", DIGITS, classes=["0", "1"], batch_size=8, cutout_length=4)
    data = build_learner_data(learner, seed=5)
    assert data.steps_per_epoch == data.num_train // 8
    full = take(data.train_dataset(), 12)
    assert_same_batches(full[7:], take(data.train_dataset(start_batch=7), 5))
    val = take(data.val_dataset(), 12)
    assert_same_batches(val[9:], take(data.val_dataset(start_batch=9), 3))


@pytest.mark.parametrize("workers, replicas", [(2, 2), (2, 4), (3, 3), (1, 2)])
def test_each_worker_reads_its_replicas_slices_of_the_global_batches(workers, replicas) -> None:
    # The worker pipelines of one global batch, concatenated in worker order, are that
    # global batch: the same examples, augmented the same way (cutout and crops too).
    learner = Learner("shard", DIGITS, image_size=8, batch_size=12, cutout_length=3)
    data = build_learner_data(learner, seed=4)
    local = replicas // workers
    for pipeline, start in ((data.train_dataset, 3), (data.val_dataset, 0)):
        whole = take(pipeline(start), 5)
        parts = [
            take(pipeline(start, tf.distribute.InputContext(workers, w, replicas)), 5 * local)
            for w in range(workers)
        ]
        for n, (images, labels) in enumerate(whole):
            slices = [part[n * local + j] for part in parts for j in range(local)]
            assert all(len(y) == 12 // replicas for _, y in slices)
            np.testing.assert_array_equal(np.concatenate([x for x, _ in slices]), images)
            np.testing.assert_array_equal(np.concatenate([y for _, y in slices]), labels)


@pytest.mark.parametrize("workers, replicas", [(2, 2), (2, 4), (1, 4)])
def test_worker_evaluation_gives_each_replica_its_slices_once(workers, replicas) -> None:
    # Every example once, and on the replica one process with as many replicas gives it
    # (replica r: the r-th of the global batch's equal slices; the last batch is partial).
    data = build_learner_data(Learner("parts", DIGITS, classes=[0, 1, 2], batch_size=8), seed=0)
    labels = np.concatenate([y for _, y in data.eval_dataset("val").as_numpy_iterator()])
    local, size = replicas // workers, 8 // replicas
    by_replica: dict[int, list] = {r: [] for r in range(replicas)}
    for w in range(workers):
        context = tf.distribute.InputContext(workers, w, replicas)
        for k, (_, y) in enumerate(data.eval_dataset("val", 8, context).as_numpy_iterator()):
            assert len(y) <= size
            by_replica[w * local + k % local].append(y)  # local replicas take turns
    expected = {r: [] for r in range(replicas)}
    for start in range(0, len(labels), 8):
        for r in range(replicas):
            part = labels[start + r * size : start + (r + 1) * size]
            if len(part):
                expected[r].append(part)
    for r in range(replicas):
        np.testing.assert_array_equal(np.concatenate(by_replica[r]), np.concatenate(expected[r]))
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 replicas"):
        data.eval_dataset("val", 6, tf.distribute.InputContext(2, 0, 4))
    with pytest.raises(ValueError, match="batch size 8 is not divisible by the 3 replicas"):
        data.train_dataset(0, tf.distribute.InputContext(3, 0, 3))


def test_each_epoch_is_a_permutation_of_the_split() -> None:
    plain = dict(random_crop=False, flip=False, cutout_length=0)
    base = Learner("perm", DIGITS, classes=[3, 8], **plain)
    count = build_learner_data(base, seed=0).num_train
    learner = Learner("perm", DIGITS, classes=[3, 8], batch_size=count, **plain)
    data = build_learner_data(learner, seed=0)
    epochs = take(data.train_dataset(), 2)
    ((ordered_images, ordered_labels),) = take(data.eval_dataset("train", batch_size=count), 1)

    def rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
        return sorted(
            image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True)
        )

    for images, labels in epochs:
        assert rows(images, labels) == rows(ordered_images, ordered_labels)
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # a new order every epoch


def test_val_and_train_are_disjoint_and_cover_the_train_split(digits16: LearnerData) -> None:
    train, val = digits16.source_indices("train"), digits16.source_indices("val")
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1437))
    # Not "the first half": the held-out part is spread over the split.
    assert val.min() < 100 and val.max() > 1337
    np.testing.assert_array_equal(digits16.source_indices("test"), np.arange(360))


def test_class_subset_is_remapped_in_the_given_order() -> None:
    learner = Learner("sub", DIGITS, classes=["7", 3], val_fraction=0.2, batch_size=16)
    data = build_learner_data(learner, seed=0)
    assert data.class_names == ("7", "3") and data.num_classes == 2
    for split in ("train", "val", "test"):
        labels = np.concatenate([y for _, y in data.eval_dataset(split).as_numpy_iterator()])
        source_split = "test" if split == "test" else "train"
        source_labels = DIGITS.labels(source_split)[data.source_indices(split)]
        assert set(source_labels) == {3, 7}
        np.testing.assert_array_equal(labels, np.where(source_labels == 7, 0, 1))
    stream_labels = np.concatenate([y for _, y in take(data.train_dataset(), 5)])
    assert set(stream_labels) == {0, 1}


def test_normalization_is_estimated_for_digits_and_grayscale_works() -> None:
    learner = Learner("gray", DIGITS, channels=1, val_fraction=0.0, batch_size=64)
    data = build_learner_data(learner, seed=0)
    assert len(data.normalization.mean) == 1 and data.image_shape == (8, 8, 1)
    images = np.concatenate([x for x, _ in data.eval_dataset("train").as_numpy_iterator()])
    assert abs(images.mean()) < 1e-3 and abs(images.std() - 1) < 1e-3
    assert build_learner_data(learner, seed=9).normalization == data.normalization


def test_training_augmentation_changes_images_but_not_evaluation() -> None:
    plain = Learner(
        "aug", DIGITS, classes=[0], val_fraction=0.0, batch_size=4, flip=False, random_crop=False
    )
    augmented = Learner(
        "aug", DIGITS, classes=[0], val_fraction=0.0, batch_size=4, crop_padding=2, cutout_length=4
    )
    plain_batch = take(build_learner_data(plain, seed=0).train_dataset(), 1)[0]
    augmented_data = build_learner_data(augmented, seed=0)
    augmented_batch = take(augmented_data.train_dataset(), 1)[0]
    np.testing.assert_array_equal(plain_batch[1], augmented_batch[1])  # same examples
    assert not np.array_equal(plain_batch[0], augmented_batch[0])
    evaluation = take(augmented_data.eval_dataset("train"), 1)[0][0]
    again = take(augmented_data.eval_dataset("train"), 1)[0][0]
    np.testing.assert_array_equal(evaluation, again)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(classes=["seven"]), "unknown class name 'seven'.*allowed: '0', '1'"),
        (dict(classes=[10]), "class index 10 out of range.*10 classes, indices 0..9"),
        (dict(classes=[-1]), "class index -1 out of range"),
        (dict(classes=[3, "3"]), "class '3' \\('3'\\) is listed twice"),
        (dict(classes=[1.5]), "class names \\(str\\) or indices \\(int\\), got 1.5"),
        (dict(classes=[]), "non-empty list.*got \\(\\)"),
        (dict(classes="3"), "non-empty list.*got '3'"),
        (dict(val_fraction=1.0), "val_fraction must be a number in \\[0, 1\\).*got 1.0"),
        (dict(val_fraction=-0.1), "val_fraction .*got -0.1"),
        (dict(val_fraction="0.5"), "val_fraction .*got '0.5'"),
        (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
        (dict(batch_size=2.5), "batch_size must be an int >= 1, got 2.5"),
        (dict(channels=2), "channels must be 1 or 3, got 2"),
        (dict(image_size=0), "image_size must be a positive int or a \\(height, width\\).*got 0"),
        (dict(image_size=(32,)), "image_size .*got \\(32,\\)"),
        (dict(crop_padding=-4), "crop_padding must be an int >= 0, got -4"),
        (dict(cutout_length=-1), "cutout_length must be an int >= 0 \\(0 = off\\), got -1"),
        (dict(source="cifar10"), "source must be a Source.*got 'cifar10'"),
    ],
)
def test_bad_settings_name_the_value(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Learner("bad", **{"source": DIGITS, **settings})


def test_bad_name_seed_and_arguments() -> None:
    with pytest.raises(ValueError, match="Learner.name must be a non-empty string, got ''"):
        Learner("", DIGITS)
    learner = Learner("ok", DIGITS, classes=[0], val_fraction=0.1, batch_size=4)
    with pytest.raises(ValueError, match="seed must be an int in \\[0, 2\\*\\*63\\), got -1"):
        build_learner_data(learner, seed=-1)
    data = build_learner_data(learner, seed=0)
    with pytest.raises(ValueError, match="start_batch must be an int >= 0, got -3"):
        data.train_dataset(start_batch=-3)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.eval_dataset("dev")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        data.eval_dataset("val", batch_size=0)
    tiny = Learner("tiny", DIGITS, classes=[0], val_fraction=0.001)
    with pytest.raises(ValueError, match="val_fraction 0.001 of 142 train examples leaves no"):
        build_learner_data(tiny, seed=0)
    no_val = build_learner_data(Learner("noval", DIGITS, val_fraction=0.0), seed=0)
    with pytest.raises(ValueError, match="no validation split"):
        no_val.val_dataset()
    with pytest.raises(ValueError, match="learner name 'a' is used twice"):
        check_unique_names([Learner("a", DIGITS), Learner("b", DIGITS), Learner("a", DIGITS)])


class _NoClassesSource(DigitsSource):
    def labels(self, split: str) -> np.ndarray:
        return np.full(len(super().labels(split)), 11, np.int64)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(k) for k in range(12))


def test_class_without_train_examples() -> None:
    assert isinstance(_NoClassesSource(), Source)
    with pytest.raises(ValueError, match="train split .* has no examples of classes \\['0'\\]"):
        build_learner_data(Learner("empty", _NoClassesSource(), classes=[0]), seed=0)


@gin.configurable
def _search_learners(learners=()):
    return list(learners)


def test_gin_configures_scoped_learners() -> None:
    config = """
        cifar/TfdsSource.name = 'cifar10'
        cifar/TfdsSource.data_dir = '/nonexistent'
        learner_a/Learner.name = 'a'
        learner_a/Learner.source = @cifar/TfdsSource()
        learner_a/Learner.image_size = 24
        learner_b/Learner.name = 'b'
        learner_b/Learner.source = @DigitsSource()
        learner_b/Learner.classes = ['1', '7']
        learner_b/Learner.image_size = (12, 10)
        learner_b/Learner.batch_size = 4
        _search_learners.learners = [@learner_a/Learner(), @learner_b/Learner()]
    """
    try:
        gin.parse_config(config)
        first, second = _search_learners()
    finally:
        gin.clear_config()
    assert isinstance(first.source, TfdsSource) and first.source.name == "cifar10"
    assert first.image_size == (24, 24) and first.classes is None
    assert second.classes == ("1", "7") and second.class_indices == (1, 7)
    images, labels = next(iter(build_learner_data(second, seed=0).train_dataset()))
    assert images.shape == (4, 12, 10, 3)
