"""Evaluation networks built from genotypes: sizes, costs, drop-path, any input size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from il_tf.models.flops import count_macs, count_parameters, network_complexity
from il_tf.models.networks import (
    DropPath,
    MaxPool3x3,
    NetworkConfig,
    build_network,
    reduction_cells,
)
from il_tf.spaces import ops
from il_tf.spaces.genotypes import (
    PUBLISHED,
    Genotype,
    get_published,
    load_genotype,
    save_genotype,
)
from il_tf.training import lr_schedule as schedules
from il_tf.training.trainer import weights_checkpoint


def reference_macs(genotype, channels, layers, classes, size, imagenet):
    """Multiply-adds of the reference DARTS network, by hand (convolutions and classifier)."""
    total = 0
    if imagenet:
        s = math.ceil(size / 2)
        total += s * s * 9 * 3 * (channels // 2)
        s = math.ceil(s / 2)
        total += s * s * 9 * (channels // 2) * channels
        res_pp, res_p = s, math.ceil(s / 2)
        total += res_p * res_p * 9 * channels * channels
        c_pp = c_p = channels
        reduction_prev = True
    else:
        total += size * size * 9 * 3 * 3 * channels
        res_pp = res_p = size
        c_pp = c_p = 3 * channels
        reduction_prev = False
    c = channels
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        if reduction_prev:  # FactorizedReduce: two 1x1 convs to c/2 at res_p
            total += 2 * res_p * res_p * c_pp * (c // 2)
        else:
            total += res_pp * res_pp * c_pp * c
        total += res_p * res_p * c_p * c
        out = math.ceil(res_p / 2) if reduction else res_p
        for name, index in genotype.reduce if reduction else genotype.normal:
            stride = 2 if reduction and index < 2 else 1
            area = out * out
            if name.startswith("sep_conv"):
                k = int(name[-1])
                total += 2 * (area * k * k * c + area * c * c)
            elif name.startswith("dil_conv"):
                k = int(name[-1])
                total += area * k * k * c + area * c * c
            elif name == "skip_connect" and stride == 2:
                total += 2 * area * c * (c // 2)
        res_pp, res_p = res_p, out
        c_pp, c_p = c_p, c * len(genotype.normal_concat)
        reduction_prev = reduction
    return total + c_p * classes


def test_darts_v2_cifar_has_the_reference_parameter_count():
    model = build_network(get_published("DARTS_V2"), 10, (32, 32, 3), NetworkConfig())
    # The reference code prints 3.349342 M (BN affine included, auxiliary head excluded).
    assert count_parameters(model) == 3_349_342
    assert round(count_parameters(model) / 1e6, 1) == 3.3  # the DARTS paper's 3.3 M
    assert count_parameters(model, include_auxiliary=True) > 3_349_342


@pytest.mark.slow
def test_darts_v2_imagenet_parameters_and_multiply_adds():
    genotype = get_published("DARTS_V2")
    config = NetworkConfig(kind="imagenet", channels=48, layers=14)
    size = network_complexity(genotype, 1000, (224, 224, 3), config)
    assert size.params == 4_718_752  # reference code: 4.718752 M; paper: 4.7 M
    assert size.params_m == 4.719
    # Convolutions + classifier. The paper's 574 M is not reproducible from them (the
    # reference repository never published its counter); see il_tf/models/flops.py.
    assert size.macs == reference_macs(genotype, 48, 14, 1000, 224, imagenet=True)
    assert size.macs == 529_911_552


@pytest.mark.parametrize(
    "name",
    [n if n == "DARTS_V2" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(PUBLISHED)],
)
def test_graph_count_matches_hand_count(name):
    # Small odd input sizes exercise the dilated convs' space-to-batch and odd reductions.
    genotype = get_published(name)
    for kind, size in (("imagenet", 45), ("cifar", 15)):
        config = NetworkConfig(kind=kind, channels=8, layers=4)
        model = build_network(genotype, 7, (size, size, 3), config)
        expected = reference_macs(genotype, 8, 4, 7, size, imagenet=kind == "imagenet")
        assert count_macs(model, (size, size, 3)) == expected, (name, kind)


def test_network_from_a_saved_genotype_file(tmp_path):
    path = save_genotype(tmp_path / "genotype.json", get_published("PC_DARTS"), {"epoch": 50})
    genotype = load_genotype(str(path))
    model = build_network(genotype, 10, (16, 16, 3), NetworkConfig(channels=8, layers=3))
    reference = build_network(
        get_published("PC_DARTS"), 10, (16, 16, 3), NetworkConfig(channels=8, layers=3)
    )
    assert count_parameters(model) == count_parameters(reference)
    assert model(tf.zeros((2, 16, 16, 3))).shape == (2, 10)


@pytest.mark.parametrize(
    "kind, shape", [("cifar", (15, 11, 1)), ("cifar", (8, 8, 3)), ("imagenet", (37, 29, 3))]
)
def test_any_input_size_and_channels(kind, shape):
    model = build_network(
        get_published("P_DARTS"), 5, shape, NetworkConfig(kind=kind, channels=6, layers=3)
    )
    logits, aux = model(tf.random.normal((2, *shape)), training=True, with_aux=True)
    assert logits.shape == (2, 5) and aux.shape == (2, 5)


def test_drop_path_is_identity_at_inference():
    model = build_network(
        get_published("DARTS_V2"), 4, (8, 8, 3), NetworkConfig(channels=4, layers=3)
    )
    images = tf.random.normal((3, 8, 8, 3), seed=1)
    before = model(images, training=False)
    model.drop_path_rate.assign(0.9)
    after = model(images, training=False, seed=tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(before.numpy(), after.numpy())
    # In training, the same rate changes the output; seeded masks are reproducible.
    seed = tf.constant([3, 4], tf.int64)
    a = model(images, training=True, seed=seed)
    b = model(images, training=True, seed=seed)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_drop_path_statistics():
    rate = tf.Variable(0.25)
    layer = DropPath(rate, salt=0)
    x = tf.ones((20000, 1, 1, 2))
    y = layer(x, training=True, seed=tf.constant([0, 1], tf.int64)).numpy()
    kept = y[:, 0, 0, 0] > 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    rate.assign(0.0)
    np.testing.assert_array_equal(layer(x, training=True).numpy(), x.numpy())


def test_drop_path_ramp_follows_the_schedule():
    rates = [schedules.drop_path_rate(e, 600, 0.2) for e in range(600)]
    assert rates[0] == 0.0
    assert rates[300] == pytest.approx(0.1)
    assert rates[-1] == pytest.approx(0.2 * 599 / 600)
    assert np.allclose(np.diff(rates), 0.2 / 600)


def test_learning_rate_schedules():
    assert schedules.learning_rate(0, 600, 0.025) == pytest.approx(0.025)
    assert schedules.learning_rate(300, 600, 0.025) == pytest.approx(0.0125)
    assert schedules.learning_rate(2, 250, 0.1, "exponential", decay=0.97) == pytest.approx(
        0.1 * 0.97**2
    )
    with pytest.raises(ValueError, match="'linear'"):
        schedules.learning_rate(0, 1, 0.1, "linear")


def test_identity_ops_get_no_drop_path():
    model = build_network(
        get_published("DARTS_V2"), 4, (8, 8, 3), NetworkConfig(channels=4, layers=3)
    )
    normal = model.cells[0]
    for (name, _), drop in zip(get_published("DARTS_V2").normal, normal.drop_paths, strict=True):
        assert (drop is None) == (name == "skip_connect")
    # In a reduction cell a skip_connect from a cell input is a FactorizedReduce: dropped.
    genotype = Genotype(
        normal=[("skip_connect", 0), ("sep_conv_3x3", 1)] * 2,
        normal_concat=[2, 3],
        reduce=[("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        reduce_concat=[2, 3],
    )
    model = build_network(genotype, 4, (8, 8, 3), NetworkConfig(channels=4, layers=3))
    reduce_cell = model.cells[1]
    assert reduce_cell.reduction
    assert [d is None for d in reduce_cell.drop_paths] == [False, False, True, False]


@pytest.mark.parametrize("size, stride", [(7, 1), (7, 2), (8, 2), (5, 2)])
def test_final_max_pool_matches_the_search_max_pool(size, stride):
    x = tf.random.normal((2, size, size, 3), seed=2)
    np.testing.assert_array_equal(MaxPool3x3(stride)(x).numpy(), ops.max_pool(x, 3, stride).numpy())


def test_every_weight_is_checkpointed(tmp_path):
    config = NetworkConfig(channels=4, layers=3)
    genotype = get_published("DARTS_V2")
    model = build_network(genotype, 4, (8, 8, 3), config)
    path = weights_checkpoint(model).save(str(tmp_path / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("weights/")]
    assert len(saved) == len(model.weights)
    other = build_network(genotype, 4, (8, 8, 3), config)
    weights_checkpoint(other).restore(path).assert_existing_objects_matched()
    for a, b in zip(model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_reduction_cells_and_bad_configs():
    assert reduction_cells(20) == (6, 13)
    assert reduction_cells(14) == (4, 9)
    with pytest.raises(ValueError, match="kind"):
        NetworkConfig(kind="resnet")
    with pytest.raises(ValueError, match="even"):
        NetworkConfig(channels=7)
    with pytest.raises(ValueError, match="layers"):
        NetworkConfig(layers=0)
