"""Tests for il_tf.spaces.nb201_supernet: the NAS-Bench-201 search encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from il_tf.spaces import ops as ops_lib
from il_tf.spaces.architecture import Architecture
from il_tf.spaces.nb201_genotype import (
    NB201_EDGES,
    NB201_OPS,
    NB201Genotype,
    NB201GenotypeError,
)
from il_tf.spaces.nb201_supernet import (
    NB201MixedOp,
    NB201SearchCell,
    NB201Supernet,
    ResidualReductionBlock,
    make_nb201_op,
)

from .._dtypes import float_dtype

C = 4
XI = 0.1  # SGD step size of the virtual step
ZERO = tf.UnconnectedGradients.ZERO
BEST_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _normal(shape, seed, dtype=tf.float32):
    return tf.random.stateless_normal(shape, seed=[seed, 3], dtype=dtype)


def _one_hot_alpha(genotype: NB201Genotype, ops=NB201_OPS, scale=1.0) -> np.ndarray:
    alpha = np.zeros((6, len(ops)))
    for e, op in enumerate(genotype.ops):
        alpha[e, ops.index(op)] = scale
    return alpha


def _rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _discrete_cell(cell: NB201SearchCell, x, genotype: NB201Genotype):
    """The cell with one op per edge, evaluated with the cell's own op layers."""
    nodes = [x]
    for to in range(1, 4):
        terms = []
        for e, (t, frm) in enumerate(NB201_EDGES):
            name = genotype.ops[e]
            if t != to or name == "none":
                continue
            mixed = cell.edges[e]
            layer = mixed.ops[mixed.op_indices.index(mixed.op_names.index(name))]
            terms.append(layer(nodes[frm]))
        if terms:
            nodes.append(tf.add_n(terms))
        else:
            shape = tf.concat([tf.shape(x)[:3], [cell.c_out]], 0)
            nodes.append(tf.zeros(shape, x.dtype))
    return nodes[-1]


# ----------------------------------------------------------------------------- interface


def test_interface():
    net = NB201Supernet(channels=C, cells_per_stage=1)
    assert net.space == NB201Supernet.space == "nas-bench-201"
    assert net.arch_shapes() == {"cell": (6, 5)}
    assert net.feature_dim == 4 * C
    sub = NB201Supernet(channels=C, cells_per_stage=1, ops=("skip_connect", "nor_conv_3x3"))
    assert sub.arch_shapes() == {"cell": (6, 2)}
    config = net.get_config()
    assert config["channels"] == C and config["cells_per_stage"] == 1
    assert config["ops"] == list(NB201_OPS)
    clone = NB201Supernet.from_config(sub.get_config())
    assert clone.op_names == sub.op_names and clone.feature_dim == sub.feature_dim


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ops": ("none", "conv_7x7")}, "ops"),
        ({"ops": ("none",)}, "other than 'none'"),
        ({"ops": ()}, "ops"),
        ({"ops": ("skip_connect", "skip_connect")}, "distinct"),
        ({"cells_per_stage": 0}, "cells_per_stage"),
        ({"channels": 0}, "channels"),
        ({"activation": "tanhh"}, "activation"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NB201Supernet(**kwargs)


def test_make_nb201_op_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        make_nb201_op("max_pool_3x3", C, C)
    with pytest.raises(ValueError, match="stride"):
        make_nb201_op("nor_conv_3x3", C, C, stride=3)


# ----------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def small_net():
    return NB201Supernet(channels=C, cells_per_stage=1)


@pytest.mark.parametrize("size", [7, 8, 9, 16])
def test_output_shape(small_net, size):
    x = _normal([2, size, size, 3], size)
    y = small_net(x, {"cell": _normal([6, 5], 1)})
    assert tuple(y.shape) == (2, 4 * C)
    assert y.dtype == tf.float32
    assert np.all(np.isfinite(y.numpy()))


def test_output_shape_other_configs():
    x = _normal([3, 9, 9, 3], 0)
    net = NB201Supernet(channels=C, cells_per_stage=2, stem_channels=6, activation="softplus")
    assert tuple(net(x, {"cell": _normal([6, 5], 1)}).shape) == (3, 4 * C)
    # Only the first cell maps stem_channels -> channels.
    cells = [b for b in net.blocks if isinstance(b, NB201SearchCell)]
    assert [(c.c_in, c.c_out) for c in cells] == [(6, 4), (4, 4), (8, 8), (8, 8), (16, 16)] + [
        (16, 16)
    ]
    assert sum(isinstance(b, ResidualReductionBlock) for b in net.blocks) == 2


@pytest.mark.parametrize("size", [7, 8])
def test_stage_resolutions(size):
    """Three stages at H, ceil(H/2), ceil(ceil(H/2)/2), as in the benchmark (32, 16, 8)."""
    net = NB201Supernet(channels=C, cells_per_stage=1)
    x = _normal([2, size, size, 3], 0)
    weights = tf.nn.softmax(_normal([6, 5], 1), axis=-1)
    h = net.stem_bn(net.stem_conv(x))
    shapes = []
    for block in net.blocks:
        h = block(h, weights) if isinstance(block, NB201SearchCell) else block(h)
        shapes.append(tuple(h.shape[1:]))
    h1 = math.ceil(size / 2)
    h2 = math.ceil(h1 / 2)
    assert shapes == [(size, size, C), (h1, h1, 2 * C), (h1, h1, 2 * C), (h2, h2, 4 * C)] + [
        (h2, h2, 4 * C)
    ]


def test_parameter_count_matches_the_benchmark():
    """C=16, N=5: the convolutions of the benchmark's CIFAR network (NASBENCH201.md).

    Its params_M = 0.073306 + 0.24304·n3 + 0.028·n1 counts the BN affine parameters
    and the 64→10 classifier too; without them (the search network has neither) the
    skeleton has 72,112 weights, each 3×3 edge 241,920 and each 1×1 edge 26,880.
    """
    skeleton = 73_306 - 650 - 2 * (16 + 32 + 32 + 64 + 64 + 64)
    per_3x3 = 243_040 - 2 * 5 * (16 + 32 + 64)
    per_1x1 = 28_000 - 2 * 5 * (16 + 32 + 64)
    assert (skeleton, per_3x3, per_1x1) == (72_112, 241_920, 26_880)

    net = NB201Supernet()  # the benchmark's C=16, N=5
    net(_normal([1, 8, 8, 3], 0), {"cell": tf.zeros([6, 5])})
    count = sum(int(np.prod(v.shape)) for v in net.trainable_variables)
    assert count == skeleton + 6 * (per_3x3 + per_1x1)
    assert not net.non_trainable_variables  # stateless_call(weights, [], ...) needs this


def test_stateless_call_matches_call(small_net):
    x = _normal([2, 8, 8, 3], 4)
    arch = {"cell": _normal([6, 5], 5)}
    expected = small_net(x, arch)
    weights = [v.value for v in small_net.trainable_variables]
    y, non_trainable = small_net.stateless_call(weights, [], x, arch)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert non_trainable == []


# ----------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("c_in", [C, 6], ids=["same_channels", "channel_change"])
@pytest.mark.parametrize("op", NB201_OPS)
def test_mixed_op_with_one_hot_weights_is_that_op(float64, op, c_in):
    mixed = NB201MixedOp(c_in, C)
    x = _normal([2, 7, 7, c_in], 1, tf.float64)
    k = NB201_OPS.index(op)
    y = mixed(x, tf.one_hot(k, len(NB201_OPS), dtype=tf.float64))
    assert tuple(y.shape) == (2, 7, 7, C)
    assert y.dtype == tf.float64
    if op == "none":
        np.testing.assert_array_equal(y, 0.0)
    else:
        expected = mixed.ops[mixed.op_indices.index(k)](x)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_ops_follow_the_benchmark_definitions(float64):
    x = _normal([2, 7, 7, C], 2, tf.float64)
    relu = tf.nn.relu(x)
    bn = ops_lib.SearchBatchNorm()
    for name, k in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3)):
        op = make_nb201_op(name, C, C)
        y = op(x)
        kernel = op.trainable_variables[0]
        assert tuple(kernel.shape) == (k, k, C, C)
        np.testing.assert_allclose(y, bn(tf.nn.conv2d(relu, kernel, 1, "SAME")), rtol=1e-10)
    np.testing.assert_array_equal(make_nb201_op("skip_connect", C, C)(x), x)
    # avg_pool_3x3: padding not counted, no BN after it.
    np.testing.assert_allclose(make_nb201_op("avg_pool_3x3", C, C)(x), ops_lib.avg_pool(x), 0, 0)
    # Channel changes (the benchmark's rules): skip = conv1x1 + BN (no ReLU); the pool
    # gets a ReLU-conv1x1-BN in front.
    skip = make_nb201_op("skip_connect", C, 6)
    y = skip(x)
    np.testing.assert_allclose(
        y, bn(tf.nn.conv2d(x, skip.trainable_variables[0], 1, "VALID")), rtol=1e-10
    )
    pool = make_nb201_op("avg_pool_3x3", C, 6)
    y = pool(x)
    pre = bn(tf.nn.conv2d(relu, pool.trainable_variables[0], 1, "VALID"))
    np.testing.assert_allclose(y, ops_lib.avg_pool(pre), rtol=1e-10)
    # Final-network form: Keras BN with moving statistics.
    final = make_nb201_op("nor_conv_3x3", C, C, search=False)
    final(x)
    assert final.non_trainable_variables
    search = make_nb201_op("nor_conv_3x3", C, C)
    search(x)
    assert not search.non_trainable_variables


def test_reduction_block_on_odd_sizes(float64):
    block = ResidualReductionBlock(2 * C)
    x = _normal([2, 7, 7, C], 3, tf.float64)
    y = block(x)
    assert tuple(y.shape) == (2, 4, 4, 2 * C)
    # The shortcut: 2×2 average (of the pixels present) at stride 2, then conv 1×1.
    xn = x.numpy()
    pooled = np.stack(
        [
            np.stack([xn[:, i : i + 2, j : j + 2].mean(axis=(1, 2)) for j in range(0, 7, 2)], 1)
            for i in range(0, 7, 2)
        ],
        1,
    )
    shortcut = tf.nn.conv2d(pooled, block.shortcut.kernel, 1, "VALID")
    main = block.conv_b(block.conv_a(x))
    np.testing.assert_allclose(y, shortcut + main, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "arch",
    [
        BEST_CELL,
        "|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|",
    ],
)
@pytest.mark.parametrize("c_in", [C, 6], ids=["same_channels", "channel_change"])
def test_cell_with_one_hot_weights_is_the_discrete_cell(float64, arch, c_in):
    genotype = NB201Genotype.from_arch_string(arch)
    cell = NB201SearchCell(c_in, C, NB201_OPS, "relu")
    x = _normal([2, 7, 7, c_in], 4, tf.float64)
    y = cell(x, tf.constant(_one_hot_alpha(genotype)))
    assert tuple(y.shape) == (2, 7, 7, C)
    np.testing.assert_allclose(y, _discrete_cell(cell, x, genotype), rtol=1e-12, atol=1e-12)


def test_supernet_with_one_hot_logits_is_the_discrete_network(float64):
    """α = 1e4·one-hot gives exactly one-hot weights in float64: the discrete network."""
    genotype = NB201Genotype.from_arch_string(BEST_CELL)
    net = NB201Supernet(channels=C, cells_per_stage=1)
    x = _normal([2, 9, 9, 3], 5, tf.float64)
    y = net(x, {"cell": _one_hot_alpha(genotype, scale=1e4)})
    assert y.dtype == tf.float64

    h = net.stem_bn(net.stem_conv(x))
    for block in net.blocks:
        h = _discrete_cell(block, h, genotype) if isinstance(block, NB201SearchCell) else block(h)
    expected = tf.reduce_mean(tf.nn.relu(ops_lib.SearchBatchNorm()(h)), axis=[1, 2])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- derive


def test_derive_hand_made_alpha():
    net = NB201Supernet(channels=C, cells_per_stage=1)
    alpha = np.full((6, 5), -1.0)
    best = NB201Genotype.from_arch_string(BEST_CELL)
    alpha += _one_hot_alpha(best, scale=2.5)
    alpha[0, 0] = 1.4  # a strong `none` that loses to nor_conv_3x3 (1.5)
    genotype = net.derive({"cell": alpha})
    assert isinstance(genotype, NB201Genotype)
    assert genotype.to_arch_string() == BEST_CELL
    # `none` is a candidate (the benchmark's own derivation), and ties go to the earlier op.
    alpha[0, 0] = 2.0
    alpha[5, :] = 0.7
    assert (
        net.derive({"cell": alpha}).to_arch_string()
        == "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    )


def test_derive_from_architecture_variables_and_op_subsets():
    ops = ("nor_conv_3x3", "skip_connect")  # a different column order than NB201_OPS
    net = NB201Supernet(channels=C, cells_per_stage=1, ops=ops)
    arch = Architecture(net.arch_shapes(), seed=0)
    alpha = np.zeros((6, 2))
    alpha[[1, 4], 1] = 1.0
    arch.assign({"cell": alpha})
    genotype = net.derive(arch.numpy())
    assert genotype.ops == (
        "nor_conv_3x3",
        "skip_connect",
        "nor_conv_3x3",
        "nor_conv_3x3",
        "skip_connect",
        "nor_conv_3x3",
    )
    with pytest.raises(NB201GenotypeError, match="shape"):
        net.derive({"cell": np.zeros((6, 5))})
    with pytest.raises(NB201GenotypeError, match="non-finite"):
        net.derive({"cell": np.full((6, 2), np.nan)})
    with pytest.raises(NB201GenotypeError, match="shape"):
        NB201Supernet(channels=C, cells_per_stage=1).derive({"cell": np.zeros((6, 4))})


# ----------------------------------------------------------------------------- second order


def _unrolled_gradient(net, x, t_train, t_val):
    """d/d(α, W) of L_val(W - ξ ∇_W L_train(W, α), α): second order in W and α."""

    def step(weights, alpha):
        with tf.GradientTape() as outer:
            outer.watch([weights, alpha])
            with tf.GradientTape() as inner:
                inner.watch(weights)
                y, _ = net.stateless_call(weights, [], x, {"cell": alpha})
                loss = 0.5 * tf.reduce_sum(tf.square(y - t_train))
            grads = inner.gradient(loss, weights, unconnected_gradients=ZERO)
            stepped = [w - XI * g for w, g in zip(weights, grads, strict=True)]
            y, _ = net.stateless_call(stepped, [], x, {"cell": alpha})
            val = tf.reduce_sum(y * t_val) + 0.25 * tf.reduce_sum(tf.square(y))
        d_weights, d_alpha = outer.gradient(val, [weights, alpha], unconnected_gradients=ZERO)
        return [d_alpha] + d_weights

    return step


def _problem(dtype):
    with float_dtype(dtype):
        net = NB201Supernet(channels=C, cells_per_stage=1)
    x = _normal([3, 8, 8, 3], 10, tf.float64)
    alpha = 0.5 * _normal([6, 5], 11, tf.float64)
    t_train = _normal([3, 4 * C], 12, tf.float64)
    t_val = _normal([3, 4 * C], 13, tf.float64)
    net(tf.cast(x, dtype), {"cell": tf.cast(alpha, dtype)})
    return net, x, alpha, t_train, t_val


@pytest.fixture(scope="module")
def float64_unrolled():
    """The float64 supernet's unrolled gradient, eager and graph (traced once)."""
    net, x, alpha, t_train, t_val = _problem("float64")
    weights = [v.value for v in net.trainable_variables]
    step = _unrolled_gradient(net, x, t_train, t_val)
    return weights, alpha, step(weights, alpha), tf.function(step)(weights, alpha)


@pytest.mark.slow
def test_double_gradient_graph_equals_eager(float64_unrolled):
    _, _, eager, graph = float64_unrolled
    assert len(eager) == len(graph) > 1
    assert all(t.dtype == tf.float64 for t in eager + graph)
    for i, (g, e) in enumerate(zip(graph, eager, strict=True)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-12, err_msg=f"tensor {i}")
    assert float(tf.reduce_max(tf.abs(eager[0]))) > 1e-3  # α gets a real hypergradient


@pytest.mark.slow
def test_double_gradient_float32_graph_matches_float64(float64_unrolled):
    """The float32 path (fused BN) in graph mode agrees with the float64 reference."""
    weights64, alpha, reference, _ = float64_unrolled
    net, x, _, t_train, t_val = _problem("float32")
    c32 = [tf.cast(t, tf.float32) for t in (x, t_train, t_val)]
    step = tf.function(_unrolled_gradient(net, *c32))
    graph = step([tf.cast(w, tf.float32) for w in weights64], tf.cast(alpha, tf.float32))
    for i, (g, r) in enumerate(zip(graph, reference, strict=True)):
        assert g.dtype == tf.float32
        assert _rel_err(g, r) < 2e-4, f"tensor {i}: {_rel_err(g, r):.3g}"  # measured 1.3e-5


def test_supernet_derivation_setting():
    from il_tf.spaces.factories import nb201_supernet

    alpha = np.zeros((6, 5))
    alpha[:, 0] = 5.0
    alpha[:, 2] = 1.0
    assert set(nb201_supernet(channels=4, cells_per_stage=1).derive({"cell": alpha}).ops) == {
        "none"
    }
    net = nb201_supernet(channels=4, cells_per_stage=1, derivation="exclude_none")
    assert set(net.derive({"cell": alpha}).ops) == {"nor_conv_1x1"}
    assert net.get_config()["derivation"] == "exclude_none"
    with pytest.raises(ValueError, match="nb201_supernet.derivation must be one of"):
        nb201_supernet(derivation="greedy")
