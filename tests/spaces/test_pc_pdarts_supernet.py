"""PC-DARTS and P-DARTS settings of the DARTS supernet: partial channels, channel shuffle,
edge normalization (β), per-edge op lists, skip-connect dropout, the skip-connect cap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.architecture import Architecture
from il_tf.spaces.darts_supernet import (
    DartsSupernet,
    MixedOp,
    SearchCell,
    bypass_pool,
    channel_shuffle,
    derive_darts_genotype,
    edge_normalization_weights,
    example_keys,
    hashed_dropout,
    hashed_uniform,
)
from il_tf.spaces.factories import darts_supernet
from il_tf.spaces.genotypes import DARTS_OPS, edge_index
from il_tf.spaces.ops import max_pool

from ._one_step import one_step_hypergradient

C = 4
FEW_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def _normal(shape, seed, dtype=tf.float32):
    return tf.random.stateless_normal(shape, seed=[seed, 9], dtype=dtype)


def _copy_weights(src, dst):
    assert [v.shape for v in src.weights] == [v.shape for v in dst.weights]
    for s, d in zip(src.weights, dst.weights, strict=True):
        d.assign(s.value)


# ----------------------------------------------------------------------------- channel shuffle


@pytest.mark.parametrize("channels, groups", [(8, 4), (12, 4), (6, 2), (5, 1)])
def test_channel_shuffle_is_a_permutation_with_an_inverse(channels, groups):
    x = tf.reshape(tf.range(2 * 3 * 3 * channels, dtype=tf.float32), [2, 3, 3, channels])
    y = channel_shuffle(x, groups)
    assert y.shape == x.shape
    # Each position's channels are permuted, the same permutation everywhere.
    perm = (y[0, 0, 0] - x[0, 0, 0, 0]).numpy().astype(int)
    assert sorted(perm) == list(range(channels))
    np.testing.assert_array_equal(tf.gather(x, perm, axis=-1), y)
    # ShuffleNet / PC-DARTS order: output i*groups + g is input g*(C/groups) + i.
    per = channels // groups
    assert list(perm) == [g * per + i for i in range(per) for g in range(groups)]
    # Shuffling with C/groups groups undoes it.
    np.testing.assert_array_equal(channel_shuffle(y, channels // groups), x)


def test_channel_shuffle_in_a_graph_with_unknown_batch():
    fn = tf.function(
        lambda x: channel_shuffle(x, 2),
        input_signature=[tf.TensorSpec([None, 3, 3, 4], tf.float32)],
    )
    x = _normal([5, 3, 3, 4], 1)
    np.testing.assert_array_equal(fn(x), channel_shuffle(x, 2))


# ----------------------------------------------------------------------------- partial channels


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_with_k1_is_the_plain_mixed_op(float64, stride):
    plain = MixedOp(C, stride, DARTS_OPS)
    partial = MixedOp(C, stride, DARTS_OPS, partial_channels=1)
    x = _normal([2, 7, 7, C], 2, tf.float64)
    w = tf.nn.softmax(_normal([len(DARTS_OPS)], 3, tf.float64))
    plain(x, w), partial(x, w)
    _copy_weights(plain, partial)
    np.testing.assert_array_equal(partial(x, w), plain(x, w))


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_mixed_op_is_mixed_op_on_a_channel_slice_then_shuffle(float64, stride):
    k, c = 2, 8
    partial = MixedOp(c, stride, DARTS_OPS, partial_channels=k)
    plain = MixedOp(c // k, stride, DARTS_OPS)  # the same ops on c/k channels
    x = _normal([2, 7, 7, c], 4, tf.float64)
    w = tf.nn.softmax(_normal([len(DARTS_OPS)], 5, tf.float64))
    y = partial(x, w)
    plain(x[..., : c // k], w)
    _copy_weights(partial, plain)
    size = math.ceil(7 / stride)
    bypass = x[..., c // k :]
    if stride == 2:
        # 2×2 stride-2 max-pooling, the odd last row/column pooled alone.
        padded = tf.pad(bypass, [[0, 0], [0, 1], [0, 1], [0, 0]], constant_values=-np.inf)
        bypass = tf.nn.max_pool2d(padded, 2, 2, "VALID")
    expected = channel_shuffle(tf.concat([plain(x[..., : c // k], w), bypass], -1), k)
    assert tuple(y.shape) == (2, size, size, c)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_bypass_pool_matches_max_pool_on_even_sizes():
    x = _normal([2, 8, 8, 3], 6)
    np.testing.assert_array_equal(bypass_pool(x), tf.nn.max_pool2d(x, 2, 2, "VALID"))
    np.testing.assert_array_equal(bypass_pool(x), max_pool(x, 2, 2))
    assert tuple(bypass_pool(_normal([1, 9, 7, 2], 7)).shape) == (1, 5, 4, 2)


def test_supernet_with_k1_and_no_beta_equals_the_plain_supernet():
    kw = dict(channels=C, num_cells=3, steps=2, multiplier=2, ops=FEW_OPS)
    plain = DartsSupernet(**kw)
    same = darts_supernet(**kw, partial_channels=1, edge_normalization=False)
    assert same.arch_shapes() == plain.arch_shapes() == {"normal": (5, 4), "reduce": (5, 4)}
    arch = {k: _normal(s, 8) for k, s in plain.arch_shapes().items()}
    x = _normal([2, 9, 9, 3], 9)
    plain(x, arch), same(x, arch)
    _copy_weights(plain, same)
    np.testing.assert_array_equal(same(x, arch), plain(x, arch))


@pytest.mark.slow
def test_pc_supernet_shapes_and_parameter_savings():
    plain = darts_supernet(channels=8, num_cells=3)
    pc = darts_supernet(channels=8, num_cells=3, partial_channels=4)
    assert pc.edge_normalization and not plain.edge_normalization
    assert pc.arch_shapes() == {
        "normal": (14, 8),
        "reduce": (14, 8),
        "beta_normal": (14,),
        "beta_reduce": (14,),
    }
    arch = Architecture(pc.arch_shapes(), seed=0)
    x = _normal([2, 9, 9, 3], 10)
    y = pc(x, arch.tensors())
    plain(x, {k: v for k, v in arch.tensors().items() if not k.startswith("beta")})
    assert tuple(y.shape) == (2, pc.feature_dim) and pc.feature_dim == plain.feature_dim
    assert np.all(np.isfinite(y.numpy()))
    count = lambda net: sum(int(np.prod(v.shape)) for v in net.trainable_variables)  # noqa: E731
    assert count(pc) < count(plain) / 2
    assert not pc.non_trainable_variables  # stateless_call(weights, [], ...) needs this


def test_edge_normalization_weights_the_edges_of_each_node(float64):
    beta = _normal([14], 11, tf.float64)
    w = edge_normalization_weights(beta, 4).numpy()
    lo = 0
    for node in range(4):
        seg = w[lo : lo + node + 2]
        np.testing.assert_allclose(seg, tf.nn.softmax(beta[lo : lo + node + 2]), rtol=1e-12)
        assert seg.sum() == pytest.approx(1.0)
        lo += node + 2
    # In a cell of identity edges with β = 0, each node is the mean of its inputs:
    # node0 = (s0 + s1) / 2 and node1 = (s0 + s1 + node0) / 3 = (s0 + s1) / 2, where
    # without β node0 = s0 + s1 and node1 = 2 (s0 + s1).
    cell = SearchCell(C, False, False, ("skip_connect",), steps=2, multiplier=2)
    s0, s1 = _normal([2, 5, 5, 3 * C], 13, tf.float64), _normal([2, 5, 5, 3 * C], 14, tf.float64)
    ones = tf.ones([5, 1], tf.float64)
    plain = cell(s0, s1, ones)
    normed = cell(s0, s1, ones, edge_normalization_weights(tf.zeros(5, tf.float64), 2))
    np.testing.assert_allclose(normed[..., :C], plain[..., :C] / 2, rtol=1e-12)
    np.testing.assert_allclose(normed[..., C:], plain[..., C:] / 4, rtol=1e-12)


# ----------------------------------------------------------------------------- derivation with β


def _alpha_preferring(ops, op, strengths):
    """α (14 × n) whose edge e has ``op`` at logit strengths[e], every other op at 0."""
    alpha = np.zeros((14, len(ops)))
    alpha[:, ops.index(op)] = strengths
    return alpha


def test_beta_flips_an_edge_choice():
    net = DartsSupernet(channels=C, num_cells=1, ops=FEW_OPS, partial_channels=2)
    strengths = np.full(14, 2.0)
    # Node 3 (edges 9..13 from inputs 0..4): inputs 0 and 1 slightly stronger by α.
    for j in range(5):
        strengths[edge_index(3, j)] = 2.0 + (0.5 if j < 2 else 0.0)
    alpha = _alpha_preferring(FEW_OPS, "sep_conv_3x3", strengths)
    beta = np.zeros(14)
    arch = {"normal": alpha, "reduce": alpha, "beta_normal": beta, "beta_reduce": beta}
    before = net.derive(arch)
    assert sorted(j for _, j in before.normal[6:8]) == [0, 1]
    # β favouring inputs 3 and 4 of node 3 outweighs α's preference.
    beta_flip = beta.copy()
    beta_flip[edge_index(3, 3)] = beta_flip[edge_index(3, 4)] = 1.0
    after = net.derive({**arch, "beta_normal": beta_flip})
    assert sorted(j for _, j in after.normal[6:8]) == [3, 4]
    assert after.reduce == before.reduce  # beta_reduce unchanged
    assert after == genotypes_lib.derive_genotype(
        alpha, alpha, ops=FEW_OPS, beta_normal=beta_flip, beta_reduce=beta
    )


def test_derive_with_per_edge_ops_per_cell_and_skip_cap():
    rng = np.random.default_rng(0)
    normal_ops = tuple(
        tuple(rng.permutation(["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"])[:3])
        for _ in range(14)
    )
    reduce_ops = tuple(("skip_connect", "avg_pool_3x3", "dil_conv_3x3") for _ in range(14))
    net = DartsSupernet(
        channels=C, num_cells=3, ops=normal_ops, reduce_ops=reduce_ops, max_skip_normal=1
    )
    assert net.arch_shapes() == {"normal": (14, 3), "reduce": (14, 3)}
    assert [c.edge_ops for c in net.cells] == [normal_ops, reduce_ops, reduce_ops]
    assert net.op_names == ("op_0", "op_1", "op_2")
    # Skip-connect strongest wherever it is present: the cap must cut it to one.
    alpha_n = np.array([[3.0 if op == "skip_connect" else 0.0 for op in o] for o in normal_ops])
    alpha_r = rng.normal(size=(14, 3))
    genotype = net.derive({"normal": alpha_n, "reduce": alpha_r})
    assert sum(op == "skip_connect" for op, _ in genotype.normal) <= 1
    for k, (op, j) in enumerate(genotype.normal):
        assert op in normal_ops[edge_index(k // 2, j)] and op != "none"
    for k, (op, j) in enumerate(genotype.reduce):
        assert op in reduce_ops[edge_index(k // 2, j)]
    # The reduction cell is the reduce_ops derivation, untouched by the cap.
    expected_reduce = genotypes_lib.derive_genotype(alpha_r, alpha_r, ops=reduce_ops).reduce
    assert genotype.reduce == expected_reduce
    uncapped = derive_darts_genotype(
        {"normal": alpha_n, "reduce": alpha_r}, normal_ops, reduce_ops, max_skip_normal=None
    )
    assert sum(op == "skip_connect" for op, _ in uncapped.normal) > 1
    # A malformed reduction α is reported as the reduction cell's, with its own op lists.
    with pytest.raises(genotypes_lib.GenotypeError, match=r"alpha_reduce has 13 rows"):
        derive_darts_genotype({"normal": alpha_n, "reduce": alpha_r[:13]}, normal_ops, reduce_ops)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"partial_channels": 3}, "divisible by partial_channels"),
        ({"partial_channels": 0}, "partial_channels must be an integer >= 1"),
        ({"skip_dropout": 1.0}, r"skip_dropout must be in \[0, 1\)"),
        ({"ops": [("none", "skip_connect")] * 13}, "13 per-edge op lists"),
        ({"ops": [("none",)] * 14}, r"ops\[0\] \['none'\] need at least one operation"),
        ({"ops": [("skip_connect",)] * 13 + [("skip_connect", "none")]}, "same number of ops"),
        ({"reduce_ops": ["conv_7x7"]}, "unknown DARTS ops"),
        ({"max_skip_normal": -1}, "max_skip_normal"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DartsSupernet(channels=C, num_cells=1, **kwargs)


# ----------------------------------------------------------------------------- skip dropout


def test_example_keys_are_per_example_and_batch_independent():
    x = _normal([6, 5, 5, 3], 14)
    keys = example_keys(x).numpy()
    assert len(set(keys.tolist())) == 6
    np.testing.assert_array_equal(example_keys(x[2:5]).numpy(), keys[2:5])
    np.testing.assert_array_equal(example_keys(tf.reverse(x, [0])).numpy(), keys[::-1])
    assert not np.array_equal(example_keys(x, seed=1).numpy(), keys)
    # bfloat16 images give keys too (cast exactly to float32 first).
    assert example_keys(tf.cast(x, tf.bfloat16)).shape == (6,)


def test_hashed_dropout_statistics_and_determinism():
    keys = example_keys(_normal([8, 4, 4, 3], 15))
    like = tf.ones([8, 16, 16, 8])
    u = hashed_uniform(keys, 7, like).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - math.sqrt(1 / 12)) < 0.01
    # Other salts and other examples give (nearly) uncorrelated numbers.
    v = hashed_uniform(keys, 8, like).numpy()
    assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.02
    assert abs(np.corrcoef(u[0].ravel(), u[1].ravel())[0, 1]) < 0.05
    y = hashed_dropout(like, keys, 7, 0.3).numpy()
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((y == 0).mean() - 0.3) < 0.01
    np.testing.assert_array_equal(y, hashed_dropout(like, keys, 7, 0.3))


def test_skip_dropout_in_the_supernet_is_deterministic_and_only_on_identity_skips():
    kw = dict(channels=C, num_cells=3, steps=2, multiplier=2, ops=("skip_connect", "avg_pool_3x3"))
    net = DartsSupernet(**kw)
    dropped = DartsSupernet(**kw, skip_dropout=0.5)
    arch = {k: _normal(s, 16) for k, s in net.arch_shapes().items()}
    x = _normal([4, 8, 8, 3], 17)
    net(x, arch), dropped(x, arch)
    _copy_weights(net, dropped)
    y = dropped(x, arch).numpy()
    assert not np.allclose(y, net(x, arch))
    np.testing.assert_array_equal(y, dropped(x, arch))  # same images, same masks
    # Graph mode draws the same masks (float rounding aside).
    np.testing.assert_allclose(y, tf.function(dropped)(x, arch), rtol=1e-4, atol=1e-5)
    # Stride-2 skips (FactorizedReduce) are not dropped, as in P-DARTS.
    reduction = dropped.cells[dropped.reduction_indices[0]]
    # 2-node cell: edges 0-3 read the cell inputs (stride 2), edge 4 reads node 0.
    assert [e.dropout_index for e in reduction.edges] == [None, None, None, None, 0]
    assert {e.dropout_index for e in dropped.cells[0].edges} == {0}


# ----------------------------------------------------------------------------- second order


@pytest.mark.slow
def test_pc_supernet_double_gradient_graph_equals_eager(float64):
    """Hypergradient through one SGD step w.r.t. α, β and weights, graph vs eager.

    Partial channels (bypass max-pool on reduction edges, channel shuffle), edge
    normalization and skip dropout, in float64.
    """
    net = DartsSupernet(
        channels=C,
        num_cells=2,
        steps=2,
        multiplier=2,
        stem_multiplier=1,
        ops=FEW_OPS,
        partial_channels=2,
        skip_dropout=0.3,
    )
    x = _normal([3, 7, 7, 3], 20, tf.float64)
    arch = {k: 0.5 * _normal(s, 21, tf.float64) for k, s in net.arch_shapes().items()}
    assert set(arch) == {"normal", "reduce", "beta_normal", "beta_reduce"}
    y = net(x, arch)
    t_train = _normal(y.shape, 22, tf.float64)
    t_val = _normal(y.shape, 23, tf.float64)
    weights = [v.value for v in net.trainable_variables]

    step = one_step_hypergradient(net, x, t_train, t_val)

    eager_arch, eager_w = step(weights, arch)
    graph_arch, graph_w = tf.function(step)(weights, arch)
    for name in arch:
        np.testing.assert_allclose(graph_arch[name], eager_arch[name], rtol=1e-5, atol=1e-12)
        assert float(tf.reduce_max(tf.abs(eager_arch[name]))) > 1e-4, name  # β too
    for i, (g, e) in enumerate(zip(graph_w, eager_w, strict=True)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-12, err_msg=f"weight {i}")
