"""Hypergradient methods against each other and against differences of the objective (float64).

The step functions of one tiny model are compiled once per module and shared by the
tests (tracing, not running, is what costs time); ``unrolled``, whose one graph
takes minutes to trace even here, runs eagerly as the reference.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning import hypergradients as hg
from il_tf.learning.objective import ChainSettings
from il_tf.learning.stage_schedule import make_schedule
from il_tf.learning.step_functions import StepFunctions
from il_tf.spaces.genotypes import DARTS_OPS

from .._dtypes import float_dtype
from .conftest import build_tiny_model, random_batch

CLASSES = (3, 4)


def make_steps(**model_kwargs) -> StepFunctions:
    with float_dtype("float64"):
        model = build_tiny_model(num_classes=CLASSES, num_cells=1, **model_kwargs)
    settings = ChainSettings(proximity=0.1, weight_decay=3e-4, clip_norm=5.0)
    return StepFunctions(tf.distribute.get_strategy(), model, settings)


@pytest.fixture(scope="module")
def smooth():
    return make_steps()


def make_inputs(
    steps, rounds=2, kind="interleaved", T=2, order=None, lr=0.1, seed=1, batch=4, K=2, size=8
):
    rng = np.random.default_rng(seed)
    schedule = make_schedule(K, rounds, kind, steps_per_stage=T, order=order)
    train = [
        [
            tuple(random_batch(rng, CLASSES[k], batch, size) for k in stage.learners)
            for _ in range(T)
        ]
        for stage in schedule.stages
    ]
    val = [random_batch(rng, CLASSES[k], batch, size) for k in range(K)]
    arch, enc, heads = steps.read()
    return hg.ChainInputs(schedule, arch, enc, heads, train, val, tf.constant(lr, tf.float64))


def flat(grads) -> np.ndarray:
    return np.concatenate([np.ravel(g) for g in grads])


@contextlib.contextmanager
def eagerly():
    """Runs the step functions eagerly inside (same math, no trace)."""
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


def run(method: str, steps, inputs) -> np.ndarray:
    if method == "unrolled":
        # The reference: the whole chain as one tape, eagerly.
        with eagerly():
            return flat(hg.unrolled(steps, inputs).grad)
    return flat(hg.get_method(method)(steps, inputs).grad)


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def rel_diff(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.slow
def test_chain_exact_equals_unrolled(smooth):
    # K=2, R=2, T=2, λ=0.1: T=2 so that the proximity term (zero at a stage's
    # first step) couples each stage to the encoder it was handed.
    inputs = make_inputs(smooth)
    exact = run("chain_exact", smooth, inputs)
    assert rel_diff(exact, run("unrolled", smooth, inputs)) < 1e-8
    # The chain matters: the first-order and per-learner methods differ from it.
    assert cosine(run("first_order", smooth, inputs), exact) < 0.99


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, order", [("blocked", None), ("joint", None), ("interleaved", (1, 0))]
)
def test_chain_exact_equals_unrolled_other_schedules(smooth, kind, order):
    inputs = make_inputs(smooth, kind=kind, order=order)
    assert rel_diff(run("chain_exact", smooth, inputs), run("unrolled", smooth, inputs)) < 1e-8


def test_chain_exact_equals_differences_of_the_objective(smooth):
    assert_equals_differences(smooth, make_inputs(smooth))


def assert_equals_differences(steps: StepFunctions, inputs) -> list[tf.Tensor]:
    """Checks chain_exact against central differences of the objective (2 directions).

    Returns chain_exact's hypergradient.
    """
    exact = hg.chain_exact(steps, inputs).grad
    rng = np.random.default_rng(7)
    eps = 1e-5
    for _ in range(2):
        direction = [tf.constant(rng.normal(size=a.shape)) for a in inputs.arch]

        def objective(sign, direction=direction):
            arch = [a + sign * eps * d for a, d in zip(inputs.arch, direction, strict=True)]
            return float(hg.chain_objective(steps, _with_arch(inputs, arch)))

        numeric = (objective(1.0) - objective(-1.0)) / (2 * eps)
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(exact, direction, strict=True))
        assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)
    return exact


def _with_arch(inputs, arch):
    return dataclasses.replace(inputs, arch=arch)


def test_chain_finite_difference_agrees_with_exact_on_smooth_ops(smooth):
    inputs = make_inputs(smooth)
    assert (
        cosine(run("chain_finite_difference", smooth, inputs), run("chain_exact", smooth, inputs))
        > 0.999
    )


@pytest.mark.slow
def test_chain_finite_difference_agrees_with_exact_on_darts_ops():
    # ReLU and max-pool kinks within the ε = 0.01/‖v‖ radius make each link's
    # difference quotient an approximation; at a realistic step size and batch
    # the chain's direction stays close (README, "Hypergradient methods").
    steps = make_steps(ops=DARTS_OPS, activation="relu", channels=8, image_size=16)
    inputs = make_inputs(steps, lr=0.01, batch=16, size=16, seed=0)
    exact = run("chain_exact", steps, inputs)
    assert cosine(run("chain_finite_difference", steps, inputs), exact) > 0.99


@pytest.mark.slow
def test_zero_step_size_reduces_every_method_to_first_order(smooth):
    inputs = make_inputs(smooth, lr=0.0)
    first = run("first_order", smooth, inputs)
    for method in hg.METHODS:
        if method == "unrolled":
            # One tape over the summed objective: the same terms, summed in another order.
            np.testing.assert_allclose(run(method, smooth, inputs), first, rtol=1e-12)
        else:
            np.testing.assert_array_equal(run(method, smooth, inputs), first, err_msg=method)


def test_per_learner_equals_chain_for_one_step_of_one_learner(smooth):
    # K=1, R=1, T=1 is DARTS second order: both finite-difference methods take
    # the same single step and the same central difference.
    inputs = make_inputs(smooth, K=1, rounds=1, T=1)
    np.testing.assert_array_equal(
        run("per_learner_finite_difference", smooth, inputs),
        run("chain_finite_difference", smooth, inputs),
    )


def test_traces_do_not_grow_with_the_chain(smooth):
    hg.chain_finite_difference(smooth, make_inputs(smooth, rounds=1))
    before = dict(smooth.trace_counts)
    hg.chain_finite_difference(smooth, make_inputs(smooth, rounds=3, T=3))
    after = dict(smooth.trace_counts)
    grew = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    assert not grew, grew


def test_renamed_and_unknown_methods():
    with pytest.raises(ValueError, match="now called 'per_learner_finite_difference'"):
        hg.get_method("finite_difference")
    with pytest.raises(ValueError, match="unknown hypergradient method 'second_order'"):
        hg.get_method("second_order")
