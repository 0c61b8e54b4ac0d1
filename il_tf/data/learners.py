"""Learners and their resumable tf.data pipelines.

A `Learner` is one task of an interleaved search: a source, a class subset, an image size, a
held-out validation part of the train split, a batch size and an augmentation. Its settings
are seed-independent; `build_learner_data(learner, seed)` combines them with the run seed into
a `LearnerData` whose pipelines are pure functions of (seed, position):

    train/val batch n = the examples at global positions n*B .. n*B + B - 1, where position i
    is example `index_shuffle(i % N, seed(epoch = i // N))` of the split, augmented with a
    stateless seed derived from (seed, i).

So `train_dataset(start_batch=k)` yields exactly batches k, k+1, ... of `train_dataset(0)`,
which is how a search resumes its data position, and two builds with one seed give identical
batches. Given a `tf.distribute.InputContext` (one input pipeline per worker), a pipeline yields
only the worker's replicas' slices of every global batch: the same examples, augmented the
same way, but each worker reads, decodes and augments only its own.
"""

from __future__ import annotations

import dataclasses
import numbers
import zlib
from collections.abc import Sequence
from typing import NoReturn

import gin
import numpy as np
import tensorflow as tf

from il_tf.data.augment import (
    MAX_NORMALIZATION_SAMPLES,
    Augmentation,
    Normalization,
    compute_normalization,
    standard_normalization,
)
from il_tf.data.errors import DataError
from il_tf.data.sources import DigitsSource, Source, SplitReader
from il_tf.settings_checks import check_int, check_number

EVAL_SPLITS = ("train", "val", "test")
# Fixed seed of the sample of images the normalization is estimated from: it does not depend
# on the run seed, so every run of a learner normalizes the same way.
_NORMALIZATION_SAMPLE_SEED = 0
_CHUNK = 512


def _shorten(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Learner:
    """One learner (task) of an interleaved search; seed-independent settings only.

    Attributes:
      name: unique per run; also mixed into the learner's random streams.
      source: where the images come from; default: the embedded digits.
      classes: None = all classes of the source, or a list of class names and/or indices;
        labels become 0 .. n-1 in the given order.
      image_size: int or (height, width); images of another size are resized (bilinear,
        antialiased). None = the source's size (of its first train image if sizes vary).
      channels: 3 (grayscale is tiled) or 1 (RGB converted to grayscale).
      val_fraction: fraction of the source's train split held out as this learner's validation
        split, chosen by a seeded permutation (DARTS uses 0.5); in [0, 1).
      batch_size: the global batch size (all replicas together).
      random_crop, crop_padding, flip, cutout_length: the DARTS training augmentation
        (cutout_length 0 = no cutout).
    """

    name: str
    source: Source = dataclasses.field(default_factory=DigitsSource)
    classes: Sequence[str | int] | None = None
    image_size: int | tuple[int, int] | None = None
    channels: int = 3
    val_fraction: float = 0.5
    batch_size: int = 64
    random_crop: bool = True
    crop_padding: int = 4
    flip: bool = True
    cutout_length: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Learner.name must be a non-empty string, got {self.name!r}")
        where = f"Learner {self.name!r}"
        if not isinstance(self.source, Source):
            raise ValueError(
                f"{where}: source must be a Source (TfdsSource, ImageFolderSource, "
                f"DigitsSource), got {self.source!r}"
            )
        subject = f"learner {self.name!r}"
        check_int("Learner", "batch_size", self.batch_size, 1, subject=subject)
        check_int("Learner", "crop_padding", self.crop_padding, 0, subject=subject)
        check_int(
            "Learner", "cutout_length", self.cutout_length, 0, note=" (0 = off)", subject=subject
        )
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"{where}: channels must be 1 or 3, got {self.channels!r}")
        check_number(
            "Learner",
            "val_fraction",
            self.val_fraction,
            0.0,
            1.0,
            below_maximum=True,
            note=" (the fraction of the train split held out for validation)",
            subject=subject,
        )
        object.__setattr__(self, "image_size", _image_size(where, self.image_size))
        if self.classes is not None and not isinstance(self.classes, str):
            object.__setattr__(self, "classes", tuple(self.classes))  # gin gives lists
        object.__setattr__(self, "_class_indices", self._resolve_classes(where))

    def _resolve_classes(self, where: str) -> tuple[int, ...] | None:
        if self.classes is None:
            return None
        if isinstance(self.classes, str) or not self.classes:
            raise ValueError(
                f"{where}: classes must be None or a non-empty list of class names or indices, "
                f"got {self.classes!r}"
            )
        names = self.source.class_names
        indices: list[int] = []
        for item in self.classes:
            if isinstance(item, str):
                if item not in names:
                    raise ValueError(
                        f"{where}: unknown class name {item!r} in {self.source.description}; "
                        f"allowed: {_shorten(names)}"
                    )
                index = names.index(item)
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                index = int(item)
                if not 0 <= index < len(names):
                    raise ValueError(
                        f"{where}: class index {item!r} out of range: {self.source.description} "
                        f"has {len(names)} classes, indices 0..{len(names) - 1}"
                    )
            else:
                raise ValueError(
                    f"{where}: classes entries must be class names (str) or indices (int), "
                    f"got {item!r}"
                )
            if index in indices:
                raise ValueError(f"{where}: class {item!r} ({names[index]!r}) is listed twice")
            indices.append(index)
        return tuple(indices)

    @property
    def class_indices(self) -> tuple[int, ...]:
        """The source's class indices this learner uses, in label order."""
        indices = self._class_indices  # type: ignore[attr-defined]
        return tuple(range(self.source.num_classes)) if indices is None else indices

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(
            random_crop=self.random_crop,
            crop_padding=self.crop_padding,
            flip=self.flip,
            cutout_length=self.cutout_length,
        )


def _check_int(where: str, field: str, value: object, *, minimum: int, note: str = "") -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{where}: {field} must be an int >= {minimum}{note}, got {value!r}")


def _image_size(where: str, size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in pair)
        or min(pair) < 1
    ):
        raise ValueError(
            f"{where}: image_size must be a positive int or a (height, width) pair, got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def check_unique_names(learners: Sequence[Learner]) -> None:
    """Raises ValueError if two learners of one run share a name."""
    seen: set[str] = set()
    for learner in learners:
        if learner.name in seen:
            raise ValueError(
                f"learner name {learner.name!r} is used twice; each learner of a run needs its "
                f"own name (names: {[lr.name for lr in learners]})"
            )
        seen.add(learner.name)


# --------------------------------------------------------------------------------------------
# Loading one example at the learner's shape


def _resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _to_learner_shape(
    image: tf.Tensor,
    static_shape: tuple[int | None, int | None, int],
    size: tuple[int, int],
    channels: int,
) -> tuple[tf.Tensor, tuple[int | None, int | None, int]]:
    """Converts channels and resizes one uint8 image; returns it with its new static shape."""
    in_channels = static_shape[2]
    if in_channels in (2, 4):  # drop an alpha channel
        image = image[..., : in_channels - 1]
        in_channels -= 1
    if in_channels == 1 and channels == 3:
        image = tf.tile(image, [1, 1, 3])
    elif in_channels == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    height, width = static_shape[:2]
    if (height, width) != size:
        if height is None or width is None:
            # Only known per image: resize only the images that need it.
            same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
            image = tf.cond(same, lambda: image, lambda: _resize(image, size))
        else:
            image = _resize(image, size)
    return tf.ensure_shape(image, [*size, channels]), (*size, channels)


class _Pool:
    """The examples of one source split that belong to a learner's classes.

    Position p (0 .. size-1) is the p-th such example in source order. `load(p)` gives the
    uint8 image at the learner's shape and the learner's int32 label; when the source decodes
    lazily and the decoded pool fits the source's cache allowance, it is decoded once and
    gathered from memory.
    """

    def __init__(
        self,
        source: Source,
        split: str,
        class_indices: tuple[int, ...],
        size: tuple[int, int],
        channels: int,
    ) -> None:
        self.source = source
        self.split = split
        self.shape = (*size, channels)
        self.reader: SplitReader = source.reader(split)
        if tuple(class_indices) == tuple(range(source.num_classes)):
            self.source_ids = np.arange(self.reader.num_examples, dtype=np.int64)
        else:
            labels = source.labels(split)
            self.source_ids = np.flatnonzero(np.isin(labels, class_indices)).astype(np.int64)
        label_map = np.full(max(source.num_classes, 1), -1, np.int32)
        label_map[list(class_indices)] = np.arange(len(class_indices), dtype=np.int32)
        self.size = len(self.source_ids)
        with tf.device("/cpu:0"):
            self._ids = tf.constant(self.source_ids, tf.int64)
            self._label_map = tf.constant(label_map, tf.int32)
        self._cached: tuple[tf.Tensor, tf.Tensor] | None = None
        cache_bytes = self.size * int(np.prod(self.shape))
        if not self.reader.in_memory and 0 < cache_bytes <= self.reader.cache_max_bytes:
            self._cache()

    def _load_from_source(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = self.reader.read(tf.gather(self._ids, position))
        image, _ = _to_learner_shape(image, self.reader.image_shape, self.shape[:2], self.shape[2])
        return image, tf.gather(self._label_map, tf.cast(label, tf.int32))

    def load(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self._cached is not None:
            images, labels = self._cached
            return tf.gather(images, position), tf.gather(labels, position)
        return self._load_from_source(position)

    def dataset(self, positions: np.ndarray) -> tf.data.Dataset:
        """The examples at `positions`, in order (uint8 images, int32 labels), unbatched."""
        return tf.data.Dataset.from_tensor_slices(np.asarray(positions, np.int64)).map(
            tf.autograph.experimental.do_not_convert(self.load),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def _cache(self) -> None:
        images = np.empty((self.size, *self.shape), np.uint8)
        labels = np.empty(self.size, np.int32)
        try:
            done = 0
            for batch_images, batch_labels in (
                self.dataset(np.arange(self.size)).batch(_CHUNK).as_numpy_iterator()
            ):
                images[done : done + len(batch_labels)] = batch_images
                labels[done : done + len(batch_labels)] = batch_labels
                done += len(batch_labels)
        except tf.errors.OpError as error:
            self.raise_unreadable(error)
        with tf.device("/cpu:0"):
            self._cached = (tf.constant(images), tf.constant(labels))

    def raise_unreadable(self, error: tf.errors.OpError) -> NoReturn:
        """Raises DataError for a failed read, naming the example (e.g. the file) that fails."""
        # Slow (one example at a time), but only on this error path.
        for source_id in self.source_ids:
            self.source.example(self.split, int(source_id))  # raises DataError naming it
        raise DataError(
            f"{self.source.description}: reading the {self.split} split failed: {error.message}"
        ) from error


# --------------------------------------------------------------------------------------------
# A learner's data for one run


class LearnerData:
    """A learner's splits and pipelines for one run seed (made by `build_learner_data`).

    Attributes:
      learner: the settings.
      seed: the run seed.
      name, num_classes, class_names: the learner's name and (remapped) classes.
      image_shape: (height, width, channels) of the images the pipelines yield.
      num_train, num_val, num_test: examples in the learner's train part, validation part (both
        from the source's train split) and test split.
      batch_size: the global batch size.
      steps_per_epoch: train batches per epoch, num_train // batch_size (at least 1). The
        stream does not restart at epoch boundaries: a batch may span two epochs, so no example
        is ever dropped.
      normalization: (mean, std) per channel, for pixel values in [0, 1].
      augmentation: the training augmentation.

    Every dataset yields (images float32 [B, H, W, C] normalized, labels int32 [B]).
    """

    def __init__(self, learner: Learner, seed: int) -> None:
        if (
            not isinstance(seed, numbers.Integral)
            or isinstance(seed, bool)
            or not 0 <= seed < 2**63
        ):
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        self.learner = learner
        self.seed = int(seed)
        self.name = learner.name
        self.batch_size = learner.batch_size
        self.augmentation = learner.augmentation
        source = learner.source
        self._class_indices = learner.class_indices
        self.num_classes = len(self._class_indices)
        self.class_names = tuple(source.class_names[k] for k in self._class_indices)

        size = learner.image_size or self._native_size(source)
        self.image_shape = (*size, learner.channels)
        self._train_pool = _Pool(source, "train", self._class_indices, size, learner.channels)
        self._test_pool: _Pool | None = None
        if self._train_pool.size == 0:
            raise ValueError(
                f"Learner {self.name!r}: the train split of {source.description} has no "
                f"examples of classes {list(self.class_names)}"
            )

        # The held-out validation part: a seeded permutation, not "the first half" (image
        # folders are sorted by class).
        learner_key = zlib.crc32(self.name.encode("utf-8"))
        rng = np.random.default_rng([self.seed, learner_key])
        permutation = rng.permutation(self._train_pool.size)
        num_val = int(round(self._train_pool.size * learner.val_fraction))
        if learner.val_fraction > 0 and num_val == 0:
            raise ValueError(
                f"Learner {self.name!r}: val_fraction {learner.val_fraction!r} of "
                f"{self._train_pool.size} train examples leaves no validation example"
            )
        if num_val == self._train_pool.size:
            raise ValueError(
                f"Learner {self.name!r}: val_fraction {learner.val_fraction!r} of "
                f"{self._train_pool.size} train examples leaves no train example"
            )
        self._val_positions = np.sort(permutation[:num_val])
        self._train_positions = np.sort(permutation[num_val:])
        self.num_train = len(self._train_positions)
        self.num_val = len(self._val_positions)
        self.steps_per_epoch = max(1, self.num_train // self.batch_size)

        base = tf.constant([self.seed, learner_key], tf.int64)
        fold_in = tf.random.experimental.stateless_fold_in
        self._train_order_key = fold_in(base, 1)
        self._train_augment_key = fold_in(base, 2)
        self._val_order_key = fold_in(base, 3)

        self.normalization = self._normalization(source)

    def _native_size(self, source: Source) -> tuple[int, int]:
        height, width, _ = source.reader("train").image_shape
        if height and width:
            return height, width
        image, _ = source.example("train", 0)
        return int(image.shape[0]), int(image.shape[1])

    def _normalization(self, source: Source) -> Normalization:
        name = source.normalization_name
        standard = standard_normalization(name) if name else None
        if standard is not None and self.image_shape[2] == 3:
            return standard
        # Estimated from a fixed sample of the learner's classes in the source's train split
        # (seed-independent, so runs with other seeds normalize identically).
        pool = self._train_pool
        rng = np.random.default_rng(_NORMALIZATION_SAMPLE_SEED)
        count = min(pool.size, MAX_NORMALIZATION_SAMPLES)
        positions = np.sort(rng.choice(pool.size, size=count, replace=False))
        batches = pool.dataset(positions).batch(_CHUNK).as_numpy_iterator()
        try:
            return compute_normalization(images for images, _ in batches)
        except tf.errors.OpError as error:
            pool.raise_unreadable(error)

    @property
    def num_test(self) -> int:
        return self._test().size

    def _test(self) -> _Pool:
        if self._test_pool is None:
            self._test_pool = _Pool(
                self.learner.source,
                "test",
                self._class_indices,
                self.image_shape[:2],
                self.image_shape[2],
            )
        return self._test_pool

    def source_indices(self, split: str) -> np.ndarray:
        """Which source examples form `split` ("train", "val" or "test"), in eval order.

        "train" and "val" index the source's train split, "test" its test split.
        """
        pool, positions = self._split(split)
        return pool.source_ids[positions]

    def _split(self, split: str) -> tuple[_Pool, np.ndarray]:
        if split == "train":
            return self._train_pool, self._train_positions
        if split == "val":
            return self._train_pool, self._val_positions
        if split == "test":
            pool = self._test()
            return pool, np.arange(pool.size)
        raise ValueError(f"unknown split {split!r}; use one of {EVAL_SPLITS}")

    # -- pipelines ----------------------------------------------------------------------------

    def train_dataset(
        self, start_batch: int = 0, input_context: tf.distribute.InputContext | None = None
    ) -> tf.data.Dataset:
        """Infinite, shuffled, augmented train batches, starting at batch `start_batch`.

        With `input_context`, for each global batch the batches of this pipeline's replicas
        (global batch / replicas examples each, in replica order); see `_stream`.
        """
        return self._stream(
            self._train_positions,
            self._train_order_key,
            self._train_augment_key,
            start_batch,
            input_context,
        )

    def val_dataset(
        self, start_batch: int = 0, input_context: tf.distribute.InputContext | None = None
    ) -> tf.data.Dataset:
        """Infinite, shuffled validation batches (resize and normalize only).

        `input_context` as in `train_dataset`.
        """
        if self.num_val == 0:
            raise ValueError(f"Learner {self.name!r} has no validation split (val_fraction is 0)")
        return self._stream(
            self._val_positions, self._val_order_key, None, start_batch, input_context
        )

    def test_dataset(
        self, batch_size: int | None = None, input_context: tf.distribute.InputContext | None = None
    ) -> tf.data.Dataset:
        """The test split once, in order, not augmented; the last batch may be smaller."""
        return self.eval_dataset("test", batch_size, input_context)

    def eval_dataset(
        self,
        split: str,
        batch_size: int | None = None,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """One pass over "train", "val" or "test", in order, not augmented, not shuffled.

        With `input_context`, this pipeline's replicas' slices of every global batch of
        `batch_size`, one batch per replica (as `train_dataset`); in the last, partial global
        batch a replica's slice may be short or empty. Every example is read once, by the
        replica that one process with as many replicas would give it.
        """
        pool, positions = self._split(split)
        batch_size = self.batch_size if batch_size is None else batch_size
        _check_int(f"Learner {self.name!r}", "batch_size", batch_size, minimum=1)
        if input_context is not None:
            global_batch = batch_size
            batch_size = _per_replica(self.name, global_batch, input_context)
            share = global_batch // input_context.num_input_pipelines
            starts = np.arange(0, len(positions), global_batch)
            starts += input_context.input_pipeline_id * share
            positions = np.concatenate(
                [positions[start : start + share] for start in starts] or [positions[:0]]
            )
        normalization = self.normalization

        def normalize(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return normalization.apply(image), label

        return (
            pool.dataset(positions)
            .map(normalize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    def _stream(
        self,
        positions: np.ndarray,
        order_key: tf.Tensor,
        augment_key: tf.Tensor | None,
        start_batch: int,
        input_context: tf.distribute.InputContext | None,
    ) -> tf.data.Dataset:
        """Global batch n = global positions n·B .. n·B + B - 1 (B the global batch size).

        With `input_context` (pipeline p of P, R replicas, b = B / R, L = R / P replicas per
        pipeline), this pipeline yields for each n only the positions of replicas
        p·L .. p·L + L - 1: n·B + p·L·b .. n·B + (p + 1)·L·b - 1, as L batches of b.
        """
        _check_int(f"Learner {self.name!r}", "start_batch", start_batch, minimum=0)
        global_batch = self.batch_size
        out_batch, share, offset = global_batch, global_batch, 0
        if input_context is not None:
            out_batch = _per_replica(self.name, global_batch, input_context)
            share = global_batch // input_context.num_input_pipelines
            offset = input_context.input_pipeline_id * share
        pool = self._train_pool
        count = len(positions)
        with tf.device("/cpu:0"):
            positions_tensor = tf.constant(positions, tf.int64)
        max_index = tf.constant(count - 1, tf.int64)
        augmentation, normalization = self.augmentation, self.normalization
        fold_in = tf.random.experimental.stateless_fold_in

        @tf.autograph.experimental.do_not_convert
        def example_at(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # Global position i -> (epoch, offset) -> a fresh stateless permutation per epoch.
            epoch, offset = i // count, i % count
            local = tf.random.experimental.index_shuffle(
                offset, fold_in(order_key, epoch), max_index
            )
            image, label = pool.load(tf.gather(positions_tensor, local))
            if augment_key is None:
                return normalization.apply(image), label
            return augmentation(image, fold_in(augment_key, i), normalization), label

        def global_position(j: tf.Tensor) -> tf.Tensor:
            # The j-th example this pipeline reads (of its `share` per global batch).
            return (j // share) * global_batch + offset + j % share

        return (
            tf.data.Dataset.counter(start=start_batch * share)
            .map(global_position)
            .map(example_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(out_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def __repr__(self) -> str:
        return (
            f"<LearnerData {self.name!r}: {self.learner.source.description}, "
            f"{self.num_classes} classes, images {self.image_shape}, train {self.num_train}, "
            f"val {self.num_val}, batch {self.batch_size}, seed {self.seed}>"
        )


def _per_replica(name: str, batch_size: int, context: tf.distribute.InputContext) -> int:
    replicas = context.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"Learner {name!r}: batch size {batch_size} is not divisible by the {replicas} "
            "replicas (it is the global batch, split evenly)"
        )
    return batch_size // replicas


def build_learner_data(learner: Learner, seed: int) -> LearnerData:
    """Builds `learner`'s splits, normalization and pipelines for the run seed `seed`.

    Reads what the pipelines need (labels for the class subset, decoded images when they are
    cached in memory, a normalization sample); missing or unreadable data raises `DataError`.
    """
    return LearnerData(learner, seed)
