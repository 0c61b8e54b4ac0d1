"""The interleaving-learning objective: losses, the stage chain and its virtual unroll.

This is the one place where the math of DESIGN §1 lives; the hypergradient methods
and the real weight steps are built from these functions. Everything here runs in
a ``tf.distribute`` replica context (the default context on one device): losses
are scaled by the *global* batch size and every gradient that drives an update is
summed across replicas, so N replicas compute what one device computes on the
whole batch.

Notation: ``arch`` is a mapping name → architecture-logit tensor; ``enc`` is the
list of encoder weight tensors (in ``encoder.trainable_variables`` order);
``heads`` is a list, one entry per learner, of that head's weight tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import keras
import tensorflow as tf

from il_tf.learning.schedule import Schedule
from il_tf.spaces.architecture import Architecture

Tensors = list[tf.Tensor]
Batch = tuple[tf.Tensor, tf.Tensor]


def num_replicas() -> int:
    """Replicas in sync in the current context (1 outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


def cross_replica_sum(values):
    """Sums a structure of tensors over replicas (identity on one replica).

    Differentiable: the unrolled hypergradient back-propagates through it.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    flat = tf.nest.flatten(values)
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    return tf.nest.pack_sequence_as(values, reduced)


class LossStats(NamedTuple):
    """Per-replica sums for logging: summed loss, correct predictions, examples."""

    loss_sum: tf.Tensor
    correct: tf.Tensor
    count: tf.Tensor


@dataclasses.dataclass
class SearchModel:
    """The searchable model: a supernet encoder, one head per learner, the architecture."""

    encoder: keras.layers.Layer
    heads: list[keras.layers.Layer]
    arch: Architecture

    def encoder_weights(self) -> Tensors:
        return [tf.identity(v.value) for v in self.encoder.trainable_variables]

    def head_weights(self) -> list[Tensors]:
        return [[tf.identity(v.value) for v in h.trainable_variables] for h in self.heads]

    def arch_tensors(self) -> Tensors:
        return [tf.identity(v.value) for v in self.arch.arch_variables]

    def logits(
        self, arch: Mapping[str, tf.Tensor], enc: Tensors, head: Tensors, learner: int, images
    ) -> tf.Tensor:
        """Learner ``learner``'s logits with the given weights (no side effects)."""
        features, _ = self.encoder.stateless_call(enc, [], images, arch)
        logits, _ = self.heads[learner].stateless_call(head, [], features)
        return logits


def data_loss(
    model: SearchModel,
    arch: Mapping[str, tf.Tensor],
    enc: Tensors,
    head: Tensors,
    learner: int,
    batch: Batch,
) -> tuple[tf.Tensor, LossStats]:
    """Cross-entropy of one learner's batch, scaled by the global batch size."""
    images, labels = batch
    logits = model.logits(arch, enc, head, learner, images)
    labels = tf.cast(labels, tf.int32)
    if logits.dtype in (tf.float16, tf.bfloat16):
        # Mixed precision: the loss (and so every hypergradient) stays in float32.
        logits = tf.cast(logits, tf.float32)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    loss = tf.nn.compute_average_loss(per_example)
    correct = tf.reduce_sum(
        tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    )
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return loss, LossStats(tf.cast(tf.reduce_sum(per_example), tf.float32), correct, count)


@dataclasses.dataclass(frozen=True)
class ChainSettings:
    """Hyperparameters of the stage chain.

    ``proximity`` is λ of λ‖W − W_anchor‖²; ``weight_decay`` the L2 coefficient
    added to weight gradients (coupled, as in the reference SGD); ``clip_norm``
    the global-norm clip of the real weight steps (0 = off).
    """

    proximity: float = 0.0
    weight_decay: float = 3e-4
    clip_norm: float = 5.0


def regularizer_gradient(
    weights: Tensors, anchor: Tensors | None, settings: ChainSettings
) -> Tensors:
    """Gradient of λ‖W − W_anchor‖² (when an anchor is given) + (wd/2)‖W‖²."""
    grads = []
    for i, w in enumerate(weights):
        g = settings.weight_decay * w
        if anchor is not None and settings.proximity:
            g += 2.0 * settings.proximity * (w - anchor[i])
        grads.append(g)
    return grads


def stage_data_gradient(
    model: SearchModel,
    arch: Mapping[str, tf.Tensor],
    enc: Tensors,
    heads: list[Tensors],
    learners: Sequence[int],
    batches: Sequence[Batch],
) -> tuple[Tensors, list[Tensors], list[LossStats]]:
    """Global-batch gradient of a stage's summed data loss w.r.t. encoder and its heads."""
    stage_heads = [heads[k] for k in learners]
    with tf.GradientTape() as tape:
        tape.watch(enc)
        tape.watch(stage_heads)
        losses, stats = zip(
            *[
                data_loss(model, arch, enc, heads[k], k, b)
                for k, b in zip(learners, batches, strict=True)
            ],
            strict=True,
        )
        total = tf.add_n(list(losses))
    g_enc, g_heads = tape.gradient(
        total, (enc, stage_heads), unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    g_enc, g_heads = cross_replica_sum((g_enc, g_heads))
    return g_enc, g_heads, list(stats)


def unroll(
    model: SearchModel,
    arch: Mapping[str, tf.Tensor],
    enc: Tensors,
    heads: list[Tensors],
    schedule: Schedule,
    train_batches: Sequence[Sequence[Sequence[Batch]]],
    lr: tf.Tensor,
    settings: ChainSettings,
) -> tuple[list[Tensors], list[Tensors]]:
    """The virtual chain: S·T one-step updates W ← W − ξ∇[L^tr + λ‖W − W_anchor‖²].

    ``train_batches[s][t]`` holds one batch per learner of stage s, step t. Heads
    are updated only by their own learner. Returns W_last(k) for each learner
    (the encoder after learner k's last stage) and the final heads. Executed under
    a ``GradientTape`` it is differentiable w.r.t. ``arch`` through every step.
    """
    heads = list(heads)
    last = [None] * schedule.num_learners
    for s, stage in enumerate(schedule.stages):
        anchor = enc
        for t in range(schedule.steps_per_stage):
            g_enc, g_heads, _ = stage_data_gradient(
                model, arch, enc, heads, stage.learners, train_batches[s][t]
            )
            reg = regularizer_gradient(enc, anchor, settings)
            enc = [w - lr * (g + r) for w, g, r in zip(enc, g_enc, reg, strict=True)]
            for k, g_head in zip(stage.learners, g_heads, strict=True):
                reg_h = regularizer_gradient(heads[k], None, settings)
                heads[k] = [
                    w - lr * (g + r) for w, g, r in zip(heads[k], g_head, reg_h, strict=True)
                ]
        for k in stage.learners:
            last[k] = enc
    return last, heads


def validation_loss(
    model: SearchModel,
    arch: Mapping[str, tf.Tensor],
    encs: Sequence[Tensors],
    heads: Sequence[Tensors],
    val_batches: Sequence[Batch],
) -> tuple[tf.Tensor, list[LossStats]]:
    """The top-level objective Σ_k L(A, W_k, H_k; D_k^val) and per-learner stats."""
    losses, stats = zip(
        *[
            data_loss(model, arch, encs[k], heads[k], k, val_batches[k])
            for k in range(len(val_batches))
        ],
        strict=True,
    )
    return tf.add_n(list(losses)), list(stats)


def clip_by_global_norm(grads: Tensors, clip_norm: float) -> Tensors:
    """Clips a gradient list to a global norm (no-op when ``clip_norm`` is 0)."""
    if not clip_norm:
        return grads
    clipped, _ = tf.clip_by_global_norm(grads, clip_norm)
    return clipped
