"""build_search_model: one seed, one initial supernet, whatever the learners."""

import functools

import numpy as np

from il_tf.learning.search_model import build_search_model
from il_tf.spaces.factories import nb201_supernet


def _build(num_classes, seed=0):
    return build_search_model(
        functools.partial(nb201_supernet, channels=4, cells_per_stage=1),
        num_classes,
        (8, 8, 3),
        seed=seed,
        arch_dtype="float32",
    )


def _values(variables):
    return [np.asarray(v.numpy()) for v in variables]


def test_the_initial_supernet_and_alpha_do_not_depend_on_the_learners():
    one, two, small = _build([10]), _build([5, 5]), _build([5])
    for other in (two, small):
        for a, b in zip(_values(one.encoder.weights), _values(other.encoder.weights), strict=True):
            np.testing.assert_array_equal(a, b)
        alphas = zip(
            _values(one.arch.arch_variables), _values(other.arch.arch_variables), strict=True
        )
        for a, b in alphas:
            np.testing.assert_array_equal(a, b)
    # The first head of two learners is the head of that learner alone.
    for a, b in zip(_values(two.heads[0].weights), _values(small.heads[0].weights), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_values(two.heads[0].weights)[0], _values(two.heads[1].weights)[0])
    # Another seed, another supernet.
    other_seed = _values(_build([10], seed=1).encoder.weights)
    pairs = zip(_values(one.encoder.weights), other_seed, strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
