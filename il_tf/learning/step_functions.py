"""The compiled per-step functions that every hypergradient method is built from.

A hypergradient through the chain of S·T virtual steps is not one graph: it is a
short Python loop over a few compiled functions, each of which does *one* step —
a virtual weight step Φ, a learner's validation gradient, or the adjoint of one
step (its exact or finite-difference Hessian-vector products) — so what is traced
does not grow with S, T or the number of rounds. A function is traced once per
kind of stage (the tuple of its learners) and reused by every round and every
iteration. Between calls only weights and adjoints are kept, never activations:
the reverse sweep recomputes each step's activations from its input weights.

Weights travel between the functions as flat vectors (one for the encoder, one
per head): a call then passes a handful of tensors instead of thousands, and the
vector arithmetic of the sweep is a few ops. Every function runs its body in
each replica through ``strategy.run`` and returns per-replica values (plain
tensors on one device); every gradient and Hessian-vector product in them is the
global-batch one, summed over replicas (``il_tf/learning/objective.py``).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from il_tf.learning import objective
from il_tf.learning.objective import ChainSettings, LossStats
from il_tf.learning.search_model import SearchModel
from il_tf.spaces.space import apply_with_weights

LINKS = ("exact", "finite_difference")


class WeightLayout:
    """The shapes of a list of weights and their packing into one flat vector."""

    def __init__(self, variables: Sequence):
        self.shapes = [tuple(v.shape) for v in variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def pack(self, tensors: Sequence[tf.Tensor]) -> tf.Tensor:
        """The tensors, flattened and concatenated."""
        return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)

    def unpack(self, flat: tf.Tensor) -> list[tf.Tensor]:
        """The list of tensors that :meth:`pack` made ``flat`` from."""
        if not self.sizes:
            return []
        parts = tf.split(flat, self.sizes) if len(self.sizes) > 1 else [flat]
        return [tf.reshape(p, s) for p, s in zip(parts, self.shapes, strict=True)]


class SegmentLayout:
    """Which weights of the flat encoder vector each supernet segment owns.

    A segment owns any set of the encoder's trainable variables (in its own order);
    every variable belongs to exactly one segment. A segment's weights are the
    concatenation of its variables' runs of the flat vector.
    """

    def __init__(self, variables: Sequence, segments: Sequence):
        index = {id(v): i for i, v in enumerate(variables)}
        self.sizes = [int(np.prod(v.shape)) for v in variables]
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        owner = [None] * len(variables)
        #: Per segment, the indices of its variables in the encoder's order.
        self.indices: list[list[int]] = []
        for s, seg in enumerate(segments):
            mine = []
            for v in seg.variables:
                i = index.get(id(v))
                if i is None or owner[i] is not None:
                    raise ValueError(
                        f"segment {s} owns {v.path!r}, which is "
                        + (
                            "not a trainable variable of the supernet"
                            if i is None
                            else f"owned by segment {owner[i]} already"
                        )
                        + "; every weight must belong to one segment (il_tf/spaces/space.py)"
                    )
                owner[i] = s
                mine.append(i)
            self.indices.append(mine)
        missing = [variables[i].path for i, o in enumerate(owner) if o is None]
        if missing:
            raise ValueError(
                f"the supernet's segments own none of {missing[:3]} ({len(missing)} variables); "
                "every weight must belong to one segment (il_tf/spaces/space.py)"
            )
        #: Per segment, its (offset, size) runs of the flat vector, adjacent runs merged.
        self.runs: list[list[tuple[int, int]]] = []
        for mine in self.indices:
            runs = []
            for i in mine:
                if runs and runs[-1][0] + runs[-1][1] == offsets[i]:
                    runs[-1] = (runs[-1][0], runs[-1][1] + self.sizes[i])
                else:
                    runs.append((offsets[i], self.sizes[i]))
            self.runs.append(runs)
        #: The segments' pieces, concatenated in segment order, are the flat vector itself.
        self.in_order = [i for mine in self.indices for i in mine] == list(range(len(variables)))

    def split(self, flat: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """The flat encoder vector as one piece per segment."""
        return tuple(_gather_runs(flat, runs) for runs in self.runs)

    def join(self, pieces: Sequence[tf.Tensor]) -> tf.Tensor:
        """The flat encoder vector of one piece per segment (the inverse of :meth:`split`)."""
        if self.in_order:
            return tf.concat(list(pieces), axis=0)
        parts = [None] * len(self.sizes)
        for piece, mine in zip(pieces, self.indices, strict=True):
            if not mine:
                continue
            sizes = [self.sizes[i] for i in mine]
            split = tf.split(piece, sizes) if len(sizes) > 1 else [piece]
            for i, part in zip(mine, split, strict=True):
                parts[i] = part
        return tf.concat(parts, axis=0)


def _gather_runs(flat: tf.Tensor, runs: Sequence[tuple[int, int]]) -> tf.Tensor:
    if not runs:
        return flat[:0]
    parts = [flat[start : start + size] for start, size in runs]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)


def _segment_functions(segments: Sequence, layouts: Sequence[WeightLayout]) -> list[int]:
    """Per segment, the index of the first segment of its kind (its own if it has none)."""
    first: dict = {}
    out = []
    for i, (seg, layout) in enumerate(zip(segments, layouts, strict=True)):
        if seg.kind is None or i == 0:
            out.append(i)
            continue
        j = first.setdefault(seg.kind, i)
        if layouts[j].shapes != layout.shapes:
            raise ValueError(
                f"segments {j} and {i} are both of kind {seg.kind!r} but their weights differ "
                f"(shapes {layouts[j].shapes} against {layout.shapes}); a kind promises the "
                "same function of the same weights (il_tf/spaces/space.py)"
            )
        out.append(j)
    return out


def _add_body(_key, *values):
    return tf.nest.map_structure(lambda *t: tf.add_n(list(t)), *values)


def _zeros_body(_key, value):
    return tf.nest.map_structure(tf.zeros_like, value)


def _head_signature(head) -> str:
    config = dict(head.get_config())
    config.pop("name", None)
    shapes = [tuple(v.shape) for v in head.trainable_variables]
    return repr((type(head).__name__, sorted(config.items()), shapes))


def stats_to_host(strategy: tf.distribute.Strategy, stats: Sequence[LossStats]):
    """Sums per-replica loss statistics over replicas (cross-replica context)."""
    return [
        LossStats(*(strategy.reduce(tf.distribute.ReduceOp.SUM, f, axis=None) for f in s))
        for s in stats
    ]


class StepFunctions:
    """The compiled step functions of one search model under one strategy.

    Args:
      strategy: the strategy the model's variables were created under.
      model: the search model.
      settings: λ, weight decay and clip norm of the chain.
      jit_compile: compile the functions with XLA.
      segmented_gradients: compute every gradient one supernet segment at a time,
        recomputing each segment's activations (:meth:`gradient`).
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: SearchModel,
        settings: ChainSettings,
        jit_compile: bool = False,
        segmented_gradients: bool = False,
    ):
        self.strategy = strategy
        self.model = model
        self.settings = settings
        self.jit_compile = jit_compile
        self.segmented_gradients = segmented_gradients
        self.encoder_layout = WeightLayout(model.encoder.trainable_variables)
        self.head_layouts = [WeightLayout(h.trainable_variables) for h in model.heads]
        self.segments = model.encoder.segments()
        self.segment_layouts = [WeightLayout(seg.variables) for seg in self.segments]
        self.segment_layout = SegmentLayout(model.encoder.trainable_variables, self.segments)
        #: Per segment, the segment whose compiled functions it uses (itself, or the
        #: first segment of its kind: ``il_tf/spaces/space.py``).
        self.segment_functions = _segment_functions(self.segments, self.segment_layouts)
        # Heads of the same configuration share traces: a step is traced once per
        # kind of stage, not once per learner.
        signatures = [_head_signature(h) for h in model.heads]
        self._kind = [signatures.index(sig) for sig in signatures]
        self._functions: dict[tuple, Callable] = {}
        #: How often each function was traced (a test that the trace count stays flat).
        self.trace_counts: collections.Counter = collections.Counter()

    # -- replica-level pieces ------------------------------------------------------

    def stage_loss_fn(self, learners: tuple[int, ...], batches) -> objective.LossFn:
        """The stage's data loss as a function of (A, [W, H_k for k in stage]), flat."""
        model = self.model

        def loss_fn(arch, weights):
            enc, *heads = weights
            return objective.stage_loss(
                model,
                model.arch.as_dict(arch),
                self.encoder_layout.unpack(enc),
                [self.head_layouts[k].unpack(h) for k, h in zip(learners, heads, strict=True)],
                learners,
                batches,
            )

        return loss_fn

    def read_local(self):
        """This replica's (A, W, [H_k]) from the model's variables."""
        model = self.model
        arch = [tf.identity(v.value) for v in model.arch.arch_variables]
        enc = self.encoder_layout.pack([v.value for v in model.encoder.trainable_variables])
        heads = tuple(
            layout.pack([v.value for v in h.trainable_variables])
            for layout, h in zip(self.head_layouts, model.heads, strict=True)
        )
        return arch, enc, heads

    # -- bodies (replica context) ----------------------------------------------------

    def _read_body(self, _key):
        return self.read_local()

    def _gradient_body(self, kinds, arch, enc, heads, batches):
        g_arch, grads, stats = objective.loss_gradient(
            self.stage_loss_fn(kinds, batches), arch, [enc, *heads]
        )
        return g_arch, grads[0], tuple(grads[1:]), stats

    def _phi_body(self, _key, enc, heads, g_enc, g_heads, anchor, lr):
        enc_out, heads_out = objective.virtual_step(
            enc, heads, g_enc, g_heads, anchor, tf.cast(lr, enc.dtype), self.settings
        )
        return enc_out, tuple(heads_out)

    def _perturb_body(self, _key, enc, heads, v_enc, v_heads):
        eps = objective.fd_radius([v_enc, *v_heads])

        def moved(sign):
            return tf.nest.map_structure(
                lambda w, v: w + sign * eps * v, (enc, heads), (v_enc, v_heads)
            )

        return moved(1.0), moved(-1.0), eps

    def _fd_link_body(self, _key, plus, minus, eps, v_enc, v_heads, lr):
        lr = tf.cast(lr, v_enc.dtype)
        u_arch, u_enc, u_heads = (
            objective.central_difference(p, m, eps) for p, m in zip(plus, minus, strict=True)
        )
        v_enc, v_heads, v_anchor = objective.adjoint_step(
            v_enc, v_heads, u_enc, u_heads, lr, self.settings
        )
        return v_enc, tuple(v_heads), v_anchor, objective.arch_step_term(u_arch, lr)

    def _eval_body(self, kind, arch, enc, head, batch):
        _, stats = self.stage_loss_fn((kind,), (batch,))(arch, [enc, head])
        return (stats,)

    def _segment_apply(self, i: int, images, state, weights, arch):
        encoder = self.model.encoder
        return apply_with_weights(
            self.segments[i],
            self.segment_layouts[i].unpack(weights),
            tuple(state),
            self.model.arch.as_dict(arch),
            encoder.segment_context(images),
        )

    def _split_body(self, _key, flat):
        return self.segment_layout.split(flat)

    def _tangent_body(self, i, weights, v_weights, arch, images, state, tangent):
        def apply(state, weights):
            return self._segment_apply(i, images, state, weights, arch)

        out, out_tangent = objective.segment_tangent(
            apply, list(state), weights, None if i == 0 else list(tangent), v_weights
        )
        return tuple(out), tuple(out_tangent)

    def _segment_adjoint_body(
        self, i, weights, v_weights, arch, images, state, tangent, adj, adj_tan
    ):
        def apply(state, weights, arch):
            return self._segment_apply(i, images, state, weights, arch)

        adj_in, adj_tan_in, u_weights, u_arch = objective.segment_adjoint(
            apply,
            list(state),
            weights,
            list(arch),
            None if i == 0 else list(tangent),
            v_weights,
            list(adj),
            list(adj_tan),
        )
        if i == 0:
            return u_weights, u_arch
        return tuple(adj_in), tuple(adj_tan_in), u_weights, u_arch

    def _head_adjoint_body(self, kind, state, tangent, head, v_head, labels):
        def loss_fn(features, head):
            layout = self.head_layouts[kind]
            return objective.head_loss(self.model, layout.unpack(head[0]), kind, features, labels)[
                0
            ]

        (features,), (features_tangent,) = state, tangent
        adj, adj_tan, (u_head,) = objective.head_adjoint(
            loss_fn, features, [head], features_tangent, [v_head]
        )
        return (adj,), (adj_tan,), u_head

    def _segment_forward_body(self, i, weights, arch, images, state):
        return self._segment_apply(i, images, state, weights, arch)

    def _segment_vjp_body(self, i, weights, arch, images, state, adj):
        def apply(state, weights, arch):
            return self._segment_apply(i, images, state, weights, arch)

        adj_in, g_weights, g_arch = objective.segment_vjp(
            apply, list(state), weights, list(arch), list(adj), i == 0
        )
        if i == 0:
            return g_weights, g_arch
        return tuple(adj_in), g_weights, g_arch

    def _head_gradient_body(self, kind, state, head, labels):
        layout = self.head_layouts[kind]

        def loss_fn(features, head):
            return objective.head_loss(self.model, layout.unpack(head), kind, features, labels)

        (features,) = state
        g_features, g_head, stats = objective.head_gradient(loss_fn, features, head)
        return (g_features,), g_head, (stats,)

    def _gradient_finish_body(self, _key, pieces, g_arch_parts, g_heads):
        # Per learner of the stage, its segments' pieces of ∇W, one per segment.
        g_enc = tf.add_n([self.segment_layout.join(p) for p in pieces])
        g_arch = [tf.add_n(list(parts)) for parts in zip(*g_arch_parts, strict=True)]
        g_arch, g_enc, g_heads = objective.cross_replica_sum((g_arch, g_enc, list(g_heads)))
        return g_arch, g_enc, tuple(g_heads)

    def _exact_finish_body(self, _key, u_pieces, u_arch, u_heads, v_enc, v_heads, lr):
        lr = tf.cast(lr, v_enc.dtype)
        # Per learner of the stage, its segments' pieces of u_W, one per segment.
        u_enc = tf.add_n([self.segment_layout.join(pieces) for pieces in u_pieces])
        u_arch = [tf.add_n(list(parts)) for parts in zip(*u_arch, strict=True)]
        u_arch, u_enc, u_heads = objective.cross_replica_sum((u_arch, u_enc, list(u_heads)))
        v_enc, v_heads, v_anchor = objective.adjoint_step(
            v_enc, v_heads, u_enc, u_heads, lr, self.settings
        )
        return v_enc, tuple(v_heads), v_anchor, objective.arch_step_term(u_arch, lr)

    def _val_loss_body(self, kind, arch, enc, head, batch):
        loss, _ = self.stage_loss_fn((kind,), (batch,))(arch, [enc, head])
        return objective.cross_replica_sum(loss)

    def _unrolled_body(self, schedule, arch, enc, heads, train_batches, val_batches, lr):
        # The compiled steps' own bodies (gradient, Φ, a learner's loss), composed in
        # one differentiable graph: what the reverse sweep computes, by one tape.
        heads, last = list(heads), [None] * schedule.num_learners
        with tf.GradientTape() as tape:
            tape.watch(arch)
            for s, stage in enumerate(schedule.stages):
                anchor, kinds = enc, self.kinds(stage.learners)
                for t in range(schedule.steps_per_stage):
                    stage_heads = tuple(heads[k] for k in stage.learners)
                    _, g_enc, g_heads, _ = self._gradient_body(
                        kinds, arch, enc, stage_heads, train_batches[s][t]
                    )
                    enc, stage_heads = self._phi_body(
                        None, enc, stage_heads, g_enc, g_heads, anchor, lr
                    )
                    for k, h in zip(stage.learners, stage_heads, strict=True):
                        heads[k] = h
                for k in stage.learners:
                    last[k] = enc
            losses, stats = [], []
            for k, batch in enumerate(val_batches):
                loss_fn = self.stage_loss_fn((self._kind[k],), (batch,))
                loss, (st,) = loss_fn(arch, [last[k], heads[k]])
                losses.append(loss)
                stats.append(st)
            loss = tf.add_n(losses)
        grad = tape.gradient(loss, arch, unconnected_gradients=objective.ZERO)
        return objective.cross_replica_sum(grad), stats

    # -- compiled cross-replica functions -----------------------------------------------

    def _function(self, name: str, key, body: Callable, reduce_stats: bool = False):
        if (name, key) not in self._functions:
            # A partial, not a closure: TF's retracing warning counts traces per code
            # object, and every function here is a different one traced once.
            cross_replica = functools.partial(
                self._cross_replica, name, functools.partial(body, key), reduce_stats
            )
            self._functions[name, key] = tf.function(
                cross_replica, jit_compile=self.jit_compile, autograph=False
            )
        return self._functions[name, key]

    def _cross_replica(self, name: str, replica_fn: Callable, reduce_stats: bool, *args):
        self.trace_counts[name] += 1
        out = self.strategy.run(replica_fn, args=args)
        if reduce_stats:
            *values, stats = out
            return (*values, stats_to_host(self.strategy, stats))
        return out

    def read(self):
        """(A, W, [H_k]) of the model, per replica."""
        return self._function("read", None, self._read_body)()

    def _segment_function(self, name: str, i: int, body: Callable):
        # Segments of one kind share the compiled function of the first of them.
        return self._function(name, self.segment_functions[i], body)

    def _split(self, flat):
        """A flat encoder vector (per replica) as one piece per segment."""
        return self._function("split_segments", None, self._split_body)(flat)

    def kinds(self, learners: Sequence[int]) -> tuple[int, ...]:
        """The trace key of a stage: each learner's first learner with an identical head."""
        return tuple(self._kind[k] for k in learners)

    def gradient(self, learners: tuple[int, ...], arch, enc, heads, batches):
        """∇ of the stage's data loss: (∂A, ∂W, (∂H_k), host stats), global-batch.

        The one compiled forward+backward pass: virtual steps, validation
        gradients, finite-difference links and the real weight steps all call it.
        With ``segmented_gradients`` it is a sweep over the supernet's segments
        instead (:meth:`_segmented_gradient`).
        """
        if self.segmented_gradients:
            return self._segmented_gradient(learners, arch, enc, tuple(heads), tuple(batches))
        fn = self._function(
            "gradient", self.kinds(learners), self._gradient_body, reduce_stats=True
        )
        return fn(arch, enc, tuple(heads), tuple(batches))

    def virtual_step(self, learners: tuple[int, ...], arch, enc, heads, anchor, batches, lr):
        """One virtual step Φ of the stage ``learners``; returns (W', (H'_k))."""
        _, g_enc, g_heads, _ = self.gradient(learners, arch, enc, heads, batches)
        fn = self._function("phi", len(learners), self._phi_body)
        return fn(enc, tuple(heads), g_enc, g_heads, anchor, lr)

    def val_gradient(self, learner: int, arch, enc, head, batch):
        """∇ of learner ``learner``'s validation loss: (∂W, ∂H, ∂A, host stats)."""
        g_arch, g_enc, (g_head,), (stats,) = self.gradient((learner,), arch, enc, (head,), (batch,))
        return g_enc, g_head, g_arch, stats

    def evaluate(self, learner: int, arch, enc, head, batch) -> LossStats:
        """Learner ``learner``'s loss statistics on one batch (forward only), host sums."""
        fn = self._function("eval", self._kind[learner], self._eval_body, reduce_stats=True)
        (stats,) = fn(arch, enc, head, batch)[-1]
        return stats

    def val_loss(self, learner: int, arch, enc, head, batch) -> tf.Tensor:
        """Learner ``learner``'s global-batch validation loss (in the weights' dtype)."""
        fn = self._function("val_loss", self._kind[learner], self._val_loss_body)
        return self.strategy.experimental_local_results(fn(arch, enc, head, batch))[0]

    def adjoint(self, link: str, learners: tuple[int, ...], arch, enc, heads, batches, lr, v):
        """The adjoint of one step: ``v`` = (v_W, (v_H_k)) at its output → its input.

        Returns (v_W, (v_H_k), v_anchor, the step's term of dL/dA); ``link`` says
        how the Hessian-vector products are computed (:data:`LINKS`): exactly, or
        by a central difference of two :meth:`gradient` calls.
        """
        v_enc, v_heads = v[0], tuple(v[1])
        heads, batches = tuple(heads), tuple(batches)
        if link == "exact":
            return self._segmented_exact(learners, arch, enc, heads, batches, lr, v_enc, v_heads)
        if link != "finite_difference":
            raise ValueError(f"unknown link {link!r}; allowed: {list(LINKS)}")
        n = len(learners)
        plus, minus, eps = self._function("perturb", n, self._perturb_body)(
            enc, heads, v_enc, v_heads
        )
        g_plus = self.gradient(learners, arch, *plus, batches)[:3]
        g_minus = self.gradient(learners, arch, *minus, batches)[:3]
        fn = self._function("fd_link", n, self._fd_link_body)
        return fn(g_plus, g_minus, eps, v_enc, v_heads, lr)

    def _segmented_exact(self, learners, arch, enc, heads, batches, lr, v_enc, v_heads):
        """The exact link one segment at a time (``objective.segment_adjoint``).

        Per learner of the stage: a forward sweep keeps each segment's input state and
        its tangent, a backward sweep turns the loss's adjoint into u = ∇²L·v, segment
        by segment; only one segment's second-order graph is alive at a time.
        """
        u_pieces, u_arch, u_heads = [], [], []
        last = len(self.segments) - 1
        weights, v_weights = self._split(enc), self._split(v_enc)
        for k, head, v_head, (images, labels) in zip(
            learners, heads, v_heads, batches, strict=True
        ):
            states, tangents = [(images,)], [None]
            for i in range(last + 1):
                fn = self._segment_function("segment_tangent", i, self._tangent_body)
                state, tangent = fn(
                    weights[i], v_weights[i], arch, images, states[-1], tangents[-1]
                )
                states.append(state)
                tangents.append(tangent)
            fn = self._function("head_adjoint", self._kind[k], self._head_adjoint_body)
            adj, adj_tan, u_head = fn(states[-1], tangents[-1], head, v_head, labels)
            pieces = [None] * (last + 1)
            for i in range(last, -1, -1):
                fn = self._segment_function("segment_adjoint", i, self._segment_adjoint_body)
                out = fn(
                    weights[i], v_weights[i], arch, images, states[i], tangents[i], adj, adj_tan
                )
                if i:
                    adj, adj_tan, pieces[i], u_a = out
                else:
                    pieces[i], u_a = out
                u_arch.append(u_a)
                # The states and tangents behind us are no longer needed.
                states[i + 1] = tangents[i + 1] = None
            u_pieces.append(tuple(pieces))
            u_heads.append(u_head)
        fn = self._function("exact_finish", (len(learners), len(u_arch)), self._exact_finish_body)
        return fn(tuple(u_pieces), tuple(u_arch), tuple(u_heads), v_enc, v_heads, lr)

    def _segmented_gradient(self, learners, arch, enc, heads, batches):
        """:meth:`gradient` one segment at a time (``objective.segment_vjp``).

        Per learner of the stage: a forward sweep keeps each segment's input state, a
        backward sweep recomputes one segment's activations at a time and carries the
        adjoint of the state back. The memory is one segment's activations, not the
        whole network's; the cost is one more forward pass.
        """
        pieces, g_arch, g_heads, stats = [], [], [], []
        last = len(self.segments) - 1
        weights = self._split(enc)
        for k, head, (images, labels) in zip(learners, heads, batches, strict=True):
            states = [(images,)]
            for i in range(last + 1):
                fn = self._segment_function("segment_forward", i, self._segment_forward_body)
                states.append(fn(weights[i], arch, images, states[-1]))
            fn = self._function(
                "head_gradient", self._kind[k], self._head_gradient_body, reduce_stats=True
            )
            adj, g_head, (st,) = fn(states[-1], head, labels)
            own = [None] * (last + 1)
            for i in range(last, -1, -1):
                fn = self._segment_function("segment_vjp", i, self._segment_vjp_body)
                out = fn(weights[i], arch, images, states[i], adj)
                if i:
                    adj, own[i], g_a = out
                else:
                    own[i], g_a = out
                g_arch.append(g_a)
                states[i + 1] = None
            pieces.append(tuple(own))
            g_heads.append(g_head)
            stats.append(st)
        fn = self._function(
            "gradient_finish", (len(learners), len(g_arch)), self._gradient_finish_body
        )
        g_arch, g_enc, g_heads = fn(tuple(pieces), tuple(g_arch), tuple(g_heads))
        return g_arch, g_enc, g_heads, stats

    def unrolled(self, schedule, arch, enc, heads, train_batches, val_batches, lr):
        """dL^val/dA through the whole chain as one graph: (per-replica ∂A, host stats).

        The reference the reverse sweep is checked against; its graph, trace time
        and memory grow with S·T.
        """
        fn = self._function("unrolled", schedule, self._unrolled_body)
        grad, stats = fn(
            arch,
            enc,
            tuple(heads),
            tuple(tuple(tuple(step) for step in stage) for stage in train_batches),
            tuple(val_batches),
            lr,
        )
        return grad, stats_to_host(self.strategy, stats)

    def add(self, *values):
        """The elementwise sum of equally structured (per-replica) values."""
        return self._function("add", len(values), _add_body)(*values)

    def zeros_like(self, value):
        """Zeros shaped like a (per-replica) value."""
        return self._function("zeros_like", None, _zeros_body)(value)

    def local(self, value):
        """The first replica's copy of a per-replica value."""
        return tf.nest.map_structure(
            lambda v: self.strategy.experimental_local_results(v)[0], value
        )
