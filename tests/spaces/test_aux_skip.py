"""The auxiliary skip connection of DARTS-: its settings, its weight and the edges' paths."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning.search_model import build_search_model
from il_tf.spaces.architecture import AUX_SKIP, Architecture, AuxSkipSettings
from il_tf.spaces.darts_supernet import DartsSupernet, MixedOp, example_keys
from il_tf.spaces.nb201_genotype import NB201_OPS
from il_tf.spaces.nb201_supernet import NB201MixedOp, NB201Supernet

C = 4
A = 0.7  # an auxiliary skip weight


def _normal(shape, seed):
    return tf.random.stateless_normal(shape, seed=[seed, 11], dtype=tf.float64)


def _weights(n, seed=3):
    return tf.nn.softmax(_normal([n], seed))


def test_settings_schedule_and_errors():
    s = AuxSkipSettings(start=1.0)
    assert s.enabled and not AuxSkipSettings().enabled
    assert [s.value_at(p) for p in (-1.0, 0.0, 0.25, 1.0, 2.0)] == [1.0, 1.0, 0.75, 0.0, 0.0]
    assert AuxSkipSettings(start=0.5).value_at(0.5) == 0.25
    for bad in (-1.0, "1", True):
        with pytest.raises(ValueError, match=r"AuxSkipSettings.start must be .*>= 0.*gin"):
            AuxSkipSettings(start=bad)


def test_architecture_holds_the_weight_outside_the_logits():
    shapes = {"cell": (6, 5)}
    off = Architecture(shapes, aux_skip=AuxSkipSettings(start=0.0))
    assert off.aux_skip is None and off.aux_skip_value() is None
    assert AUX_SKIP not in off.tensors() and AUX_SKIP not in off.as_dict([tf.zeros((6, 5))])
    off.set_progress(0.5)  # a no-op

    arch = Architecture(shapes, seed=0, aux_skip=AuxSkipSettings(start=1.0))
    assert arch.aux_skip_value() == 1.0
    # Not a logit: no optimizer, tape or genotype sees it.
    assert len(arch.arch_variables) == 1 and not arch.aux_skip.trainable
    assert all(v is not arch.aux_skip for v in arch.trainable_variables)
    assert set(arch.numpy()) == {"cell"}
    arch.set_progress(0.25)
    assert arch.aux_skip_value() == pytest.approx(0.75)
    assert float(arch.tensors()[AUX_SKIP]) == pytest.approx(0.75)
    mapping = arch.as_dict([tf.ones((6, 5))])
    assert set(mapping) == {"cell", AUX_SKIP} and float(mapping[AUX_SKIP]) == pytest.approx(0.75)


def _aux_part(edge, x, w, **kwargs):
    """What ``aux_skip=A`` adds to an edge's output."""
    return edge(x, w, aux_skip=tf.constant(A, tf.float64), **kwargs) - edge(x, w, **kwargs)


def test_nb201_edges_add_the_weighted_input(float64):
    x = _normal([2, 6, 6, C], 1)
    edge = NB201MixedOp(C, C)
    w = _weights(len(NB201_OPS))
    np.testing.assert_allclose(_aux_part(edge, x, w), A * x, atol=1e-12)
    # Where the channels change, the path is the edge's own skip op (conv 1×1 + BN).
    wider = NB201MixedOp(C, 2 * C)
    skip = wider.ops[wider.op_indices.index(NB201_OPS.index("skip_connect"))]
    np.testing.assert_allclose(_aux_part(wider, x, w), A * skip(x), atol=1e-12)
    # ... and there is none without a skip_connect candidate.
    ops = ("none", "nor_conv_1x1", "avg_pool_3x3")
    no_skip = NB201MixedOp(C, 2 * C, ops)
    np.testing.assert_allclose(_aux_part(no_skip, x, _weights(3)), 0.0, atol=1e-12)


@pytest.mark.parametrize("partial_channels", [1, 2])
def test_darts_stride_1_edges_add_the_weighted_input(float64, partial_channels):
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    x = _normal([2, 7, 7, C], 2)
    edge = MixedOp(C, 1, ops, partial_channels=partial_channels, skip_dropout=0.5)
    keys = example_keys(x)
    # With dropout on the skip candidate, the auxiliary path is never dropped.
    got = _aux_part(edge, x, _weights(len(ops)), noise_keys=keys)
    if partial_channels == 1:
        np.testing.assert_allclose(got, A * x, atol=1e-12)
    else:  # only the channels the ops see (the first half), then the shuffle
        from il_tf.spaces.darts_supernet import channel_shuffle

        part = tf.concat([x[..., : C // 2], tf.zeros_like(x[..., C // 2 :])], axis=-1)
        np.testing.assert_allclose(got, A * channel_shuffle(part, 2), atol=1e-12)


def test_darts_reduction_edges_use_their_factorized_reduce(float64):
    ops = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    x = _normal([2, 7, 7, C], 4)
    edge = MixedOp(C, 2, ops)
    w = _weights(len(ops))
    reduce = edge.ops[edge.op_indices.index(ops.index("skip_connect"))]
    np.testing.assert_allclose(_aux_part(edge, x, w), A * reduce(x), atol=1e-12)
    without = MixedOp(C, 2, ("none", "max_pool_3x3", "sep_conv_3x3"))
    np.testing.assert_allclose(_aux_part(without, x, _weights(3)), 0.0, atol=1e-12)


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_supernets_read_the_weight_from_the_mapping(float64, space):
    if space == "nb201":
        net = NB201Supernet(channels=C, cells_per_stage=1)
    else:
        net = DartsSupernet(channels=C, num_cells=3, ops=("none", "skip_connect", "avg_pool_3x3"))
    x = _normal([2, 8, 8, 3], 5)
    arch = Architecture(net.arch_shapes(), seed=0, dtype="float64").tensors()
    plain = net(x, arch)
    with_aux = net(x, {**arch, AUX_SKIP: tf.constant(A, tf.float64)})
    assert net.reads_aux_skip
    assert float(tf.reduce_max(tf.abs(with_aux - plain))) > 1e-3
    np.testing.assert_allclose(net(x, {**arch, AUX_SKIP: tf.constant(0.0, tf.float64)}), plain)


def test_a_supernet_without_the_path_is_refused():
    class NoAux(NB201Supernet):
        reads_aux_skip = False

    with pytest.raises(ValueError, match=r"AuxSkipSettings.start is 1.0, but NoAux has no"):
        build_search_model(
            NoAux(channels=2, cells_per_stage=1), [3], (8, 8, 3), aux_skip=AuxSkipSettings(1.0)
        )
