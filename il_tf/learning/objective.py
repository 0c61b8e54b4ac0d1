"""The interleaving-learning objective: losses, the virtual chain and its adjoint.

This is the one place where the math of the search lives (docs/design.md states it
in full); the hypergradient methods, the compiled steps and the real weight steps
are built from these functions. Everything here runs in a ``tf.distribute``
replica context (the default context on one device): losses are scaled by the
*global* batch size and every gradient that drives an update is summed across
replicas, so N replicas compute what one device computes on the whole batch.

Notation. A is the architecture (``arch``: a mapping name → logit tensor, or the
list of logit tensors); W the encoder weights (``enc``); H_k learner k's head
(``heads[k]``); ξ the virtual step size (``lr``); λ the proximity weight and wd the
weight decay (:class:`ChainSettings`). One iteration's chain has stages s = 1..S of
T steps each; stage s trains W and the heads of its learners on
L^tr_s = Σ_{k∈s} L^tr_k, every step Φ being

    W' = W − ξ(∇_W L^tr_s + wd·W + 2λ(W − W_anchor)),  H'_k = H_k − ξ(∇_H L^tr_k + wd·H_k),

with W_anchor the encoder the stage was handed. The top-level objective is
Σ_k L^val_k(A, W_last(k), H_k), W_last(k) the encoder after learner k's last
stage. Its gradient w.r.t. A is found by the reverse sweep of docs/design.md:
an adjoint v = ∂L^val/∂(W, H) flows back through each step by
:func:`adjoint_step`, each step adding :func:`arch_step_term` to dL^val/dA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import tensorflow as tf

from il_tf.learning.search_model import SearchModel

Tensors = list[tf.Tensor]
Batch = tuple[tf.Tensor, tf.Tensor]

# DARTS's finite-difference radius: ε = FD_RADIUS / ‖v‖.
FD_RADIUS = 0.01
# Weights a loss does not depend on (e.g. reduction logits of a net without
# reduction cells) get zero gradients, not None.
ZERO = tf.UnconnectedGradients.ZERO


def cross_replica_sum(values):
    """Sums a structure of tensors over replicas (identity on one replica).

    Differentiable: the unrolled hypergradient back-propagates through it.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    # tf.identity: a value passed through unchanged (a compiled step's argument, the
    # sum of one term) has no device, and a multi-worker all-reduce rejects that
    # ("destinations can not be empty"); the copy is made on the replica's device.
    flat = [tf.identity(v) for v in tf.nest.flatten(values)]
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    return tf.nest.pack_sequence_as(values, reduced)


class LossStats(NamedTuple):
    """Per-replica sums for logging: summed loss, correct predictions, examples."""

    loss_sum: tf.Tensor
    correct: tf.Tensor
    count: tf.Tensor


def head_loss(
    model: SearchModel, head: Tensors, learner: int, features: tf.Tensor, labels: tf.Tensor
) -> tuple[tf.Tensor, LossStats]:
    """Cross-entropy of learner ``learner``'s head on ``features``, scaled by the global batch."""
    logits, _ = model.heads[learner].stateless_call(head, [], features)
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
    features, _ = model.encoder.stateless_call(enc, [], images, arch)
    return head_loss(model, head, learner, features, labels)


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


def stage_loss(
    model: SearchModel,
    arch: Mapping[str, tf.Tensor],
    enc: Tensors,
    stage_heads: Sequence[Tensors],
    learners: Sequence[int],
    batches: Sequence[Batch],
) -> tuple[tf.Tensor, list[LossStats]]:
    """A stage's summed data loss Σ_{k∈stage} L^tr_k(A, W, H_k) on its batches."""
    losses, stats = [], []
    for k, head, batch in zip(learners, stage_heads, batches, strict=True):
        loss, st = data_loss(model, arch, enc, head, k, batch)
        losses.append(loss)
        stats.append(st)
    return tf.add_n(losses), stats


# A loss ``f(arch, weights) -> (loss, stats)`` of the architecture tensors and a list
# of weight tensors (in the steps: the flat encoder vector, then the stage's flat
# head vectors). The functions below differentiate such a loss on this replica's
# batch and sum the result over replicas (the global-batch quantity).
LossFn = Callable[[Tensors, Tensors], tuple[tf.Tensor, list[LossStats]]]


def loss_gradient(
    loss_fn: LossFn, arch: Tensors, weights: Tensors
) -> tuple[Tensors, Tensors, list[LossStats]]:
    """(∇_A f, ∇_W f, stats), summed over replicas."""
    with tf.GradientTape() as tape:
        tape.watch([arch, weights])
        loss, stats = loss_fn(arch, weights)
    g_arch, g_weights = tape.gradient(loss, (arch, weights), unconnected_gradients=ZERO)
    g_arch, g_weights = cross_replica_sum((g_arch, g_weights))
    return g_arch, g_weights, stats


def loss_hvp(
    loss_fn: LossFn, arch: Tensors, weights: Tensors, vector: Tensors
) -> tuple[Tensors, Tensors]:
    """Exact (∇²_{A,W} f · v, ∇²_{W,W} f · v) by reverse-over-reverse, summed over replicas.

    The whole-network product: it keeps the forward activations and the whole first
    backward pass alive. The chain's exact links take the same product one supernet
    segment at a time (below); this is their reference in the tests.
    """
    with tf.GradientTape() as outer:
        outer.watch([arch, weights])
        with tf.GradientTape() as inner:
            inner.watch(weights)
            loss, _ = loss_fn(arch, weights)
        grads = inner.gradient(loss, weights, unconnected_gradients=ZERO)
        dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vector, strict=True)])
    u_arch, u_weights = outer.gradient(dot, (arch, weights), unconnected_gradients=ZERO)
    return cross_replica_sum((u_arch, u_weights))


# The exact Hessian-vector product one segment at a time. The encoder is a chain of
# segments s_i = F_i(s_{i-1}; w_i, A) (``il_tf/spaces/space.py``) and a learner's loss
# is h(s_n; H). For the direction v = (v_w, v_H) (zero on A), a forward sweep carries
# the tangents ṡ_i = dF_i · (ṡ_{i-1}, v_i); a backward sweep carries the adjoint
# ḡ_i = ∂L/∂s_i and its tangent ġ_i. With ψ_i = ⟨ḡ_i, F_i⟩ and χ_i = ⟨ġ_i, F_i⟩,
#     ḡ_{i-1} = ∇_s ψ_i,   (ġ_{i-1}, u_{w_i}, u_A^i) = ∇_{(s, w, A)} [⟨∇ψ_i, (ṡ_{i-1}, v_i, 0)⟩ + χ_i],
# and u = (u_w, u_H), Σ_i u_A^i are ∇²_{x,x}L·v and ∇²_{A,x}L·v: exactly :func:`loss_hvp`,
# with the memory of one segment's second-order graph (plus the states between segments).


def _inner(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> tf.Tensor:
    """Σ ⟨a_i, b_i⟩ over two equally long lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * tf.cast(y, x.dtype)) for x, y in zip(a, b, strict=True)])


def segment_tangent(
    apply: Callable[[Sequence[tf.Tensor], Tensors], Tensors],
    state: Tensors,
    weights: Tensors,
    state_tangent: Tensors | None,
    weight_tangent: Tensors,
) -> tuple[Tensors, Tensors]:
    """(F(state, weights), its directional derivative along the tangents).

    ``apply(state, weights)`` is one segment; ``state_tangent`` None means the state is a
    constant (the images). The derivative is a transposed transpose (two reverse passes):
    the vector-Jacobian product is linear in its cotangent, whose gradient is the JVP.
    """
    inputs = (weights,) if state_tangent is None else (state, weights)
    tangents = (weight_tangent,) if state_tangent is None else (state_tangent, weight_tangent)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            # Through an op even where a state passes through: in eager mode a target
            # that is itself a source gets a gradient the outer tape does not see.
            out = [tf.identity(o) for o in apply(state, weights)]
        cotangent = [tf.zeros_like(o) for o in out]
        outer.watch(cotangent)
        grads = inner.gradient(out, inputs, output_gradients=cotangent, unconnected_gradients=ZERO)
        dot = _inner(tf.nest.flatten(grads), tf.nest.flatten(tangents))
    return out, outer.gradient(dot, cotangent, unconnected_gradients=ZERO)


def segment_adjoint(
    apply: Callable[[Sequence[tf.Tensor], Tensors, Tensors], Tensors],
    state: Tensors,
    weights: Tensors,
    arch: Tensors,
    state_tangent: Tensors | None,
    weight_tangent: Tensors,
    adjoint: Tensors,
    adjoint_tangent: Tensors,
) -> tuple[Tensors | None, Tensors | None, Tensors, Tensors]:
    """One segment of the backward sweep (see above): (ḡ_in, ġ_in, u_w, u_A) on this replica.

    ``apply(state, weights, arch)`` is the segment; ``adjoint``/``adjoint_tangent`` are ḡ
    and ġ of its output. With ``state_tangent`` None (the first segment) the state is a
    constant and ḡ_in, ġ_in are None.
    """
    first = state_tangent is None
    inputs = (weights, arch) if first else (state, weights, arch)
    with tf.GradientTape() as outer:
        outer.watch(inputs)
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            out = [tf.identity(o) for o in apply(state, weights, arch)]
            psi = _inner(out, adjoint)
        grads = inner.gradient(psi, inputs, unconnected_gradients=ZERO)
        direction = (weight_tangent,) if first else (state_tangent, weight_tangent)
        total = _inner(tf.nest.flatten(grads[:-1]), tf.nest.flatten(direction)) + _inner(
            out, adjoint_tangent
        )
    second = outer.gradient(total, inputs, unconnected_gradients=ZERO)
    if first:
        return None, None, second[0], second[1]
    return grads[0], second[0], second[1], second[2]


def head_adjoint(
    loss_fn: Callable[[tf.Tensor, Tensors], tf.Tensor],
    features: tf.Tensor,
    head: Tensors,
    features_tangent: tf.Tensor,
    head_tangent: Tensors,
) -> tuple[tf.Tensor, tf.Tensor, Tensors]:
    """The loss end of the backward sweep: (ḡ_n, ġ_n, u_H) for ``loss_fn(features, head)``."""
    inputs = (features, head)
    with tf.GradientTape() as outer:
        outer.watch(inputs)
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            loss = loss_fn(features, head)
        g_features, g_head = inner.gradient(loss, inputs, unconnected_gradients=ZERO)
        total = _inner([g_features], [features_tangent]) + _inner(g_head, head_tangent)
    u_features, u_head = outer.gradient(total, inputs, unconnected_gradients=ZERO)
    return g_features, u_features, u_head


# The first-order gradient one segment at a time, recomputing: a forward sweep keeps only
# the states between segments; a backward sweep takes each segment's vector-Jacobian
# product ∇_{(s, w, A)} ⟨ḡ_i, F_i⟩ from its recomputed activations. The memory is one
# segment's activations instead of the whole network's, for one more forward pass.


def segment_vjp(
    apply: Callable[[Sequence[tf.Tensor], Tensors, Tensors], Tensors],
    state: Tensors,
    weights: Tensors,
    arch: Tensors,
    adjoint: Tensors,
    first: bool,
) -> tuple[Tensors | None, Tensors, Tensors]:
    """One segment of a backward pass: (ḡ_in, ∇_w, ∇_A) of ⟨adjoint, F⟩ on this replica.

    ``apply(state, weights, arch)`` is the segment; ``first`` says its state is a
    constant (the images), whose ḡ_in is None.
    """
    inputs = (weights, arch) if first else (state, weights, arch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        psi = _inner([tf.identity(o) for o in apply(state, weights, arch)], adjoint)
    grads = tape.gradient(psi, inputs, unconnected_gradients=ZERO)
    if first:
        return None, grads[0], grads[1]
    return grads[0], grads[1], grads[2]


def head_gradient(
    loss_fn: Callable[[tf.Tensor, Tensors], tuple[tf.Tensor, LossStats]],
    features: tf.Tensor,
    head: Tensors,
) -> tuple[tf.Tensor, Tensors, LossStats]:
    """The loss end of a backward pass: (ḡ_n = ∂L/∂features, ∇_H L, stats) on this replica."""
    with tf.GradientTape() as tape:
        tape.watch((features, head))
        loss, stats = loss_fn(features, head)
    g_features, g_head = tape.gradient(loss, (features, head), unconnected_gradients=ZERO)
    return g_features, g_head, stats


def fd_radius(vector: Tensors) -> tf.Tensor:
    """DARTS's central-difference step ε = FD_RADIUS / ‖v‖ (any finite value when v = 0)."""
    norm = tf.linalg.global_norm(vector)
    return FD_RADIUS / tf.maximum(norm, tf.cast(1e-30, norm.dtype))


def central_difference(plus, minus, eps: tf.Tensor):
    """(f(x + εv) − f(x − εv)) / 2ε for a structure of tensors: ≈ ∇f · v for f = a gradient.

    With ``plus``, ``minus`` the (replica-summed) gradients of a loss at W ± εv,
    ε = :func:`fd_radius` (v), this is the Hessian-vector product of
    :func:`loss_hvp` by DARTS's central difference: two gradient passes, no
    second-order ops.
    """
    scale = 1.0 / (2.0 * eps)
    return tf.nest.map_structure(lambda p, m: (p - m) * scale, plus, minus)


def weight_step_direction(
    enc, heads: Sequence, g_enc, g_heads: Sequence, anchor, settings: ChainSettings, clip: bool
):
    """The direction d of a weight step W' = W − ξ·d: the virtual and the real steps' formula.

    d_W = c(∇_W L^tr + 2λ(W − W_anchor)) + wd·W for the encoder (pulled towards
    ``anchor``, the encoder its stage was handed) and d_H = c(∇_H L^tr) + wd·H for each
    of the stage's ``heads``; ``g_enc``, ``g_heads`` are the data-loss gradients. c clips
    the encoder's and the heads' terms together to the global norm ``settings.clip_norm``
    when ``clip`` is True, and is the identity otherwise. The two steps differ only there:
    the real steps clip (and apply d with momentum), the virtual steps of the chain do not,
    because the adjoint (:func:`adjoint_step`) differentiates the unclipped step.
    ``enc`` and each head are a tensor or a list of tensors. Returns (d_W, [d_H]).
    """
    lam, wd = settings.proximity, settings.weight_decay
    terms = [g_enc, *g_heads]
    if lam:
        terms[0] = tf.nest.map_structure(
            lambda g, w, a: g + 2.0 * lam * (w - a), g_enc, enc, anchor
        )
    if clip:
        flat = clip_by_global_norm(tf.nest.flatten(terms), settings.clip_norm)
        terms = tf.nest.pack_sequence_as(terms, flat)
    directions = [
        tf.nest.map_structure(lambda g, w: g + wd * w, term, weights)
        for term, weights in zip(terms, [enc, *heads], strict=True)
    ]
    return directions[0], directions[1:]


def virtual_step(enc, heads: Sequence, g_enc, g_heads: Sequence, anchor, lr, settings):
    """One step Φ of the virtual chain: W' = W − ξ·d (:func:`weight_step_direction`, unclipped).

    With d = ∇L^tr + 2λ(W − W_anchor) + wd·W for the encoder and ∇L^tr + wd·H for each of
    the stage's heads. Returns (W', [H'_k]).
    """
    d_enc, d_heads = weight_step_direction(enc, heads, g_enc, g_heads, anchor, settings, False)
    enc_out = tf.nest.map_structure(lambda w, d: w - lr * d, enc, d_enc)
    heads_out = [
        tf.nest.map_structure(lambda w, d: w - lr * d, h, d_h)
        for h, d_h in zip(heads, d_heads, strict=True)
    ]
    return enc_out, heads_out


def adjoint_step(v_enc, v_heads: Sequence, u_enc, u_heads: Sequence, lr, settings):
    """The transpose of Φ's Jacobian applied to the adjoint of its output.

    With v = (``v_enc``, ``v_heads``) = ∂L^val/∂(W', H') and u = ∇²_{W,W}L^tr · v
    (``u_enc``, ``u_heads``), returns the adjoints of Φ's inputs,
    v − ξ(u + wd·v + 2λ·v_enc) for the encoder and v − ξ(u + wd·v) for each head,
    and that of its anchor, 2λξ·v_enc. (The architecture's share,
    −ξ ∇²_{A,W}L^tr · v, is :func:`arch_step_term`.)
    """
    wd, lam = settings.weight_decay, settings.proximity
    enc_in = tf.nest.map_structure(lambda v, u: v - lr * (u + wd * v + 2.0 * lam * v), v_enc, u_enc)
    heads_in = [
        tf.nest.map_structure(lambda v, u: v - lr * (u + wd * v), vh, uh)
        for vh, uh in zip(v_heads, u_heads, strict=True)
    ]
    anchor = tf.nest.map_structure(lambda v: 2.0 * lam * lr * v, v_enc)
    return enc_in, heads_in, anchor


def arch_step_term(arch_hvp: Tensors, lr: tf.Tensor) -> Tensors:
    """One virtual step's share of dL^val/dA: −ξ ∇²_{A,W}L^tr · v."""
    return [-lr * u for u in arch_hvp]


def clip_by_global_norm(grads: Tensors, clip_norm: float) -> Tensors:
    """Clips a gradient list to a global norm (no-op when ``clip_norm`` is 0)."""
    if not clip_norm:
        return grads
    clipped, _ = tf.clip_by_global_norm(grads, clip_norm)
    return clipped
