"""Choice points in ordinary Keras code: the API for searching your own model.

A *builder* is a function ``builder(images, **arguments) -> features`` written with the
Keras functional API: it takes a ``keras.Input`` of the images and returns a Keras tensor
of shape ``(batch, features)``. Where it has a decision to make it writes a choice::

    x = Choice("block3/kernel", {
        "k3": lambda x: layers.DepthwiseConv2D(3, padding="same")(x),
        "k5": lambda x: layers.DepthwiseConv2D(5, padding="same")(x),
    })(x)
    y = InputChoice("head/input")({"stage2": x2, "stage3": x3})

A candidate of :class:`Choice` is a Keras layer or any function of a Keras tensor (so a
whole block); every candidate of one choice must give the same output shape. An
:class:`InputChoice` picks one of several tensors of the same shape. Names are
``/``-separated parts (letters, digits, ``_``, ``-``) and appear as they are in the
genotype: ``{"block3/kernel": "k5", "head/input": "stage3"}``.

What a choice does depends on the build it runs in (the builder itself never knows):

- searching (``il_tf.spaces.choice_space.ChoiceSupernet``): every candidate is built and
  the choice returns their sum weighted by the softmax of the choice's own logits;
- fixed (``il_tf.spaces.choice_space.build_backbone``, for training and export): only
  the genotype's candidate is built and its output returned, so the model holds no
  weights of candidates that were not kept.

One :class:`Choice` object called at two places applies one decision at both (its
candidates, when they are functions, build their own layers at each place, as any
Keras function does). Two choice objects with one name are an error. A choice called
inside a candidate of another is *nested*: it is part of the network only when that
candidate is kept, and a genotype lists it only then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from il_tf.spaces.choice_genotype import ChoiceGenotypeError
from il_tf.spaces.choice_genotype import check_name as _check_name

__all__ = ["Choice", "ChoiceError", "ChoicePoint", "InputChoice", "MixChoice", "arch_key"]

SEARCH, FIXED = "search", "fixed"


class ChoiceError(ChoiceGenotypeError):
    """A choice point, builder or genotype that cannot be searched or built."""


def check_name(name: Any, what: str) -> str:
    """``name`` if it is a valid choice or candidate name, else a ChoiceError."""
    try:
        return _check_name(name, what)
    except ChoiceGenotypeError as err:
        raise ChoiceError(str(err)) from None


def arch_key(name: str) -> str:
    """The architecture tensor of choice ``name`` (Keras names cannot hold ``/``)."""
    return name.replace("/", ".")


@dataclasses.dataclass
class ChoicePoint:
    """One choice point as a build met it.

    ``parents`` has one entry per place the choice is used: the ``(choice, candidate)``
    whose candidate was being built there, or None at the top level.
    """

    name: str
    kind: str  # "layer" or "input"
    candidates: tuple[str, ...]
    parents: list[tuple[str, str] | None]
    owner: Any = dataclasses.field(repr=False, compare=False)

    def structure(self) -> tuple:
        """What two builds of one builder must agree on."""
        return (self.name, self.kind, self.candidates, tuple(self.parents))


class MixChoice(keras.layers.Layer):
    """Σ_i softmax(logits)_i · candidate_i: a choice point during the search.

    ``call(candidates, logits)`` takes the candidates' outputs (equal shapes) and the
    choice's logits, shape ``(1, len(candidates))``.
    """

    def __init__(self, choice: str, **kwargs):
        super().__init__(**kwargs)
        self.choice = choice

    def call(self, candidates, logits):
        dtype = candidates[0].dtype
        weights = tf.nn.softmax(tf.cast(tf.reshape(logits, [-1]), dtype))
        # One unstack instead of a slice per candidate keeps the graph small.
        w = tf.unstack(weights, num=len(candidates))
        return tf.add_n([wi * y for wi, y in zip(w, candidates, strict=True)])

    def compute_output_shape(self, candidates_shape, logits_shape):
        return candidates_shape[0]

    def get_config(self):
        return {**super().get_config(), "choice": self.choice}


class _Build:
    """The state of one run of a builder: the choice points met and what they return."""

    def __init__(
        self, mode: str, chosen: Mapping[str, str] | None = None, dtype: str | None = None
    ):
        self.mode = mode
        self.chosen = dict(chosen or {})
        self.dtype = dtype
        self.points: dict[str, ChoicePoint] = {}
        #: The (choice, candidate) pairs whose candidates are being built, outermost first.
        self.stack: list[tuple[str, str]] = []
        #: Search: the logits input of each choice, in the order the choices were met.
        self.logits: dict[str, keras.KerasTensor] = {}
        self.mixes: list[MixChoice] = []

    # -- bookkeeping ---------------------------------------------------------------------

    def register(self, owner: Any, kind: str, candidates: tuple[str, ...]) -> ChoicePoint:
        name = owner.name
        if any(name == outer for outer, _ in self.stack):
            raise ChoiceError(f"choice {name!r} is used inside one of its own candidates")
        point = self.points.get(name)
        parent = self.stack[-1] if self.stack else None
        if point is None:
            point = ChoicePoint(name, kind, candidates, [], owner)
            self.points[name] = point
        elif point.owner is not owner:
            raise ChoiceError(
                f"two choices are named {name!r}; give each Choice and InputChoice its own "
                "name (one choice object called at two places shares its decision)"
            )
        elif point.candidates != candidates:
            raise ChoiceError(
                f"InputChoice {name!r} is called with candidates {list(candidates)} here and "
                f"{list(point.candidates)} before; one decision needs the same candidates"
            )
        point.parents.append(parent)
        return point

    def pick(self, point: ChoicePoint) -> str:
        """The genotype's candidate of ``point`` (fixed builds)."""
        if point.name not in self.chosen:
            raise ChoiceError(
                f"the genotype has no candidate for choice {point.name!r} (candidates: "
                f"{', '.join(point.candidates)}); it was found with another builder or other "
                "builder arguments"
            )
        kept = self.chosen[point.name]
        if kept not in point.candidates:
            raise ChoiceError(
                f"the genotype keeps {kept!r} at choice {point.name!r}, which has no such "
                f"candidate; its candidates: {', '.join(point.candidates)}"
            )
        return kept

    def mix(self, point: ChoicePoint, outputs: list) -> keras.KerasTensor:
        """The search's mixture of ``outputs`` under ``point``'s logits."""
        shapes = [tuple(y.shape) for y in outputs]
        if len(set(shapes)) > 1:
            listed = ", ".join(f"{c} {s}" for c, s in zip(point.candidates, shapes, strict=True))
            raise ChoiceError(
                f"the candidates of choice {point.name!r} give different output shapes "
                f"({listed}); every candidate must give the same shape"
            )
        logits = self.logits.get(point.name)
        if logits is None:
            logits = keras.Input(
                batch_shape=(1, len(point.candidates)),
                dtype=self.dtype,
                name=f"alpha_{arch_key(point.name)}",
            )
            self.logits[point.name] = logits
        layer = MixChoice(point.name)
        self.mixes.append(layer)
        return layer(list(outputs), logits)


_LOCAL = threading.local()


def _stack() -> list[_Build]:
    if not hasattr(_LOCAL, "builds"):
        _LOCAL.builds = []
    return _LOCAL.builds


@contextlib.contextmanager
def building(build: _Build) -> Iterator[_Build]:
    """Runs the choices called inside in ``build``."""
    _stack().append(build)
    try:
        yield build
    finally:
        _stack().pop()


def _current(what: str) -> _Build:
    builds = _stack()
    if not builds:
        raise ChoiceError(
            f"{what} was called outside a choice build: search the builder with "
            "il_tf.spaces.choice_space.ChoiceSupernet (gin: @choice_supernet), or build the "
            "found network with il_tf.spaces.choice_space.build_backbone"
        )
    return builds[-1]


def _check_tensor(value: Any, what: str) -> None:
    if not isinstance(value, keras.KerasTensor):
        raise ChoiceError(
            f"{what} is a {type(value).__name__}, not a Keras tensor: builders use the Keras "
            "functional API (layers called on the keras.Input the builder receives)"
        )


def _check_candidate_names(name: str, names: Any, at_least: str) -> tuple[str, ...]:
    names = tuple(names)
    if len(names) < 2:
        raise ChoiceError(
            f"choice {name!r} has {len(names)} candidate(s) ({', '.join(map(str, names)) or 'none'}); "
            f"a choice needs at least 2 {at_least}"
        )
    for candidate in names:
        check_name(candidate, f"candidate of choice {name!r}")
    return names


class Choice:
    """One of several candidate layers or blocks at one position of a Keras model.

    Args:
      name: the choice's name in genotypes (e.g. ``"block3/kernel"``).
      candidates: candidate name -> a Keras layer or a function of a Keras tensor
        returning one; at least two, all giving the same output shape.

    ``Choice(name, candidates)(x)`` returns the mixture of the candidates during a
    search and the kept candidate's output in a fixed build (see the module's text).
    """

    def __init__(self, name: str, candidates: Mapping[str, Callable[[Any], Any]]):
        self.name = check_name(name, "choice name")
        if not isinstance(candidates, Mapping):
            raise ChoiceError(
                f"choice {name!r}: candidates must be a dict of candidate name -> layer or "
                f"function, got {type(candidates).__name__}"
            )
        _check_candidate_names(name, candidates, "candidates")
        for candidate, fn in candidates.items():
            if not callable(fn):
                raise ChoiceError(
                    f"candidate {candidate!r} of choice {name!r} is a {type(fn).__name__}; a "
                    "candidate is a Keras layer or a function of a Keras tensor"
                )
        self.candidates = dict(candidates)

    def __call__(self, x: Any) -> Any:
        build = _current(f"Choice {self.name!r}")
        _check_tensor(x, f"the input of choice {self.name!r}")
        point = build.register(self, "layer", tuple(self.candidates))
        if build.mode == FIXED:
            return self._apply(build, build.pick(point), x)
        outputs = [self._apply(build, candidate, x) for candidate in self.candidates]
        return build.mix(point, outputs)

    def _apply(self, build: _Build, candidate: str, x: Any) -> Any:
        build.stack.append((self.name, candidate))
        try:
            y = self.candidates[candidate](x)
        finally:
            build.stack.pop()
        _check_tensor(y, f"the output of candidate {candidate!r} of choice {self.name!r}")
        return y


class InputChoice:
    """Which one of several earlier tensors (of one shape) a layer reads.

    ``InputChoice(name)({"stage2": x2, "stage3": x3})`` returns their mixture during a
    search and the kept tensor in a fixed build.
    """

    def __init__(self, name: str):
        self.name = check_name(name, "choice name")

    def __call__(self, tensors: Mapping[str, Any]) -> Any:
        build = _current(f"InputChoice {self.name!r}")
        if not isinstance(tensors, Mapping):
            raise ChoiceError(
                f"InputChoice {self.name!r} takes a dict of candidate name -> tensor, got "
                f"{type(tensors).__name__}"
            )
        names = _check_candidate_names(self.name, tensors, "tensors to choose from")
        for candidate, tensor in tensors.items():
            _check_tensor(tensor, f"candidate {candidate!r} of InputChoice {self.name!r}")
        point = build.register(self, "input", names)
        if build.mode == FIXED:
            return tensors[build.pick(point)]
        return build.mix(point, [tensors[c] for c in names])
