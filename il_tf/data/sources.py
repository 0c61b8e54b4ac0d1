"""Data sources: where a learner's images and labels come from.

A source has two splits, "train" and "test" (each source maps them to its own split names),
class names, and random access to example `i` of a split, both from Python (`example`) and
inside a tf.data graph (`reader(split).read`). Random access is what makes the learners'
pipelines resumable: a pipeline maps a global example position to an index and reads it.

Three sources:
  * `TfdsSource`: any tfds image-classification data set by name.
  * `ImageFolderSource`: `ROOT/<split>/<class>/*.{jpg,jpeg,png}`.
  * `DigitsSource`: scikit-learn's 8x8 handwritten digits, embedded, no download.

Missing or unreadable data raises one `DataError` that says what is missing and how to get it.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from il_tf.data.errors import DataError

SPLITS = ("train", "test")
GiB = 2**30
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Leading bytes of the image files an image folder may hold (JPEG, PNG).
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG")
# Examples per chunk when a split is read into memory.
_READ_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class SplitReader:
    """Graph-side random access to one split of a source.

    Attributes:
      num_examples: examples in the split; valid indices are 0 .. num_examples - 1.
      read: maps an int64 scalar index tensor to (uint8 image [H, W, C], int64 label). It is
        traceable, so it runs inside `tf.data.Dataset.map`.
      image_shape: the static (H, W, C) of what `read` returns; H and W are None when the images
        differ in size or are only known after decoding.
      in_memory: True when `read` gathers decoded images from memory (nothing left to decode).
      cache_max_bytes: for splits that are not in memory, how many bytes of decoded images a
        pipeline may keep in memory instead of decoding again every epoch; 0 = never.
    """

    num_examples: int
    read: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    image_shape: tuple[int | None, int | None, int]
    in_memory: bool
    cache_max_bytes: int = 0


class Source(abc.ABC):
    """A labelled image data set with a "train" and a "test" split and random access."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """What and where the data is, for messages (e.g. "tfds data set 'cifar10'")."""

    @property
    @abc.abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Class names; label k is `class_names[k]`."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def normalization_name(self) -> str | None:
        """A data set name with standard normalization constants (see `augment`), or None."""
        return None

    def num_examples(self, split: str) -> int:
        """Number of examples in `split` ("train" or "test")."""
        return self.reader(split).num_examples

    @abc.abstractmethod
    def labels(self, split: str) -> np.ndarray:
        """All labels of `split` in index order, int64 [num_examples]."""

    @abc.abstractmethod
    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """Example `index` of `split`: (uint8 image [H, W, C], label)."""

    @abc.abstractmethod
    def reader(self, split: str) -> SplitReader:
        """Graph-side random access to `split`."""

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.description}: unknown split {split!r}; use one of {SPLITS}")

    def _check_index(self, split: str, index: int) -> int:
        count = self.num_examples(split)
        if not 0 <= index < count:
            raise IndexError(
                f"{self.description}: index {index} out of range for the {split} split "
                f"of {count} examples"
            )
        return int(index)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


# --------------------------------------------------------------------------------------------
# Decoding helpers


def _decode_image(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Decodes one JPEG/PNG/GIF/BMP string tensor to uint8 [H, W, channels]."""
    return tf.io.decode_image(encoded, channels=channels, expand_animations=False)


def _decode_all(encoded: Sequence[bytes], channels: int) -> tf.Tensor:
    """Decodes equally sized encoded images to one uint8 tensor [N, H, W, channels]."""
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), tf.string))
        .map(
            lambda data: _decode_image(data, channels),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(_READ_CHUNK)
    )
    return tf.concat(list(dataset), axis=0)


class _MemorySplit:
    """One split held in memory, as decoded uint8 images [N, H, W, C] or as encoded bytes.

    Decoded images are kept as one CPU tensor (a single copy: pipelines gather from it and
    `example` slices it). Encoded bytes are for images that differ in size: they are decoded
    per read.
    """

    def __init__(
        self,
        labels: np.ndarray,
        *,
        images: np.ndarray | tf.Tensor | None = None,
        encoded: np.ndarray | None = None,
        channels: int = 3,
        cache_max_bytes: int = 0,
    ) -> None:
        self.labels = np.asarray(labels, np.int64)
        with tf.device("/cpu:0"):
            self._labels = tf.constant(self.labels, tf.int64)
            self.images = None if images is None else tf.convert_to_tensor(images, tf.uint8)
            self.encoded = None if encoded is None else tf.constant(encoded, tf.string)
        self.channels = channels if images is None else int(self.images.shape[-1])
        self._cache_max_bytes = cache_max_bytes
        self._reader: SplitReader | None = None

    def example(self, index: int) -> tuple[np.ndarray, int]:
        if self.images is not None:
            return self.images[index].numpy(), int(self.labels[index])
        image = _decode_image(self.encoded[index], self.channels).numpy()
        return image, int(self.labels[index])

    def reader(self) -> SplitReader:
        if self._reader is None:
            images, encoded, labels = self.images, self.encoded, self._labels
            channels = self.channels
            if images is not None:

                def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                    return tf.gather(images, index), tf.gather(labels, index)

                shape = tuple(int(d) for d in images.shape[1:])
                self._reader = SplitReader(len(self.labels), read, shape, in_memory=True)
            else:

                def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                    image = _decode_image(tf.gather(encoded, index), channels)
                    return image, tf.gather(labels, index)

                self._reader = SplitReader(
                    len(self.labels),
                    read,
                    (None, None, channels),
                    in_memory=False,
                    cache_max_bytes=self._cache_max_bytes,
                )
        return self._reader


# --------------------------------------------------------------------------------------------
# tfds


class _DataSourceSplit:
    """One split read by random access from tfds ArrayRecord files (`tfds.data_source`).

    Records are fetched in Python (tfds gives no graph op for ArrayRecord) but images stay
    encoded until the graph decodes them, so the Python part is only the record read.
    """

    def __init__(
        self,
        data_source: Sequence[Any],
        image_key: str,
        label_key: str,
        image_shape: tuple[int | None, int | None, int],
        cache_max_bytes: int,
        description: str,
    ) -> None:
        self.data_source = data_source
        self.image_key = image_key
        self.label_key = label_key
        self.image_shape = image_shape
        self.cache_max_bytes = cache_max_bytes
        self.description = description
        self._labels: np.ndarray | None = None
        self._reader: SplitReader | None = None

    def __len__(self) -> int:
        return len(self.data_source)

    def labels(self) -> np.ndarray:
        if self._labels is None:
            count = len(self.data_source)
            logging.info("%s: reading the labels of %d records", self.description, count)
            labels = np.empty(count, np.int64)
            for start in range(0, count, _READ_CHUNK):
                indices = list(range(start, min(start + _READ_CHUNK, count)))
                for i, record in zip(indices, _get_records(self.data_source, indices), strict=True):
                    labels[i] = record[self.label_key]
            self._labels = labels
        return self._labels

    def example(self, index: int) -> tuple[np.ndarray, int]:
        record = self.data_source[index]
        image = _decode_image(tf.constant(record[self.image_key]), self.image_shape[2])
        return image.numpy(), int(record[self.label_key])

    def reader(self) -> SplitReader:
        if self._reader is not None:
            return self._reader
        data_source, image_key, label_key = self.data_source, self.image_key, self.label_key
        image_shape = self.image_shape

        def fetch(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            record = data_source[int(index)]
            # An object array keeps the bytes intact (a fixed-width bytes dtype would strip
            # trailing NULs).
            return np.array(record[image_key], dtype=object), np.int64(record[label_key])

        def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            encoded, label = tf.numpy_function(
                fetch, [index], [tf.string, tf.int64], stateful=False
            )
            image = _decode_image(tf.reshape(encoded, []), image_shape[2])
            image.set_shape(image_shape)
            return image, tf.reshape(label, [])

        self._reader = SplitReader(
            len(data_source),
            read,
            image_shape,
            in_memory=False,
            cache_max_bytes=self.cache_max_bytes,
        )
        return self._reader


def _get_records(data_source: Sequence[Any], indices: list[int]) -> list[Any]:
    """Several records at once when the data source can (ArrayRecord reads them in parallel)."""
    get_many = getattr(data_source, "__getitems__", None)
    if get_many is not None:
        return list(get_many(indices))
    return [data_source[i] for i in indices]


@gin.configurable
class TfdsSource(Source):
    """Any tfds image-classification data set (cifar10, cifar100, imagenet_resized/32x32, ...).

    Data that fits in memory (estimated decoded size <= `max_in_memory_bytes`) is read once and
    kept as a uint8 array (or as encoded bytes when the images differ in size). Larger data
    (imagenet2012) is read by random access from ArrayRecord files through `tfds.data_source`;
    data prepared in tfds's default TFRecord format has no random access, and then the source
    stops with a message saying how to prepare it with `file_format='array_record'`.

    Args:
      name: tfds name, with config if any ("imagenet_resized/32x32").
      data_dir: folder holding prepared tfds data; None = tfds's default (~/tensorflow_datasets).
      download: download and prepare the data when it is not in `data_dir` (needs internet;
        data sets with a manual download, like imagenet2012, need the files in
        `<data_dir>/downloads/manual`). Under `tfds.testing.mock_data` set it to True: mocked
        preparation is a no-op, and without it the unprepared data set is an error.
      train_split, test_split: tfds split names (slices like "train[:10%]" work) used as this
        source's "train" and "test" splits; imagenet2012 has "validation" as its test split.
      image_key, label_key: the image (`tfds.features.Image`) and label (`ClassLabel`) features.
      in_memory: force reading into memory (True) or random access (False); None = decide by
        size.
      max_in_memory_bytes: the size cap for that decision, and how many bytes of decoded
        images a pipeline may cache from a random-access split.
      file_format: file format to prepare in when `download` prepares the data; None = tfds's
        default (TFRecord). "array_record" allows random access (needed above the cap).
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike[str] | None = None,
        download: bool = False,
        train_split: str = "train",
        test_split: str = "test",
        image_key: str = "image",
        label_key: str = "label",
        *,
        in_memory: bool | None = None,
        max_in_memory_bytes: int = 4 * GiB,
        file_format: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"TfdsSource needs a tfds data set name, got {name!r}")
        if max_in_memory_bytes < 0:
            raise ValueError(f"max_in_memory_bytes must be >= 0, got {max_in_memory_bytes!r}")
        self.name = name
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.download = bool(download)
        self.split_names = {"train": train_split, "test": test_split}
        self.image_key = image_key
        self.label_key = label_key
        self.in_memory = in_memory
        self.max_in_memory_bytes = int(max_in_memory_bytes)
        self.file_format = file_format
        self._builder_cache: Any = None
        self._splits: dict[str, _MemorySplit | _DataSourceSplit] = {}

    @property
    def description(self) -> str:
        where = self.data_dir or "the default tfds data_dir"
        return f"tfds data set {self.name!r} (data_dir: {where})"

    @property
    def normalization_name(self) -> str | None:
        return self.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self._builder().info.features[self.label_key].names)

    def labels(self, split: str) -> np.ndarray:
        data = self._split(split)
        return data.labels if isinstance(data, _MemorySplit) else data.labels()

    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        index = self._check_index(split, index)
        return self._split(split).example(index)

    def reader(self, split: str) -> SplitReader:
        return self._split(split).reader()

    def num_examples(self, split: str) -> int:
        data = self._split(split)
        return len(data.labels) if isinstance(data, _MemorySplit) else len(data)

    # -- internals ----------------------------------------------------------------------------

    def _builder(self) -> Any:
        """The tfds builder, prepared (downloaded if allowed); checks the features."""
        if self._builder_cache is not None:
            return self._builder_cache
        import tensorflow_datasets as tfds  # heavy: only tfds users pay for it

        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            first_line = str(error).splitlines()[0]
            raise DataError(
                f"{self.description}: tensorflow_datasets {tfds.__version__} does not know this "
                f"data set ({first_line}). Check the name (with its config, e.g. "
                "'imagenet_resized/32x32')."
            ) from error
        if not builder.is_prepared():
            if not self.download:
                raise DataError(
                    f"{self.description} is not prepared: nothing at {builder.data_path}. Either "
                    "let il_tf download and prepare it (gin: `TfdsSource.download = True`; needs "
                    "internet, and data sets with a manual download such as imagenet2012 need "
                    "their files in <data_dir>/downloads/manual), or point `TfdsSource.data_dir` "
                    f"at a folder holding the prepared data (`tfds build {self.name} "
                    "--data_dir=DIR` prepares it)."
                )
            builder = self._download_and_prepare(tfds)
        self._check_features(builder)
        self._builder_cache = builder
        return builder

    def _download_and_prepare(self, tfds: Any) -> Any:
        kwargs = {"file_format": self.file_format} if self.file_format else {}
        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir, **kwargs)
            logging.info("%s: downloading and preparing in %s", self.description, builder.data_dir)
            builder.download_and_prepare()
        except Exception as error:  # tfds raises many kinds (network, manual download, disk)
            raise DataError(
                f"{self.description}: download and preparation failed: "
                f"{type(error).__name__}: {error}. Without internet, prepare the data elsewhere "
                f"(`tfds build {self.name} --data_dir=DIR`) and set `TfdsSource.data_dir`."
            ) from error
        return builder

    def _check_features(self, builder: Any) -> None:
        import tensorflow_datasets as tfds

        features = builder.info.features
        for key, kind in (
            (self.image_key, tfds.features.Image),
            (self.label_key, tfds.features.ClassLabel),
        ):
            if key not in features or not isinstance(features[key], kind):
                found = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
                raise DataError(
                    f"{self.description}: needs a {kind.__name__} feature {key!r}; the data set "
                    f"has {found}. Set TfdsSource.image_key / TfdsSource.label_key."
                )
        known = list(builder.info.splits.keys())
        for role, split_name in self.split_names.items():
            # "train[:10%]+validation" reads from the splits "train" and "validation".
            bases = [part.split("[")[0].strip() for part in split_name.split("+")]
            if known and not set(bases) <= set(known):
                raise DataError(
                    f"{self.description}: no split {split_name!r} (used as the {role} split); "
                    f"it has {known}. Set TfdsSource.{role}_split."
                )

    def _split(self, split: str) -> _MemorySplit | _DataSourceSplit:
        self._check_split(split)
        if split not in self._splits:
            builder = self._builder()
            tfds_split = self.split_names[split]
            if self._fits_in_memory(builder, tfds_split):
                self._splits[split] = self._read_into_memory(builder, tfds_split)
            else:
                self._splits[split] = self._open_random_access(builder, tfds_split)
        return self._splits[split]

    def _image_shape(self, builder: Any) -> tuple[int | None, int | None, int]:
        shape = tuple(builder.info.features[self.image_key].shape)
        channels = shape[2] if len(shape) == 3 and shape[2] else 3
        return shape[0], shape[1], channels

    def _fits_in_memory(self, builder: Any, tfds_split: str) -> bool:
        if self.in_memory is not None:
            return self.in_memory
        height, width, channels = self._image_shape(builder)
        try:
            count = int(builder.info.splits[tfds_split].num_examples)
        except (KeyError, ValueError, TypeError):
            count = 0  # unknown (e.g. under tfds.testing.mock_data)
        if height and width:
            estimate = count * height * width * channels
        else:
            # Images of varying size are kept encoded: their size on disk is the estimate.
            estimate = int(builder.info.dataset_size or 0)
        return estimate <= self.max_in_memory_bytes

    def _read_into_memory(self, builder: Any, tfds_split: str) -> _MemorySplit:
        height, width, channels = self._image_shape(builder)
        decode = bool(height and width)  # equal sizes: decode once; else keep encoded
        logging.info("%s: reading split %r into memory", self.description, tfds_split)
        parts, labels = [], []
        for images, batch_labels in self._read_chunks(builder, tfds_split, decode, channels):
            parts.append(images)
            labels.append(batch_labels)
        if not parts:
            raise DataError(f"{self.description}: split {tfds_split!r} has no examples")
        labels_array = np.concatenate(labels).astype(np.int64)
        if decode:
            with tf.device("/cpu:0"):
                images = tf.concat(parts, axis=0)
            del parts  # the chunks' memory goes back before the next split is read
            return _MemorySplit(labels_array, images=images)
        encoded = np.empty(len(labels_array), dtype=object)
        encoded[:] = [data for part in parts for data in part]
        return _MemorySplit(
            labels_array,
            encoded=encoded,
            channels=channels,
            cache_max_bytes=self.max_in_memory_bytes,
        )

    def _read_chunks(
        self, builder: Any, tfds_split: str, decode: bool, channels: int
    ) -> Iterator[tuple[Any, np.ndarray]]:
        """The split in order, in chunks of (decoded uint8 tensor or encoded bytes, labels)."""
        import tensorflow_datasets as tfds

        skip_decoding = {self.image_key: tfds.decode.SkipDecoding()}
        try:
            dataset = builder.as_dataset(
                split=tfds_split, decoders=None if decode else skip_decoding, shuffle_files=False
            )
        except NotImplementedError:
            # ArrayRecord files have no tf.data reader in tfds: read them by random access.
            data_source = builder.as_data_source(split=tfds_split, decoders=skip_decoding)
            for start in range(0, len(data_source), _READ_CHUNK):
                indices = list(range(start, min(start + _READ_CHUNK, len(data_source))))
                records = _get_records(data_source, indices)
                encoded = [record[self.image_key] for record in records]
                labels = np.array([record[self.label_key] for record in records], np.int64)
                yield (_decode_all(encoded, channels) if decode else encoded), labels
            return
        pairs = dataset.map(lambda example: (example[self.image_key], example[self.label_key]))
        for images, labels in pairs.batch(_READ_CHUNK):
            yield (images if decode else list(images.numpy())), labels.numpy()

    def _open_random_access(self, builder: Any, tfds_split: str) -> _DataSourceSplit:
        import tensorflow_datasets as tfds

        try:
            data_source = builder.as_data_source(
                split=tfds_split, decoders={self.image_key: tfds.decode.SkipDecoding()}
            )
        except NotImplementedError as error:
            raise DataError(
                f"{self.description}: split {tfds_split!r} is too large to load into memory "
                f"(over TfdsSource.max_in_memory_bytes = {self.max_in_memory_bytes} bytes "
                "decoded) and is prepared in a format without random access "
                f"(TFRecord, at {builder.data_path}). Prepare it as ArrayRecord, in another "
                "data_dir or after deleting this copy: `tfds build "
                f"{self.name} --file_format=array_record --data_dir=DIR`, or in Python "
                f"`tfds.builder({self.name!r}, data_dir=DIR, "
                "file_format='array_record').download_and_prepare()` (or with gin "
                "`TfdsSource.download = True` and `TfdsSource.file_format = 'array_record'`). "
                "Or raise TfdsSource.max_in_memory_bytes if the machine has the memory."
            ) from error
        return _DataSourceSplit(
            data_source,
            self.image_key,
            self.label_key,
            self._image_shape(builder),
            self.max_in_memory_bytes,
            self.description,
        )


# --------------------------------------------------------------------------------------------
# Image folders


@tf.autograph.experimental.do_not_convert
def _read_image_file(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one JPEG/PNG file to uint8 [H, W, 3]; a bad file fails naming it."""
    data = tf.io.read_file(path)
    is_image = tf.logical_or(
        tf.equal(tf.strings.substr(data, 0, 3), _IMAGE_SIGNATURES[0]),
        tf.equal(tf.strings.substr(data, 0, 4), _IMAGE_SIGNATURES[1]),
    )
    check = tf.debugging.Assert(
        is_image, ["DataError: unreadable image file (not a JPEG or PNG image):", path]
    )
    with tf.control_dependencies([check]):
        return _decode_image(data, 3)


@gin.configurable
class ImageFolderSource(Source):
    """Images in `ROOT/<split>/<class>/*.{jpg,jpeg,png}`.

    Class k is the k-th class folder of the train split in sorted order; files are listed in
    sorted order, so indices are deterministic. Images are decoded as RGB, lazily in the
    tf.data graph; a pipeline may keep up to `cache_max_bytes` of decoded images in memory
    (the CIFAR-10 folder's 50,000 JPEGs decode in a few seconds).

    Args:
      root: the folder holding one folder per split.
      train_split, test_split: names of the split folders used as "train" and "test".
      cache_max_bytes: decoded bytes a pipeline may cache in memory; 0 = decode every read.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train_split: str = "train",
        test_split: str = "test",
        cache_max_bytes: int = 2 * GiB,
    ) -> None:
        if cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be >= 0, got {cache_max_bytes!r}")
        self.root = Path(root).expanduser()
        self.split_names = {"train": train_split, "test": test_split}
        self.cache_max_bytes = int(cache_max_bytes)
        self._class_names: tuple[str, ...] | None = None
        self._files: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._readers: dict[str, SplitReader] = {}

    @property
    def description(self) -> str:
        return f"image folder {self.root}"

    def _layout(self) -> str:
        train = self.split_names["train"]
        return (
            f"expected the layout {self.root}/{train}/<class>/*.jpg (or .jpeg, .png), and the "
            f"same for {self.split_names['test']!r}"
        )

    def _split_dir(self, split: str) -> Path:
        if not self.root.is_dir():
            raise DataError(f"{self.description} does not exist; {self._layout()}")
        split_dir = self.root / self.split_names[split]
        if not split_dir.is_dir():
            raise DataError(
                f"{self.description}: the {split} split folder {split_dir} is missing; "
                f"{self._layout()} (ImageFolderSource.{split}_split names the folder)"
            )
        return split_dir

    @staticmethod
    def _class_dirs(split_dir: Path) -> list[str]:
        return sorted(
            entry.name
            for entry in os.scandir(split_dir)
            if entry.is_dir() and not entry.name.startswith(".")
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        if self._class_names is None:
            split_dir = self._split_dir("train")
            names = self._class_dirs(split_dir)
            if not names:
                raise DataError(
                    f"{self.description}: no class folders in {split_dir}; {self._layout()}"
                )
            self._class_names = tuple(names)
        return self._class_names

    def _scan(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """File paths and labels of `split`, sorted by (class, file name)."""
        self._check_split(split)
        if split not in self._files:
            class_index = {name: k for k, name in enumerate(self.class_names)}
            split_dir = self._split_dir(split)
            paths: list[str] = []
            labels: list[int] = []
            for name in self._class_dirs(split_dir):
                if name not in class_index:
                    raise DataError(
                        f"{self.description}: class folder {split_dir / name} is not a class of "
                        f"the train split ({', '.join(self.class_names)})"
                    )
                class_dir = split_dir / name
                files = sorted(
                    entry.name
                    for entry in os.scandir(class_dir)
                    if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
                )
                if not files:
                    raise DataError(
                        f"{self.description}: class folder {class_dir} is empty (no "
                        f"{'/'.join(IMAGE_EXTENSIONS)} files); remove it or add its images"
                    )
                paths.extend(os.path.join(class_dir, f) for f in files)
                labels.extend([class_index[name]] * len(files))
            if not paths:
                raise DataError(
                    f"{self.description}: no class folders in {split_dir}; {self._layout()}"
                )
            self._files[split] = (np.asarray(paths), np.asarray(labels, np.int64))
        return self._files[split]

    def labels(self, split: str) -> np.ndarray:
        return self._scan(split)[1]

    def num_examples(self, split: str) -> int:
        return len(self._scan(split)[1])

    def file_path(self, split: str, index: int) -> str:
        """The file of example `index` of `split`."""
        return str(self._scan(split)[0][self._check_index(split, index)])

    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        path = self.file_path(split, index)
        try:
            data = Path(path).read_bytes()
            if not data.startswith(_IMAGE_SIGNATURES):
                raise ValueError("not a JPEG or PNG image")
            image = _decode_image(tf.constant(data), 3).numpy()
        except (OSError, ValueError, tf.errors.OpError) as error:
            message = getattr(error, "message", None) or str(error)
            raise DataError(
                f"{self.description}: unreadable image file {path}: {message}"
            ) from error
        return image, int(self.labels(split)[index])

    def reader(self, split: str) -> SplitReader:
        if split not in self._readers:
            paths, labels = self._scan(split)
            with tf.device("/cpu:0"):
                paths_tensor = tf.constant(paths, tf.string)
                labels_tensor = tf.constant(labels, tf.int64)

            def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                image = _read_image_file(tf.gather(paths_tensor, index))
                return image, tf.gather(labels_tensor, index)

            self._readers[split] = SplitReader(
                len(labels),
                read,
                (None, None, 3),
                in_memory=False,
                cache_max_bytes=self.cache_max_bytes,
            )
        return self._readers[split]


# --------------------------------------------------------------------------------------------
# Embedded digits


@gin.configurable
class DigitsSource(Source):
    """scikit-learn's handwritten digits: 1797 8x8 grayscale images, classes "0" .. "9".

    Embedded in scikit-learn, so it needs no download: the default that runs offline on a
    fresh machine. Pixel values 0..16 are scaled to 0..255. The train/test split is a fixed
    stratified 80/20 split (seed 0): 1437 train and 360 test images, each in original order.
    """

    TEST_FRACTION = 0.2
    SPLIT_SEED = 0

    def __init__(self) -> None:
        self._splits: dict[str, _MemorySplit] | None = None

    @property
    def description(self) -> str:
        return "embedded scikit-learn digits"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(k) for k in range(10))

    def _load(self) -> dict[str, _MemorySplit]:
        if self._splits is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            digits = load_digits()
            images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
            labels = digits.target.astype(np.int64)
            train, test = train_test_split(
                np.arange(len(labels)),
                test_size=self.TEST_FRACTION,
                random_state=self.SPLIT_SEED,
                stratify=labels,
            )
            self._splits = {
                name: _MemorySplit(labels[np.sort(ids)], images=images[np.sort(ids)])
                for name, ids in (("train", train), ("test", test))
            }
        return self._splits

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        return self._load()[split].labels

    def num_examples(self, split: str) -> int:
        return len(self.labels(split))

    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        return self._load()[split].example(self._check_index(split, index))

    def reader(self, split: str) -> SplitReader:
        self._check_split(split)
        return self._load()[split].reader()
