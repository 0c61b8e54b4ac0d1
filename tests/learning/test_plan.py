"""The memory and compile plan: one rule from the method, the space and the device."""

from __future__ import annotations

import functools

import pytest

from il_tf.learning.build import LearnerShape
from il_tf.learning.plan import SMALL_FEATURE_MAPS, choose_plan, grappler_options
from il_tf.spaces.factories import darts_supernet, nb201_supernet

from .test_search import TINY_SUPERNET, tiny_config


def shapes(batch: int, size: int, k: int = 2) -> list[LearnerShape]:
    return [LearnerShape(f"l{i}", 3, (size, size, 3), batch) for i in range(k)]


SMALL = shapes(8, 8)  # 8·8·8 images × 4 channels: small feature maps
LARGE = shapes(64, 64)  # 64·64·64 × 4 channels: above SMALL_FEATURE_MAPS


def test_the_sizes_are_on_both_sides_of_the_threshold():
    assert 8 * 8 * 8 * 4 <= SMALL_FEATURE_MAPS < 64 * 64 * 64 * 4


def test_exact_links_get_segment_wise_gradients_and_no_constant_folding():
    plan = choose_plan(tiny_config(method="chain_exact"), LARGE, device="CPU")
    assert plan.segmented_gradients is True and plan.constant_folding is False
    assert plan.graph_optimizer is True and plan.wide_edges is False
    assert grappler_options(plan.graph_optimizer, plan.constant_folding) == {
        "constant_folding": False
    }
    assert set(plan.chosen) == {
        "graph_optimizer",
        "constant_folding",
        "segmented_gradients",
        "wide_edges",
    }


@pytest.mark.parametrize("method", ["chain_finite_difference", "first_order"])
def test_other_methods_keep_tensorflows_defaults(method):
    plan = choose_plan(tiny_config(method=method), LARGE, device="CPU")
    assert (plan.graph_optimizer, plan.constant_folding, plan.segmented_gradients) == (
        True,
        True,
        False,
    )


@pytest.mark.parametrize("rounds, optimizer", [(1, True), (2, False)])
def test_unrolled_through_a_long_chain_runs_without_the_graph_optimizer(rounds, optimizer):
    # K=2: R=1 is 2 steps, R=2 is 4.
    plan = choose_plan(tiny_config(method="unrolled", rounds=rounds), LARGE, device="CPU")
    assert plan.graph_optimizer is optimizer
    assert plan.constant_folding is True and plan.segmented_gradients is False


def test_wide_edges_on_small_feature_maps_on_a_cpu_only():
    config = tiny_config()
    assert choose_plan(config, SMALL, device="CPU").wide_edges is True
    assert choose_plan(config, LARGE, device="CPU").wide_edges is False
    assert choose_plan(config, SMALL, device="GPU").wide_edges is False


def test_an_explicit_value_wins():
    config = tiny_config(
        method="chain_exact",
        segmented_gradients=False,
        constant_folding=True,
        graph_optimizer=False,
        supernet=functools.partial(TINY_SUPERNET, wide_edges=False),
    )
    plan = choose_plan(config, SMALL, device="CPU")
    assert (plan.segmented_gradients, plan.constant_folding, plan.graph_optimizer) == (
        False,
        True,
        False,
    )
    assert plan.wide_edges is False and plan.chosen == ()
    assert plan.supernet(config) is config.supernet
    assert "(set)" in plan.describe() and "(auto" not in plan.describe()


def test_the_plan_applies_its_wide_edges_to_the_supernet():
    config = tiny_config()
    plan = choose_plan(config, SMALL, device="CPU")
    cells = plan.supernet(config)().cells
    assert all(cell.wide_edges for cell in cells)
    # Built outside a search, the supernet computes each edge by itself.
    assert not any(cell.wide_edges for cell in config.supernet().cells)


def test_a_supernet_without_wide_edges_has_none_in_its_plan():
    config = tiny_config(supernet=functools.partial(nb201_supernet, channels=4))
    plan = choose_plan(config, SMALL, device="CPU")
    assert plan.wide_edges is None and "wide_edges" not in plan.chosen
    assert "edges" not in plan.describe()


def test_the_plan_is_one_line_and_recorded():
    plan = choose_plan(tiny_config(method="chain_exact"), LARGE, device="CPU")
    line = plan.describe()
    assert "\n" not in line
    assert "gradients segment-wise (auto: exact links)" in line
    assert "constant folding off (auto: exact links)" in line
    assert "edges single (auto: large feature maps)" in line
    assert plan.record() == {
        "graph_optimizer": True,
        "constant_folding": False,
        "segmented_gradients": True,
        "wide_edges": False,
        "chosen": list(plan.chosen),
    }


def test_an_unknown_supernet_setting_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'wide'"):
        darts_supernet(wide=True)
