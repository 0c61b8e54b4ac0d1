"""The auxiliary skip connection (DARTS-) in the hypergradients and in a search."""

from __future__ import annotations

import json

import gin
import numpy as np
import pytest
import tensorflow as tf

from il_tf.learning import hypergradients as hg
from il_tf.learning.objective import ChainSettings
from il_tf.learning.search import run_search
from il_tf.learning.search_model import build_search_model
from il_tf.learning.step_functions import StepFunctions
from il_tf.rundir import RunDirError
from il_tf.spaces.architecture import AuxSkipSettings
from il_tf.spaces.darts_supernet import DartsSupernet
from il_tf.spaces.nb201_supernet import NB201Supernet

from .._dtypes import float_dtype
from .conftest import SMOOTH_OPS
from .test_hypergradients import (
    CLASSES,
    assert_equals_differences,
    cosine,
    flat,
    make_inputs,
    rel_diff,
)
from .test_search import tiny_config

AUX = 0.7


def make_steps(supernet) -> StepFunctions:
    """Float64 step functions of ``supernet`` with the auxiliary skip at weight AUX."""
    with float_dtype("float64"):
        model = build_search_model(
            supernet(), CLASSES, (8, 8, 3), seed=0, aux_skip=AuxSkipSettings(start=1.0)
        )
    rng = np.random.default_rng(0)
    for v in model.arch.arch_variables:
        v.assign(0.5 * rng.normal(size=v.shape))
    model.arch.set_progress(1.0 - AUX)  # β_aux = AUX
    settings = ChainSettings(proximity=0.1, weight_decay=3e-4, clip_norm=5.0)
    return StepFunctions(tf.distribute.get_strategy(), model, settings)


def check_against_differences(steps: StepFunctions) -> None:
    """chain_exact = central differences of the objective; the FD chain agrees with it."""
    inputs = make_inputs(steps, T=1)
    exact = assert_equals_differences(steps, inputs)
    assert cosine(flat(hg.chain_finite_difference(steps, inputs).grad), flat(exact)) > 0.999
    # The compiled steps read β_aux at every call: another value, another objective and
    # hypergradient, without a new trace.
    traces = dict(steps.trace_counts)
    before = float(hg.chain_objective(steps, inputs))
    steps.model.arch.set_progress(1.0)  # β_aux = 0
    try:
        assert abs(float(hg.chain_objective(steps, inputs)) - before) > 1e-6
        assert rel_diff(flat(hg.chain_exact(steps, inputs).grad), flat(exact)) > 1e-3
    finally:
        steps.model.arch.set_progress(1.0 - AUX)
    assert dict(steps.trace_counts) == traces


@pytest.mark.slow
def test_hypergradient_with_aux_skip_matches_differences_nb201():
    check_against_differences(
        make_steps(lambda: NB201Supernet(channels=4, cells_per_stage=1, activation="softplus"))
    )


@pytest.mark.slow
def test_hypergradient_with_aux_skip_matches_differences_darts_with_reduction():
    # A normal and a reduction cell: the stride-2 edges' path is their FactorizedReduce.
    check_against_differences(
        make_steps(
            lambda: DartsSupernet(channels=4, num_cells=2, ops=SMOOTH_OPS, activation="softplus")
        )
    )


@pytest.fixture
def aux_skip_on():
    gin.bind_parameter("AuxSkipSettings.start", 1.0)
    try:
        yield
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_search_decays_the_weight_and_resumes(tmp_path, aux_skip_on):
    config = tiny_config(method="first_order")
    run_search(config, tmp_path / "full")
    run_search(config, tmp_path / "resumed", stop_after=2)  # stops mid-epoch
    run_search(config, tmp_path / "resumed")
    for name in ("metrics.jsonl", "genotype.json", "genotypes/epoch_001.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (
            tmp_path / "full" / name
        ).read_bytes(), name
    # 2 learners, 1 round: 2 weight steps per iteration, 6 iterations. Iteration i runs
    # at β_aux = 1 − i/6; each epoch reports the value of its last iteration.
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").open()]
    assert [r["aux_skip"] for r in records] == pytest.approx([1 - 2 / 6, 1 - 5 / 6])
    settings = json.loads((tmp_path / "full" / "run.json").read_text())["settings"]
    assert settings["aux_skip"] == {"start": 1.0}
    # A restart without it is another search.
    gin.clear_config()
    with pytest.raises(RunDirError, match=r"aux_skip.start 1.0 -> "):
        run_search(config, tmp_path / "resumed")
