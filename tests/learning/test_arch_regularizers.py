"""β-decay: the gradient matches finite differences of the penalty; settings validate."""

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning.arch_regularizers import (
    BetaDecaySettings,
    beta_decay_gradients,
    beta_decay_penalty,
)


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    arch = [rng.normal(size=(6, 5)) * 2, rng.normal(size=(14, 7)), rng.normal(size=(3,))]
    settings = BetaDecaySettings(weight=0.7, schedule="linear", start_weight=0.1)
    progress = 0.4
    grads = beta_decay_gradients([tf.constant(a) for a in arch], progress, settings)
    eps = 1e-6
    for t, a in enumerate(arch):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus, minus = [x.copy() for x in arch], [x.copy() for x in arch]
            plus[t][idx] += eps
            minus[t][idx] -= eps

            def f(xs):
                return float(beta_decay_penalty([tf.constant(x) for x in xs], progress, settings))

            numeric[idx] = (f(plus) - f(minus)) / (2 * eps)
        np.testing.assert_allclose(grads[t].numpy(), numeric, atol=1e-8)
    assert np.abs(grads[0].numpy()).max() > 0  # the rank-2 tensors get a real gradient
    np.testing.assert_array_equal(grads[2].numpy(), 0)  # the rank-1 one none


def test_gradient_lowers_the_leading_logit_most():
    a = tf.constant([[5.0, 0.0, 0.0]])
    (g,) = beta_decay_gradients([a], 1.0, BetaDecaySettings(weight=1.0))
    g = g.numpy()[0]
    assert g[0] > g[1] > 0 and np.isclose(g.sum(), 1.0)


def test_schedule_and_off_by_default():
    s = BetaDecaySettings(weight=2.0, schedule="linear", start_weight=0.0)
    assert s.weight_at(0.0) == 0.0 and s.weight_at(0.5) == 1.0 and s.weight_at(2.0) == 2.0
    assert BetaDecaySettings(weight=2.0, schedule="constant").weight_at(0.0) == 2.0
    (g,) = beta_decay_gradients([tf.ones((6, 5))], 0.5)
    np.testing.assert_array_equal(g.numpy(), 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight": -1.0}, "BetaDecaySettings.weight must be a number >= 0"),
        ({"schedule": "cosine"}, "BetaDecaySettings.schedule must be one of"),
        ({"start_weight": "x"}, "BetaDecaySettings.start_weight must be"),
    ],
)
def test_settings_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BetaDecaySettings(**kwargs)
