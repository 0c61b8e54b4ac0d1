"""Interleaving schedules: which learners train the shared encoder in which stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

SCHEDULES = ("interleaved", "blocked", "joint")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the chain: the learners whose losses train the encoder in it.

    Interleaved and blocked stages have one learner; a joint (multi-task) stage
    sums the losses of all learners at every step.
    """

    learners: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The stages of one search iteration and the steps each stage takes."""

    kind: str
    stages: tuple[Stage, ...]
    steps_per_stage: int
    num_learners: int

    @property
    def last_stage(self) -> tuple[int, ...]:
        """For each learner, the index of the last stage it trains in (W_last(k))."""
        last = [-1] * self.num_learners
        for s, stage in enumerate(self.stages):
            for k in stage.learners:
                last[k] = s
        return tuple(last)

    def batches_per_iteration(self, learner: int) -> int:
        """Train batches one iteration draws from ``learner``'s pipeline."""
        return self.steps_per_stage * sum(learner in st.learners for st in self.stages)

    @property
    def num_steps(self) -> int:
        """Weight steps in one iteration (S · T)."""
        return len(self.stages) * self.steps_per_stage


def make_schedule(
    num_learners: int,
    rounds: int,
    kind: str = "interleaved",
    steps_per_stage: int = 1,
    order: Sequence[int] | None = None,
) -> Schedule:
    """The stage sequence of one search iteration.

    - ``interleaved``: rounds × (k_1, ..., k_K) — the method (A, B, C, A, B, C, ...).
    - ``blocked``: each learner's ``rounds`` stages back to back (A, A, B, B, ...).
    - ``joint``: ``rounds`` stages, each summing all learners' losses (multi-task).

    ``order`` is a permutation of the learner indices (default 0..K-1). K=1, R=1
    is DARTS.
    """
    if num_learners < 1:
        raise ValueError(f"a search needs at least one learner, got {num_learners}")
    if rounds < 1:
        raise ValueError(f"rounds (R) must be >= 1, got {rounds}")
    if steps_per_stage < 1:
        raise ValueError(f"steps_per_stage (T) must be >= 1, got {steps_per_stage}")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; allowed: {list(SCHEDULES)}")
    order = tuple(range(num_learners)) if order is None else tuple(order)
    if sorted(order) != list(range(num_learners)):
        raise ValueError(
            f"stage order {list(order)} must be a permutation of the learner indices "
            f"0..{num_learners - 1}"
        )
    if kind == "interleaved":
        stages = [Stage((k,)) for _ in range(rounds) for k in order]
    elif kind == "blocked":
        stages = [Stage((k,)) for k in order for _ in range(rounds)]
    else:
        stages = [Stage(order) for _ in range(rounds)]
    return Schedule(kind, tuple(stages), steps_per_stage, num_learners)
