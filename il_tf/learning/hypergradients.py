"""Hypergradient methods: the gradient of the top-level objective w.r.t. the architecture.

A method is one :class:`HypergradientMethod`, defined once in :data:`METHODS`: its name,
what it computes, how it differentiates a step of the chain (its link), its cost in
forward+backward passes per iteration and its memory class. The search, the engine, the
benchmarks and the study all take methods from here, and :func:`get_method` is the one
place that checks a name. Every method is built from the compiled per-step functions of
:class:`~il_tf.learning.step_functions.StepFunctions`; it returns the global-batch
hypergradient (per replica, identical on each) and the learners' validation statistics.
docs/design.md derives the chain methods.

- ``first_order``: Σ_k ∇_A L^val_k at the current weights (the chain is ignored).
- ``per_learner_finite_difference``: per learner, its validation loss after one
  virtual step of its own training from the current weights (DARTS second order,
  per learner), Hessian-vector products by central differences; every other stage
  is treated as a constant.
- ``chain_finite_difference``: the reverse sweep through all S·T steps of the
  chain, each step's Hessian-vector products by central differences
  (ε = 0.01/‖v‖ per step): no second-order ops, the lowest memory.
- ``chain_exact``: the same sweep with exact Hessian-vector products
  (reverse-over-reverse); equals ``unrolled``.
- ``unrolled``: the exact derivative through the whole chain as one graph, whose
  size, trace time and memory grow with S·T (the reference for ``chain_exact``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from il_tf import legacy
from il_tf.learning.objective import Batch, LossStats
from il_tf.learning.stage_schedule import Schedule
from il_tf.learning.step_functions import LINKS, StepFunctions


@dataclasses.dataclass(frozen=True)
class ChainInputs:
    """What a method needs for one architecture step (per-replica values)."""

    schedule: Schedule
    # The architecture logits A (a list, in ``Architecture.arch_variables`` order).
    arch: Any
    # The encoder W and the heads (H_k), flat, as ``StepFunctions.read`` gives them.
    enc: Any
    heads: tuple
    # train_batches[s][t][i]: the batch of the i-th learner of stage s at step t.
    train_batches: Sequence[Sequence[Sequence[Batch]]]
    # val_batches[k]: learner k's validation batch.
    val_batches: Sequence[Batch]
    # The virtual step size ξ (the weight optimizer's current learning rate).
    lr: tf.Tensor


class Hypergradient(NamedTuple):
    """A method's result: dL^val/dA per replica and each learner's validation stats."""

    grad: Any
    val_stats: list[LossStats]


def _first_order(steps: StepFunctions, x: ChainInputs, _link: str) -> Hypergradient:
    """Σ_k ∇_A L^val_k(A, W, H_k) at the current weights."""
    grad, stats = None, []
    for k, batch in enumerate(x.val_batches):
        _, _, g_arch, st = steps.val_gradient(k, x.arch, x.enc, x.heads[k], batch)
        grad = g_arch if grad is None else steps.add(grad, g_arch)
        stats.append(st)
    return Hypergradient(grad, stats)


def first_train_batch(schedule: Schedule, train_batches, learner: int) -> Batch:
    """The batch that learner ``learner`` trains on first in this iteration."""
    for s, stage in enumerate(schedule.stages):
        if learner in stage.learners:
            return train_batches[s][0][stage.learners.index(learner)]
    raise ValueError(f"learner {learner} has no stage in schedule {schedule.kind}")


def _per_learner(steps: StepFunctions, x: ChainInputs, link: str) -> Hypergradient:
    """DARTS second order per learner: one own step each, other stages held constant."""
    grad, stats = None, []
    for k, batch in enumerate(x.val_batches):
        train = (first_train_batch(x.schedule, x.train_batches, k),)
        # The proximity term vanishes at its own anchor (the current encoder).
        enc, (head,) = steps.virtual_step((k,), x.arch, x.enc, (x.heads[k],), x.enc, train, x.lr)
        v_enc, v_head, g_arch, st = steps.val_gradient(k, x.arch, enc, head, batch)
        *_, step_term = steps.adjoint(
            link, (k,), x.arch, x.enc, (x.heads[k],), train, x.lr, (v_enc, (v_head,))
        )
        grad = g_arch if grad is None else steps.add(grad, g_arch)
        grad = steps.add(grad, step_term)
        stats.append(st)
    return Hypergradient(grad, stats)


def _forward(steps: StepFunctions, x: ChainInputs):
    """The virtual chain: each step's input weights, W_last(k) and the final heads."""
    enc, heads = x.enc, list(x.heads)
    inputs, last = [], [None] * x.schedule.num_learners
    for s, stage in enumerate(x.schedule.stages):
        anchor = enc
        for t in range(x.schedule.steps_per_stage):
            stage_heads = tuple(heads[k] for k in stage.learners)
            inputs.append((enc, stage_heads))
            enc, stage_heads = steps.virtual_step(
                stage.learners, x.arch, enc, stage_heads, anchor, x.train_batches[s][t], x.lr
            )
            for k, h in zip(stage.learners, stage_heads, strict=True):
                heads[k] = h
        for k in stage.learners:
            last[k] = enc
    return inputs, last, heads


def reverse_sweep(steps: StepFunctions, x: ChainInputs, link: str) -> Hypergradient:
    """dL^val/dA through the whole chain: a forward pass keeping only weights, then adjoints.

    Each learner's validation gradient enters the encoder's adjoint at W_last(k)
    and its head's adjoint at the end; going back, every step turns the adjoint
    at its output into the one at its input (recomputing only that step) and adds
    its term to dL/dA; a stage's anchor adjoint joins the encoder's at the stage's
    first step. A head receives adjoint only from its own learner's steps.
    """
    schedule = x.schedule
    inputs, last, heads = _forward(steps, x)
    # Sums are accumulated pairwise, so that one compiled ``add`` serves any chain.
    grad, stats, v_heads, v_enc_at = None, [], [None] * len(heads), [None] * len(heads)
    for k, batch in enumerate(x.val_batches):
        v_enc_at[k], v_heads[k], g_arch, st = steps.val_gradient(
            k, x.arch, last[k], heads[k], batch
        )
        grad = g_arch if grad is None else steps.add(grad, g_arch)
        stats.append(st)
    v_enc = steps.zeros_like(x.enc)
    for s in reversed(range(len(schedule.stages))):
        stage = schedule.stages[s]
        for k in stage.learners:
            if schedule.last_stage[k] == s and v_enc_at[k] is not None:
                v_enc = steps.add(v_enc, v_enc_at[k])
        v_anchor = None
        for t in reversed(range(schedule.steps_per_stage)):
            enc, stage_heads = inputs[s * schedule.steps_per_stage + t]
            v_stage_heads = tuple(v_heads[k] for k in stage.learners)
            v_enc, v_stage_heads, anchor_term, arch_term = steps.adjoint(
                link,
                stage.learners,
                x.arch,
                enc,
                stage_heads,
                x.train_batches[s][t],
                x.lr,
                (v_enc, v_stage_heads),
            )
            for k, v in zip(stage.learners, v_stage_heads, strict=True):
                v_heads[k] = v
            grad = steps.add(grad, arch_term)
            v_anchor = anchor_term if v_anchor is None else steps.add(v_anchor, anchor_term)
        # The stage's anchor is its first step's input encoder.
        v_enc = steps.add(v_enc, v_anchor)
    return Hypergradient(grad, stats)


def _unrolled(steps: StepFunctions, x: ChainInputs, _link: str) -> Hypergradient:
    """The exact derivative through the chain as one graph (grows with S·T)."""
    grad, stats = steps.unrolled(
        x.schedule, x.arch, x.enc, x.heads, x.train_batches, x.val_batches, x.lr
    )
    return Hypergradient(grad, stats)


#: How a method differentiates a step of the chain: ``LINKS`` (``exact``: segment by
#: segment, reverse over reverse; ``finite_difference``: central differences of two
#: gradients), the whole chain on one tape, or not at all (the chain is ignored).
WHOLE_GRAPH = "whole_graph"
NO_CHAIN = "none"


@dataclasses.dataclass(frozen=True)
class HypergradientMethod:
    """One hypergradient method: call it as ``method(steps, inputs)``.

    Attributes:
      name: the name ``SearchConfig.method`` takes.
      summary: what it computes, in one sentence.
      compute: ``compute(steps, inputs, link)``, the computation.
      link: how a step of the chain is differentiated: one of ``LINKS``,
        ``WHOLE_GRAPH`` or ``NO_CHAIN``.
      passes: forward+backward passes of the supernet per search iteration, including
        the S·T real weight steps, as a function of (K, S, T); None where the count is
        not a whole number of passes (second-order graphs).
      cost: the same in words, for tables.
      memory: what its memory grows with (its memory class).
    """

    name: str
    summary: str
    compute: Callable[[StepFunctions, ChainInputs, str], Hypergradient]
    link: str
    passes: Callable[[int, int, int], int] | None
    cost: str
    memory: str

    def __post_init__(self):
        if self.link not in (*LINKS, WHOLE_GRAPH, NO_CHAIN):
            raise ValueError(
                f"{self.name}: link {self.link!r}; allowed: {[*LINKS, WHOLE_GRAPH, NO_CHAIN]}"
            )

    def __call__(self, steps: StepFunctions, inputs: ChainInputs) -> Hypergradient:
        return self.compute(steps, inputs, self.link)

    def expected_passes(self, num_learners: int, stages: int, steps_per_stage: int) -> int | None:
        """:attr:`passes` for K learners and S stages of T steps (None: no count)."""
        if self.passes is None:
            return None
        return self.passes(num_learners, stages, steps_per_stage)


first_order = HypergradientMethod(
    name="first_order",
    summary="Σ_k ∇_A L^val_k at the current weights (DARTS first order)",
    compute=_first_order,
    link=NO_CHAIN,
    passes=lambda k, s, t: k + s * t,
    cost="K + S·T",
    memory="one forward+backward",
)
per_learner_finite_difference = HypergradientMethod(
    name="per_learner_finite_difference",
    summary="per learner, DARTS second order on one step of its own training from the "
    "current weights; every other stage held constant",
    compute=_per_learner,
    link="finite_difference",
    passes=lambda k, s, t: 4 * k + s * t,
    cost="4·K + S·T",
    memory="one forward+backward",
)
chain_finite_difference = HypergradientMethod(
    name="chain_finite_difference",
    summary="the reverse sweep through all S·T steps of the chain; each step's "
    "Hessian-vector products by central differences",
    compute=reverse_sweep,
    link="finite_difference",
    passes=lambda k, s, t: 4 * s * t + k,
    cost="4·S·T + K",
    memory="one forward+backward + S·T weight copies",
)
chain_exact = HypergradientMethod(
    name="chain_exact",
    summary="the same sweep with exact Hessian-vector products (reverse over reverse, "
    "one supernet segment at a time); equals unrolled",
    compute=reverse_sweep,
    link="exact",
    passes=None,
    cost="more than 4·S·T + K: every link is an exact second-order pass",
    memory="the compiled second-order function of every segment + one forward+backward "
    "+ S·T weight copies",
)
unrolled = HypergradientMethod(
    name="unrolled",
    summary="the exact derivative through the whole chain as one graph, on one tape "
    "(the reference for chain_exact)",
    compute=_unrolled,
    link=WHOLE_GRAPH,
    passes=None,
    cost="the virtual chain forward, then a second-order backward through all of it in "
    "one graph (no fixed count of passes); its trace time grows with S·T",
    memory="every step's activations: grows with S·T",
)

#: Every method, by name.
METHODS: dict[str, HypergradientMethod] = {
    m.name: m
    for m in (
        first_order,
        per_learner_finite_difference,
        chain_finite_difference,
        chain_exact,
        unrolled,
    )
}


def get_method(name: str) -> HypergradientMethod:
    """The hypergradient method called ``name``: the one check of a method's name."""
    renamed = legacy.renamed_method(name)
    if renamed is not None:
        raise renamed
    if name not in METHODS:
        raise ValueError(f"unknown hypergradient method {name!r}; allowed: {sorted(METHODS)}")
    return METHODS[name]


def chain_objective(steps: StepFunctions, x: ChainInputs) -> tf.Tensor:
    """The scalar top-level objective Σ_k L^val_k through the virtual chain (for checks)."""
    _, last, heads = _forward(steps, x)
    return tf.add_n(
        [
            steps.val_loss(k, x.arch, last[k], heads[k], batch)
            for k, batch in enumerate(x.val_batches)
        ]
    )
