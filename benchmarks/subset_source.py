"""A source that keeps a seeded fraction of each class's training images.

For the NAS-Bench-201 study's "little data" setting (benchmarks/nb201_study.py
``--train_fraction``): every learner sees only a fraction of its classes' training
images, and a learner with the same classes and seed sees the same images in every
variant. The test split is the base source's, whole.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from il_tf.data.sources import Source, SplitReader


class ClassFractionSource(Source):
    """``base`` with ``fraction`` of each class's train images, chosen by ``seed``.

    Of each class's train examples, round(fraction · count) (at least one) are kept, drawn
    without replacement by numpy's generator seeded with (seed, class index), in the base
    source's order; so which images of a class are kept does not depend on the other
    classes a learner has.
    """

    def __init__(self, base: Source, fraction: float, seed: int):
        if not 0 < fraction <= 1:
            raise ValueError(
                f"ClassFractionSource fraction must be in (0, 1], got {fraction!r} "
                "(--train_fraction: the fraction of each class's training images kept)"
            )
        if seed < 0:
            raise ValueError(f"ClassFractionSource seed must be an int >= 0, got {seed!r}")
        self.base = base
        self.fraction = float(fraction)
        self.seed = int(seed)
        self._kept: np.ndarray | None = None
        self._reader: SplitReader | None = None

    @property
    def description(self) -> str:
        return (
            f"{self.base.description}, {self.fraction:g} of each class's train images "
            f"(seed {self.seed})"
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.base.class_names

    @property
    def normalization_name(self) -> str | None:
        return self.base.normalization_name

    def kept(self) -> np.ndarray:
        """The base train indices kept, in increasing order."""
        if self._kept is None:
            labels = self.base.labels("train")
            parts = []
            for c in range(self.base.num_classes):
                ids = np.flatnonzero(labels == c)
                count = max(1, round(self.fraction * len(ids))) if len(ids) else 0
                rng = np.random.default_rng([self.seed, c])
                parts.append(rng.choice(ids, size=count, replace=False))
            self._kept = np.sort(np.concatenate(parts)).astype(np.int64)
        return self._kept

    def labels(self, split: str) -> np.ndarray:
        self._check_split(split)
        labels = self.base.labels(split)
        return labels[self.kept()] if split == "train" else labels

    def num_examples(self, split: str) -> int:
        self._check_split(split)
        return len(self.kept()) if split == "train" else self.base.num_examples(split)

    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        if split != "train":
            return self.base.example(split, index)
        return self.base.example(split, int(self.kept()[self._check_index(split, index)]))

    def reader(self, split: str) -> SplitReader:
        self._check_split(split)
        base = self.base.reader(split)
        if split != "train":
            return base
        if self._reader is None:
            with tf.device("/cpu:0"):
                ids = tf.constant(self.kept(), tf.int64)

            def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return base.read(tf.gather(ids, index))

            self._reader = SplitReader(
                len(self.kept()),
                read,
                base.image_shape,
                in_memory=base.in_memory,
                cache_max_bytes=base.cache_max_bytes,
            )
        return self._reader
