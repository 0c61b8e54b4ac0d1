"""keras-tuner tuning of the search, and the random-search baseline (il_tf.tuning, tools/tune.py)."""

from __future__ import annotations

import collections
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import keras_tuner
import pytest

from il_tf.learning.search import SearchError, SearchResult
from il_tf.nb201_lookup import NB201_ACCURACY_FIELDS, NB201Table
from il_tf.rundir import RunDirError
from il_tf.spaces.genotypes import (
    GENOTYPE_OPS,
    Genotype,
    get_published,
    load_genotype,
    load_genotype_with_metadata,
    save_genotype,
)
from il_tf.spaces.nb201_genotype import NB201_EDGES, NB201_OPS, NB201Genotype, all_nb201_genotypes
from il_tf.tuning import (
    SUMMARY_FILE,
    TRIAL_RECORD,
    RandomDartsHyperModel,
    RandomNB201HyperModel,
    TuneConfig,
    TuningError,
    darts_input_pairs,
    run_tuning,
)
from il_tf.tuning import tuner as tuner_lib

from .conftest import PROJECT_ROOT
from .learning.test_search import digits_learner, tiny_config

SEARCH_SPACE = {
    "proximity": {"min": 1e-4, "max": 1e-1, "sampling": "log"},
    "arch_lr": {"min": 3e-4, "max": 3e-2, "sampling": "log"},
}


def trial_dirs(project: Path) -> list[str]:
    return sorted(p.name for p in project.glob("trial_*"))


# ------------------------------------------------------------------------------ real searches
@pytest.fixture(scope="module")
def search_tuning(tmp_path_factory):
    """Two trials of a tiny interleaved search on the embedded digits, tuning λ and arch_lr."""
    project = tmp_path_factory.mktemp("tune_search") / "project"
    config = TuneConfig(
        mode="search",
        objective="search_val_accuracy",
        max_trials=2,
        seed=0,
        hyperparameters=SEARCH_SPACE,
        search=tiny_config(
            learners=(digits_learner("low", [0, 1, 2]),),
            method="first_order",
            epochs=1,
            iterations_per_epoch=2,
        ),
        verbose=0,
    )
    return config, project, run_tuning(config, project, config_text="# test\n")


def test_two_trial_tuning_records_objectives_and_genotypes(search_tuning):
    config, project, result = search_tuning
    assert result.trials_run == 2
    assert [t.status for t in result.trials] == ["COMPLETED", "COMPLETED"]
    assert result.trials[0].hyperparameters != result.trials[1].hyperparameters
    for t in result.trials:
        assert set(t.hyperparameters) == {"proximity", "arch_lr"}
        assert 1e-4 <= t.hyperparameters["proximity"] <= 1e-1
        # The trial's own search workdir, genotype and metrics.
        path = Path(t.genotype_path)
        assert path == project / f"trial_{t.trial_id}" / "search" / "genotype.json"
        genotype, meta = load_genotype_with_metadata(path)
        assert isinstance(genotype, Genotype)
        assert genotype.to_json_dict() == t.genotype
        accuracies = [m["val_accuracy"] for m in meta["metrics"].values()]
        assert t.value == pytest.approx(100 * sum(accuracies) / len(accuracies))
        # keras-tuner's trial record holds the objective, il_tf's the genotype.
        kt = json.loads((project / f"trial_{t.trial_id}" / "trial.json").read_text())
        assert kt["status"] == "COMPLETED"
        assert kt["score"] == pytest.approx(t.value)
        assert kt["hyperparameters"]["values"]["proximity"] == t.hyperparameters["proximity"]
        own = json.loads((project / f"trial_{t.trial_id}" / TRIAL_RECORD).read_text())
        assert own["value"] == pytest.approx(t.value)
        assert own["genotype"] == genotype.to_json_dict()
        assert (path.parent / "checkpoints" / "checkpoint").is_file()
    best = max(result.trials, key=lambda t: t.value)
    assert result.best.trial_id == best.trial_id
    summary = json.loads((project / SUMMARY_FILE).read_text())
    assert summary["best_trial"] == best.trial_id
    assert summary["best_genotype_path"] == best.genotype_path
    assert (project / "config.gin").read_text() == "# test\n"
    table = result.table()
    assert "proximity" in table and "search_val_accuracy" in table
    assert f"best trial {best.trial_id}" in result.report()


def test_finished_tuning_runs_no_new_trials(search_tuning):
    config, project, first = search_tuning
    before = trial_dirs(project)
    again = run_tuning(config, project)
    assert again.trials_run == 0
    assert trial_dirs(project) == before
    assert again.best.trial_id == first.best.trial_id
    assert [t.value for t in again.trials] == [t.value for t in first.trials]


def test_other_settings_in_the_project_are_refused(search_tuning):
    config, project, _ = search_tuning
    other = TuneConfig(
        mode="search",
        max_trials=2,
        hyperparameters={"proximity": [0.1, 0.01]},
        search=config.search,
    )
    before = (project / "run.json").read_bytes()
    with pytest.raises(RunDirError, match="other settings: hyperparameters"):
        run_tuning(other, project)
    assert (project / "run.json").read_bytes() == before


# ------------------------------------------------------------------------------ fake searches
def fake_search(calls, fail=None, interrupt_at=None):
    """A stand-in for run_search: records its calls, scores λ, writes a genotype."""

    def run(config, workdir, strategy=None, stop_after=None):
        calls.append({"workdir": Path(workdir), "config": config})
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        if fail is not None:
            raise fail
        genotype = get_published("DARTS_V2")
        path = save_genotype(Path(workdir) / "genotype.json", genotype, {"seed": config.seed})
        metrics = {
            "learners": {
                "a": {"val_accuracy": 1 - config.proximity, "val_loss": config.proximity},
                "b": {"val_accuracy": 0.5, "val_loss": 1.0},
            }
        }
        return SearchResult(genotype, Path(workdir), path, metrics)

    return run


def fake_config(**overrides):
    settings = dict(
        mode="search",
        max_trials=3,
        hyperparameters={
            "proximity": {"min": 0.0, "max": 0.5},
            "rounds": [1, 2],
            "arch_lr": [1e-3, 1e-2],
        },
        search=tiny_config(epochs=4),
        verbose=0,
    )
    settings.update(overrides)
    return TuneConfig(**settings)


def test_interrupted_tuning_resumes_the_unfinished_trial(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tuner_lib, "run_search", fake_search(calls, interrupt_at=2))
    config = fake_config()
    with pytest.raises(KeyboardInterrupt):
        run_tuning(config, tmp_path / "p")
    assert len(calls) == 2
    result = run_tuning(config, tmp_path / "p")
    # The interrupted trial ran again in its own workdir with the same settings.
    assert calls[2]["workdir"] == calls[1]["workdir"]
    assert calls[2]["config"] == calls[1]["config"]
    assert len(calls) == 4 and result.trials_run == 2
    assert [t.status for t in result.trials] == ["COMPLETED"] * 3
    for t in result.trials:
        assert t.value == pytest.approx(100 * (1 - t.hyperparameters["proximity"] + 0.5) / 2)
        assert t.hyperparameters["rounds"] in (1, 2)
    # The drawn values are the searches' settings.
    for t, c in zip(result.trials, [calls[0], calls[2], calls[3]], strict=True):
        assert c["config"].proximity == t.hyperparameters["proximity"]
        assert c["config"].rounds == t.hyperparameters["rounds"]
        assert c["config"].optimizers.arch_lr == t.hyperparameters["arch_lr"]
        assert (
            c["config"].epochs == 4
            and c["workdir"] == tmp_path / "p" / f"trial_{t.trial_id}" / "search"
        )


def test_raising_max_trials_extends_a_finished_tuning(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tuner_lib, "run_search", fake_search(calls))
    run_tuning(fake_config(max_trials=2), tmp_path / "p")
    result = run_tuning(fake_config(max_trials=3), tmp_path / "p")
    assert result.trials_run == 1 and len(result.trials) == 3 and len(calls) == 3


def test_overwrite_starts_the_project_anew(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tuner_lib, "run_search", fake_search(calls))
    run_tuning(fake_config(max_trials=2), tmp_path / "p")
    result = run_tuning(fake_config(max_trials=1, seed=5), tmp_path / "p", overwrite=True)
    assert result.trials_run == 1 and len(result.trials) == 1
    record = json.loads((tmp_path / "p" / "run.json").read_text())
    assert len(record["starts"]) == 1 and record["settings"]["seed"] == 5


def test_a_project_of_an_older_version_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(tuner_lib, "run_search", fake_search([]))
    project = tmp_path / "p"
    project.mkdir()
    fingerprint = fake_config(seed=1).fingerprint()
    (project / "tuning.json").write_text(json.dumps({"fingerprint": fingerprint}))
    with pytest.raises(RunDirError, match="seed 1 -> 2"):
        run_tuning(fake_config(seed=2), project)
    assert sorted(p.name for p in project.iterdir()) == ["tuning.json"]


@pytest.mark.parametrize("oracle", ["bayesian", "grid", "hyperband"])
def test_other_oracles(tmp_path, monkeypatch, oracle):
    calls = []
    monkeypatch.setattr(tuner_lib, "run_search", fake_search(calls))
    space = {"proximity": {"min": 0.0, "max": 0.5, "step": 0.25}, "rounds": [1, 2]}
    options = {"max_epochs": 4, "factor": 2} if oracle == "hyperband" else {}
    config = fake_config(oracle=oracle, hyperparameters=space, oracle_options=options)
    result = run_tuning(config, tmp_path / "p")
    assert result.best is not None and all(t.status == "COMPLETED" for t in result.trials)
    if oracle == "hyperband":
        # The budget is the search's epochs.
        budgets = [t.budget_epochs for t in result.trials]
        assert set(budgets) > {4} and min(budgets) >= 1
        assert sorted(c["config"].epochs for c in calls) == sorted(budgets)
    else:
        assert all(c["config"].epochs == 4 for c in calls)


def test_failed_trials_are_reported(tmp_path, monkeypatch):
    calls = []
    failure = SearchError("non-finite loss at iteration 3")
    monkeypatch.setattr(tuner_lib, "run_search", fake_search(calls, fail=failure))
    with pytest.raises(TuningError, match="no trial completed.*non-finite loss at iteration 3"):
        run_tuning(fake_config(max_trials=2), tmp_path / "p")
    record = json.loads((tmp_path / "p" / "trial_0" / TRIAL_RECORD).read_text())
    assert record["status"] == "FAILED" and "non-finite" in record["error"]
    with pytest.raises(TuningError, match="3 consecutive failed trials"):
        run_tuning(fake_config(max_trials=5), tmp_path / "q")


# ------------------------------------------------------------------------------ random cells
def sample(hypermodel, n: int, seed: int = 1):
    """``n`` candidates drawn by keras-tuner's random oracle."""
    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=n, seed=seed)
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    oracle.update_space(hp)
    out = []
    for i in range(n):
        hp = oracle.get_space()
        hp.values = oracle.populate_space(str(i))["values"]
        out.append(hypermodel.build(hp))
    return out


def test_random_darts_genotypes_are_valid_and_cover_every_op():
    genotypes = sample(RandomDartsHyperModel(), 400)
    counts = {cell: collections.Counter() for cell in ("normal", "reduce")}
    pairs = collections.Counter()
    for g in genotypes:
        assert isinstance(g, Genotype)
        g.validate()
        assert g.steps == 4 and g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
        for cell in counts:
            edges = getattr(g, cell)
            for node in range(4):
                (op_a, a), (op_b, b) = edges[2 * node], edges[2 * node + 1]
                assert 0 <= a < b < node + 2  # 2 distinct predecessors
                counts[cell].update([op_a, op_b])
            pairs[(edges[6][1], edges[7][1])] += 1
    for cell, counter in counts.items():
        assert set(counter) == set(GENOTYPE_OPS), cell  # never 'none', every other op
        # Uniform: 400 x 8 edges over 7 ops, about 457 each.
        assert min(counter.values()) > 350 and max(counter.values()) < 570, counter
    assert len(pairs) == len(darts_input_pairs(3)) == 10
    assert len({repr(g) for g in genotypes}) == len(genotypes)


def test_random_nb201_cells_cover_every_op_on_every_edge():
    cells = sample(RandomNB201HyperModel(), 300)
    for edge in range(len(NB201_EDGES)):
        counter = collections.Counter(c.ops[edge] for c in cells)
        assert set(counter) == set(NB201_OPS), edge
        assert min(counter.values()) > 30, counter  # about 60 each
    assert all(isinstance(c, NB201Genotype) for c in cells)


def test_random_darts_ops_subset():
    ops = ("skip_connect", "sep_conv_3x3")
    genotypes = sample(RandomDartsHyperModel(ops=ops, steps=2), 30)
    assert {op for g in genotypes for op, _ in g.normal + g.reduce} == set(ops)
    assert all(g.steps == 2 for g in genotypes)


@pytest.fixture(scope="module")
def synthetic_table(tmp_path_factory) -> Path:
    """A complete NAS-Bench-201-format table with made-up accuracies (always available)."""
    records = {}
    for i, g in enumerate(all_nb201_genotypes()):
        score = 10.0 + 10 * g.ops.count("nor_conv_3x3") + (i % 7) / 10
        rec = {f: score + k for k, f in enumerate(NB201_ACCURACY_FIELDS)}
        records[g.to_arch_string()] = {**rec, "params_m": 1.0, "flops_m": 100.0}
    path = tmp_path_factory.mktemp("nb201") / "table.json.gz"
    path.write_bytes(gzip.compress(json.dumps(records).encode()))
    return path


def nb201_config(table, **overrides):
    settings = dict(
        mode="random",
        space="nb201",
        objective="nb201_cifar10_valid",
        nb201_table=str(table),
        max_trials=8,
        seed=4,
        verbose=0,
    )
    settings.update(overrides)
    return TuneConfig(**settings)


def test_random_nb201_is_reproducible(tmp_path, synthetic_table):
    first = run_tuning(nb201_config(synthetic_table), tmp_path / "a")
    second = run_tuning(nb201_config(synthetic_table), tmp_path / "b")
    archs = [t.genotype["arch"] for t in first.trials]
    assert archs == [t.genotype["arch"] for t in second.trials]
    assert len(set(archs)) == 8
    other = run_tuning(nb201_config(synthetic_table, seed=5), tmp_path / "c")
    assert archs != [t.genotype["arch"] for t in other.trials]


def test_random_nb201_reports_looked_up_accuracies(tmp_path, nb201_table_path):
    table = NB201Table.load(nb201_table_path)
    result = run_tuning(nb201_config(nb201_table_path, max_trials=6), tmp_path / "p")
    assert len(result.trials) == 6 and result.trials_run == 6
    for t in result.trials:
        lookup = table.lookup(t.genotype["arch"])
        for field in NB201_ACCURACY_FIELDS:
            assert t.metrics[f"nb201_{field}"] == pytest.approx(getattr(lookup, field))
        assert t.value == pytest.approx(lookup.cifar10_valid)
        genotype = load_genotype(t.genotype_path)
        assert isinstance(genotype, NB201Genotype) and genotype.to_arch_string() == lookup.arch
    assert result.best.value == max(t.value for t in result.trials)


# ------------------------------------------------------------------------------ bad settings
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"objective": "accuracy"}, "unknown TuneConfig.objective 'accuracy'"),
        ({"oracle": "evolution"}, "unknown TuneConfig.oracle 'evolution'"),
        ({"mode": "grid"}, "unknown TuneConfig.mode"),
        ({"objective": "nb201_cifar10_test"}, "needs a NAS-Bench-201 table: set"),
        (
            {"objective": "nb201_cifar10_test", "nb201_table": "/nonexistent/t.json.gz"},
            "TuneConfig.nb201_table '/nonexistent/t.json.gz' is not a file",
        ),
        ({"objective": "train_test_top1"}, "set TuneConfig.train_learner"),
        (
            {
                "objective": "train_best_top1",
                "train_learner": digits_learner("t", [0, 1], val_fraction=0.0),
            },
            "holds out no validation data",
        ),
        ({"hyperparameters": {"lambda": [0.1]}}, "unknown setting 'lambda'"),
        ({"hyperparameters": {"method": ["first_order", "magic"]}}, "value 'magic' makes an"),
        ({"hyperparameters": {"rounds": {"min": 3, "max": 1}}}, r"hyperparameters\['rounds'\]"),
        ({"hyperparameters": {}}, "TuneConfig.hyperparameters is empty"),
        ({"max_trials": 0}, "TuneConfig.max_trials must be an int >= 1"),
        ({"mode": "random"}, "TuneConfig.hyperparameters is for mode 'search'"),
        ({"mode": "random", "hyperparameters": None}, "'search_val_accuracy' needs mode 'search'"),
        ({"hyperparameters": {"seed": [0, "a"]}}, "only one type of value"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    settings = dict(mode="search", hyperparameters={"proximity": [0.1]}, search=tiny_config())
    settings.update(overrides)
    with pytest.raises(ValueError, match=message):
        TuneConfig(**settings)


def test_bad_random_settings(synthetic_table):
    with pytest.raises(ValueError, match="unknown TuneConfig.space 'nasbench'"):
        nb201_config(synthetic_table, space="nasbench")
    with pytest.raises(ValueError, match="needs NAS-Bench-201 cells"):
        nb201_config(synthetic_table, space="darts")
    with pytest.raises(ValueError, match="does not apply to the nb201 space"):
        nb201_config(synthetic_table, objective="train_test_top1")
    with pytest.raises(ValueError, match="TuneConfig.darts_ops"):
        nb201_config(
            synthetic_table, space="darts", objective="train_test_top1", darts_ops=["none"]
        )
    with pytest.raises(ValueError, match="'hyperband' needs a budget"):
        nb201_config(synthetic_table, oracle="hyperband")


def test_bad_oracle_options(tmp_path, synthetic_table):
    config = nb201_config(synthetic_table, oracle_options={"population": 10})
    with pytest.raises(ValueError, match="oracle_options .* do not fit the 'random' oracle"):
        run_tuning(config, tmp_path / "p")


# ------------------------------------------------------------------------------ the tool
def run_tool(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / "tune.py"), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_tool_random_nb201(tmp_path, synthetic_table):
    args = [
        "--gin_file=gin_configs/tune/random_nb201.gin",
        f"--project_dir={tmp_path / 'p'}",
        f"--gin_bindings=TuneConfig.nb201_table = '{synthetic_table}'",
        "--gin_bindings=TuneConfig.max_trials = 6",
    ]
    first = run_tool(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "(6 run by this call)" in first.stdout and "best trial" in first.stdout
    summary = json.loads((tmp_path / "p" / SUMMARY_FILE).read_text())
    assert len(summary["trials"]) == 6
    assert Path(summary["best_genotype_path"]).is_file()
    missing = run_tool(*args[:2], "--gin_bindings=TuneConfig.nb201_table = '/nonexistent.gz'")
    assert missing.returncode == 1
    assert "error: TuneConfig.nb201_table '/nonexistent.gz' is not a file" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_tool_random_darts_trains_the_sampled_cells(tmp_path):
    project = tmp_path / "p"
    result = run_tool(
        "--gin_file=gin_configs/tune/random_darts_quickstart.gin",
        f"--project_dir={project}",
        "--gin_bindings=TuneConfig.max_trials = 1",
        "--gin_bindings=train/Learner.image_size = 8",
        "--gin_bindings=NetworkConfig.channels = 4",
        "--gin_bindings=NetworkConfig.layers = 2",
        "--gin_bindings=TrainConfig.epochs = 1",
        "--gin_bindings=TrainConfig.steps_per_epoch = 2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((project / "trial_0" / TRIAL_RECORD).read_text())
    results = json.loads((project / "trial_0" / "train" / "results.json").read_text())
    assert record["status"] == "COMPLETED"
    assert record["value"] == pytest.approx(results["best"]["top1"])
    assert record["metrics"]["train_test_top1"] == pytest.approx(results["test_top1"])
    assert results["genotype"] == record["genotype"]
    assert load_genotype(project / "trial_0" / "genotype.json").to_json_dict() == record["genotype"]
    assert "best trial 0: train_best_top1" in result.stdout


# ------------------------------------------------------------------------------ the configs
CONFIGS = sorted((PROJECT_ROOT / "gin_configs" / "tune").glob("*.gin"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_configs_begin_with_their_command_and_build(path, synthetic_table):
    import gin

    from il_tf import cli

    first = path.read_text().splitlines()[0]
    assert first.startswith(
        f"# python tools/tune.py --gin_file=gin_configs/tune/{path.name} --project_dir="
    )
    gin.clear_config()
    try:
        cli.parse_gin([str(path)], [f"TuneConfig.nb201_table = '{synthetic_table}'"])
        config = cli.configured(TuneConfig)
    finally:
        gin.clear_config()
    assert config.max_trials >= 2
    if config.mode == "search":
        assert len(config.hyperparameter_specs) == 2 and config.search.epochs <= 2
    elif config.space == "darts":
        assert config.objective.startswith("train_") and config.train.epochs <= 5


@pytest.mark.slow
def test_search_quickstart_as_documented(tmp_path):
    """The search quickstart exactly as its first line runs it (a few minutes)."""
    result = run_tool(
        "--gin_file=gin_configs/tune/search_quickstart.gin", f"--project_dir={tmp_path / 'p'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "p" / SUMMARY_FILE).read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    assert Path(summary["best_genotype_path"]).is_file()
