"""PC-DARTS and P-DARTS in the search: hypergradients with β, the progressive driver."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from il_tf import cli
from il_tf.learning import hypergradients as hg
from il_tf.learning import progressive as prog
from il_tf.learning.objective import ChainSettings
from il_tf.learning.progressive import ProgressiveConfig, ProgressiveError, run_progressive
from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.learning.step_functions import StepFunctions
from il_tf.rundir import RunDirError
from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.architecture import Architecture
from il_tf.spaces.darts_supernet import DartsSupernet, derive_darts_genotype
from il_tf.spaces.factories import darts_supernet
from il_tf.spaces.genotypes import load_genotype_with_metadata

from ..conftest import PROJECT_ROOT
from .conftest import SMOOTH_OPS
from .test_hypergradients import eagerly, make_inputs
from .test_search import digits_learner, tiny_config

# ----------------------------------------------------------------------------- hypergradients


def build_pc_model(num_classes=(3, 4), seed=0, **supernet) -> SearchModel:
    """A 2-cell PC-DARTS supernet (K=2, β) with smooth ops and one head per learner."""
    kw = dict(channels=4, num_cells=2, ops=SMOOTH_OPS, activation="softplus", partial_channels=2)
    model = build_search_model(
        DartsSupernet(**{**kw, **supernet}), num_classes, (8, 8, 3), seed=seed
    )
    rng = np.random.default_rng(seed)
    for v in model.arch.arch_variables:  # away from uniform, so every op and edge matters
        v.assign(0.5 * rng.normal(size=v.shape))
    return model


def _pc_inputs(model, num_learners, rounds, proximity):
    settings = ChainSettings(proximity=proximity, weight_decay=3e-4, clip_norm=5.0)
    steps = StepFunctions(tf.distribute.get_strategy(), model, settings)
    return steps, make_inputs(steps, rounds=rounds, T=2, K=num_learners)


@pytest.mark.parametrize(
    "num_learners, rounds, proximity",
    [
        pytest.param(1, 1, 0.0, marks=pytest.mark.slow),
        # The chain at K=2 is checked on the plain supernet by test_hypergradients.py.
        pytest.param(2, 1, 0.1, marks=pytest.mark.slow),
    ],
    ids=["DARTS", "K=2"],
)
def test_chain_exact_with_beta_equals_differences(float64, num_learners, rounds, proximity):
    # Partial channels, edge normalization and skip dropout (its masks are constants of
    # the objective), smooth ops: the exact hypergradient w.r.t. α and β matches
    # central differences of the top-level objective. Eager: tracing this model
    # costs more than running it once.
    model = build_pc_model(num_classes=(3, 4)[:num_learners], skip_dropout=0.3)
    assert model.arch.names == ("normal", "reduce", "beta_normal", "beta_reduce")
    with eagerly():
        steps, inputs = _pc_inputs(model, num_learners, rounds, proximity)
        grads = hg.chain_exact(steps, inputs).grad
        for name, g in zip(model.arch.names, grads, strict=True):
            assert float(tf.reduce_max(tf.abs(g))) > 1e-5, name
        rng = np.random.default_rng(3)
        directions = [[tf.constant(rng.normal(size=a.shape)) for a in inputs.arch]]
        # One direction along β only: β's own derivative is checked, not drowned by α's.
        # (Not a constant one: softmax over a node's edges ignores a shift of its β.)
        directions.append(
            [
                tf.zeros_like(a) if a.shape.rank == 2 else tf.constant(rng.normal(size=a.shape))
                for a in inputs.arch
            ]
        )
        eps = 1e-5
        for d in directions:

            def objective(sign, d=d):
                arch = [a + sign * eps * v for a, v in zip(inputs.arch, d, strict=True)]
                return float(hg.chain_objective(steps, dataclasses.replace(inputs, arch=arch)))

            numeric = (objective(1.0) - objective(-1.0)) / (2 * eps)
            analytic = sum(float(tf.reduce_sum(g * v)) for g, v in zip(grads, d, strict=True))
            assert abs(numeric - analytic) < 1e-4 * abs(analytic), (numeric, analytic)


@pytest.mark.parametrize(
    "method", ["first_order", pytest.param("per_learner_finite_difference", marks=pytest.mark.slow)]
)
def test_every_method_gives_beta_a_gradient(float64, method):
    model = build_pc_model(num_classes=(3, 4))
    with eagerly():
        steps, inputs = _pc_inputs(model, 2, 2, 0.1)
        grads = hg.get_method(method)(steps, inputs).grad
    assert [tuple(g.shape) for g in grads] == [(14, 5), (14, 5), (14,), (14,)]
    assert float(tf.reduce_max(tf.abs(grads[2]))) > 1e-6


# ----------------------------------------------------------------------------- pruning


def test_prune_keeps_the_strongest_ops_per_edge_in_order():
    ops = (("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"),) * 2 + (
        ("sep_conv_3x3", "skip_connect", "none", "dil_conv_3x3"),
    )
    alpha = np.array([[3.0, 0.0, 1.0, 2.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    pruned = prog.prune_ops(alpha, ops, 2)
    assert pruned[0] == ("none", "sep_conv_3x3")  # `none` competes like any other op
    assert pruned[1] == ("max_pool_3x3", "skip_connect")
    assert pruned[2] == ("none", "dil_conv_3x3")
    # Ties: the earlier op is dropped first (P-DARTS's argmin order).
    assert prog.prune_ops(np.zeros((1, 4)), ops[:1], 3) == (
        ("max_pool_3x3", "skip_connect", "sep_conv_3x3"),
    )
    # Keeping one op never keeps `none`.
    assert prog.prune_ops(alpha[:1], ops[:1], 1) == (("sep_conv_3x3",),)
    with pytest.raises(ProgressiveError, match="does not match"):
        prog.prune_ops(np.zeros((2, 3)), ops, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depths": [5, 11], "num_ops": [8, 5, 3]}, "num_ops needs one value per stage"),
        ({"num_ops": [7, 5, 3]}, r"num_ops\[0\] \(7\) must equal"),
        ({"num_ops": [8, 5, 6]}, "must not grow"),
        ({"skip_dropout": [0.0, 0.4, 1.0]}, r"in \[0, 1\)"),
        ({"epochs": 5, "arch_warmup_epochs": 6}, "arch_warmup_epochs"),
        ({"ops": ["none", "conv_9x9"], "num_ops": [2, 2, 2]}, "distinct DARTS ops"),
        ({"max_skip_normal": -1}, "max_skip_normal"),
        ({"depths": [5, 11.5, 17]}, "depths must hold integers"),
    ],
)
def test_bad_progressive_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveConfig(**kwargs)


def test_paper_defaults():
    p = ProgressiveConfig()
    assert (p.depths, p.num_ops, p.skip_dropout) == ((5, 11, 17), (8, 5, 3), (0.0, 0.4, 0.7))
    assert (p.epochs, p.arch_warmup_epochs, p.max_skip_normal) == ((25,) * 3, (10,) * 3, 2)


@pytest.mark.parametrize("name", ["pdarts_cifar10", "il_pdarts_cifar10_cifar100"])
def test_shipped_progressive_configs_bind_the_paper_settings(name):
    gin.clear_config()
    try:
        cli.register_configurables()
        gin.add_config_file_search_path(str(PROJECT_ROOT))
        gin.parse_config_file(str(PROJECT_ROOT / "gin_configs" / "search" / f"{name}.gin"))
        assert prog.is_configured()
        p = ProgressiveConfig()
        assert p.depths == (5, 11, 17) and p.num_ops == (8, 5, 3)
        assert p.skip_dropout == (0.0, 0.4, 0.7) and p.max_skip_normal == 2
        assert p.epochs == (25,) * 3 and p.arch_warmup_epochs == (10,) * 3
    finally:
        gin.clear_config()
    assert not prog.is_configured()


# ----------------------------------------------------------------------------- progressive runs

TINY_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
TINY_PROGRESSIVE = ProgressiveConfig(
    depths=(2, 2, 3),
    num_ops=(4, 3, 2),
    ops=TINY_OPS,
    skip_dropout=(0.0, 0.3, 0.5),
    epochs=1,
    arch_warmup_epochs=0,
    max_skip_normal=1,
)


def tiny_progressive_config(**overrides):
    # One learner keeps the traces (and the test) short; the stages are searches
    # like any other, K=2 interleaving included (see test_search.py).
    settings = dict(
        learners=(digits_learner("digits", [0, 1, 2, 3]),),
        supernet=functools.partial(darts_supernet, channels=4, num_cells=5),
        method="first_order",
        iterations_per_epoch=2,
    )
    return tiny_config(**{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("progressive_full")
    return run_progressive(tiny_progressive_config(), TINY_PROGRESSIVE, workdir)


def _stage(workdir, i):
    return json.loads((workdir / f"stage_{i}" / "stage.json").read_text())


def _alpha(workdir, i):
    _, meta = load_genotype_with_metadata(workdir / f"stage_{i}" / "genotype.json")
    return meta["alpha"]


def _expected_pruning(alpha, edge_ops, keep):
    """Per edge, the ``keep`` largest softmax(α) ops (independent of prune_ops)."""
    out = []
    for row, ops in zip(np.asarray(alpha), edge_ops, strict=True):
        best = np.argsort(-row, kind="stable")[:keep]
        out.append([ops[k] for k in sorted(best)])
    return out


def test_progressive_stages_shrink_ops_per_edge_and_grow_depth(full_run):
    workdir = full_run.workdir
    assert full_run.genotype_path == workdir / "genotype.json"
    stages = [_stage(workdir, i) for i in (1, 2, 3)]
    assert [s["depth"] for s in stages] == [2, 2, 3]
    assert stages[0]["ops_normal"] == stages[0]["ops_reduce"] == list(TINY_OPS)  # shared
    assert [s["skip_dropout"] for s in stages] == [0.0, 0.3, 0.5]
    previous = {"normal": [list(TINY_OPS)] * 14, "reduce": [list(TINY_OPS)] * 14}
    for i, keep in ((1, 3), (2, 2)):
        alpha = _alpha(workdir, i)
        for cell in ("normal", "reduce"):
            expected = _expected_pruning(alpha[cell], previous[cell], keep)
            assert stages[i][f"ops_{cell}"] == expected, (i, cell)
            previous[cell] = expected
        # The op sets differ between edges (P-DARTS prunes each edge on its own).
        assert len({tuple(o) for o in stages[i]["ops_normal"]}) > 1
    # Each stage's search ran the supernet it was given: depth and α shapes.
    for i, stage in enumerate(stages, start=1):
        run = json.loads((workdir / f"stage_{i}" / "run.json").read_text())["settings"]
        assert run["supernet"]["arch"] == {
            "normal": [14, stage["num_ops"]],
            "reduce": [14, stage["num_ops"]],
        }
        net = prog.stage_config(
            tiny_progressive_config(),
            TINY_PROGRESSIVE,
            i - 1,
            None if i == 1 else tuple(map(tuple, stage["ops_normal"])),
            None if i == 1 else tuple(map(tuple, stage["ops_reduce"])),
        ).supernet()
        assert len(net.cells) == stage["depth"]
        assert run["supernet"]["weights"] == [list(v.shape) for v in _built(net).weights]


def _built(net):
    net(tf.zeros((2, 8, 8, 3)), Architecture(net.arch_shapes()).tensors())
    return net


def test_progressive_final_genotype_has_capped_skips(full_run):
    genotype, meta = load_genotype_with_metadata(full_run.genotype_path)
    assert genotype == full_run.genotype
    assert meta["search"] == "progressive" and meta["max_skip_normal"] == 1
    assert sum(op == "skip_connect" for op, _ in genotype.normal) <= 1
    normal = tuple(map(tuple, meta["ops_normal"]))
    reduce = tuple(map(tuple, meta["ops_reduce"]))
    assert normal == tuple(map(tuple, _stage(full_run.workdir, 3)["ops_normal"]))
    for k, (op, j) in enumerate(genotype.normal):
        assert op in normal[genotypes_lib.edge_index(k // 2, j)] and op != "none"
    # The final cell is the last stage's α by the DARTS rule with the cap ...
    alpha = {k: np.asarray(v) for k, v in meta["alpha"].items()}
    assert genotype == derive_darts_genotype(alpha, normal, reduce, max_skip_normal=1)
    # ... which the last stage's own genotype.json already used.
    assert (
        genotype == load_genotype_with_metadata(full_run.workdir / "stage_3" / "genotype.json")[0]
    )
    # The cap binds when skip-connect dominates: every edge keeps skip first.
    skip_heavy = {**alpha, "normal": np.where(np.array(normal) == "skip_connect", 5.0, 0.0)}
    capped = derive_darts_genotype(skip_heavy, normal, reduce, max_skip_normal=1)
    assert sum(op == "skip_connect" for op, _ in capped.normal) <= 1


@pytest.mark.slow
def test_progressive_resume_across_a_stage_boundary(full_run, tmp_path):
    config = tiny_progressive_config()
    # Stage 1 has 2 iterations: stop after 1 iteration of stage 2.
    stopped = run_progressive(config, TINY_PROGRESSIVE, tmp_path, stop_after=3)
    assert stopped.genotype_path is None
    assert not (tmp_path / "genotype.json").exists()
    assert (tmp_path / "stage_1" / "genotype.json").is_file()
    assert not (tmp_path / "stage_2" / "genotype.json").exists()
    assert prog._iterations_done(tmp_path / "stage_2") == 1
    assert not (tmp_path / "stage_3").exists()
    resumed = run_progressive(config, TINY_PROGRESSIVE, tmp_path)
    assert resumed.genotype == full_run.genotype
    for i in (1, 2, 3):
        assert _stage(tmp_path, i) == _stage(full_run.workdir, i)
        full, again = _alpha(full_run.workdir, i), _alpha(tmp_path, i)
        for name in full:
            np.testing.assert_allclose(
                again[name], full[name], rtol=0, atol=1e-6, err_msg=f"{i} {name}"
            )
    # A finished run started again only rewrites the final genotype.
    assert run_progressive(config, TINY_PROGRESSIVE, tmp_path).genotype == full_run.genotype


def test_progressive_refuses_a_workdir_of_other_stages(full_run, tmp_path):
    import shutil

    shutil.copytree(full_run.workdir / "stage_1", tmp_path / "stage_1")
    other = ProgressiveConfig(
        depths=(3, 3, 3), num_ops=(4, 3, 2), ops=TINY_OPS, epochs=1, arch_warmup_epochs=0
    )
    with pytest.raises(ProgressiveError, match="other settings .*depth"):
        run_progressive(tiny_progressive_config(), other, tmp_path)


@pytest.mark.slow
def test_progressive_extends_only_its_last_stage_and_only_when_asked(full_run, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(full_run.workdir, workdir)
    longer = dataclasses.replace(TINY_PROGRESSIVE, epochs=(1, 1, 2))
    with pytest.raises(RunDirError, match=r"stages.stage_3.epochs 1 -> 2.*pass --extend"):
        run_progressive(tiny_progressive_config(), longer, workdir)
    earlier = dataclasses.replace(TINY_PROGRESSIVE, epochs=(2, 1, 1))
    with pytest.raises(RunDirError, match=r"stages.stage_1.epochs 1 -> 2"):
        run_progressive(tiny_progressive_config(), earlier, workdir, extend=True)
    result = run_progressive(tiny_progressive_config(), longer, workdir, extend=True)
    _, meta = load_genotype_with_metadata(workdir / "stage_3" / "genotype.json")
    assert meta["epoch"] == 2 and result.genotype_path == workdir / "genotype.json"
    starts = json.loads((workdir / "run.json").read_text())["starts"]
    assert starts[-1]["changed"] == {"stages.stage_3.epochs": [1, 2]}
    stage_starts = json.loads((workdir / "stage_3" / "run.json").read_text())["starts"]
    assert stage_starts[-1]["changed"] == {"epochs": [1, 2]}
    # Stages 1 and 2 did not run again.
    for i in (1, 2):
        assert len(json.loads((workdir / f"stage_{i}" / "run.json").read_text())["starts"]) == 1


def test_progressive_needs_the_darts_factory(tmp_path):
    from il_tf.spaces.factories import nb201_supernet

    with pytest.raises(ProgressiveError, match="does not take the per-stage settings"):
        run_progressive(
            tiny_progressive_config(supernet=nb201_supernet), TINY_PROGRESSIVE, tmp_path
        )


# ----------------------------------------------------------------------------- replicas, tool


# The engine's replica arithmetic is covered in the default run by test_search.py;
# this adds PC-DARTS's β and skip dropout to it.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_pc_pdarts_two_replicas_equal_one_device(mode):
    # Partial channels, β, skip dropout: masks are per example, so 2 replicas on
    # halves of a batch still compute the 1-device step (unrolled hypergradient).
    script = PROJECT_ROOT / "tests" / "learning" / "_two_replicas_pc.py"
    proc = subprocess.run(
        [sys.executable, str(script), "unrolled", mode],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["alpha_moved"] > 1e-3
    assert result["alpha_max_diff"] < 1e-5
    assert result["weights_max_diff"] < 1e-5


@pytest.mark.slow
def test_tool_runs_a_progressive_search(tmp_path):
    from .test_search import TINY_BINDINGS, run_tool

    bindings = [
        *TINY_BINDINGS,
        "ProgressiveConfig.depths = [2, 3]",
        "ProgressiveConfig.num_ops = [4, 2]",
        f"ProgressiveConfig.ops = {list(TINY_OPS)}",
        "ProgressiveConfig.skip_dropout = [0.0, 0.5]",
        "ProgressiveConfig.epochs = 1",
        "ProgressiveConfig.arch_warmup_epochs = 0",
    ]
    args = [f"--gin_bindings={b}" for b in bindings]
    proc = run_tool("--gin_file=gin_configs/quickstart.gin", f"--workdir={tmp_path}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"genotype: {tmp_path / 'genotype.json'}" in proc.stdout
    _, meta = load_genotype_with_metadata(tmp_path / "genotype.json")
    assert meta["search"] == "progressive" and len(meta["stages"]) == 2
    assert all(len(o) == 2 for o in meta["ops_normal"])
