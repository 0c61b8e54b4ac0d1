"""Tests for il_tf.spaces.darts_supernet: mixed ops, search cells, the DARTS encoder.

Building a supernet is slow (Keras traces each container layer symbolically on its
first call), so the networks here are tiny: 4 channels, few ops where the test is
about the wiring rather than the ops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.darts_supernet import (
    DartsSupernet,
    MixedOp,
    SearchCell,
    reduction_cell_indices,
    source_groups,
)
from il_tf.spaces.genotypes import DARTS_OPS, DARTS_V2, Genotype, edge_index

from ._one_step import one_step_hypergradient

C = 4
XI = 0.1
# Enough ops to cover every kind of path: zero, pooling (stride 2 too), identity /
# FactorizedReduce, and a dilated depthwise conv (stride 2 + dilation subsamples).
FEW_OPS = ("none", "max_pool_3x3", "skip_connect", "dil_conv_3x3")


def _normal(shape, seed, dtype=tf.float32):
    return tf.random.stateless_normal(shape, seed=[seed, 5], dtype=dtype)


# ----------------------------------------------------------------------------- mixed op


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_with_one_hot_weights_is_that_op(float64, stride):
    mixed = MixedOp(C, stride, DARTS_OPS)
    x = _normal([2, 7, 7, C], 1, tf.float64)
    out = math.ceil(7 / stride)
    assert len(mixed.ops) == len(DARTS_OPS) - 1  # `none` is skipped
    for k, name in enumerate(DARTS_OPS):
        y = mixed(x, tf.one_hot(k, len(DARTS_OPS), dtype=tf.float64))
        assert tuple(y.shape) == (2, out, out, C) and y.dtype == tf.float64, name
        if name == "none":
            np.testing.assert_array_equal(y, 0.0)
        else:
            expected = mixed.ops[mixed.op_indices.index(k)](x)
            np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_mixed_op_is_the_weighted_sum(float64):
    mixed = MixedOp(C, 1, FEW_OPS)
    x = _normal([2, 7, 7, C], 2, tf.float64)
    w = tf.nn.softmax(_normal([len(FEW_OPS)], 3, tf.float64))
    expected = sum(w[k] * mixed.ops[i](x) for i, k in enumerate(mixed.op_indices))
    np.testing.assert_allclose(mixed(x, w), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- cells


@pytest.mark.parametrize(
    "reduction, reduction_prev", [(False, False), (True, False), (False, True), (True, True)]
)
def test_search_cell_output_shape(reduction, reduction_prev):
    size = 7
    cell = SearchCell(C, reduction, reduction_prev, FEW_OPS)
    s0_size = 2 * size - 1 if reduction_prev else size  # 13: ceil(13 / 2) == 7
    s0 = _normal([2, s0_size, s0_size, 3 * C], 1)
    s1 = _normal([2, size, size, 2 * C], 2)
    weights = tf.nn.softmax(_normal([14, len(FEW_OPS)], 3), axis=-1)
    y = cell(s0, s1, weights)
    out = math.ceil(size / 2) if reduction else size
    assert tuple(y.shape) == (2, out, out, 4 * C)


def test_search_cell_with_every_op_on_odd_sizes():
    cell = SearchCell(C, reduction=True, reduction_prev=False, ops=DARTS_OPS)
    weights = tf.nn.softmax(_normal([14, len(DARTS_OPS)], 4), axis=-1)
    y = cell(_normal([2, 9, 9, C], 5), _normal([2, 9, 9, C], 6), weights)
    assert tuple(y.shape) == (2, 5, 5, 4 * C)
    assert np.all(np.isfinite(y.numpy()))


# ----------------------------------------------------------------------------- supernet


@pytest.mark.parametrize("num_cells", [1, 2, 3, 4, 5])
def test_supernet_output_shape(num_cells):
    # 2-node cells keep this quick; the 4-node cell's shapes are tested above.
    net = DartsSupernet(
        channels=C, num_cells=num_cells, steps=2, multiplier=2, stem_multiplier=1, ops=FEW_OPS
    )
    arch = {k: _normal(s, 7) for k, s in net.arch_shapes().items()}
    reductions = reduction_cell_indices(num_cells)
    assert net.reduction_indices == reductions
    assert [cell.reduction for cell in net.cells] == [i in reductions for i in range(num_cells)]
    assert net.feature_dim == 2 * C * 2 ** len(reductions)
    for size in (7, 9, 8):
        y = net(_normal([2, size, size, 3], size), arch)
        assert tuple(y.shape) == (2, net.feature_dim)
        assert np.all(np.isfinite(y.numpy()))
    assert not net.non_trainable_variables  # stateless_call(weights, [], ...) needs this


@pytest.mark.parametrize("wide_edges", [False, True], ids=["single edges", "wide edges"])
def test_cell_parts_compute_the_same_network(float64, wide_edges):
    # A body cut into parts sums each node's edges in the same order: the same values.
    nets = [
        DartsSupernet(channels=C, num_cells=2, ops=FEW_OPS, cell_parts=parts, wide_edges=wide_edges)
        for parts in (1, 2, 5)
    ]
    arch = {k: _normal(s, 3, tf.float64) for k, s in nets[0].arch_shapes().items()}
    x = _normal([2, 8, 8, 3], 4, tf.float64)
    outs = []
    for net in nets:
        net(x, arch)
        for v, w in zip(net.trainable_variables, nets[0].trainable_variables, strict=True):
            v.assign(w)
        outs.append(net(x, arch).numpy())
    for net, parts in zip(nets, (1, 2, 5), strict=True):
        # stem, per cell its preprocessing and `parts` body parts, pooling
        assert len(net.segments()) == 2 + 2 * (1 + parts)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-13, atol=1e-13)


def test_source_groups_balance_the_edges():
    # Edges leaving states 0 .. 4 of a 4-node cell: 4, 4, 3, 2, 1.
    assert source_groups(4, 4, 1) == ((0, 1, 2, 3, 4),)
    assert source_groups(4, 4, 2) == ((0, 1), (2, 3, 4))
    assert source_groups(4, 4, 3) == ((0,), (1,), (2, 3, 4))
    assert source_groups(4, 4, 5) == ((0,), (1,), (2,), (3,), (4,))
    with pytest.raises(ValueError, match=r"cell_parts must be between 1 and steps \+ 1 = 5, got 6"):
        source_groups(4, 4, 6)
    with pytest.raises(ValueError, match="needs multiplier <= steps"):
        DartsSupernet(channels=C, num_cells=1, steps=2, multiplier=3, cell_parts=2)


def test_reduction_cell_indices():
    # DARTS: at 1/3 and 2/3 of the depth (8 cells: 2 and 5; 20 cells: 6 and 13).
    assert reduction_cell_indices(8) == (2, 5)
    assert reduction_cell_indices(20) == (6, 13)
    assert reduction_cell_indices(5) == (1, 3)
    assert reduction_cell_indices(2) == (1,)
    assert reduction_cell_indices(1) == ()


def test_arch_shapes_and_interface():
    net = DartsSupernet(channels=C, num_cells=2)
    assert net.space == DartsSupernet.space == "darts"
    assert net.arch_shapes() == {"normal": (14, 8), "reduce": (14, 8)}
    assert DartsSupernet(channels=C, num_cells=1, ops=FEW_OPS).arch_shapes() == {
        "normal": (14, 4),
        "reduce": (14, 4),
    }
    assert DartsSupernet(channels=C, num_cells=1, steps=2, multiplier=2).arch_shapes() == {
        "normal": (5, 8),
        "reduce": (5, 8),
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_cells": 0}, "num_cells"),
        ({"channels": 5}, "channels"),
        ({"ops": ("none", "conv_7x7")}, "unknown"),
        ({"ops": ()}, "at least one operation other than 'none'"),
        ({"ops": ("none",)}, "at least one operation other than 'none'"),
    ],
)
def test_supernet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DartsSupernet(**kwargs)


def _alpha_of(cell) -> np.ndarray:
    """Logits whose DARTS derivation is ``cell`` (the first edge of each node the stronger)."""
    alpha = np.zeros((14, len(DARTS_OPS)))
    for k, (op, j) in enumerate(cell):
        alpha[edge_index(k // 2, j), DARTS_OPS.index(op)] = 10.0 - (k % 2)
    return alpha


def test_derive_returns_a_valid_genotype():
    net = DartsSupernet(channels=C, num_cells=2)
    genotype = net.derive(
        {"normal": _alpha_of(DARTS_V2.normal), "reduce": _alpha_of(DARTS_V2.reduce)}
    )
    assert isinstance(genotype, Genotype)
    assert genotype == DARTS_V2

    # Random logits (with a dominant `none` on some edges): still 2 edges per node,
    # never `none`, from distinct earlier states.
    rng = np.random.default_rng(0)
    arch = {name: rng.normal(size=shape) for name, shape in net.arch_shapes().items()}
    arch["normal"][:, 0] += 5.0
    genotype = net.derive(arch)
    genotype.validate()
    for cell in (genotype.normal, genotype.reduce):
        assert len(cell) == 8
        for i in range(4):
            (op_a, in_a), (op_b, in_b) = cell[2 * i], cell[2 * i + 1]
            assert "none" not in (op_a, op_b)
            assert in_a != in_b and max(in_a, in_b) < i + 2
    assert tuple(genotype.normal_concat) == tuple(genotype.reduce_concat) == (2, 3, 4, 5)
    assert genotype == genotypes_lib.derive_genotype(arch["normal"], arch["reduce"])


def test_derive_with_an_op_subset():
    net = DartsSupernet(channels=C, num_cells=1, ops=FEW_OPS)
    alpha = np.zeros((14, len(FEW_OPS)))
    alpha[:, FEW_OPS.index("dil_conv_3x3")] = np.arange(1, 15)  # later inputs stronger
    genotype = net.derive({"normal": alpha, "reduce": alpha})
    assert genotype.normal[:2] == (("dil_conv_3x3", 1), ("dil_conv_3x3", 0))
    assert {op for op, _ in genotype.normal} == {"dil_conv_3x3"}


# ----------------------------------------------------------------------------- second order


def test_supernet_double_gradient_graph_equals_eager(float64):
    """Hypergradient through one SGD step (HVPs w.r.t. weights and α), graph vs eager.

    A normal and a reduction cell (FactorizedReduce, stride-2 ops), in float64.
    """
    net = DartsSupernet(
        channels=C,
        num_cells=2,
        steps=2,
        multiplier=2,
        stem_multiplier=1,
        ops=("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"),
    )
    x = _normal([3, 7, 7, 3], 10, tf.float64)
    arch = {k: 0.5 * _normal(s, 11, tf.float64) for k, s in net.arch_shapes().items()}
    y = net(x, arch)
    assert y.dtype == tf.float64
    t_train = _normal(y.shape, 12, tf.float64)
    t_val = _normal(y.shape, 13, tf.float64)
    weights = [v.value for v in net.trainable_variables]

    one_step = one_step_hypergradient(net, x, t_train, t_val, XI)

    def step(weights, arch):
        return tf.nest.flatten(one_step(weights, arch))

    eager = step(weights, arch)
    graph = tf.function(step)(weights, arch)
    for i, (g, e) in enumerate(zip(graph, eager, strict=True)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-12, err_msg=f"tensor {i}")
    # Both α tensors get a real hypergradient.
    assert min(float(tf.reduce_max(tf.abs(e))) for e in eager[:2]) > 1e-3
