"""Hypergradient methods: the gradient of the top-level objective w.r.t. the architecture.

Every method is a pure function with one signature, ``method(steps, inputs)``, built
from the compiled per-step functions of :class:`~il_tf.learning.step_functions.StepFunctions`;
it returns the global-batch hypergradient (per replica, identical on each) and the
learners' validation statistics. README's "Hypergradient methods" table gives their
cost; docs/design.md derives the chain methods.

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

from il_tf.learning.objective import Batch, LossStats
from il_tf.learning.stage_schedule import Schedule
from il_tf.learning.step_functions import StepFunctions


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


Method = Callable[[StepFunctions, ChainInputs], Hypergradient]


def first_order(steps: StepFunctions, x: ChainInputs) -> Hypergradient:
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


def per_learner_finite_difference(steps: StepFunctions, x: ChainInputs) -> Hypergradient:
    """DARTS second order per learner: one own step each, other stages held constant."""
    grad, stats = None, []
    for k, batch in enumerate(x.val_batches):
        train = (first_train_batch(x.schedule, x.train_batches, k),)
        # The proximity term vanishes at its own anchor (the current encoder).
        enc, (head,) = steps.virtual_step((k,), x.arch, x.enc, (x.heads[k],), x.enc, train, x.lr)
        v_enc, v_head, g_arch, st = steps.val_gradient(k, x.arch, enc, head, batch)
        *_, step_term = steps.adjoint(
            "finite_difference", (k,), x.arch, x.enc, (x.heads[k],), train, x.lr, (v_enc, (v_head,))
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


def chain_exact(steps: StepFunctions, x: ChainInputs) -> Hypergradient:
    """The reverse sweep with exact Hessian-vector products (equals ``unrolled``)."""
    return reverse_sweep(steps, x, "exact")


def chain_finite_difference(steps: StepFunctions, x: ChainInputs) -> Hypergradient:
    """The reverse sweep with central-difference Hessian-vector products per step."""
    return reverse_sweep(steps, x, "finite_difference")


def unrolled(steps: StepFunctions, x: ChainInputs) -> Hypergradient:
    """The exact derivative through the chain as one graph (grows with S·T)."""
    grad, stats = steps.unrolled(
        x.schedule, x.arch, x.enc, x.heads, x.train_batches, x.val_batches, x.lr
    )
    return Hypergradient(grad, stats)


METHODS: dict[str, Method] = {
    "first_order": first_order,
    "per_learner_finite_difference": per_learner_finite_difference,
    "chain_finite_difference": chain_finite_difference,
    "chain_exact": chain_exact,
    "unrolled": unrolled,
}

#: Names of earlier releases, with the method each now is.
RENAMED = {"finite_difference": "per_learner_finite_difference"}


def get_method(name: str) -> Method:
    """The hypergradient method called ``name``."""
    if name in RENAMED:
        raise ValueError(
            f"hypergradient method {name!r} is now called {RENAMED[name]!r} (what it "
            "computes: one step per learner, other stages held constant); the chain "
            "through all stages is 'chain_finite_difference' (the default) or 'chain_exact'"
        )
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
