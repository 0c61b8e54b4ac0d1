"""Data sources: image folders (real CIFAR-10 files), tfds (mocked and tiny prepared data), digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from il_tf.data.errors import DataError
from il_tf.data.learners import Learner, build_learner_data
from il_tf.data.sources import DigitsSource, ImageFolderSource, TfdsSource

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# --------------------------------------------------------------------------------------------
# Image folders


def test_folder_reads_real_cifar10_with_sorted_class_labels(cifar10_folder: Path) -> None:
    source = ImageFolderSource(cifar10_folder)
    assert source.class_names == CIFAR10_CLASSES
    assert source.num_examples("train") == 50_000
    assert source.num_examples("test") == 10_000
    labels = source.labels("train")
    # Sorted by (class, file): 5,000 of each class in label order.
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 5000))
    cat = 3 * 5000 + 17
    assert Path(source.file_path("train", cat)) == cifar10_folder / "train" / "cat" / "0017.jpg"
    image, label = source.example("train", cat)
    assert (image.shape, image.dtype, label) == ((32, 32, 3), np.uint8, 3)


def test_folder_class_subset_pipeline_gives_the_file_pixels(small_cifar_folder: Path) -> None:
    source = ImageFolderSource(small_cifar_folder)
    learner = Learner("pets", source, classes=["cat", "dog"], val_fraction=0.25, batch_size=4)
    data = build_learner_data(learner, seed=0)
    assert data.class_names == ("cat", "dog")
    assert (data.num_classes, data.image_shape) == (2, (32, 32, 3))
    assert (data.num_train, data.num_val, data.num_test) == (18, 6, 8)
    images, labels = (
        np.concatenate(parts) for parts in zip(*data.eval_dataset("train"), strict=True)
    )
    ids = data.source_indices("train")
    # The eval order is source order: cats (source label 3 -> 0) before dogs (5 -> 1).
    np.testing.assert_array_equal(labels, np.where(source.labels("train")[ids] == 3, 0, 1))
    assert labels[0] == 0 and labels[-1] == 1
    mean = np.array(data.normalization.mean) * 255
    std = np.array(data.normalization.std) * 255
    for row in (0, len(ids) - 1):
        expected, _ = source.example("train", int(ids[row]))
        np.testing.assert_allclose(images[row] * std + mean, expected, atol=1e-3)
    test_labels = np.concatenate([y for _, y in data.test_dataset()])
    np.testing.assert_array_equal(test_labels, [0] * 4 + [1] * 4)


def test_folder_cached_and_lazy_pipelines_agree(small_cifar_folder: Path) -> None:
    def batches(cache_max_bytes: int) -> list[np.ndarray]:
        source = ImageFolderSource(small_cifar_folder, cache_max_bytes=cache_max_bytes)
        learner = Learner("birds", source, classes=["bird", "ship"], batch_size=6, cutout_length=8)
        data = build_learner_data(learner, seed=3)
        stream = data.train_dataset(start_batch=2).take(3)
        return [x for batch in stream.as_numpy_iterator() for x in batch]

    for cached, lazy in zip(batches(2**30), batches(0), strict=True):
        np.testing.assert_array_equal(cached, lazy)


def test_folder_images_resized_and_made_grayscale(small_cifar_folder: Path) -> None:
    source = ImageFolderSource(small_cifar_folder, cache_max_bytes=0)
    learner = Learner("small", source, classes=[0, 9], image_size=(20, 12), channels=1)
    data = build_learner_data(learner, seed=0)
    images, labels = next(iter(data.eval_dataset("val", batch_size=5)))
    assert images.shape == (5, 20, 12, 1) and labels.dtype == tf.int32


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A valid 2-class folder of PNGs (written here, nothing copied from the data folder)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("a", "b"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
                (folder / f"{i:02d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return tmp_path


def test_folder_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{missing}.*does not exist.*<class>"):
        _ = ImageFolderSource(missing).class_names


def test_folder_missing_split_names_the_folder(tiny_folder: Path) -> None:
    source = ImageFolderSource(tiny_folder, test_split="validation")
    with pytest.raises(DataError, match=f"test split folder {tiny_folder / 'validation'}"):
        source.num_examples("test")


def test_folder_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders in .*train"):
        _ = ImageFolderSource(tmp_path).class_names


def test_folder_empty_class_folder_is_named(tiny_folder: Path) -> None:
    (tiny_folder / "train" / "c").mkdir()
    (tiny_folder / "train" / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=f"class folder {tiny_folder / 'train' / 'c'} is empty"):
        ImageFolderSource(tiny_folder).labels("train")


def test_folder_test_class_unknown_to_train_is_named(tiny_folder: Path) -> None:
    extra = tiny_folder / "test" / "zebra"
    extra.mkdir()
    (extra / "0.png").write_bytes((tiny_folder / "test" / "a" / "00.png").read_bytes())
    with pytest.raises(DataError, match="zebra is not a class of the train split"):
        ImageFolderSource(tiny_folder).labels("test")


def test_folder_unreadable_image_is_named(tiny_folder: Path) -> None:
    bad = tiny_folder / "train" / "b" / "03.png"
    bad.write_text("this is not a PNG")
    source = ImageFolderSource(tiny_folder)
    index = int(np.flatnonzero(source.labels("train") == 1)[3])
    with pytest.raises(DataError, match=f"unreadable image file {bad}"):
        source.example("train", index)
    # Building a learner decodes (to cache, or for the normalization sample): it names the file.
    for cache_max_bytes in (2**30, 0):
        source = ImageFolderSource(tiny_folder, cache_max_bytes=cache_max_bytes)
        with pytest.raises(DataError, match=f"unreadable image file {bad}"):
            build_learner_data(Learner("bad", source, val_fraction=0.0, batch_size=2), seed=0)
    # A pipeline that meets the file later fails with a TF error that names it too.
    read = ImageFolderSource(tiny_folder).reader("train").read
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(bad)):
        read(tf.constant(index, tf.int64))


# --------------------------------------------------------------------------------------------
# Digits


def test_digits_source_is_a_fixed_stratified_split() -> None:
    source = DigitsSource()
    assert source.class_names == tuple("0123456789")
    assert (source.num_examples("train"), source.num_examples("test")) == (1437, 360)
    counts = np.bincount(source.labels("test"), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    image, label = source.example("train", 5)
    assert (image.shape, image.dtype) == ((8, 8, 1), np.uint8) and image.max() <= 255
    again, _ = DigitsSource().example("train", 5)
    np.testing.assert_array_equal(image, again)
    with pytest.raises(IndexError, match="index 1437 out of range"):
        source.example("train", 1437)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        source.labels("validation")


# --------------------------------------------------------------------------------------------
# tfds


def test_tfds_cifar10_mock_in_memory(tmp_path: Path) -> None:
    with tfds.testing.mock_data(num_examples=24):
        source = TfdsSource("cifar10", data_dir=tmp_path, download=True)
        assert len(source.class_names) == 10
        assert source.num_examples("train") == 24
        image, label = source.example("test", 3)
        assert image.shape == (32, 32, 3) and 0 <= label < 10
        assert source.reader("train").in_memory
        learner = Learner("c10", source, classes=[3, 5, 7], batch_size=4)
        data = build_learner_data(learner, seed=0)
        assert data.normalization.mean == (0.4914, 0.4822, 0.4465)
        images, labels = next(iter(data.train_dataset()))
        assert images.shape == (4, 32, 32, 3) and set(labels.numpy()) <= {0, 1, 2}


def test_tfds_cifar100_mock_random_access(tmp_path: Path) -> None:
    with tfds.testing.mock_data(num_examples=16):
        source = TfdsSource(
            "cifar100", data_dir=tmp_path, download=True, in_memory=False, max_in_memory_bytes=0
        )
        assert len(source.class_names) == 100
        reader = source.reader("train")
        assert not reader.in_memory and reader.num_examples == 16
        data = build_learner_data(Learner("c100", source, image_size=16, batch_size=4), seed=0)
        assert data.normalization.mean == (0.5071, 0.4865, 0.4409)
        images, labels = next(iter(data.train_dataset()))
        assert images.shape == (4, 16, 16, 3) and labels.shape == (4,)


def test_tfds_missing_data_without_download_says_how_to_get_it(tmp_path: Path) -> None:
    source = TfdsSource("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError) as caught:
        source.num_examples("train")
    message = str(caught.value)
    assert "'cifar10'" in message and str(tmp_path) in message
    assert "TfdsSource.download = True" in message and "TfdsSource.data_dir" in message


def test_tfds_unknown_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'no_such_data_set'.*does not know"):
        _ = TfdsSource("no_such_data_set", data_dir=tmp_path).class_names


def _tiny_features(image_shape: tuple[int | None, int | None, int]) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=image_shape),
            "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
        }
    )


# tfds 4.9.10 imports `importlib_resources` (only installed on Python < 3.9) to find the code of
# a builder defined in a package module; a one-part module name takes its other code path.
_BUILDER_MODULE = "il_tf_test_tfds_builders"


class IlTfTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tiny tfds data set prepared in the test: 3 classes, 5x6 RGB images."""

    __module__ = _BUILDER_MODULE

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=_tiny_features((5, 6, 3)))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(18, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            yield i, {"image": rng.integers(0, 256, (5, 6, 3), np.uint8), "label": i % 3}


class IlTfTinyVariedImages(tfds.core.GeneratorBasedBuilder):
    """Like IlTfTinyImages, but the images differ in height (4, 5 or 6)."""

    __module__ = _BUILDER_MODULE

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=_tiny_features((None, None, 3)))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(18, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            image = rng.integers(0, 256, (4 + i % 3, 6, 3), np.uint8)
            yield i, {"image": image, "label": i % 3}


def _prepare(name: str, root: Path, file_format: str | None) -> Path:
    kwargs = {"file_format": file_format} if file_format else {}
    tfds.builder(name, data_dir=root, **kwargs).download_and_prepare()
    return root


@pytest.fixture(scope="module")
def array_record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare("il_tf_tiny_images", tmp_path_factory.mktemp("ar"), "array_record")


@pytest.fixture(scope="module")
def tfrecord_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare("il_tf_tiny_images", tmp_path_factory.mktemp("tfr"), None)


def _eval_batches(source: TfdsSource) -> list[np.ndarray]:
    learner = Learner("tiny", source, val_fraction=0.0, batch_size=5, image_size=(10, 12))
    data = build_learner_data(learner, seed=0)
    return [x for batch in data.eval_dataset("train").as_numpy_iterator() for x in batch]


def test_tfds_array_record_random_access_matches_in_memory(array_record_dir: Path) -> None:
    random_access = TfdsSource("il_tf_tiny_images", data_dir=array_record_dir, in_memory=False)
    in_memory = TfdsSource("il_tf_tiny_images", data_dir=array_record_dir, in_memory=True)
    assert not random_access.reader("train").in_memory and in_memory.reader("train").in_memory
    assert random_access.class_names == ("red", "green", "blue")
    np.testing.assert_array_equal(random_access.labels("train"), in_memory.labels("train"))
    image, label = random_access.example("test", 4)
    np.testing.assert_array_equal(image, in_memory.example("test", 4)[0])
    # Not cached (cap 0): every read goes through tfds.data_source.
    uncached = TfdsSource(
        "il_tf_tiny_images", data_dir=array_record_dir, in_memory=False, max_in_memory_bytes=0
    )
    for a, b, c in zip(
        _eval_batches(uncached), _eval_batches(in_memory), _eval_batches(random_access), strict=True
    ):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_tfds_too_large_tfrecord_data_says_prepare_array_record(tfrecord_dir: Path) -> None:
    source = TfdsSource("il_tf_tiny_images", data_dir=tfrecord_dir, max_in_memory_bytes=100)
    with pytest.raises(DataError) as caught:
        source.reader("train")
    message = str(caught.value)
    assert "file_format='array_record'" in message and "max_in_memory_bytes = 100" in message
    # Under the cap the same files load into memory.
    fits = TfdsSource("il_tf_tiny_images", data_dir=tfrecord_dir)
    assert fits.reader("train").in_memory and fits.num_examples("train") == 18


def test_tfds_varied_image_sizes_are_kept_encoded_and_resized(tmp_path: Path) -> None:
    _prepare("il_tf_tiny_varied_images", tmp_path, None)
    source = TfdsSource("il_tf_tiny_varied_images", data_dir=tmp_path)
    assert {source.example("train", i)[0].shape[0] for i in range(6)} == {4, 5, 6}
    batches = _eval_batches(source)
    assert batches[0].shape == (5, 10, 12, 3)


def test_tfds_split_slices_and_sums(tfrecord_dir: Path) -> None:
    source = TfdsSource(
        "il_tf_tiny_images",
        data_dir=tfrecord_dir,
        train_split="train[:50%]",
        test_split="test+train[-2:]",
    )
    assert (source.num_examples("train"), source.num_examples("test")) == (9, 8)


def test_tfds_bad_feature_and_split_names(tfrecord_dir: Path) -> None:
    with pytest.raises(DataError, match="Image feature 'img'.*image \\(Image\\)"):
        _ = TfdsSource("il_tf_tiny_images", data_dir=tfrecord_dir, image_key="img").class_names
    with pytest.raises(DataError, match="no split 'validation'.*TfdsSource.test_split"):
        _ = TfdsSource(
            "il_tf_tiny_images", data_dir=tfrecord_dir, test_split="validation"
        ).class_names
