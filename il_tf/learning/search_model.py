"""The searchable model: a supernet encoder, one head per learner, the architecture logits.

:func:`build_search_model` is the one way to build it: the search, the benchmarks
and the tests all call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from il_tf.spaces.architecture import Architecture, AuxSkipSettings
from il_tf.spaces.space import SearchSpace, check_space

Tensors = list[tf.Tensor]
ImageShape = tuple[int, int, int]


@dataclasses.dataclass
class SearchModel:
    """The searchable model: a supernet encoder, one head per learner, the architecture."""

    encoder: SearchSpace
    heads: list[keras.layers.Layer]
    arch: Architecture

    def arch_tensors(self) -> Tensors:
        """The architecture logits' current values, in ``arch.arch_variables`` order."""
        return [tf.identity(v.value) for v in self.arch.arch_variables]

    def genotype(self):
        """The cell the current architecture logits derive (the space's genotype type)."""
        return self.encoder.derive(self.arch.numpy())


def build_search_model(
    supernet: keras.layers.Layer | Callable[[], keras.layers.Layer],
    num_classes: Sequence[int],
    image_shape: ImageShape | Sequence[ImageShape],
    *,
    seed: int = 0,
    arch_seed: int | None = None,
    head_names: Sequence[str] | None = None,
    mixed_precision: str | None = None,
    arch_dtype: str | None = None,
    aux_skip: AuxSkipSettings | None = None,
) -> SearchModel:
    """Builds the supernet, one dense head per learner and the architecture logits.

    Args:
      supernet: a search-space layer (``il_tf/spaces/space.py``), or a factory of one
        (``SearchConfig.supernet``), called after the seed is set.
      num_classes: classes of each learner's head.
      image_shape: (H, W, C) of every learner's images, or one shape per learner.
      seed: the Keras seed of the weights' initialization.
      arch_seed: the seed of the logits' initialization (default ``seed``).
      head_names: names of the heads' layers (default Keras's own).
      mixed_precision: a Keras dtype policy for the supernet and heads while they are
        built (e.g. ``mixed_bfloat16``); None keeps the current one.
      arch_dtype: dtype of the logits (default ``keras.config.floatx()``).
      aux_skip: the auxiliary skip connection (DARTS-); None or ``start`` 0 = off.
        The supernet must read it (``reads_aux_skip``, both of il_tf's do).

    Every weight is created here (the supernet and heads are called once on zeros of
    each learner's shape). The supernet's initial weights and the logits depend on the
    seeds only, not on the number of learners or their classes.
    """
    num_classes = list(num_classes)
    if not num_classes:
        raise ValueError("build_search_model needs at least one learner (num_classes is empty)")
    if isinstance(image_shape[0], int):
        shapes = [tuple(image_shape)] * len(num_classes)
    else:
        shapes = [tuple(s) for s in image_shape]
    if len(shapes) != len(num_classes):
        raise ValueError(
            f"build_search_model got {len(shapes)} image shapes for {len(num_classes)} learners"
        )
    names = [None] * len(num_classes) if head_names is None else list(head_names)
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy(mixed_precision)
    try:
        encoder = supernet if isinstance(supernet, keras.layers.Layer) else supernet()
        check_space(encoder, "the supernet factory")
        if (
            aux_skip is not None
            and aux_skip.enabled
            and not getattr(encoder, "reads_aux_skip", False)
        ):
            raise ValueError(
                f"AuxSkipSettings.start is {aux_skip.start}, but {type(encoder).__name__} has no "
                "auxiliary skip connection; use @darts_supernet or @nb201_supernet, or "
                "AuxSkipSettings.start = 0"
            )
    finally:
        keras.config.set_dtype_policy(previous)
    arch = Architecture(
        encoder.arch_shapes(),
        seed=seed if arch_seed is None else arch_seed,
        aux_skip=aux_skip,
        dtype=arch_dtype,
    )
    # One (eager, slow) supernet call per distinct input shape builds every weight.
    features = {}
    for shape in shapes:
        if shape not in features:
            zeros = tf.zeros((2, *shape), encoder.compute_dtype)
            features[shape] = encoder(zeros, arch.tensors())
    # The heads are made after the supernet's weights: their initializers draw seeds from
    # the same global stream, so made first they would make the supernet's initial weights
    # depend on the number of learners (a one-learner and a two-learner search of one seed
    # would start from different supernets).
    if mixed_precision:
        keras.config.set_dtype_policy(mixed_precision)
    try:
        heads = [
            keras.layers.Dense(n, name=name) for n, name in zip(num_classes, names, strict=True)
        ]
    finally:
        keras.config.set_dtype_policy(previous)
    for shape, head in zip(shapes, heads, strict=True):
        head(features[shape])
    return SearchModel(encoder, heads, arch)
