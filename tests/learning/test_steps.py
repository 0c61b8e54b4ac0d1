"""The compiled step functions: segment-wise sweeps against the whole-network computation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning import objective
from il_tf.learning.objective import ChainSettings
from il_tf.learning.steps import StepFunctions

from .conftest import random_batch
from .test_hypergradients import eagerly
from .test_progressive import build_pc_model


def _whole_network_link(steps, learners, arch, enc, heads, batches, lr, v_enc, v_heads):
    """The exact link by one reverse-over-reverse product of the whole stage loss."""
    loss_fn = steps.stage_loss_fn(learners, batches)
    u_arch, u_weights = objective.loss_hvp(loss_fn, arch, [enc, *heads], [v_enc, *v_heads])
    v_enc, v_heads, v_anchor = objective.adjoint_step(
        v_enc, v_heads, u_weights[0], u_weights[1:], lr, steps.settings
    )
    return v_enc, tuple(v_heads), v_anchor, objective.arch_step_term(u_arch, lr)


@pytest.mark.parametrize("learners", [(0,), (0, 1)], ids=["one learner", "joint stage"])
def test_segmented_exact_link_equals_the_whole_network_product(float64, learners):
    # PC-DARTS with β, skip dropout (a segment context), ReLU and max-pooling: every
    # kind of segment input. Eagerly (the bug this guards against was eager-only);
    # the graph form is checked by chain_exact == unrolled.
    model = build_pc_model(
        num_classes=(3, 4),
        skip_dropout=0.3,
        ops=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        activation="relu",
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
    assert len(steps.segments) == 4  # stem, two cells, pooling
    for got, want in zip(tf.nest.flatten(segmented), tf.nest.flatten(whole), strict=True):
        scale = float(tf.reduce_max(tf.abs(want)))
        assert scale > 0
        assert float(tf.reduce_max(tf.abs(got - want))) <= 1e-12 * scale


def _pc_model():
    return build_pc_model(
        num_classes=(3, 4),
        skip_dropout=0.3,
        ops=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        activation="relu",
    )


@pytest.mark.parametrize("learners", [(0,), (1, 0)], ids=["one learner", "joint stage"])
def test_segmented_gradient_equals_the_whole_network_gradient(float64, learners):
    # Compiled (the form the search runs), on every kind of segment input.
    model = _pc_model()
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
