"""keras-tuner hypermodels: what one trial evaluates, drawn from keras-tuner hyperparameters.

``build(hp)`` is cheap and builds no network: it returns the trial's *candidate*, which the
tuner (``il_tf.tuning.tuner.ILTuner``) then runs and scores:

* :class:`SearchHyperModel` returns a ``SearchConfig`` with the tuned settings applied.
* :class:`RandomDartsHyperModel` returns a uniformly random DARTS ``Genotype``: for each
  intermediate node of the normal and the reduction cell, 2 distinct predecessors (uniform
  over the pairs) and, on each, a uniformly random op other than ``none``.
* :class:`RandomNB201HyperModel` returns a uniformly random ``NB201Genotype``: each of the
  6 edges carries one of the 5 ops, uniformly.

Every random choice is a keras-tuner ``Choice``, so the oracle draws it (uniformly for the
``random`` oracle), records it in the trial and replays it when a trial is resumed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner

from il_tf.learning.search_config import SearchConfig
from il_tf.spaces.genotypes import GENOTYPE_OPS, Genotype
from il_tf.spaces.nb201_genotype import NB201_EDGES, NB201_OPS, NB201Genotype
from il_tf.tuning.config import HyperparameterSpec, apply_hyperparameters

#: keras-tuner's own hyperparameters (Hyperband's budget and bookkeeping) start with this.
TUNER_PREFIX = "tuner/"


def tuned_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The drawn values without keras-tuner's bookkeeping entries (``tuner/...``)."""
    return {k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)}


class SearchHyperModel(keras_tuner.HyperModel):
    """Tunes settings of an interleaved search: ``build(hp)`` is the trial's ``SearchConfig``."""

    def __init__(self, base: SearchConfig, specs: Sequence[HyperparameterSpec]):
        super().__init__(name="il_search")
        self.base = base
        self.specs = tuple(specs)

    def build(self, hp) -> SearchConfig:
        values = {spec.name: spec.declare(hp) for spec in self.specs}
        return apply_hyperparameters(self.base, values)


def darts_input_pairs(node: int) -> list[str]:
    """The predecessor pairs of intermediate node ``node`` as choice values ``"j,k"`` (j < k)."""
    return [f"{a},{b}" for a, b in itertools.combinations(range(node + 2), 2)]


class RandomDartsHyperModel(keras_tuner.HyperModel):
    """Uniformly random DARTS-space genotypes (the random-search baseline of DARTS).

    Hyperparameters, for ``cell`` in normal/reduce and node ``i``: ``cell/node{i}/inputs``
    (a pair ``"j,k"``), ``cell/node{i}/op_j`` and ``cell/node{i}/op_k`` (the ops on the
    edges from the lower and the higher input).
    """

    def __init__(self, ops: Sequence[str] = GENOTYPE_OPS, steps: int = 4):
        super().__init__(name="random_darts")
        bad = [op for op in ops if op not in GENOTYPE_OPS]
        if not ops or bad:
            raise ValueError(f"ops must be taken from {list(GENOTYPE_OPS)}, got {list(ops)}")
        self.ops = list(ops)
        self.steps = int(steps)

    def build(self, hp) -> Genotype:
        cells = {}
        for cell in ("normal", "reduce"):
            edges = []
            for node in range(self.steps):
                pair = hp.Choice(f"{cell}/node{node}/inputs", darts_input_pairs(node))
                first, second = (int(x) for x in pair.split(","))
                edges.append((hp.Choice(f"{cell}/node{node}/op_j", self.ops), first))
                edges.append((hp.Choice(f"{cell}/node{node}/op_k", self.ops), second))
            cells[cell] = edges
        concat = list(range(2, 2 + self.steps))
        return Genotype(cells["normal"], concat, cells["reduce"], concat)


class RandomNB201HyperModel(keras_tuner.HyperModel):
    """Uniformly random NAS-Bench-201 cells: hyperparameter ``edge_{to}<-{from}`` per edge."""

    def __init__(self):
        super().__init__(name="random_nb201")

    def build(self, hp) -> NB201Genotype:
        return NB201Genotype(
            tuple(hp.Choice(f"edge_{to}<-{frm}", list(NB201_OPS)) for to, frm in NB201_EDGES)
        )
