"""Tests for il_tf.spaces.batched_ops: a cell's edges computed as wide ops.

The wide supernet must compute what the per-edge one computes — features, first-
and second-order gradients — with the same variables in the same order, and with
a smaller graph.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from il_tf.spaces.architecture import AUX_SKIP
from il_tf.spaces.batched_ops import wide_conv, wide_op
from il_tf.spaces.darts_supernet import DartsSupernet, MixedOp, SearchCell, wide_mixed_ops
from il_tf.spaces.genotypes import DARTS_OPS, edge_index, num_edges
from il_tf.spaces.ops import Conv, block_diagonal, convolve, make_op

PER_EDGE_OPS = [
    ("skip_connect", "sep_conv_3x3") if e % 2 else ("max_pool_3x3", "dil_conv_3x3")
    for e in range(num_edges(4))
]


def _normal(shape, seed):
    return tf.random.stateless_normal(shape, seed=[seed, 7], dtype=tf.float64)


def _pair(**kwargs):
    """A wide and a per-edge supernet with the same weights."""
    wide = DartsSupernet(channels=4, num_cells=2, wide_edges=True, **kwargs)
    per_edge = DartsSupernet(channels=4, num_cells=2, wide_edges=False, **kwargs)
    images = _normal([3, 9, 9, 3], 1)
    arch = {k: _normal(s, 2 + i) for i, (k, s) in enumerate(wide.arch_shapes().items())}
    wide(images, arch)
    per_edge(images, arch)
    # The same variables in the same order (a checkpoint of one loads into the other).
    assert [tuple(v.shape) for v in wide.trainable_variables] == [
        tuple(v.shape) for v in per_edge.trainable_variables
    ]
    pairs = zip(wide.trainable_variables, per_edge.trainable_variables, strict=True)
    for i, (a, b) in enumerate(pairs):
        a.assign(_normal(a.shape, 100 + i) * 0.3)
        b.assign(a)
    return wide, per_edge, images, arch


def _derivatives(net, images, arch, direction):
    """Features, ∇ of a loss w.r.t. (weights, α), and the α-part of ∇²·direction."""
    weights = net.trainable_variables
    names = sorted(arch)
    with tf.GradientTape() as outer:
        outer.watch([arch[k] for k in names])
        with tf.GradientTape() as inner:
            inner.watch([arch[k] for k in names])
            features = net(images, arch)
            loss = tf.reduce_sum(tf.sin(features))
        grads = inner.gradient(loss, weights + [arch[k] for k in names])
        along = tf.add_n(
            [tf.reduce_sum(g * d) for g, d in zip(grads, direction, strict=True) if g is not None]
        )
    hvp = outer.gradient(along, [arch[k] for k in names])
    return features, grads, hvp


@pytest.mark.parametrize(
    "settings",
    [
        {},
        pytest.param({"partial_channels": 2}, marks=pytest.mark.slow),
        pytest.param({"skip_dropout": 0.3}, marks=pytest.mark.slow),
        pytest.param({"aux_skip": 0.4}, marks=pytest.mark.slow),
        {"ops": PER_EDGE_OPS},
    ],
    ids=["darts", "pc_darts", "skip_dropout", "aux_skip", "per_edge_ops"],
)
def test_wide_edges_compute_what_single_edges_compute(float64, settings):
    settings = dict(settings)
    aux = settings.pop("aux_skip", None)
    wide, per_edge, images, arch = _pair(**settings)
    if aux is not None:
        arch[AUX_SKIP] = tf.constant(aux, tf.float64)
    variables = wide.trainable_variables + [arch[k] for k in sorted(arch)]
    direction = [_normal(v.shape, 300 + i) for i, v in enumerate(variables)]
    f_wide, g_wide, h_wide = _derivatives(wide, images, arch, direction)
    f_edge, g_edge, h_edge = _derivatives(per_edge, images, arch, direction)
    np.testing.assert_allclose(f_wide, f_edge, rtol=1e-10, atol=1e-12)
    assert [g is None for g in g_wide] == [g is None for g in g_edge]
    for a, b in zip(g_wide, g_edge, strict=True):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    for a, b in zip(h_wide, h_edge, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def _gradient_graph_ops(net, images, arch) -> int:
    @tf.function(autograph=False)
    def gradient(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(images, arch))
        return tape.gradient(loss, net.trainable_variables)

    graph = gradient.get_concrete_function(images).graph
    return len(graph.get_operations())


@pytest.mark.slow
def test_wide_edges_make_a_smaller_graph():
    wide, per_edge, images, arch = _pair()
    images, arch = tf.cast(images, tf.float32), {k: tf.cast(v, tf.float32) for k, v in arch.items()}
    n_wide = _gradient_graph_ops(wide, images, arch)
    n_edge = _gradient_graph_ops(per_edge, images, arch)
    assert n_wide < 0.8 * n_edge, (n_wide, n_edge)


def test_block_diagonal():
    blocks = tf.reshape(tf.range(12.0), [2, 6])  # three 2×2 blocks side by side
    got = block_diagonal(blocks, 3).numpy()
    expected = np.zeros([6, 6])
    for g in range(3):
        expected[2 * g : 2 * g + 2, 2 * g : 2 * g + 2] = blocks.numpy()[:, 2 * g : 2 * g + 2]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("c_in", [2, 48], ids=["block_diagonal", "per_group"])
def test_grouped_pointwise_convolution_is_one_matmul_per_group(float64, c_in):
    x = _normal([2, 5, 5, 3 * c_in], 1)
    kernel = _normal([1, 1, c_in, 9], 2)  # three groups of c_in → 3 channels
    y = convolve(x, kernel, 1)
    for g in range(3):
        part = x[..., c_in * g : c_in * (g + 1)]
        expected = tf.einsum("bhwc,cd->bhwd", part, kernel[0, 0, :, 3 * g : 3 * g + 3])
        np.testing.assert_allclose(y[..., 3 * g : 3 * g + 3], expected, rtol=1e-12)


@pytest.mark.parametrize(
    "kernel_shape, stride", [([3, 3, 2, 4], 1), ([1, 1, 2, 4], 2), ([1, 1, 4, 4], 1)]
)
def test_convolve_names_a_kernel_that_cannot_read_the_input(kernel_shape, stride):
    x = tf.zeros([1, 6, 6, 6])
    with pytest.raises(ValueError, match="cannot read 6 channels"):
        convolve(x, tf.zeros(kernel_shape), kernel_shape[0], stride)


def test_wide_ops_refuse_edges_that_differ():
    x = tf.zeros([1, 6, 6, 4])
    with pytest.raises(ValueError, match="differ in configuration"):
        wide_conv([Conv(4, 1), Conv(4, 3)], x, wide=False)
    with pytest.raises(ValueError, match="not the same op"):
        wide_op([make_op("sep_conv_3x3", 4, 1, True), make_op("skip_connect", 4, 2, True)], x)
    with pytest.raises(ValueError, match="no wide form"):
        wide_op([make_op("max_pool_3x3", 4, 1, True)] * 2, x)
    edges = [MixedOp(4, 1, ("skip_connect", "sep_conv_3x3")), MixedOp(4, 2, ("skip_connect",))]
    with pytest.raises(ValueError, match="differ in their ops or stride"):
        wide_mixed_ops(edges, x, tf.ones([2, 2]))


def test_every_darts_op_with_weights_has_a_wide_form(float64):
    x = _normal([2, 7, 7, 4], 5)
    for stride in (1, 2):
        for name in DARTS_OPS:
            layers = [make_op(name, 4, stride, search=True) for _ in range(3)]
            if not any(True for _ in _weights_of(layers[0], x)):
                continue
            singles = [layer(x) for layer in layers]
            np.testing.assert_allclose(
                wide_op(layers, x), tf.concat(singles, axis=-1), rtol=1e-10, err_msg=name
            )


def _weights_of(layer, x):
    layer(x)  # builds it
    return layer.trainable_variables


def test_a_cell_numbers_its_edges_as_genotypes_do():
    cell = SearchCell(4, False, False, ("skip_connect",))
    for node in range(4):
        for source in range(2 + node):
            assert cell._edge_index(node, source) == edge_index(node, source)
