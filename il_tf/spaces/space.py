"""The contract between a search space and the search: what a supernet and its genotypes offer.

A search space is a Keras layer (the *supernet*, the searchable encoder) that takes
images and the architecture logits and returns features for the learners' heads,
and that turns logits into a discrete *genotype*. The DARTS space
(``il_tf/spaces/darts_supernet.py``), the NAS-Bench-201 space
(``il_tf/spaces/nb201_supernet.py``) and a user's Keras builder with choice points
(``il_tf/spaces/choice_space.py``) implement it; the search, the engine, the
reports and the benchmarks rely on nothing else of a space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

#: A supernet's state between two segments: a tuple of tensors.
State = tuple


@runtime_checkable
class Genotype(Protocol):
    """A discrete architecture: serializable, printable on one line."""

    #: The space's name, as written in the genotype file's ``space`` field.
    space: ClassVar[str]

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form that ``il_tf.spaces.genotypes.load_genotype`` reads back."""
        ...

    def to_text(self) -> str:
        """One line for logs and TensorBoard."""
        ...


@runtime_checkable
class SearchSpace(Protocol):
    """A supernet: ``supernet(images, arch) -> features``, plus how to read its logits.

    Attributes:
      space: the space's name (the ``space`` field of its genotype files).
      genotype_type: the class of the genotypes :meth:`derive` returns.
      op_names: the candidate ops, in the order of the logits' last axis; or, where the
        tensors have different candidates, a mapping from tensor name to its own.
      feature_dim: the size of the features the heads read.
    """

    space: ClassVar[str]
    genotype_type: ClassVar[type]
    op_names: tuple[str, ...] | Mapping[str, tuple[str, ...]]
    feature_dim: int

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the architecture logits ``__call__`` takes."""
        ...

    def derive(self, arch: Mapping[str, np.ndarray]) -> Genotype:
        """The discrete genotype of the logits ``arch``."""
        ...

    def __call__(self, images: tf.Tensor, arch: Mapping[str, tf.Tensor]) -> tf.Tensor: ...

    def segments(self) -> list[Segment]:
        """The forward pass as a chain of :class:`Segment` s (``images`` to features)."""
        ...

    def segment_context(self, images: tf.Tensor) -> Any:
        """What every segment reads besides the state (a constant of the images), or None."""
        ...


@dataclasses.dataclass(frozen=True)
class Segment:
    """One piece of a supernet's forward pass: a state in, a state out, its own weights.

    The first segment takes ``(images,)``, the last returns ``(features,)``; a
    supernet's ``call`` is the chain of its segments. ``apply(state, arch, context)``
    reads ``variables`` (some of the supernet's trainable variables; each of them
    belongs to exactly one segment) and no others, so the exact Hessian-vector
    products of the chain hypergradient can be taken one segment at a time
    (``il_tf/learning/objective.py``).
    """

    variables: Sequence[keras.Variable]
    apply: Callable[[State, Mapping[str, tf.Tensor], Any], State]
    #: Segments with the same ``kind`` (not None) compute the same function of (state,
    #: their own weights, arch, context): same layers, same shapes, variables in the
    #: same order. The search then compiles that function once for all of them (two
    #: normal cells at one resolution, say), which saves tracing time and the memory
    #: a compiled function holds. None: the segment is one of a kind.
    kind: Hashable | None = None


def run_segments(
    supernet: SearchSpace, images: tf.Tensor, arch: Mapping[str, tf.Tensor]
) -> tf.Tensor:
    """The supernet's features: its segments applied in order (what ``call`` computes)."""
    context = supernet.segment_context(images)
    state = (images,)
    for segment in supernet.segments():
        state = segment.apply(state, arch, context)
    (features,) = state
    return features


def apply_with_weights(
    segment: Segment,
    weights: Sequence[tf.Tensor],
    state: State,
    arch: Mapping[str, tf.Tensor],
    context: Any,
) -> State:
    """``segment.apply`` with ``weights`` in place of its variables' values (no side effects)."""
    mapping = list(zip(segment.variables, weights, strict=True))
    with keras.StatelessScope(state_mapping=mapping):
        return tuple(segment.apply(state, arch, context))


def check_space(supernet: Any, where: str) -> SearchSpace:
    """Returns ``supernet`` if it implements :class:`SearchSpace`, else a clear ValueError."""
    missing = [
        name
        for name in (
            "space",
            "genotype_type",
            "op_names",
            "arch_shapes",
            "derive",
            "segments",
            "segment_context",
        )
        if not hasattr(supernet, name)
    ]
    if missing:
        raise ValueError(
            f"{where} built {type(supernet).__name__}, which is not a search space "
            f"(missing {', '.join(missing)}; see il_tf/spaces/space.py): use "
            "@darts_supernet, @nb201_supernet or @choice_supernet"
        )
    return supernet
