"""The compiled step functions: segment-wise sweeps against the whole-network computation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning import objective
from il_tf.learning.objective import ChainSettings
from il_tf.learning.search_model import build_search_model
from il_tf.learning.step_functions import (
    SegmentLayout,
    StepFunctions,
    WeightLayout,
    _segment_functions,
)
from il_tf.spaces.darts_supernet import DartsSupernet
from il_tf.spaces.nb201_supernet import NB201Supernet
from il_tf.spaces.space import Segment

from .conftest import SMOOTH_OPS, random_batch
from .test_hypergradients import eagerly
from .test_progressive import build_pc_model

# NAS-Bench-201's ops without kinks (with softplus activations).
NB201_SMOOTH_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _whole_network_link(steps, learners, arch, enc, heads, batches, lr, v_enc, v_heads):
    """The exact link by one reverse-over-reverse product of the whole stage loss."""
    loss_fn = steps.stage_loss_fn(learners, batches)
    u_arch, u_weights = objective.loss_hvp(loss_fn, arch, [enc, *heads], [v_enc, *v_heads])
    v_enc, v_heads, v_anchor = objective.adjoint_step(
        v_enc, v_heads, u_weights[0], u_weights[1:], lr, steps.settings
    )
    return v_enc, tuple(v_heads), v_anchor, objective.arch_step_term(u_arch, lr)


@pytest.mark.parametrize(
    "learners, cell_parts",
    [
        pytest.param((0,), 1, marks=pytest.mark.slow),
        pytest.param((0, 1), 1, marks=pytest.mark.slow),
        ((0,), 3),
    ],
    ids=["one learner", "joint stage", "cells in 3 parts"],
)
def test_segmented_exact_link_equals_the_whole_network_product(float64, learners, cell_parts):
    # PC-DARTS with β, skip dropout (a segment context), ReLU and max-pooling: every
    # kind of segment input. Eagerly (the bug this guards against was eager-only);
    # the graph form is checked by chain_exact == unrolled.
    model = build_pc_model(
        num_classes=(3, 4),
        skip_dropout=0.3,
        ops=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        activation="relu",
        cell_parts=cell_parts,
    )
    steps = StepFunctions(tf.distribute.get_strategy(), model, ChainSettings(proximity=0.1))
    rng = np.random.default_rng(0)
    batches = tuple(random_batch(rng, (3, 4)[k]) for k in learners)
    with eagerly():
        arch, enc, heads = steps.read()
        heads = tuple(heads[k] for k in learners)
        v_enc = tf.constant(rng.normal(size=enc.shape))
        v_heads = tuple(tf.constant(rng.normal(size=h.shape)) for h in heads)
        lr = tf.constant(0.05, tf.float64)
        segmented = steps.adjoint(
            "exact", learners, arch, enc, heads, batches, lr, (v_enc, v_heads)
        )
        whole = _whole_network_link(steps, learners, arch, enc, heads, batches, lr, v_enc, v_heads)
    # stem, two cells (preprocessing, the body's parts), pooling
    assert len(steps.segments) == 2 + 2 * (1 + cell_parts)
    for got, want in zip(tf.nest.flatten(segmented), tf.nest.flatten(whole), strict=True):
        scale = float(tf.reduce_max(tf.abs(want)))
        assert scale > 0
        assert float(tf.reduce_max(tf.abs(got - want))) <= 1e-12 * scale


def _pc_model(**supernet):
    return build_pc_model(
        num_classes=(3, 4),
        skip_dropout=0.3,
        ops=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        activation="relu",
        **supernet,
    )


@pytest.mark.parametrize(
    "learners, cell_parts",
    [
        pytest.param((0,), 1, marks=pytest.mark.slow),
        pytest.param((1, 0), 1, marks=pytest.mark.slow),
        pytest.param((0,), 5, marks=pytest.mark.slow),
    ],
    ids=["one learner", "joint stage", "cells in 5 parts"],
)
def test_segmented_gradient_equals_the_whole_network_gradient(float64, learners, cell_parts):
    # Compiled (the form the search runs), on every kind of segment input.
    model = _pc_model(cell_parts=cell_parts)
    strategy = tf.distribute.get_strategy()
    whole = StepFunctions(strategy, model, ChainSettings(proximity=0.1))
    segmented = StepFunctions(
        strategy, model, ChainSettings(proximity=0.1), segmented_gradients=True
    )
    rng = np.random.default_rng(1)
    batches = tuple(random_batch(rng, (3, 4)[k]) for k in learners)
    arch, enc, heads = whole.read()
    heads = tuple(heads[k] for k in learners)
    got = segmented.gradient(learners, arch, enc, heads, batches)
    want = whole.gradient(learners, arch, enc, heads, batches)
    assert "gradient" not in segmented.trace_counts and segmented.trace_counts["segment_vjp"] > 0
    for a, b in zip(tf.nest.flatten(got[:3]), tf.nest.flatten(want[:3]), strict=True):
        scale = float(tf.reduce_max(tf.abs(b)))
        assert float(tf.reduce_max(tf.abs(a - b))) <= 1e-12 * max(scale, 1.0)
    assert float(tf.reduce_max(tf.abs(want[1]))) > 0  # the encoder's gradient is not trivial
    for a, b in zip(got[3], want[3], strict=True):  # the loss statistics, per learner
        np.testing.assert_allclose([float(x) for x in a], [float(x) for x in b], rtol=1e-12)


def _assert_close(got, want, rtol=1e-12):
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want), strict=True):
        scale = float(tf.reduce_max(tf.abs(b)))
        assert float(tf.reduce_max(tf.abs(a - b))) <= rtol * max(scale, 1.0)


@pytest.mark.slow
def test_segments_of_one_kind_share_their_compiled_functions(float64):
    # Two cells per stage: the second cell of a stage runs the first one's compiled
    # functions with its own weights, and the sweeps still equal the whole network.
    model = build_search_model(
        NB201Supernet(channels=4, cells_per_stage=2, ops=NB201_SMOOTH_OPS, activation="softplus"),
        (3, 4),
        (8, 8, 3),
    )
    strategy = tf.distribute.get_strategy()
    steps = StepFunctions(strategy, model, ChainSettings(proximity=0.1), segmented_gradients=True)
    whole = StepFunctions(strategy, model, ChainSettings(proximity=0.1))
    # stem, 2 cells, reduction block, 2 cells, reduction block, 2 cells, head
    assert steps.segment_functions == [0, 1, 1, 3, 4, 4, 6, 7, 7, 9]
    rng = np.random.default_rng(2)
    learners = (0,)
    batches = (random_batch(rng, 3),)
    arch, enc, heads = steps.read()
    heads = (heads[0],)
    _assert_close(
        steps.gradient(learners, arch, enc, heads, batches)[:3],
        whole.gradient(learners, arch, enc, heads, batches)[:3],
    )
    v_enc = tf.constant(rng.normal(size=enc.shape))
    v_heads = (tf.constant(rng.normal(size=heads[0].shape)),)
    lr = tf.constant(0.05, tf.float64)
    got = steps.adjoint("exact", learners, arch, enc, heads, batches, lr, (v_enc, v_heads))
    want = _whole_network_link(steps, learners, arch, enc, heads, batches, lr, v_enc, v_heads)
    _assert_close(got, want)
    # One trace per distinct function, not per segment.
    for name in ("segment_forward", "segment_vjp", "segment_tangent", "segment_adjoint"):
        assert steps.trace_counts[name] == 7, name


def test_darts_cell_bodies_of_one_type_and_widths_are_one_kind():
    net = DartsSupernet(channels=2, num_cells=8, ops=SMOOTH_OPS)
    kinds = [seg.kind for seg in net.segments()]
    # stem; per cell its preprocessing (own kind) and its body; pooling
    bodies = kinds[2:-1:2]
    assert kinds[1:-1:2] == [None] * 8 and kinds[0] is None and kinds[-1] is None
    # cells N N R N N R N N; a body carries the previous output (widths 6 from the stem,
    # then 8, 8, 16, 16, 16, 32, 32): cells 3 and 4, 6 and 7 are alike, 0 and 1 are not.
    assert bodies[3] == bodies[4] and bodies[6] == bodies[7] and len(set(bodies)) == 6
    # Segments of one kind get states of the same shapes (else their shared function
    # would be traced again for each).
    arch = {k: tf.zeros(shape) for k, shape in net.arch_shapes().items()}
    images = tf.zeros((2, 8, 8, 3))
    context = net.segment_context(images)
    net(images, arch)
    state, seen = (images,), {}
    for seg in net.segments():
        shapes = [tuple(t.shape) for t in state]
        if seg.kind is not None:
            assert seen.setdefault(seg.kind, shapes) == shapes, seg.kind
        state = seg.apply(state, arch, context)
    with_dropout = DartsSupernet(channels=2, num_cells=8, ops=SMOOTH_OPS, skip_dropout=0.1)
    # Skip dropout salts each cell's masks differently: no two bodies are alike.
    assert len({seg.kind for seg in with_dropout.segments()[2:-1:2]}) == 8


def test_segments_of_one_kind_must_have_the_same_weights():
    class Var:
        def __init__(self, shape):
            self.shape = shape

    segments = [
        Segment([Var((3,))], None),
        Segment([Var((2, 2))], None, kind="cell"),
        Segment([Var((2, 3))], None, kind="cell"),
    ]
    layouts = [WeightLayout(s.variables) for s in segments]
    with pytest.raises(ValueError, match=r"segments 1 and 2 are both of kind 'cell'.*\(2, 3\)"):
        _segment_functions(segments, layouts)


def test_segment_layout_splits_and_joins_any_ownership():
    variables = [
        keras.Variable(np.zeros(shape), name=f"v{i}") for i, shape in enumerate([2, 3, 1, 4])
    ]
    # Segment 0 owns v0 and v2, segment 1 owns v3 then v1 (its own order), segment 2 none.
    segments = [
        Segment([variables[0], variables[2]], None),
        Segment([variables[3], variables[1]], None),
        Segment([], None),
    ]
    layout = SegmentLayout(variables, segments)
    flat = tf.range(10.0)  # v0: 0-1, v1: 2-4, v2: 5, v3: 6-9
    pieces = layout.split(flat)
    assert [p.numpy().tolist() for p in pieces] == [[0, 1, 5], [6, 7, 8, 9, 2, 3, 4], []]
    np.testing.assert_array_equal(layout.join(pieces), flat)
    assert not layout.in_order
    with pytest.raises(ValueError, match="owned by segment 0 already"):
        SegmentLayout(variables, [Segment(variables, None), Segment(variables[:1], None)])
    with pytest.raises(ValueError, match=r"own none of \['v3"):
        SegmentLayout(variables, [Segment(variables[:3], None)])
