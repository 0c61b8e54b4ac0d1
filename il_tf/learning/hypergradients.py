"""Hypergradient methods: the gradient of the top-level objective w.r.t. the architecture.

All three share one interface (:class:`HypergradientMethod`) and run in a replica
context; each returns the global-batch hypergradient (summed over replicas).

- ``first_order``: Σ_k ∇_A L^val_k at the current weights (the chain is ignored).
- ``finite_difference``: per learner, its validation loss after one step of its
  own training update, with the Hessian-vector products ∇²_{A,W}L·v and
  ∇²_{A,H}L·v by central differences (ε = 0.01/‖v‖); other stages are treated as
  constants. DARTS second order, per learner (the published IL algorithm).
- ``unrolled``: the exact reverse-mode derivative through all S·T steps of the
  chain, proximity coupling included, by nested ``tf.GradientTape``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from il_tf.learning import objective
from il_tf.learning.objective import (
    Batch,
    ChainSettings,
    LossStats,
    SearchModel,
    Tensors,
    cross_replica_sum,
)
from il_tf.learning.schedule import Schedule

# DARTS's finite-difference radius: ε = FD_RADIUS / ‖v‖.
FD_RADIUS = 0.01
# Parameters a loss does not depend on (e.g. reduction logits of a net without
# reduction cells) get zero gradients, not None.
ZERO = tf.UnconnectedGradients.ZERO


@dataclasses.dataclass(frozen=True)
class HypergradientInputs:
    """What a method needs for one architecture step (all tensors replica-local)."""

    model: SearchModel
    schedule: Schedule
    settings: ChainSettings
    # train_batches[s][t][i]: the batch of the i-th learner of stage s at step t.
    train_batches: Sequence[Sequence[Sequence[Batch]]]
    # val_batches[k]: learner k's validation batch.
    val_batches: Sequence[Batch]
    # The virtual step size ξ (the weight optimizer's current learning rate).
    lr: tf.Tensor


HypergradientMethod = Callable[[HypergradientInputs, Tensors], tuple[Tensors, list[LossStats]]]


def _arch_dict(inputs: HypergradientInputs, arch: Tensors) -> Mapping[str, tf.Tensor]:
    return inputs.model.arch.as_dict(arch)


def first_order(inputs: HypergradientInputs, arch: Tensors) -> tuple[Tensors, list[LossStats]]:
    """Σ_k ∇_A L^val_k(A, W, H_k) at the current weights."""
    model = inputs.model
    enc, heads = model.encoder_weights(), model.head_weights()
    with tf.GradientTape() as tape:
        tape.watch(arch)
        loss, stats = objective.validation_loss(
            model, _arch_dict(inputs, arch), [enc] * len(heads), heads, inputs.val_batches
        )
    return cross_replica_sum(tape.gradient(loss, arch, unconnected_gradients=ZERO)), stats


def first_train_batch(schedule: Schedule, train_batches, learner: int) -> Batch:
    """The batch that learner ``learner`` trains on first in this iteration."""
    for s, stage in enumerate(schedule.stages):
        if learner in stage.learners:
            return train_batches[s][0][stage.learners.index(learner)]
    raise ValueError(f"learner {learner} has no stage in schedule {schedule.kind}")


def finite_difference(
    inputs: HypergradientInputs, arch: Tensors
) -> tuple[Tensors, list[LossStats]]:
    """DARTS second-order hypergradient per learner, Hessian-vector products by differences."""
    model, settings, lr = inputs.model, inputs.settings, inputs.lr
    arch_d = _arch_dict(inputs, arch)
    enc, heads = model.encoder_weights(), model.head_weights()
    total = [tf.zeros_like(a) for a in arch]
    all_stats = []
    for k in range(len(heads)):
        batch = first_train_batch(inputs.schedule, inputs.train_batches, k)
        # One virtual step of learner k's own training, from the current weights
        # (the proximity term vanishes at its own anchor).
        g_enc, (g_head,), _ = objective.stage_data_gradient(
            model, arch_d, enc, heads, (k,), (batch,)
        )
        reg_enc = objective.regularizer_gradient(enc, None, settings)
        reg_head = objective.regularizer_gradient(heads[k], None, settings)
        enc1 = [w - lr * (g + r) for w, g, r in zip(enc, g_enc, reg_enc, strict=True)]
        head1 = [w - lr * (g + r) for w, g, r in zip(heads[k], g_head, reg_head, strict=True)]
        with tf.GradientTape() as tape:
            tape.watch([arch, enc1, head1])
            val_loss, stats = objective.data_loss(
                model, arch_d, enc1, head1, k, inputs.val_batches[k]
            )
        d_arch, v_enc, v_head = tape.gradient(
            val_loss, (arch, enc1, head1), unconnected_gradients=ZERO
        )
        v_enc, v_head = cross_replica_sum((v_enc, v_head))
        eps = FD_RADIUS / tf.linalg.global_norm(v_enc + v_head)

        def train_arch_grad(sign: float, k=k, batch=batch, v_enc=v_enc, v_head=v_head, eps=eps):
            enc_p = [w + sign * eps * v for w, v in zip(enc, v_enc, strict=True)]
            head_p = [w + sign * eps * v for w, v in zip(heads[k], v_head, strict=True)]
            with tf.GradientTape() as t:
                t.watch(arch)
                loss, _ = objective.data_loss(model, arch_d, enc_p, head_p, k, batch)
            return t.gradient(loss, arch, unconnected_gradients=ZERO)

        plus, minus = train_arch_grad(1.0), train_arch_grad(-1.0)
        total = [
            acc + d - lr * (p - m) / (2.0 * eps)
            for acc, d, p, m in zip(total, d_arch, plus, minus, strict=True)
        ]
        all_stats.append(stats)
    return cross_replica_sum(total), all_stats


def _chain_validation_loss(
    inputs: HypergradientInputs, arch: Tensors
) -> tuple[tf.Tensor, list[LossStats]]:
    """This replica's part of the top-level objective, through the whole virtual chain."""
    model = inputs.model
    arch_d = _arch_dict(inputs, arch)
    encs, heads = objective.unroll(
        model,
        arch_d,
        model.encoder_weights(),
        model.head_weights(),
        inputs.schedule,
        inputs.train_batches,
        inputs.lr,
        inputs.settings,
    )
    return objective.validation_loss(model, arch_d, encs, heads, inputs.val_batches)


def unrolled(inputs: HypergradientInputs, arch: Tensors) -> tuple[Tensors, list[LossStats]]:
    """Exact reverse-mode hypergradient through every step of the chain."""
    with tf.GradientTape() as tape:
        tape.watch(arch)
        loss, stats = _chain_validation_loss(inputs, arch)
    return cross_replica_sum(tape.gradient(loss, arch, unconnected_gradients=ZERO)), stats


METHODS: dict[str, HypergradientMethod] = {
    "first_order": first_order,
    "finite_difference": finite_difference,
    "unrolled": unrolled,
}


def get_method(name: str) -> HypergradientMethod:
    """The hypergradient method called ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown hypergradient method {name!r}; allowed: {sorted(METHODS)}")
    return METHODS[name]


def top_level_objective(inputs: HypergradientInputs, arch: Tensors) -> tf.Tensor:
    """The scalar top-level objective through the whole chain (for gradient checks)."""
    loss, _ = _chain_validation_loss(inputs, arch)
    return cross_replica_sum(loss)
