"""End-to-end searches on tiny configurations of real data."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from il_tf.data.learners import Learner
from il_tf.data.sources import DigitsSource, ImageFolderSource
from il_tf.learning import search as search_lib
from il_tf.learning.search import SearchConfig, SearchError, run_search
from il_tf.rundir import RunDir, RunDirError
from il_tf.spaces.factories import darts_supernet
from il_tf.spaces.genotypes import Genotype, load_genotype_with_metadata

from ..conftest import PROJECT_ROOT

TINY_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
# One normal cell: the smallest supernet whose step functions trace in seconds.
TINY_SUPERNET = functools.partial(darts_supernet, channels=4, num_cells=1, ops=TINY_OPS)


def digits_learner(name, classes, **kw):
    kw = {"image_size": 8, "batch_size": 8, "crop_padding": 1, "flip": False, **kw}
    return Learner(name, DigitsSource(), classes=classes, **kw)


def tiny_config(**overrides) -> SearchConfig:
    settings = dict(
        learners=(digits_learner("low", [0, 1, 2]), digits_learner("high", [7, 8, 9])),
        supernet=TINY_SUPERNET,
        method="chain_finite_difference",
        epochs=2,
        iterations_per_epoch=3,
        eval_batches=1,
        draw=False,
        seed=3,
    )
    settings.update(overrides)
    return SearchConfig(**settings)


def test_stop_and_resume_reaches_the_uninterrupted_result(tmp_path):
    config = tiny_config(method="first_order", steps_per_stage=2, proximity=0.01)
    full = run_search(config, tmp_path / "full")
    run_search(config, tmp_path / "resumed", stop_after=2)  # stops mid-epoch
    assert not (tmp_path / "resumed" / "genotype.json").exists()
    resumed = run_search(config, tmp_path / "resumed")
    # The epoch's running statistics were checkpointed: every per-epoch file is identical.
    for name in (
        "metrics.jsonl",
        "genotype.json",
        "genotypes/epoch_001.json",
        "genotypes/epoch_002.json",
    ):
        assert (tmp_path / "resumed" / name).read_bytes() == (
            tmp_path / "full" / name
        ).read_bytes(), name
    _, meta_full = load_genotype_with_metadata(full.genotype_path)
    _, meta_resumed = load_genotype_with_metadata(resumed.genotype_path)
    assert meta_full["iteration"] == meta_resumed["iteration"] == 6
    for name in meta_full["metrics"]:
        assert meta_full["metrics"][name] == pytest.approx(meta_resumed["metrics"][name], abs=1e-5)
    for name in meta_full["alpha"]:
        np.testing.assert_allclose(
            meta_resumed["alpha"][name], meta_full["alpha"][name], rtol=0, atol=1e-6
        )
    assert resumed.genotype == full.genotype
    # Every saved tensor (weights, heads, α, both optimizers' state) is the same.
    full_ckpt = tf.train.load_checkpoint(str(tmp_path / "full" / "checkpoints"))
    resumed_ckpt = tf.train.load_checkpoint(str(tmp_path / "resumed" / "checkpoints"))
    names = set(full_ckpt.get_variable_to_shape_map()) - {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"}
    assert names == set(resumed_ckpt.get_variable_to_shape_map()) - {
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    }
    encoder_names = [n for n in names if n.startswith("encoder/")]
    assert len(encoder_names) == len(run_model_weights(config))
    for name in names - {"_CHECKPOINTABLE_OBJECT_GRAPH"}:
        np.testing.assert_allclose(
            resumed_ckpt.get_tensor(name),
            full_ckpt.get_tensor(name),
            rtol=0,
            atol=1e-6,
            err_msg=name,
        )
    # The α moved away from its 1e-3-scale initialization.
    assert np.abs(np.asarray(meta_full["alpha"]["normal"])).max() > 2e-3
    # A finished run started again does nothing more.
    again = run_search(config, tmp_path / "full")
    assert again.genotype == full.genotype


def run_model_weights(config):
    encoder = config.supernet()
    from il_tf.spaces.architecture import Architecture

    encoder(tf.zeros((2, 8, 8, 3)), Architecture(encoder.arch_shapes()).tensors())
    return encoder.weights


def restored(config, workdir, begin=False):
    """A search of ``config`` on ``workdir`` checked and restored, without a step."""
    with RunDir(workdir, "search") as run_dir:
        run = search_lib._Run(config, run_dir, tf.distribute.get_strategy())
        it = run.restore()
        if begin:
            run.begin(it)
    return run, it


def test_resuming_with_other_settings_is_refused(tmp_path):
    # A workdir of one run (its start recorded, no step needed) ...
    restored(tiny_config(), tmp_path, begin=True)

    def files():  # the lock file names its last holder: not part of the run
        return {p.name: p.read_bytes() for p in tmp_path.glob("*.*") if p.name != ".lock"}

    before = files()
    # ... refuses a run with other settings, naming each, old -> new, and changes nothing.
    with pytest.raises(RunDirError) as e:
        run_search(tiny_config(method="first_order", seed=4), tmp_path)
    message = str(e.value)
    assert 'method "chain_finite_difference" -> "first_order"' in message
    assert "seed 3 -> 4" in message and "\n" not in message
    assert files() == before
    # More epochs only when asked for.
    with pytest.raises(RunDirError, match="epochs 2 -> 3.*pass --extend"):
        run_search(tiny_config(epochs=3), tmp_path)


def test_nan_stops_with_learner_and_iteration_and_keeps_checkpoint(tmp_path, monkeypatch):
    original = search_lib.build_learner_data

    def poisoned(learner, seed):
        data = original(learner, seed)
        if learner.name == "high":
            clean = data.train_dataset

            def train_dataset(start_batch=0, input_context=None):
                def poison(i, batch):
                    images, labels = batch
                    return tf.where(i >= 4, images * np.nan, images), labels

                return clean(start_batch, input_context).enumerate(start_batch).map(poison)

            data.train_dataset = train_dataset
        return data

    monkeypatch.setattr(search_lib, "build_learner_data", poisoned)
    config = tiny_config(method="first_order", checkpoint_every=1)
    with pytest.raises(SearchError) as e:
        run_search(config, tmp_path)
    message = str(e.value)
    assert "iteration 4" in message and "learner 'high'" in message
    assert "ckpt-4" in message and "is intact" in message
    # The last good checkpoint restores to finite weights and architecture.
    monkeypatch.setattr(search_lib, "build_learner_data", original)
    run, it = restored(config, tmp_path)
    assert it == 4
    for v in run.model.arch.arch_variables + run.engine.weight_variables:
        assert np.isfinite(v.numpy()).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rounds": 0}, "SearchConfig.rounds must be an int >= 1, got 0"),
        ({"proximity": -1.0}, "SearchConfig.proximity must be a number >= 0, got -1.0"),
        ({"epochs": 2, "arch_warmup_epochs": 3}, "arch_warmup_epochs must be <= epochs (2), got 3"),
        ({"seed": 1.5}, "SearchConfig.seed must be an int >= 0, got 1.5"),
        ({"method": "second_order"}, "unknown hypergradient method 'second_order'"),
        ({"schedule": "random"}, "unknown schedule 'random'"),
        ({"learners": ()}, "SearchConfig.learners is empty"),
        ({"learners": ("cifar10",)}, "entries must be Learner(...)"),
        ({"order": ["low"]}, "must list each learner name once"),
        (
            {"graph_optimizer": "no"},
            "SearchConfig.graph_optimizer must be True, False or None (None: the search's "
            "plan), got 'no'",
        ),
        ({"constant_folding": 0}, "SearchConfig.constant_folding must be True, False or None"),
        ({"segmented_gradients": 1}, "SearchConfig.segmented_gradients must be True, False or"),
        (
            {"nb201_table": "/nonexistent.json.gz"},
            "nb201_table '/nonexistent.json.gz' is not a file",
        ),
    ],
)
def test_bad_settings_fail_before_compute(overrides, message):
    with pytest.raises(ValueError) as e:
        tiny_config(**overrides)
    assert message in str(e.value)


def test_search_on_cifar10_folder_subset(tmp_path, cifar10_folder):
    source = ImageFolderSource(str(cifar10_folder))
    learners = (
        Learner(
            "vehicles",
            source,
            classes=["airplane", "automobile"],
            image_size=16,
            batch_size=8,
            val_fraction=0.9,
            cutout_length=4,
        ),
        Learner(
            "animals", source, classes=["cat", "dog"], image_size=16, batch_size=8, val_fraction=0.9
        ),
    )
    config = tiny_config(learners=learners, epochs=1, iterations_per_epoch=2, method="first_order")
    result = run_search(config, tmp_path)
    genotype, meta = load_genotype_with_metadata(result.genotype_path)
    assert isinstance(genotype, Genotype)
    assert meta["learners"] == ["vehicles", "animals"]


def run_tool(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "search.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


TINY_BINDINGS = [
    "SearchConfig.epochs = 1",
    "SearchConfig.iterations_per_epoch = 2",
    "SearchConfig.eval_batches = 1",
    "darts_supernet.channels = 4",
    "darts_supernet.num_cells = 1",
    f"darts_supernet.ops = {list(TINY_OPS)}",
]


def test_quickstart_tool_writes_genotype_and_workdir(tmp_path):
    bindings = [f"--gin_bindings={b}" for b in TINY_BINDINGS]
    proc = run_tool("--gin_file=gin_configs/quickstart.gin", f"--workdir={tmp_path}", *bindings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"workdir: {tmp_path}" in proc.stdout
    assert f"genotype: {tmp_path / 'genotype.json'}" in proc.stdout
    genotype, meta = load_genotype_with_metadata(tmp_path / "genotype.json")
    assert isinstance(genotype, Genotype)
    assert meta["learners"] == ["digits_0_4", "digits_5_9"] and meta["epoch"] == 1
    assert (tmp_path / "config.gin").read_text().count("Learner") >= 2
    # What the workdir keeps for the user: drawings (the .gv source needs no graphviz),
    # per-epoch genotypes and metrics, TensorBoard logs, checkpoints.
    assert (tmp_path / "genotype_normal.gv").is_file()
    assert (tmp_path / "genotypes" / "epoch_001.json").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert set(records[0]["learners"]) == {"digits_0_4", "digits_5_9"}
    assert 0 <= records[0]["learners"]["digits_0_4"]["val_accuracy"] <= 1
    assert list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "checkpoints" / "checkpoint").is_file()
    # Reproducible with a fixed seed: the same config run in this process gives
    # bit-identical architecture logits.
    import gin

    from il_tf import cli

    try:
        cli.parse_gin([str(PROJECT_ROOT / "gin_configs" / "quickstart.gin")], TINY_BINDINGS)
        again = run_search(cli.configured(SearchConfig), tmp_path / "again")
    finally:
        gin.clear_config()
    _, meta_again = load_genotype_with_metadata(again.genotype_path)
    assert meta_again["alpha"] == meta["alpha"]


@pytest.mark.parametrize(
    "binding, message",
    [
        ("SearchConfig.method = 'second_order'", "unknown hypergradient method 'second_order'"),
        pytest.param(
            "SearchConfig.rounds = 0",
            "SearchConfig.rounds must be an int >= 1, got 0",
            marks=pytest.mark.slow,
        ),
        pytest.param("SearchConfig.nonsense = 1", "nonsense", marks=pytest.mark.slow),
    ],
)
def test_tool_rejects_bad_settings(tmp_path, binding, message):
    proc = run_tool(
        "--gin_file=gin_configs/quickstart.gin",
        f"--workdir={tmp_path / 'w'}",
        f"--gin_bindings={binding}",
        timeout=120,
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize(
    "method, mode",
    [
        pytest.param("chain_finite_difference", "eager", marks=pytest.mark.slow),
        pytest.param("chain_finite_difference", "eager segmented", marks=pytest.mark.slow),
        pytest.param("chain_exact", "eager", marks=pytest.mark.slow),
        pytest.param("per_learner_finite_difference", "eager", marks=pytest.mark.slow),
        pytest.param("unrolled", "eager", marks=pytest.mark.slow),
        pytest.param("chain_finite_difference", "graph", marks=pytest.mark.slow),
    ],
)
def test_two_replicas_equal_one_device(method, mode):
    # Every gradient and Hessian-vector product of the chain is all-reduced and BN
    # statistics are synchronized, so 2 replicas on halves of a batch compute the
    # 1-device step.
    script = PROJECT_ROOT / "tests" / "learning" / "_two_replicas.py"
    proc = subprocess.run(
        [sys.executable, str(script), method, *mode.split()],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["alpha_moved"] > 1e-3  # the step did something
    assert result["alpha_max_diff"] < 1e-5
    assert result["weights_max_diff"] < 1e-5


def test_mixed_bfloat16_search_keeps_alpha_float32(tmp_path):
    config = tiny_config(epochs=1, iterations_per_epoch=2, mixed_precision="mixed_bfloat16")
    run_search(config, tmp_path)
    run, _ = restored(config, tmp_path)
    assert run.model.encoder.compute_dtype == "bfloat16"
    for v in run.model.arch.arch_variables:
        assert v.dtype == "float32" and np.isfinite(v.numpy()).all()
    with pytest.raises(ValueError, match="float16 needs loss scaling"):
        tiny_config(mixed_precision="mixed_float16")


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param("graph_optimizer", marks=pytest.mark.slow),
        pytest.param("constant_folding", marks=pytest.mark.slow),
    ],
    ids=["no optimizer", "no folding"],
)
def test_search_without_graph_optimizations_computes_the_same_and_restores_them(tmp_path, setting):
    config = tiny_config(method="first_order", epochs=1, iterations_per_epoch=2)
    options = tf.config.optimizer.get_experimental_options
    seen = {}
    plain = run_search(
        dataclasses.replace(config, **{setting: False}),
        tmp_path / "off",
        on_begin=lambda: seen.update(options()),
    )
    if setting == "graph_optimizer":
        assert seen.get("disable_meta_optimizer") is True
    else:
        assert seen.get("constant_folding") is False and not seen.get("disable_meta_optimizer")
    assert not options().get("disable_meta_optimizer")
    assert options().get("constant_folding", True)
    optimized = run_search(config, tmp_path / "on")
    _, meta_off = load_genotype_with_metadata(plain.genotype_path)
    _, meta_on = load_genotype_with_metadata(optimized.genotype_path)
    for name in meta_on["alpha"]:
        np.testing.assert_allclose(meta_off["alpha"][name], meta_on["alpha"][name], atol=1e-5)


def test_search_with_segmented_gradients_computes_the_same(tmp_path):
    config = tiny_config(epochs=1, iterations_per_epoch=2)
    whole = run_search(config, tmp_path / "whole")
    segmented = run_search(
        dataclasses.replace(config, segmented_gradients=True), tmp_path / "segmented"
    )
    _, meta_whole = load_genotype_with_metadata(whole.genotype_path)
    _, meta_seg = load_genotype_with_metadata(segmented.genotype_path)
    settings = json.loads((tmp_path / "segmented" / "run.json").read_text())["settings"]
    assert settings["segmented_gradients"] is True
    for name in meta_whole["alpha"]:
        np.testing.assert_allclose(meta_seg["alpha"][name], meta_whole["alpha"][name], atol=1e-5)


def test_a_search_prints_and_records_its_plan(tmp_path, capsys):
    config = tiny_config(method="first_order", epochs=1, iterations_per_epoch=1)
    run_search(config, tmp_path)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("plan: "))
    # Tiny feature maps: wide edges on a CPU; the rest TensorFlow's defaults.
    assert "graph optimizer on (auto)" in line and "gradients whole-network (auto)" in line
    plan = json.loads((tmp_path / "run.json").read_text())["settings"]["plan"]
    assert plan["graph_optimizer"] is True and plan["segmented_gradients"] is False
    assert set(plan["chosen"]) >= {"graph_optimizer", "constant_folding", "segmented_gradients"}


def test_a_workdir_written_before_the_plan_resumes(tmp_path):
    # The settings as a search recorded them before they were chosen by the plan.
    before = dict(graph_optimizer=True, constant_folding=True, segmented_gradients=False)
    config = tiny_config(method="first_order", epochs=1, iterations_per_epoch=2)
    run_search(dataclasses.replace(config, **before), tmp_path, stop_after=1)
    result = run_search(config, tmp_path)
    assert result.genotype_path is not None
    record = json.loads((tmp_path / "run.json").read_text())
    changed = record["starts"][-1]["changed"]
    assert changed["graph_optimizer"] == [True, None]
    assert changed["segmented_gradients"] == [False, None]
