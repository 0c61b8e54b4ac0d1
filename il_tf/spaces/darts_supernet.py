"""The DARTS search space as a Keras supernet: mixed ops, search cells, the encoder.

The encoder maps images to pooled features; per-learner heads sit on top of it
(built by ``il_tf.learning.search``). Architecture logits are not weights of the encoder: the
encoder takes them as a call argument, so the hypergradient methods can pass
tensors (or differentiate through them) and the optimizer of the weights never
sees them. They live in an :class:`~il_tf.spaces.architecture.Architecture`.

Two published variants of the DARTS search are settings of the same supernet:

- **PC-DARTS** (Xu et al., ICLR 2020): ``partial_channels=K`` sends 1/K of each
  edge's channels through the mixed op; the rest bypass it (max-pooled on
  stride-2 edges) and a channel shuffle with K groups mixes the two parts.
  Edge normalization (on by default when K > 1) adds logits β, one per edge:
  each node sums its incoming edges weighted by the softmax of their β.
- **P-DARTS** (Chen et al., ICCV 2019): per-edge op lists (the pruned op sets
  of a later stage), dropout on the skip-connect op (``skip_dropout``) and a
  cap on skip-connects in the derived normal cell (``max_skip_normal``). The
  stages themselves are run by :mod:`il_tf.learning.progressive`.

Skip-connect dropout is deterministic: its mask is a hash of (the example's
pixels, ``dropout_seed``, the edge, the element), computed in TF integer ops.
So a resumed search draws the very masks of an uninterrupted one, N replicas
draw what one device draws on the whole batch (masks are per example), and the
masks are constants of the hypergradient (the virtual step and the real step on
one batch see the same mask; finite differences see no mask noise).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.architecture import AUX_SKIP
from il_tf.spaces.batched_ops import wide_op
from il_tf.spaces.genotypes import DARTS_OPS, num_edges
from il_tf.spaces.ops import (
    Conv,
    FactorizedReduce,
    batch_norm,
    make_op,
    max_pool,
    relu_conv_bn,
)
from il_tf.spaces.space import Segment, run_segments

EdgeOps = tuple[tuple[str, ...], ...]
# Ops without weights whose output depends on the input (and stride) only.
WEIGHTLESS_OPS = ("max_pool_3x3", "avg_pool_3x3")


# ----------------------------------------------------------------------------- PC-DARTS parts
def channel_shuffle(x: tf.Tensor, groups: int) -> tf.Tensor:
    """Channel shuffle of an NHWC tensor (ShuffleNet; PC-DARTS after each partial edge).

    Channels are read as a ``groups × (C / groups)`` matrix and transposed: output
    channel ``i * groups + g`` is input channel ``g * (C / groups) + i``. The
    inverse is ``channel_shuffle(y, C // groups)``.
    """
    if groups == 1:
        return x
    channels = x.shape[-1]
    if channels is None or channels % groups:
        raise ValueError(f"channel_shuffle: {channels} channels do not split into {groups} groups")
    dims = [d if d is not None else tf.shape(x)[i] for i, d in enumerate(x.shape[:-1])]
    y = tf.reshape(x, [*dims, groups, channels // groups])
    perm = list(range(len(dims))) + [len(dims) + 1, len(dims)]
    return tf.reshape(tf.transpose(y, perm), [*dims, channels])


def bypass_pool(x: tf.Tensor) -> tf.Tensor:
    """2×2 stride-2 max-pooling of the channels that bypass a reduction edge.

    PC-DARTS's ``MaxPool2d(2, 2)``; odd sizes are padded at the end so the result
    is ceil(H/2)×ceil(W/2), like every stride-2 op. Built on :func:`ops.max_pool`,
    whose double gradient is exact in graph mode.
    """
    pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
    if pad_h or pad_w:
        low = -6e4 if x.dtype == tf.float16 else -1e9
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=low)
    return max_pool(x, 2, 2)


def edge_normalization_weights(beta: tf.Tensor, steps: int) -> tf.Tensor:
    """Softmax of β over each node's incoming edges, as one ``[num_edges(steps)]`` vector."""
    parts, lo = [], 0
    for node in range(steps):
        parts.append(tf.nn.softmax(beta[lo : lo + node + 2]))
        lo += node + 2
    return tf.concat(parts, axis=0)


# ----------------------------------------------------------------------------- deterministic dropout
_MASK32 = 0xFFFFFFFF
_MIX_MULTIPLIER = 0x45D9F3B  # < 2**27, so products of 32-bit values fit in int64


def _mix32(h: tf.Tensor) -> tf.Tensor:
    """A 32-bit integer hash finalizer on int64 tensors that hold 32-bit values."""
    for _ in range(2):
        h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
        h = tf.bitwise.bitwise_and(h * _MIX_MULTIPLIER, _MASK32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def _mix32_int(value: int) -> int:
    """:func:`_mix32` of a Python integer (for salts known when the graph is built)."""
    h = value & _MASK32
    for _ in range(2):
        h ^= h >> 16
        h = (h * _MIX_MULTIPLIER) & _MASK32
    return h ^ (h >> 16)


def example_keys(images: tf.Tensor, seed: int = 0) -> tf.Tensor:
    """One 32-bit key per example (int64 ``[B]``): a hash of its pixels' bits and ``seed``.

    Integer sums are exact and order-free, so an example gets the same key on any
    device, in any batch, on any replica.
    """
    x = tf.stop_gradient(tf.cast(images, tf.float32))
    bits = tf.bitwise.bitwise_and(tf.cast(tf.bitcast(x, tf.int32), tf.int64), _MASK32)
    flat = tf.reshape(bits, [tf.shape(x)[0], -1])
    position = _mix32(tf.range(tf.shape(flat)[1], dtype=tf.int64))
    h = tf.reduce_sum(_mix32(tf.bitwise.bitwise_xor(flat, position)), axis=1)
    h = tf.bitwise.bitwise_and(h, _MASK32)
    return _mix32(tf.bitwise.bitwise_xor(h, _mix32_int(seed + 0x5EED)))


def hashed_uniform(keys: tf.Tensor, salt: int, shape_like: tf.Tensor) -> tf.Tensor:
    """Uniform [0, 1) float32 numbers shaped like ``shape_like``: a hash of (key, salt, index)."""
    shape = tf.shape(shape_like)
    n = tf.reduce_prod(shape[1:])
    k = _mix32(tf.bitwise.bitwise_xor(keys, _mix32_int(salt)))
    position = _mix32(tf.range(tf.cast(n, tf.int64), dtype=tf.int64))
    h = _mix32(tf.bitwise.bitwise_xor(k[:, None], position[None, :]))
    # 24 bits: exactly representable in float32, so the result stays below 1.
    u = tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) * (1.0 / (1 << 24))
    return tf.reshape(u, shape)


def hashed_dropout(x: tf.Tensor, keys: tf.Tensor, salt: int, rate: float) -> tf.Tensor:
    """Inverted dropout with a mask from :func:`hashed_uniform` (constant for gradients)."""
    keep = tf.cast(hashed_uniform(keys, salt, x) >= rate, x.dtype)
    return x * keep * tf.cast(1.0 / (1.0 - rate), x.dtype)


# ----------------------------------------------------------------------------- op lists
def normalize_edge_ops(ops, steps: int, what: str = "ops") -> EdgeOps:
    """One op tuple per edge, from a shared op list or a per-edge list of op lists.

    Every edge needs an op other than ``none``, no op twice, and (so that α is a
    matrix) every edge the same number of ops.
    """
    n = num_edges(steps)
    if isinstance(ops, str) or not isinstance(ops, Sequence):
        raise ValueError(
            f"{what} must be a list of op names or a list of {n} op lists, got {ops!r}"
        )
    if not ops:
        raise ValueError(f"{what} {list(ops)} need at least one operation other than 'none'")
    if all(isinstance(op, str) for op in ops):
        per_edge = [tuple(ops)] * n
        where = [what] * n
    elif all(isinstance(o, Sequence) and not isinstance(o, str) for o in ops):
        if len(ops) != n:
            raise ValueError(
                f"{what} has {len(ops)} per-edge op lists; a cell with {steps} nodes has {n} edges"
            )
        per_edge = [tuple(o) for o in ops]
        where = [f"{what}[{e}]" for e in range(n)]
    else:
        raise ValueError(
            f"{what} must be a list of op names (shared by all edges) or a list of {n} "
            f"op lists (one per edge), got {ops!r}"
        )
    for edge_ops, w in zip(per_edge, where, strict=True):
        unknown = [op for op in edge_ops if op not in DARTS_OPS]
        if unknown:
            raise ValueError(f"unknown DARTS ops {unknown} in {w}; allowed: {list(DARTS_OPS)}")
        if not [op for op in edge_ops if op != "none"]:
            raise ValueError(f"{w} {list(edge_ops)} need at least one operation other than 'none'")
        if len(set(edge_ops)) != len(edge_ops):
            raise ValueError(f"{w} repeats an op: {list(edge_ops)}")
    if len({len(o) for o in per_edge}) > 1:
        raise ValueError(
            f"{what}: every edge needs the same number of ops (α is a matrix), got "
            f"{[len(o) for o in per_edge]}"
        )
    return tuple(per_edge)


def _shared_or_per_edge(edge_ops: EdgeOps):
    """The shared op tuple when all edges have the same ops, else the per-edge tuples."""
    return edge_ops[0] if len(set(edge_ops)) == 1 else edge_ops


def derive_darts_genotype(
    arch: Mapping[str, np.ndarray],
    normal_ops: EdgeOps,
    reduce_ops: EdgeOps,
    steps: int = 4,
    multiplier: int = 4,
    max_skip_normal: int | None = None,
) -> genotypes_lib.Genotype:
    """The DARTS-rule genotype of ``arch`` (α, and β when present) for per-cell op lists.

    ``arch`` holds ``normal``/``reduce`` (α) and optionally ``beta_normal``/
    ``beta_reduce``; ``normal_ops``/``reduce_ops`` give each edge's ops (as
    :func:`normalize_edge_ops` returns). ``max_skip_normal`` caps skip-connects in
    the normal cell (P-DARTS). See :func:`genotypes.derive_genotype` for the rule.
    """
    return genotypes_lib.derive_genotype(
        np.asarray(arch["normal"]),
        np.asarray(arch["reduce"]),
        ops=_shared_or_per_edge(normal_ops),
        reduce_ops=_shared_or_per_edge(reduce_ops),
        steps=steps,
        multiplier=multiplier,
        beta_normal=arch.get("beta_normal"),
        beta_reduce=arch.get("beta_reduce"),
        max_skip_normal=max_skip_normal,
    )


# ----------------------------------------------------------------------------- layers
def _aux_skip_terms(stride: int, aux_skip, x, skip_out) -> list:
    """DARTS-'s auxiliary skip term of an edge (or of a wide group of edges), if any.

    On a stride-1 edge it is ``aux_skip``·x (x: the channels the ops see); on a stride-2
    edge it is ``aux_skip`` times the edge's own ``skip_connect`` output (FactorizedReduce,
    its weights shared with the candidate); an edge without that candidate has none.
    """
    if stride == 1:
        return [aux_skip * x]
    return [] if skip_out is None else [aux_skip * skip_out]


class MixedOp(keras.layers.Layer):
    """The weighted sum of all candidate ops on one edge (weights = softmax of α).

    ``partial_channels`` K > 1 (PC-DARTS): only the first C/K channels go through
    the ops (built with C/K channels); the other channels bypass them (2×2
    max-pooled on stride-2 edges) and a channel shuffle with K groups follows.
    ``skip_dropout`` (P-DARTS): dropout on the output of a stride-1 skip-connect,
    applied when :meth:`call` gets per-example ``noise_keys``; ``salt`` tells this
    edge's masks from the others'.
    """

    def __init__(
        self,
        channels: int,
        stride: int,
        ops: Sequence[str],
        activation: str = "relu",
        partial_channels: int = 1,
        skip_dropout: float = 0.0,
        salt: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if partial_channels < 1 or channels % partial_channels:
            raise ValueError(
                f"partial_channels must be a positive divisor of the edge's {channels} "
                f"channels, got {partial_channels}"
            )
        self.op_names = tuple(ops)
        self.stride = stride
        self.partial_channels = partial_channels
        self.skip_dropout = float(skip_dropout)
        self.salt = salt
        # `none` contributes exactly zero to the sum (and to every gradient): skip it.
        self.op_indices = [i for i, name in enumerate(self.op_names) if name != "none"]
        op_channels = channels // partial_channels
        self.ops = [
            make_op(self.op_names[i], op_channels, stride, search=True, activation=activation)
            for i in self.op_indices
        ]
        # P-DARTS drops out the identity skip (stride 1) only, not FactorizedReduce.
        self.dropout_index = (
            self.op_names.index("skip_connect")
            if self.skip_dropout > 0 and stride == 1 and "skip_connect" in self.op_names
            else None
        )

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def _split(self, x):
        """(the channels the ops see, the bypassed channels or None)."""
        if self.partial_channels == 1:
            return x, None
        part = x.shape[-1] // self.partial_channels
        return x[..., :part], x[..., part:]

    def fill_shared(self, x, shared: dict) -> None:
        """Adds this edge's weightless outputs of input ``x`` to ``shared`` if missing.

        Pooling (with its parameter-free search BN) and PC-DARTS's bypass pooling
        give the same tensor on every edge that reads the same state with the same
        stride: a cell keeps one ``shared`` dict per state, so they are computed once
        per state, not once per edge (a smaller graph, the same values).
        """
        ops_input, bypass = self._split(x)
        for i, op in zip(self.op_indices, self.ops, strict=True):
            name = self.op_names[i]
            if name in WEIGHTLESS_OPS and name not in shared:
                shared[name] = op(ops_input)
        if bypass is not None and self.stride > 1 and "bypass" not in shared:
            shared["bypass"] = bypass_pool(bypass)

    def call(self, x, weights, noise_keys=None, shared=None, aux_skip=None):
        """The edge's output; ``shared``: outputs of :meth:`fill_shared` to reuse.

        ``aux_skip`` (DARTS-'s auxiliary skip weight) adds ``aux_skip``·x to the ops'
        sum (x: the channels the ops see), never dropped out. On a stride-2 edge the
        auxiliary path is the edge's own ``skip_connect`` (FactorizedReduce, its
        weights shared with the candidate); an edge without that candidate has none.
        """
        shared = shared or {}
        x, bypass = self._split(x)
        # One unstack instead of a slice per op keeps the graph small.
        w = tf.unstack(weights)
        terms, skip_out = [], None
        for i, op in zip(self.op_indices, self.ops, strict=True):
            name = self.op_names[i]
            y = shared[name] if name in shared else op(x)
            if name == "skip_connect":
                skip_out = y
            if i == self.dropout_index and noise_keys is not None:
                y = hashed_dropout(y, noise_keys, self.salt, self.skip_dropout)
            terms.append(w[i] * y)
        if aux_skip is not None:
            terms.extend(_aux_skip_terms(self.stride, aux_skip, x, skip_out))
        out = tf.add_n(terms)
        if bypass is not None:
            if self.stride > 1:
                bypass = shared["bypass"] if "bypass" in shared else bypass_pool(bypass)
            out = channel_shuffle(tf.concat([out, bypass], axis=-1), self.partial_channels)
        return out


def wide_mixed_ops(
    edges: Sequence[MixedOp],
    x: tf.Tensor,
    weights: tf.Tensor,
    noise_keys=None,
    shared: dict | None = None,
    aux_skip=None,
    scales: tf.Tensor | None = None,
) -> list[tf.Tensor]:
    """The outputs of ``edges`` on the same input ``x``, one wide op per candidate op.

    ``edges`` share their op list and stride; ``weights`` are their rows of op weights
    ``[n, num_ops]`` and ``scales`` their edge weights ``[n]`` (edge normalization) or
    None. Returns what each edge's :meth:`MixedOp.call` returns (times its scale), with
    the n edges' convolutions computed as one (``il_tf/spaces/batched_ops.py``).
    """
    first, n = edges[0], len(edges)
    if any(e.op_names != first.op_names or e.stride != first.stride for e in edges):
        raise ValueError("wide_mixed_ops: the edges differ in their ops or stride")
    shared = shared or {}
    x, bypass = first._split(x)
    channels = x.shape[-1]
    # Column i of the weights as an [n, 1] factor of the [..., n, C] blocks.
    columns = tf.unstack(tf.expand_dims(tf.transpose(weights), -1))

    def blocks(y, count):
        dims = [d if d is not None else tf.shape(y)[a] for a, d in enumerate(y.shape[:-1])]
        return tf.reshape(y, [*dims, count, channels])

    terms, skip_out, memo = [], None, {}
    for position, i in enumerate(first.op_indices):
        name = first.op_names[i]
        if name in shared:
            y, count = shared[name], 1
        elif name == "skip_connect" and first.stride == 1:
            y, count = x, 1
        else:
            y, count = wide_op([e.ops[position] for e in edges], x, memo), n
        if i == first.dropout_index and noise_keys is not None:
            y = tf.concat(
                [hashed_dropout(y, noise_keys, e.salt, e.skip_dropout) for e in edges], axis=-1
            )
            count = n
        y = blocks(y, count)
        if name == "skip_connect":
            skip_out = y
        terms.append(columns[i] * y)
    if aux_skip is not None:
        terms.extend(
            _aux_skip_terms(first.stride, tf.fill([n, 1], aux_skip), blocks(x, 1), skip_out)
        )
    out = tf.add_n(terms)
    if bypass is not None:
        if first.stride > 1:
            bypass = shared["bypass"] if "bypass" in shared else bypass_pool(bypass)
        rest = tf.expand_dims(bypass, -2)
        rest = tf.broadcast_to(rest, tf.concat([tf.shape(out)[:-1], tf.shape(rest)[-1:]], 0))
        out = channel_shuffle(tf.concat([out, rest], axis=-1), first.partial_channels)
    if scales is not None:
        out = out * tf.expand_dims(scales, -1)
    return tf.unstack(out, axis=-2)


def source_groups(steps: int, multiplier: int, parts: int) -> tuple[tuple[int, ...], ...]:
    """The states 0 .. ``steps`` of a cell as ``parts`` runs, the largest with fewest edges.

    A body part computes the edges that leave its states (``steps`` − max(0, j − 1)
    edges leave state j), so balancing the edges balances the parts' memory.
    """
    if not 1 <= parts <= steps + 1:
        raise ValueError(
            f"darts_supernet.cell_parts must be between 1 and steps + 1 = {steps + 1}, got "
            f"{parts} (in gin: darts_supernet.cell_parts = 3)"
        )
    if parts > 1 and multiplier > steps:
        raise ValueError(
            f"darts_supernet.cell_parts = {parts} needs multiplier <= steps (the output "
            f"concatenates nodes only), got multiplier {multiplier} and steps {steps}; use "
            "darts_supernet.cell_parts = 1"
        )
    edges = [steps - max(0, j - 1) for j in range(steps + 1)]
    best = None
    for cuts in itertools.combinations(range(1, steps + 1), parts - 1):
        bounds = (0, *cuts, steps + 1)
        groups = tuple(tuple(range(a, b)) for a, b in itertools.pairwise(bounds))
        worst = max(sum(edges[j] for j in g) for g in groups)
        if best is None or worst < best[0]:
            best = (worst, groups)
    return best[1]


class SearchCell(keras.layers.Layer):
    """A DARTS search cell: 2 inputs, ``steps`` nodes, each summing mixed edges.

    ``ops`` is one op list shared by all edges or one op list per edge (in
    :func:`genotypes.edges` order). ``call(s0, s1, weights, edge_weights=None,
    noise_keys=None, aux_skip=None)``: ``weights`` are the op weights
    ``[num_edges, num_ops]``, ``edge_weights`` (PC-DARTS edge normalization) one
    weight per edge, ``aux_skip`` the auxiliary skip weight (:meth:`MixedOp.call`).
    """

    def __init__(
        self,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        ops: Sequence[str] | Sequence[Sequence[str]],
        steps: int = 4,
        multiplier: int = 4,
        activation: str = "relu",
        partial_channels: int = 1,
        skip_dropout: float = 0.0,
        salt: int = 0,
        wide_edges: bool = False,
        body_parts: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        #: The sources (states 0 .. steps) of each part of the body, in order.
        self.parts = source_groups(steps, multiplier, body_parts)
        self.reduction = reduction
        self.channels = channels
        self.wide_edges = wide_edges
        self.steps = steps
        self.multiplier = multiplier
        self.edge_ops = normalize_edge_ops(ops, steps)
        # The cell before a reduction cell has twice the resolution of s1: reduce s0.
        self.preprocess0 = (
            FactorizedReduce(channels, search=True, activation=activation)
            if reduction_prev
            else relu_conv_bn(channels, 1, 1, search=True, activation=activation)
        )
        self.preprocess1 = relu_conv_bn(channels, 1, 1, search=True, activation=activation)
        self.edges = []
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                e = len(self.edges)
                self.edges.append(
                    MixedOp(
                        channels,
                        stride,
                        self.edge_ops[e],
                        activation,
                        partial_channels=partial_channels,
                        skip_dropout=skip_dropout,
                        salt=salt * 1024 + e,
                    )
                )

    def build(self, input_shape=None):
        # Sub-layers build on first call; without this Keras would trace `call`
        # symbolically once per nesting level just to build (slow first calls).
        self.built = True

    def _edge_index(self, node: int, source: int) -> int:
        # Node i's incoming edges (from states 0 .. i+1) follow those of nodes < i.
        return 2 * node + node * (node - 1) // 2 + source

    def _edges_leaving(self, source: int) -> list[tuple[int, int]]:
        # (node, edge index) of every edge that reads state `source`, by node.
        return [(i, self._edge_index(i, source)) for i in range(max(0, source - 1), self.steps)]

    def call(self, s0, s1, weights, edge_weights=None, noise_keys=None, aux_skip=None):
        return self.body(*self.preprocess(s0, s1), weights, edge_weights, noise_keys, aux_skip)

    def preprocess(self, s0, s1):
        """The two input states brought to the cell's channels (and resolution)."""
        # The cell's name scope, as a call through Keras gives it: a segment calls
        # this directly, and the variables built here keep their usual paths.
        with keras.name_scope(self.name, caller=self):
            return self.preprocess0(s0), self.preprocess1(s1)

    @property
    def preprocess_variables(self) -> list:
        """The trainable variables of :meth:`preprocess`, in the cell's order."""
        return self.preprocess0.trainable_variables + self.preprocess1.trainable_variables

    def part_variables(self, part: int) -> list:
        """The trainable variables of :meth:`body_part` ``part``: its edges', in edge order."""
        edges = sorted(e for j in self.parts[part] for _, e in self._edges_leaving(j))
        return [v for e in edges for v in self.edges[e].trainable_variables]

    def body(self, p0, p1, weights, edge_weights=None, noise_keys=None, aux_skip=None):
        """The cell's output from its preprocessed inputs (arguments as :meth:`call`)."""
        with keras.name_scope(self.name, caller=self):
            return self._body(p0, p1, weights, edge_weights, noise_keys, aux_skip)

    def _body(self, p0, p1, weights, edge_weights, noise_keys, aux_skip):
        state = (p0, p1)
        for part in range(len(self.parts)):
            state = self._part(part, state, weights, edge_weights, noise_keys, aux_skip)
        (out,) = state
        return out

    def body_part(
        self, part, state, weights, edge_weights=None, noise_keys=None, aux_skip=None
    ) -> tuple:
        """One part of :meth:`body`: the edges that leave the states ``parts[part]``.

        Its ``state`` is the previous part's output, ``(p0, p1)`` for the first; the last
        part returns ``(output,)``. In between the state is the node sums so far,
        preceded by ``p1`` while edges from it are still to come.
        """
        with keras.name_scope(self.name, caller=self):
            return self._part(part, state, weights, edge_weights, noise_keys, aux_skip)

    def _part(self, part, state, weights, edge_weights, noise_keys, aux_skip):
        sources = self.parts[part]
        first = sources[0]
        if first == 0:
            inputs, nodes = list(state), [None] * self.steps
        elif first == 1:
            inputs, nodes = [None, state[0]], list(state[1:])
        else:
            inputs, nodes = [], list(state)
        # One unstack instead of a slice per edge keeps the graph small.
        rows = tf.unstack(weights)
        scales = None if edge_weights is None else tf.unstack(edge_weights)
        # State by state: every edge leaving it (one wide op per candidate op when they
        # share their ops) adds to the sum of its node, in the order of the sources.
        for j in sources:
            h = inputs[j] if j < 2 else nodes[j - 2]
            targets, edges = zip(*self._edges_leaving(j), strict=True)
            outputs = self._edges_from(
                h, edges, weights, rows, edge_weights, scales, noise_keys, aux_skip
            )
            for i, y in zip(targets, outputs, strict=True):
                nodes[i] = y if nodes[i] is None else nodes[i] + y
        if sources[-1] == self.steps:
            return (tf.concat((inputs + nodes)[-self.multiplier :], axis=-1),)
        return (inputs[1], *nodes) if sources[-1] == 0 else tuple(nodes)

    def _edges_from(self, h, edges, weights, rows, edge_weights, scales, noise_keys, aux_skip):
        """The outputs of the edges ``edges`` (indices), which all read state ``h``.

        ``rows`` and ``scales`` are ``weights`` and ``edge_weights`` unstacked.
        """
        # Pooling (and PC-DARTS's bypass pooling) of h is computed once for all its edges.
        shared = {}
        for e in edges:
            self.edges[e].fill_shared(h, shared)
        layers = [self.edges[e] for e in edges]
        if self.wide_edges and len(edges) > 1 and len({self.edge_ops[e] for e in edges}) == 1:
            index = tf.constant(edges)
            wide_scales = None if edge_weights is None else tf.gather(edge_weights, index)
            return wide_mixed_ops(
                layers, h, tf.gather(weights, index), noise_keys, shared, aux_skip, wide_scales
            )
        outputs = []
        for e, edge in zip(edges, layers, strict=True):
            y = edge(h, rows[e], noise_keys, shared, aux_skip)
            outputs.append(y if scales is None else scales[e] * y)
        return outputs


class DartsSupernet(keras.layers.Layer):
    """The DARTS search encoder: stem, normal and reduction search cells, global pooling.

    Reduction cells (stride 2, channels doubled) sit at 1/3 and 2/3 of the depth.
    Works for any input size (odd ones too). ``call(images, arch)`` takes the
    architecture logits as a mapping (names and shapes: :meth:`arch_shapes`) —
    ``{"normal": [E, n_ops], "reduce": [E, n_ops]}``, plus ``beta_normal`` and
    ``beta_reduce`` ``[E]`` with edge normalization, and ``aux_skip`` (a scalar) when
    the auxiliary skip connection of DARTS- is on (:meth:`MixedOp.call`) — and returns
    features ``[B, feature_dim]``.

    Args:
      channels, num_cells, steps, multiplier, stem_multiplier, activation: the
        DARTS search network.
      ops: the candidate ops, shared by all edges, or one op list per edge (the
        edges of :func:`genotypes.edges`); used by the normal cells, and by the
        reduction cells too unless ``reduce_ops`` is given.
      reduce_ops: the reduction cells' ops (shared or per edge); None = ``ops``.
      partial_channels: K of PC-DARTS (1 = plain DARTS, 4 in PC-DARTS).
      edge_normalization: learn β (PC-DARTS); None = on when ``partial_channels > 1``.
      skip_dropout: dropout rate on skip-connect outputs (P-DARTS); 0 = off.
      dropout_seed: salts the (deterministic) dropout masks.
      max_skip_normal: the skip-connect cap of :meth:`derive` (P-DARTS: 2); None = none.
      wide_edges: compute the edges that leave a state as one wide op per candidate
        op (``il_tf/spaces/batched_ops.py``): the same values with a smaller graph, so
        tracing and the compiled functions' memory shrink; on CPUs it is faster on
        small feature maps and slower on large ones. False: each edge by itself.
        None (default): each edge by itself, unless a search's plan chooses wide
        edges (``il_tf/learning/plan.py``).
      cell_parts: how many segments (``il_tf/spaces/space.py``) each cell's body is
        cut into, at its states: the exact chain and segment-wise gradients then hold
        one part's second-order graph or activations at a time instead of a whole
        cell's, for more (smaller) compiled functions. 1 (default): whole bodies.
    """

    space = genotypes_lib.DARTS_SPACE
    genotype_type = genotypes_lib.Genotype
    #: Every edge adds ``arch["aux_skip"]``·x when the mapping has it (DARTS-).
    reads_aux_skip = True

    def __init__(
        self,
        channels: int = 16,
        num_cells: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        ops: Sequence[str] | Sequence[Sequence[str]] = DARTS_OPS,
        activation: str = "relu",
        reduce_ops: Sequence[str] | Sequence[Sequence[str]] | None = None,
        partial_channels: int = 1,
        edge_normalization: bool | None = None,
        skip_dropout: float = 0.0,
        dropout_seed: int = 0,
        max_skip_normal: int | None = None,
        wide_edges: bool | None = None,
        cell_parts: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_cells < 1:
            raise ValueError(f"num_cells must be >= 1, got {num_cells}")
        if channels < 1 or channels % 2:
            raise ValueError(f"channels must be a positive even number, got {channels}")
        if not isinstance(partial_channels, int) or partial_channels < 1:
            raise ValueError(f"partial_channels must be an integer >= 1, got {partial_channels!r}")
        if channels % partial_channels:
            raise ValueError(
                f"channels ({channels}) must be divisible by partial_channels ({partial_channels})"
            )
        if not 0.0 <= skip_dropout < 1.0:
            raise ValueError(f"skip_dropout must be in [0, 1), got {skip_dropout}")
        if max_skip_normal is not None and (
            not isinstance(max_skip_normal, int) or max_skip_normal < 0
        ):
            raise ValueError(
                f"max_skip_normal must be None or an integer >= 0, got {max_skip_normal!r}"
            )
        self.channels = channels
        self.num_cells = num_cells
        self.steps = steps
        self.multiplier = multiplier
        self.partial_channels = partial_channels
        self.edge_normalization = (
            partial_channels > 1 if edge_normalization is None else bool(edge_normalization)
        )
        self.skip_dropout = float(skip_dropout)
        self.dropout_seed = int(dropout_seed)
        self.max_skip_normal = max_skip_normal
        self.edge_ops = {
            "normal": normalize_edge_ops(ops, steps, "ops"),
            "reduce": normalize_edge_ops(
                ops if reduce_ops is None else reduce_ops, steps, "reduce_ops"
            ),
        }
        all_lists = set(self.edge_ops["normal"]) | set(self.edge_ops["reduce"])
        if len(all_lists) == 1:
            self.op_names = next(iter(all_lists))
        else:
            # Columns of α mean different ops on different edges: see `edge_ops`.
            width = max(len(o) for o in all_lists)
            self.op_names = tuple(f"op_{k}" for k in range(width))
        c_curr = stem_multiplier * channels
        self.stem_conv = Conv(c_curr, 3, 1)
        self.stem_bn = batch_norm(search=True)
        c = channels
        reduction_prev = False
        self.cells = []
        self.reduction_indices = reduction_cell_indices(num_cells)
        for i in range(num_cells):
            reduction = i in self.reduction_indices
            if reduction:
                c *= 2
            self.cells.append(
                SearchCell(
                    c,
                    reduction,
                    reduction_prev,
                    self.edge_ops["reduce" if reduction else "normal"],
                    steps,
                    multiplier,
                    activation,
                    partial_channels=partial_channels,
                    skip_dropout=self.skip_dropout,
                    salt=i + 1,
                    wide_edges=bool(wide_edges),
                    body_parts=cell_parts,
                )
            )
            reduction_prev = reduction
        self.feature_dim = multiplier * c

    def build(self, input_shape=None):
        # Sub-layers build on first call (see SearchCell.build).
        self.built = True

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the architecture logits this supernet takes."""
        e = num_edges(self.steps)
        shapes = {
            "normal": (e, len(self.edge_ops["normal"][0])),
            "reduce": (e, len(self.edge_ops["reduce"][0])),
        }
        if self.edge_normalization:
            shapes.update(beta_normal=(e,), beta_reduce=(e,))
        return shapes

    def call(self, images, arch: Mapping[str, tf.Tensor]):
        return run_segments(self, images, arch)

    def segment_context(self, images):
        """Per-example keys of the skip-connect dropout masks (None without dropout)."""
        if self.skip_dropout <= 0:
            return None
        # The keys hash the pixels as the stem sees them (in the compute dtype).
        return example_keys(tf.cast(images, self.compute_dtype), self.dropout_seed)

    def segments(self) -> list[Segment]:
        """Stem; per cell, its preprocessing and the parts of its body; global pooling.

        The state between cells is their two last outputs; within a cell, the
        previous output and what the next part reads (:meth:`SearchCell.body_part`).
        Body parts of cells of the same type and widths (two normal cells at one
        resolution after the first) are one kind of segment, compiled once; with skip
        dropout every cell's are their own (the masks' salt).
        """
        segments = [Segment(self.stem_conv.trainable_variables, self._stem)]
        for i, cell in enumerate(self.cells):
            segments.append(
                Segment(cell.preprocess_variables, functools.partial(self._preprocess, cell))
            )
            # The body carries the previous cell's output past it, so its width is part
            # of the function (cells 0 and 1 differ in it: the stem's width).
            carried = self.multiplier * self.cells[i - 1].channels if i else self.stem_conv.filters
            kind = ("darts_cell_body", cell.reduction, cell.channels, carried)
            if self.skip_dropout > 0:
                kind = (*kind, i)
            segments.extend(
                Segment(
                    cell.part_variables(part),
                    functools.partial(self._body_part, cell, part),
                    kind=(*kind, part),
                )
                for part in range(len(cell.parts))
            )
        segments.append(Segment([], _global_pool))
        return segments

    def _stem(self, state, arch, context):
        (images,) = state
        x = self.stem_bn(self.stem_conv(tf.cast(images, self.compute_dtype)))
        return x, x

    def _preprocess(self, cell, state, arch, context):
        s0, s1 = state
        return (s1, *cell.preprocess(s0, s1))

    def _body_part(self, cell, part, state, arch, context):
        s1, *inner = state
        kind = "reduce" if cell.reduction else "normal"
        weights = tf.nn.softmax(tf.cast(arch[kind], s1.dtype), axis=-1)
        edge_weights = (
            edge_normalization_weights(tf.cast(arch[f"beta_{kind}"], s1.dtype), self.steps)
            if self.edge_normalization
            else None
        )
        aux = arch.get(AUX_SKIP)
        aux = None if aux is None else tf.cast(aux, s1.dtype)
        return (s1, *cell.body_part(part, tuple(inner), weights, edge_weights, context, aux))

    def derive(self, arch: Mapping[str, np.ndarray]) -> genotypes_lib.Genotype:
        """The discrete genotype of architecture logits (DARTS rule; β and the cap if set)."""
        return derive_darts_genotype(
            {k: np.asarray(v) for k, v in arch.items()},
            self.edge_ops["normal"],
            self.edge_ops["reduce"],
            steps=self.steps,
            multiplier=self.multiplier,
            max_skip_normal=self.max_skip_normal,
        )


def _global_pool(state, arch, context):
    """The features: the last state's spatial mean."""
    return (tf.reduce_mean(state[-1], axis=[1, 2]),)


def reduction_cell_indices(num_cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth (as in DARTS)."""
    if num_cells < 3:
        # Too shallow for two reductions: reduce once in the middle, if at all.
        return (num_cells // 2,) if num_cells == 2 else ()
    return (num_cells // 3, 2 * num_cells // 3)
