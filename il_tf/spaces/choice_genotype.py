"""The genotype of a searched Keras model: which candidate each choice point keeps.

Pure Python (no TensorFlow), like ``il_tf/spaces/genotypes.py``, which reads these
records back through :func:`~il_tf.spaces.genotypes.genotype_from_json_dict`. A
record names its builder (``module:function``) and the builder's keyword arguments,
so that training and export can build the same network again without the search's
configuration::

    {"format": "il_tf.genotype/v1", "space": "choices",
     "builder": "il_tf.spaces.examples.mobilenet:mobilenet_v2_backbone",
     "arguments": {"width": 16},
     "choices": {"block1/kernel": "k5", "block1/expansion": "e6", "block2/keep": "skip"}}

``choices`` holds the *active* choice points only: a choice inside a candidate that
was not kept (the kernel of a skipped block) is not part of the network.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from il_tf.spaces.genotypes import GENOTYPE_FORMAT, check_record_format

#: The ``space`` field of a choices genotype.
CHOICES_SPACE = "choices"
#: What a choice or candidate name may hold: ``/``-separated parts of letters, digits,
#: ``_`` and ``-`` (the architecture tensors are named with ``.`` in place of ``/``).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


class ChoiceGenotypeError(ValueError):
    """A malformed choices genotype or genotype record."""


def check_name(name: Any, what: str) -> str:
    """``name`` if it is a valid choice or candidate name, else a ChoiceGenotypeError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ChoiceGenotypeError(
            f"{what} {name!r} is not a valid name: use letters, digits, '_' and '-', in parts "
            "separated by '/' (e.g. 'block3/kernel')"
        )
    return name


@dataclasses.dataclass(frozen=True)
class ChoiceGenotype:
    """The candidate kept at each active choice point of one builder.

    Attributes:
      builder: the builder's importable name, ``module:qualified.name``.
      arguments: the keyword arguments the builder was called with (JSON data).
      choices: choice name -> kept candidate name, in the order the builder makes them.
    """

    builder: str
    arguments: Mapping[str, Any]
    choices: Mapping[str, str]

    space: ClassVar[str] = CHOICES_SPACE

    def __post_init__(self) -> None:
        if not isinstance(self.builder, str) or ":" not in self.builder:
            raise ChoiceGenotypeError(
                f"genotype builder must be 'module:function', got {self.builder!r}"
            )
        if not isinstance(self.arguments, Mapping) or not all(
            isinstance(k, str) for k in self.arguments
        ):
            raise ChoiceGenotypeError(
                f"genotype arguments must map argument names to values, got {self.arguments!r}"
            )
        try:
            json.dumps(dict(self.arguments))
        except (TypeError, ValueError) as err:
            raise ChoiceGenotypeError(f"genotype arguments are not JSON data: {err}") from None
        if not isinstance(self.choices, Mapping) or not self.choices:
            raise ChoiceGenotypeError(
                f"genotype choices must map each choice name to a candidate name, got "
                f"{self.choices!r}"
            )
        for name, candidate in self.choices.items():
            check_name(name, "choice name")
            check_name(candidate, f"candidate of choice {name!r}")
        object.__setattr__(self, "arguments", dict(self.arguments))
        object.__setattr__(self, "choices", dict(self.choices))

    def to_json_dict(self) -> dict[str, Any]:
        """The ``il_tf.genotype/v1`` record (plain JSON data)."""
        return {
            "format": GENOTYPE_FORMAT,
            "space": CHOICES_SPACE,
            "builder": self.builder,
            "arguments": dict(self.arguments),
            "choices": dict(self.choices),
        }

    def to_text(self) -> str:
        """One line for logs and TensorBoard: the JSON record."""
        return json.dumps(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> ChoiceGenotype:
        """Inverse of :meth:`to_json_dict`; each field's type is checked, extra keys ignored."""
        check_record_format(d, ChoiceGenotypeError)
        if d.get("space") != CHOICES_SPACE:
            raise ChoiceGenotypeError(
                f"genotype record is for search space {d.get('space')!r}, not {CHOICES_SPACE!r}"
            )
        missing = [k for k in ("builder", "choices") if k not in d]
        if missing:
            raise ChoiceGenotypeError(
                f"genotype field {missing[0]!r} is missing (got keys {sorted(d)})"
            )
        return cls(d["builder"], d.get("arguments", {}), d["choices"])

    def cell_graphs(self) -> dict[str, Any]:
        """The drawing of the found network: its active choices as a chain, in order."""
        from il_tf.spaces.drawing import CellGraph

        nodes = tuple(
            (f"c{i}", f"{name}\n{kept}") for i, (name, kept) in enumerate(self.choices.items())
        )
        ids = ["in", *(node_id for node_id, _ in nodes), "out"]
        return {
            "choices": CellGraph(
                inputs=(("in", "images"),),
                nodes=nodes,
                outputs=(("out", "features"),),
                edges=tuple((a, b, "") for a, b in zip(ids, ids[1:], strict=False)),
            )
        }
