"""Choice points in a Keras builder: the supernet, its genotype, the found network, errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from il_tf.models.choice_network import ChoiceNetwork
from il_tf.models.flops import count_parameters
from il_tf.models.networks import build_network
from il_tf.spaces.choice_genotype import ChoiceGenotype
from il_tf.spaces.choice_space import ChoiceSupernet, build_backbone, choice_supernet
from il_tf.spaces.choices import Choice, ChoiceError, InputChoice
from il_tf.spaces.genotypes import (
    GenotypeError,
    genotype_from_json_dict,
    load_genotype,
    save_genotype,
)

from .._dtypes import float_dtype
from . import _choice_builders as cb

BUILDER = "tests.spaces._choice_builders:tiny_builder"


@pytest.fixture(scope="module")
def supernet():
    with float_dtype("float64"):
        net = ChoiceSupernet(cb.tiny_builder, input_shape=cb.IMAGE)
    return net


def one_hot(net, genotype: ChoiceGenotype) -> dict[str, tf.Tensor]:
    """Logits whose softmax is exactly one-hot on the genotype's candidates (any other
    choice keeps its first candidate)."""
    arch = {}
    for name, point in net.points.items():
        kept = genotype.choices.get(name, point.candidates[0])
        row = np.full((1, len(point.candidates)), -1e4)
        row[0, point.candidates.index(kept)] = 0.0
        arch[name.replace("/", ".")] = tf.constant(row)
    return arch


# ------------------------------------------------------------------- supernet, derive


def test_choices_found_in_order_with_their_nesting(supernet):
    assert list(supernet.arch_shapes()) == [
        "block1.op",
        "block2.keep",
        "block2.kernel",
        "head.input",
    ]
    assert all(shape == (1, 2) for shape in supernet.arch_shapes().values())
    assert supernet.points["block2/kernel"].parents == [("block2/keep", "keep")]
    assert supernet.op_names["block2.kernel"] == ("k1", "k3")
    assert supernet.feature_dim == 6


def test_derive_keeps_the_strongest_active_choices(supernet):
    arch = {
        "block1.op": [[0.0, 1.0]],
        "block2.keep": [[2.0, 1.0]],
        "block2.kernel": [[0.0, 3.0]],
        "head.input": [[1.0, 1.0]],  # a tie: the first listed
    }
    genotype = supernet.derive(arch)
    assert genotype.choices == {
        "block1/op": "pool",
        "block2/keep": "keep",
        "block2/kernel": "k3",
        "head/input": "block1",
    }
    assert genotype.builder == BUILDER and genotype.arguments == {}
    # A skipped block's kernel is no part of the network.
    arch["block2.keep"] = [[0.0, 1.0]]
    assert "block2/kernel" not in supernet.derive(arch).choices


def test_genotype_json_round_trip(tmp_path, supernet):
    genotype = supernet.derive({k: np.zeros(s) for k, s in supernet.arch_shapes().items()})
    path = save_genotype(tmp_path / "g.json", genotype, {"epoch": 1})
    assert load_genotype(path) == genotype
    record = json.loads(path.read_text())["genotype"]
    assert record["space"] == "choices" and record["builder"] == BUILDER
    with pytest.raises(GenotypeError, match="genotype field 'choices' is missing"):
        genotype_from_json_dict({"space": "choices", "builder": BUILDER})


def test_forward_equals_the_hand_written_mixture():
    with float_dtype("float64"):
        model = cb.choice_model()
        hand = cb.build_model(cb.HandMixture())
    cb.copy_weights(model, hand)
    images = tf.constant(np.random.default_rng(3).normal(size=(4, *cb.IMAGE)))
    np.testing.assert_allclose(
        model.encoder(images, model.arch.tensors()),
        hand.encoder(images, hand.arch.tensors()),
        rtol=1e-12,
        atol=1e-12,
    )


def test_segments_follow_the_top_level_blocks(supernet):
    # block1; block2 (its kernel nested inside) up to the head's input choice, which reads
    # block1's output too (block2's own output is no cut); the head.
    owners = [
        sorted({cb.layer_weight_name(v).split("/")[0] for v in s.variables})
        for s in supernet.segments()
    ]
    assert owners == [
        ["block1_conv", "stem", "stem_bn"],
        ["block2_bn", "block2_k1", "block2_k3"],
        ["head_conv"],
    ]


def test_a_long_skip_joins_segments():
    def builder(images):
        x = layers.Conv2D(2, 1, name="a")(images)
        y = Choice("one", {"c": layers.Conv2D(2, 1, name="b"), "i": lambda t: t})(x)
        z = Choice("two", {"c": layers.Conv2D(2, 1, name="c"), "i": lambda t: t})(y)
        return layers.GlobalAveragePooling2D()(layers.Add()([x, z]))  # x skips both

    net = ChoiceSupernet(builder, input_shape=(4, 4, 1))
    assert [len(s.variables) for s in net.segments()] == [6, 0]


# --------------------------------------------------------------------- fixed network


def test_fixed_network_holds_exactly_the_kept_candidates(supernet):
    genotype = ChoiceGenotype(
        BUILDER,
        {},
        {"block1/op": "conv", "block2/keep": "keep", "block2/kernel": "k3", "head/input": "block2"},
    )
    backbone = supernet.fixed_backbone(genotype, cb.IMAGE)
    names = sorted(cb.layer_weight_name(v) for v in backbone.trainable_variables)
    unused = ("block2_k1", "block1_pool")
    expected = sorted(
        cb.layer_weight_name(v)
        for v in supernet.trainable_variables
        if not cb.layer_weight_name(v).startswith(unused)
    )
    assert names == expected
    sizes = {cb.layer_weight_name(v): int(np.prod(v.shape)) for v in supernet.trainable_variables}
    assert count_parameters(backbone) == sum(sizes[n] for n in expected)
    # The found network's BatchNormalization keeps moving statistics (not weights).
    assert {v.name for v in backbone.non_trainable_variables} == {"moving_mean", "moving_variance"}


@pytest.mark.parametrize(
    "choices",
    [
        {"block1/op": "conv", "block2/keep": "keep", "block2/kernel": "k3", "head/input": "block2"},
        {"block1/op": "pool", "block2/keep": "skip", "head/input": "block1"},
        {"block1/op": "pool", "block2/keep": "keep", "block2/kernel": "k1", "head/input": "block2"},
    ],
)
def test_fixed_network_equals_the_supernet_with_one_hot_logits(supernet, choices):
    genotype = ChoiceGenotype(BUILDER, {}, choices)
    with float_dtype("float64"):
        backbone = supernet.fixed_backbone(genotype, cb.IMAGE)
    by_name = {cb.layer_weight_name(v): v for v in supernet.trainable_variables}
    rng = np.random.default_rng(0)
    for v in supernet.trainable_variables:  # away from the initial values (β = 0, γ = 1)
        v.assign(v + 0.1 * rng.normal(size=v.shape))
    for v in backbone.trainable_variables:
        v.assign(by_name[cb.layer_weight_name(v)])
    images = tf.constant(rng.normal(size=(5, *cb.IMAGE)))
    # In training mode the found network's BatchNormalization uses batch statistics too;
    # Keras takes their variance as E[x²] − E[x]², which rounds more than the search's.
    np.testing.assert_allclose(
        backbone(images, training=True),
        supernet(images, one_hot(supernet, genotype)),
        rtol=1e-8,
        atol=1e-8,
    )


def test_network_from_the_genotype_file_trains_and_exports_unchanged(tmp_path, supernet):
    genotype = supernet.derive({k: np.zeros(s) for k, s in supernet.arch_shapes().items()})
    path = save_genotype(tmp_path / "g.json", genotype)
    network = build_network(load_genotype(path), 3, cb.IMAGE)
    assert isinstance(network, ChoiceNetwork)
    logits, aux = network(tf.zeros((2, *cb.IMAGE)), training=True, with_aux=True)
    assert logits.shape == (2, 3) and logits.dtype == tf.float32 and aux is None


# --------------------------------------------------------------------------- errors


def _conv(name=None):
    return layers.Conv2D(2, 1, name=name)


def supernet_of(body):
    def builder(images):
        return layers.GlobalAveragePooling2D()(body(images))

    return ChoiceSupernet(builder)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            lambda x: Choice("a", {"p": _conv()})(Choice("a", {"p": _conv(), "q": _conv()})(x)),
            r"choice 'a' has 1 candidate\(s\) \(p\); a choice needs at least 2",
        ),
        (
            lambda x: Choice("a", {"p": _conv(), "q": _conv()})(
                Choice("a", {"p": _conv(), "q": _conv()})(x)
            ),
            "two choices are named 'a'",
        ),
        (
            lambda x: Choice("a", {"p": _conv(), "q": layers.Conv2D(3, 1)})(x),
            r"the candidates of choice 'a' give different output shapes "
            r"\(p \(None, None, None, 2\), q \(None, None, None, 3\)\)",
        ),
        (
            lambda x: Choice("a", {})(x),
            r"choice 'a' has 0 candidate\(s\) \(none\)",
        ),
        (lambda x: _conv()(x), "makes no choice"),
        (
            lambda x: Choice("a b", {"p": _conv(), "q": _conv()})(x),
            "choice name 'a b' is not a valid name",
        ),
        (
            lambda x: InputChoice("i")({"p": x, "q": layers.Conv2D(4, 1)(x)}),
            r"the candidates of choice 'i' give different output shapes "
            r"\(p \(None, None, None, 3\), q \(None, None, None, 4\)\)",
        ),
    ],
)
def test_bad_choices_fail_when_the_supernet_is_made(body, message):
    with pytest.raises(ChoiceError, match=message):
        supernet_of(body)


def test_candidate_shapes_are_checked_on_the_real_images_too():
    # Strides give equal shapes on images of unknown size, different ones on 8×8.
    def body(x):
        return Choice("s", {"one": _conv(), "two": layers.Conv2D(2, 1, strides=2)})(x)

    net = supernet_of(body)
    with pytest.raises(ChoiceError, match=r"\(one \(None, 8, 8, 2\), two \(None, 4, 4, 2\)\)"):
        net(tf.zeros((1, 8, 8, 3)), {"s": tf.zeros((1, 2))})


def test_unused_choice_and_stateful_layers_are_refused():
    def unused(x):
        Choice("dead", {"p": _conv(), "q": _conv()})(x)
        return Choice("live", {"p": _conv(), "q": _conv()})(x)

    with pytest.raises(ChoiceError, match="choice 'dead' does not reach the features"):
        supernet_of(unused)

    class Counter(keras.layers.Layer):
        def build(self, shape):
            self.count = self.add_weight(shape=(), trainable=False, name="count")

        def call(self, x):
            return x

    def stateful(x):
        return Choice("c", {"p": Counter(), "q": lambda t: t})(x)

    with pytest.raises(ChoiceError, match="non-trainable state .*count"):
        supernet_of(stateful)(tf.zeros((1, 4, 4, 3)), {"c": tf.zeros((1, 2))})


def test_choice_outside_a_build_is_refused():
    with pytest.raises(ChoiceError, match="Choice 'a' was called outside a choice build"):
        Choice("a", {"p": _conv(), "q": _conv()})(keras.Input((4, 4, 1)))


@pytest.mark.parametrize(
    "choices, message",
    [
        (
            {"block1/op": "conv", "block2/keep": "skip", "head/input": "block2", "other": "x"},
            "names choice 'other', which builder .* does not make",
        ),
        (
            {"block1/op": "sep9x9", "block2/keep": "skip", "head/input": "block2"},
            "keeps 'sep9x9' at choice 'block1/op', which has no such candidate; its "
            "candidates: conv, pool",
        ),
        (
            {"block1/op": "conv", "block2/keep": "keep", "head/input": "block2"},
            "the genotype has no candidate for choice 'block2/kernel'",
        ),
    ],
)
def test_genotypes_that_do_not_fit_the_builder(supernet, choices, message):
    with pytest.raises(ChoiceError, match=message):
        build_backbone(ChoiceGenotype(BUILDER, {}, choices), cb.IMAGE)


def test_genotype_from_another_builder(supernet):
    genotype = ChoiceGenotype("il_tf.spaces.examples.resnet:resnet_backbone", {}, {"a": "b"})
    with pytest.raises(ChoiceError, match="found with builder 'il_tf.spaces.examples.resnet"):
        supernet.fixed_backbone(genotype, cb.IMAGE)
    missing = ChoiceGenotype("tests.spaces._choice_builders:nothing", {}, {"a": "b"})
    with pytest.raises(ChoiceError, match="cannot import the genotype's builder"):
        build_backbone(missing, cb.IMAGE)


def test_gin_factory_and_example_builders():
    from il_tf.spaces.examples.mobilenet import mobilenet_v2_backbone
    from il_tf.spaces.examples.resnet import resnet_backbone

    mobile = choice_supernet(builder=mobilenet_v2_backbone)
    assert mobile.points["block2/kernel"].candidates == ("k3", "k5", "k7")
    assert mobile.points["block2/kernel"].parents == [
        ("block2/expansion", "e3"),
        ("block2/expansion", "e6"),
    ]
    assert "block2/keep" not in mobile.points  # block2 changes the shape: never skipped
    resnet = choice_supernet(builder=resnet_backbone)
    assert resnet.points["stage1/block3/input"].kind == "input"
    assert resnet.points["stage1/block1/width"].candidates == ("w8", "w16", "w32")


def test_alpha_plot_and_tensorboard_name_each_choices_candidates(tmp_path):
    from il_tf.learning import plots, reporting

    arch = {"block1.op": np.array([[0.0, 1.0]]), "head.input": np.array([[2.0, 0.0, 1.0]])}
    labels = {"block1.op": ("conv", "pool"), "head.input": ("a", "b", "c")}
    (tmp_path / "genotypes").mkdir()
    for epoch in (1, 2):
        record = {"epoch": epoch, "alpha": {k: v.tolist() for k, v in arch.items()}}
        (tmp_path / "genotypes" / f"epoch_{epoch:03d}.json").write_text(json.dumps(record))
    assert plots.write_search_plot(tmp_path, labels).is_file()
    assert plots.column_names(labels, "head.input") == ("a", "b", "c")
    with tf.summary.create_file_writer(str(tmp_path / "tb")).as_default():
        reporting.write_arch_summaries(arch, labels, "{}", step=1)
