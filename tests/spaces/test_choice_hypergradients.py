"""Every hypergradient method through a choice supernet (float64, K=2, R=2, T=2, λ > 0).

The choice supernet of ``_choice_builders.tiny_builder`` against the same mixture
written by hand (``HandMixture``, one segment) with the same weights: the engine sees
only the search-space contract, so each method must give the same hypergradient. The
checks of ``tests/learning/test_hypergradients.py`` then run on the choice supernet:
``chain_exact`` against ``unrolled`` and against central differences of the objective.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from il_tf.learning import hypergradients as hg
from il_tf.learning.objective import ChainSettings
from il_tf.learning.step_functions import StepFunctions

from .._dtypes import float_dtype
from ..learning.test_hypergradients import (
    assert_equals_differences,
    cosine,
    make_inputs,
    rel_diff,
    run,
)
from . import _choice_builders as cb

SETTINGS = ChainSettings(proximity=0.1, weight_decay=3e-4, clip_norm=5.0)


@pytest.fixture(scope="module")
def steps():
    """(choice supernet's, hand-written mixture's) step functions, same weights."""
    with float_dtype("float64"):
        choice = cb.choice_model()
        hand = cb.build_model(cb.HandMixture())
    cb.copy_weights(choice, hand)
    strategy = tf.distribute.get_strategy()
    return StepFunctions(strategy, choice, SETTINGS), StepFunctions(strategy, hand, SETTINGS)


def test_the_choice_supernet_is_a_chain_of_segments(steps):
    assert len(steps[0].segments) == 3


@pytest.mark.parametrize("method", list(hg.METHODS))
def test_every_method_equals_the_hand_written_mixture(steps, method):
    choice, hand = steps
    got = run(method, choice, make_inputs(choice))
    assert rel_diff(got, run(method, hand, make_inputs(hand))) < 1e-10


def test_chain_exact_equals_unrolled_and_differences_of_the_objective(steps):
    choice, _ = steps
    inputs = make_inputs(choice)
    exact = run("chain_exact", choice, inputs)
    assert rel_diff(exact, run("unrolled", choice, inputs)) < 1e-8
    assert_equals_differences(choice, inputs)
    # The chain matters here too.
    assert cosine(run("first_order", choice, inputs), exact) < 0.99


def test_chain_finite_difference_agrees_on_smooth_candidates(steps):
    choice, _ = steps
    inputs = make_inputs(choice)
    fd = run("chain_finite_difference", choice, inputs)
    assert cosine(fd, run("chain_exact", choice, inputs)) > 0.999
