"""Hypergradients checked against finite differences of the top-level objective (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning import hypergradients as hg
from il_tf.learning.objective import ChainSettings
from il_tf.learning.schedule import make_schedule
from il_tf.spaces.genotypes import DARTS_OPS

from .conftest import build_tiny_model, random_batch


def make_inputs(
    model,
    num_learners,
    rounds,
    proximity,
    seed=1,
    lr=0.1,
    num_classes=(3, 4),
    batch=4,
    size=8,
    steps=1,
):
    rng = np.random.default_rng(seed)
    schedule = make_schedule(num_learners, rounds, "interleaved", steps_per_stage=steps)
    train = [
        [
            tuple(random_batch(rng, num_classes[k], batch, size) for k in stage.learners)
            for _ in range(steps)
        ]
        for stage in schedule.stages
    ]
    val = [random_batch(rng, num_classes[k], batch, size) for k in range(num_learners)]
    return hg.HypergradientInputs(
        model=model,
        schedule=schedule,
        settings=ChainSettings(proximity=proximity, weight_decay=3e-4),
        train_batches=train,
        val_batches=val,
        lr=tf.constant(lr, tf.float64),
    )


def directional_derivatives(inputs, arch, directions, eps):
    """Central differences of the top-level objective along each direction."""
    out = []
    for d in directions:
        plus = hg.top_level_objective(inputs, [a + eps * v for a, v in zip(arch, d, strict=True)])
        minus = hg.top_level_objective(inputs, [a - eps * v for a, v in zip(arch, d, strict=True)])
        out.append(float(plus - minus) / (2 * eps))
    return np.array(out)


def project(grads, directions):
    return np.array(
        [
            sum(float(tf.reduce_sum(g * v)) for g, v in zip(grads, d, strict=True))
            for d in directions
        ]
    )


def random_directions(arch, count, seed=7):
    rng = np.random.default_rng(seed)
    return [[tf.constant(rng.normal(size=a.shape)) for a in arch] for _ in range(count)]


def cosine(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize(
    "num_learners, rounds, proximity, steps",
    [(1, 1, 0.0, 1), (2, 2, 0.1, 2)],
    ids=["S=1 (DARTS)", "S=4 (K=2, R=2, T=2, lambda=0.1)"],
)
def test_unrolled_equals_finite_difference_smooth(float64, num_learners, rounds, proximity, steps):
    # T = 2: the proximity term is zero at a stage's first step (W = W_anchor), so
    # only a second step couples the stage to the encoder it was handed.
    model = build_tiny_model(num_classes=(3, 4)[:num_learners])
    inputs = make_inputs(model, num_learners, rounds, proximity, steps=steps)
    arch = model.arch_tensors()
    assert arch[0].dtype == tf.float64
    grads, _ = hg.unrolled(inputs, arch)
    directions = random_directions(arch, 3)
    numeric = directional_derivatives(inputs, arch, directions, eps=1e-5)
    analytic = project(grads, directions)
    rel = np.abs(numeric - analytic) / np.abs(analytic)
    assert rel.max() < 1e-4, (numeric, analytic)


@pytest.mark.parametrize("num_learners, rounds, proximity", [(1, 1, 0.0), (2, 2, 0.1)])
def test_unrolled_matches_finite_difference_on_real_darts_ops(
    float64, num_learners, rounds, proximity
):
    # ReLU and max-pool kinks: a small ε keeps the differences on one linear piece.
    model = build_tiny_model(num_classes=(3, 4)[:num_learners], ops=DARTS_OPS, activation="relu")
    inputs = make_inputs(model, num_learners, rounds, proximity)
    arch = model.arch_tensors()
    grads, _ = hg.unrolled(inputs, arch)
    directions = random_directions(arch, 3)
    numeric = directional_derivatives(inputs, arch, directions, eps=1e-7)
    analytic = project(grads, directions)
    assert cosine([numeric], [analytic]) > 0.999, (numeric, analytic)


def test_finite_difference_equals_unrolled_for_one_stage_when_smooth(float64):
    # With S = 1 both compute the same DARTS second-order hypergradient; they
    # differ only by the central-difference error of the Hessian-vector product.
    model = build_tiny_model(num_classes=(3,))
    inputs = make_inputs(model, 1, 1, 0.0)
    arch = model.arch_tensors()
    exact, _ = hg.unrolled(inputs, arch)
    approx, _ = hg.finite_difference(inputs, arch)
    assert cosine(exact, approx) > 0.9999


def test_finite_difference_agrees_with_unrolled_for_one_stage_on_darts_ops(float64):
    # ReLU and max-pool kinks within the ε = 0.01/‖v‖ radius make the difference
    # quotient an approximation (DESIGN §7); at a realistic batch it stays close.
    model = build_tiny_model(
        num_classes=(3,), ops=DARTS_OPS, activation="relu", channels=8, image_size=16
    )
    inputs = make_inputs(model, 1, 1, 0.0, lr=0.025, batch=16, size=16, seed=0)
    arch = model.arch_tensors()
    exact, _ = hg.unrolled(inputs, arch)
    approx, _ = hg.finite_difference(inputs, arch)
    assert cosine(exact, approx) > 0.99


def test_unrolled_with_zero_step_is_first_order(float64):
    model = build_tiny_model()
    inputs = make_inputs(model, 2, 2, 0.1, lr=0.0)
    arch = model.arch_tensors()
    unrolled, _ = hg.unrolled(inputs, arch)
    first, _ = hg.first_order(inputs, arch)
    for a, b in zip(unrolled, first, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14)


def test_proximity_couples_steps_within_a_stage(float64):
    model = build_tiny_model()
    arch = model.arch_tensors()
    # One step per stage: the proximity gradient vanishes at the anchor.
    g0, _ = hg.unrolled(make_inputs(model, 2, 1, 0.0), arch)
    g1, _ = hg.unrolled(make_inputs(model, 2, 1, 1.0), arch)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-15)
    # Two steps per stage: the second is pulled back towards the anchor.
    g0, _ = hg.unrolled(make_inputs(model, 2, 1, 0.0, steps=2), arch)
    g1, _ = hg.unrolled(make_inputs(model, 2, 1, 1.0, steps=2), arch)
    assert cosine(g0, g1) < 1 - 1e-6


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown hypergradient method 'second_order'"):
        hg.get_method("second_order")
