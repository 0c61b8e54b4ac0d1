"""Tests for il_tf.learning.engine beyond the hypergradient math: XLA compilation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning.engine import OptimizerSettings, SearchEngine
from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.learning.stage_schedule import make_schedule
from il_tf.spaces.darts_supernet import DartsSupernet
from il_tf.spaces.genotypes import DARTS_OPS

# All ops, max-pooling among them (no XLA kernel for its argmax form), and
# PC-DARTS's bypass pooling on the reduction edges.
OPS = DARTS_OPS
CLASSES = (3, 4)


def _build() -> SearchModel:
    encoder = DartsSupernet(channels=4, num_cells=2, ops=OPS, partial_channels=2)
    return build_search_model(encoder, CLASSES, (8, 8, 3), seed=0, arch_seed=1)


def _one_iteration(method: str, jit_compile: bool):
    schedule = make_schedule(2, 1, "interleaved", steps_per_stage=1)
    engine = SearchEngine(
        tf.distribute.get_strategy(),
        _build,
        schedule,
        method,
        0.0,
        OptimizerSettings(arch_lr=0.01),
        total_weight_steps=10,
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(0)

    def batch(k):
        return (
            tf.constant(rng.normal(size=(4, 8, 8, 3)).astype(np.float32)),
            tf.constant(rng.integers(0, CLASSES[k], 4).astype(np.int32)),
        )

    train = [[tuple(batch(k) for k in stage.learners)] for stage in schedule.stages]
    engine.iteration(train, [batch(k) for k in range(2)])
    return [v.numpy() for v in engine.model.arch.arch_variables] + [
        v.numpy() for v in engine.weight_variables
    ]


@pytest.mark.slow
def test_supernet_gradients_compile_with_xla():
    """Every op of the supernet (all 8, partial channels) has an XLA kernel."""
    model = _build()
    x = tf.random.stateless_normal([4, 8, 8, 3], seed=[0, 1])

    def grads():
        arch = model.arch_tensors()
        with tf.GradientTape() as tape:
            tape.watch(arch)
            features = model.encoder(x, model.arch.as_dict(arch))
            loss = tf.reduce_sum(tf.square(features))
        return tape.gradient(loss, arch)

    for a, b in zip(grads(), tf.function(grads, jit_compile=True)(), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5)


# XLA compiles a whole search iteration for a minute or more on 2 CPU cores.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["first_order", "unrolled"])
def test_xla_compiled_iteration_equals_plain_graph(method):
    """jit_compile=True compiles every op of the supernet and computes the same step."""
    plain = _one_iteration(method, jit_compile=False)
    compiled = _one_iteration(method, jit_compile=True)
    for a, b in zip(plain, compiled, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_arch_learning_rate_decays_from_arch_lr_to_arch_lr_min():
    schedule = make_schedule(2, 1, "interleaved", steps_per_stage=1)
    settings = OptimizerSettings(arch_lr=0.2, arch_lr_min=0.02)
    engine = SearchEngine(
        tf.distribute.get_strategy(),
        _build,
        schedule,
        "first_order",
        0.0,
        settings,
        total_weight_steps=10,
        total_arch_steps=8,
    )
    rates = []
    for step in (0, 4, 8, 20):
        engine.arch_optimizer.iterations.assign(step)
        rates.append(float(engine.arch_optimizer.learning_rate))
    # A cosine over the 8 architecture steps, then held at its end.
    np.testing.assert_allclose(rates, [0.2, 0.11, 0.02, 0.02], rtol=1e-6)
    assert OptimizerSettings(arch_lr=0.2).arch_learning_rate(8) == 0.2  # constant (DARTS)


def test_arch_lr_min_above_arch_lr_is_refused():
    with pytest.raises(ValueError, match=r"OptimizerSettings.arch_lr_min must be .*got 0.5"):
        OptimizerSettings(arch_lr=0.1, arch_lr_min=0.5)
