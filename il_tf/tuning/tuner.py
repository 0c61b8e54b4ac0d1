"""The keras-tuner ``Tuner`` of il_tf: each trial runs a search (or samples a cell) and scores it.

``run_tuning(config, project_dir)`` is the whole thing: it builds an :class:`ILTuner` over
keras-tuner's project directory, runs (or resumes) the trials and returns a
:class:`TuningResult`. The project directory holds keras-tuner's own state
(``oracle.json``, ``tuner0.json``, ``trial_<id>/trial.json``) and, per trial, il_tf's::

    PROJECT_DIR/
      config.gin  tuning.json  summary.json
      trial_<id>/
        trial.json          keras-tuner: hyperparameters, metrics, status, error message
        il_tf_trial.json    il_tf: objective, metrics, genotype, paths, hyperparameters
        search/             mode 'search': the search's workdir (genotype.json, checkpoints, ...)
        genotype.json       mode 'random': the sampled cell
        train/              train_* objectives: the training run (results.json, ...)

Interrupted, it resumes from that directory: keras-tuner hands the unfinished trial out again
with the same hyperparameters, and its search or training continues from its checkpoints.
Started again after the last trial, it runs nothing new and reports the summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner
from absl import logging
from keras_tuner import errors as kt_errors

from il_tf import legacy, rundir
from il_tf.learning.search import SearchError, run_search
from il_tf.nb201_lookup import NB201_ACCURACY_FIELDS, NB201ArchNotFoundError, NB201Table
from il_tf.spaces.genotypes import Genotype, save_genotype
from il_tf.spaces.nb201_genotype import NB201Genotype
from il_tf.training.loop import train_and_evaluate
from il_tf.tuning.config import TuneConfig
from il_tf.tuning.hypermodels import (
    TUNER_PREFIX,
    RandomDartsHyperModel,
    RandomNB201HyperModel,
    SearchHyperModel,
    tuned_values,
)

TRIAL_RECORD = "il_tf_trial.json"
SUMMARY_FILE = "summary.json"
KIND = "tune"
BUDGET = TUNER_PREFIX + "epochs"  # Hyperband's budget hyperparameter


class TuningError(RuntimeError):
    """A tuning cannot finish (every trial failed)."""


# ------------------------------------------------------------------------------ construction
def make_hypermodel(config: TuneConfig) -> keras_tuner.HyperModel:
    """The hypermodel of ``config``'s mode (and space)."""
    if config.mode == "search":
        return SearchHyperModel(config.search, config.hyperparameter_specs)
    if config.space == "nb201":
        return RandomNB201HyperModel()
    return RandomDartsHyperModel(config.darts_ops, config.darts_steps)


def make_oracle(config: TuneConfig) -> keras_tuner.Oracle:
    """The keras-tuner oracle named by ``config.oracle``, maximizing ``config.objective``."""
    options = dict(config.oracle_options)
    common = {
        "objective": keras_tuner.Objective(config.objective, direction="max"),
        # keras-tuner takes seed 0 for "no seed" (``seed or random.randint(...)``).
        "seed": config.seed + 1,
        "max_retries_per_trial": config.max_retries_per_trial,
        "max_consecutive_failed_trials": config.max_consecutive_failed_trials,
    }
    oracles = keras_tuner.oracles
    if config.oracle == "hyperband":
        budget = config.search.epochs if config.mode == "search" else config.train.epochs
        options.setdefault("max_epochs", budget)
        factory, kwargs = oracles.HyperbandOracle, {**common, **options}
    else:
        factory = {
            "random": oracles.RandomSearchOracle,
            "bayesian": oracles.BayesianOptimizationOracle,
            "grid": oracles.GridSearchOracle,
        }[config.oracle]
        kwargs = {**common, "max_trials": config.max_trials, **options}
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(
            f"TuneConfig.oracle_options {options} do not fit the {config.oracle!r} oracle "
            f"({factory.__name__}): {e}"
        ) from None


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    rundir.write_json(path, record, default=repr)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# ------------------------------------------------------------------------------ the tuner
class ILTuner(keras_tuner.Tuner):
    """A keras-tuner ``Tuner`` whose trial is a whole il_tf search or a random cell.

    ``run_trial`` builds the trial's candidate with the hypermodel (a ``SearchConfig`` or a
    genotype), runs the search in the trial's directory when there is one, scores the cell
    (``config.objective``) and returns the metrics; keras-tuner's oracle maximizes the
    objective. Use :func:`run_tuning` unless you need the tuner itself: it also locks the
    project directory and checks a resumed project's settings.
    """

    def __init__(self, config: TuneConfig, project_dir: str | Path, overwrite: bool = False):
        if not isinstance(config, TuneConfig):
            raise ValueError(f"config must be a TuneConfig, got {config!r}")
        self.config = config
        self.trials_run = 0
        # Searches and trainings build TensorFlow models; table look-ups do not.
        self._builds_networks = config.mode == "search" or config.objective.startswith("train_")
        project_dir = Path(project_dir).absolute()
        self.table = NB201Table.load(config.nb201_table) if config.nb201_table else None
        super().__init__(
            oracle=make_oracle(config),
            hypermodel=make_hypermodel(config),
            directory=str(project_dir.parent),
            project_name=project_dir.name,
            overwrite=overwrite,
        )
        self.path = project_dir

    # -- keras-tuner hooks ------------------------------------------------------------------
    def on_trial_begin(self, trial) -> None:
        super().on_trial_begin(trial)
        # Saved now (keras-tuner saves the tuner only at trial ends), so that a tuning
        # interrupted in its first trial reloads it, and resumes it, on the next start.
        self.save()
        if not self.config.verbose and self._builds_networks:
            values = tuned_values(trial.hyperparameters.values)
            shown = values if self.config.mode == "search" else ""
            print(f"trial {trial.trial_id}: started {shown}".rstrip(), flush=True)

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        trial = self.oracle.get_trial(trial.trial_id)
        objective = self.config.objective
        if trial.status == "COMPLETED":
            print(f"trial {trial.trial_id}: {objective} = {trial.score:.2f}", flush=True)
        else:
            print(
                f"trial {trial.trial_id}: {trial.status}: {_last_line(trial.message)}",
                flush=True,
            )

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Runs one trial; returns its metrics (the objective among them)."""
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        self.trials_run += 1
        try:
            return self._run_trial(trial, trial_dir)
        except kt_errors.FatalError:
            raise
        except (ValueError, SearchError, NB201ArchNotFoundError) as e:
            # This trial's settings or results are bad (an invalid combination of values,
            # a non-finite loss, a cell missing from the table): record it, go on.
            message = f"trial {trial.trial_id} failed: {e}"
            logging.error("%s", message)
            print(message, file=sys.stderr, flush=True)
            self._write_record(trial, trial_dir, status="FAILED", error=str(e))
            raise kt_errors.FailedTrialError(message) from e
        except Exception as e:
            # Anything else is shown in full (keras-tuner would only keep it in trial.json).
            traceback.print_exc()
            self._write_record(trial, trial_dir, status="INVALID", error=repr(e))
            raise

    # -- the trial ----------------------------------------------------------------------
    def _run_trial(self, trial, trial_dir: Path) -> dict[str, float]:
        config = self.config
        hp = trial.hyperparameters
        budget = hp.values.get(BUDGET)
        started = time.time()
        if self._builds_networks:
            # As keras-tuner does between models: drop the last trial's graphs and layers
            # (clear_session also runs the garbage collector).
            keras.backend.clear_session()
        candidate = self.hypermodel.build(hp)
        metrics: dict[str, float] = {}
        record: dict[str, Any] = {}
        if config.mode == "search":
            search = candidate
            if budget is not None:
                search = dataclasses.replace(search, epochs=int(budget))
            result = run_search(search, trial_dir / "search")
            genotype = result.genotype
            genotype_path = result.genotype_path
            learners = result.metrics.get("learners", {})
            metrics["search_val_accuracy"] = 100 * _mean(
                [e["val_accuracy"] for e in learners.values()]
            )
            metrics["search_val_loss"] = _mean([e["val_loss"] for e in learners.values()])
            record["search"] = {"workdir": str(result.workdir), "learners": learners}
        else:
            genotype = candidate
            genotype_path = save_genotype(
                trial_dir / "genotype.json",
                genotype,
                {
                    "source": f"random sample ({config.space} space), keras-tuner trial "
                    f"{trial.trial_id}",
                    "hyperparameters": tuned_values(hp.values),
                },
            )
        metrics.update(self._score(genotype, trial_dir, budget))
        objective = metrics.get(config.objective)
        if objective is None or not math.isfinite(objective):
            raise ValueError(f"objective {config.objective} is {objective!r}")
        metrics["trial_seconds"] = time.time() - started
        self._write_record(
            trial,
            trial_dir,
            status="COMPLETED",
            metrics=metrics,
            genotype=genotype,
            genotype_path=genotype_path,
            extra=record,
        )
        return metrics

    def _score(self, genotype, trial_dir: Path, budget) -> dict[str, float]:
        config = self.config
        metrics: dict[str, float] = {}
        if config.objective.startswith("nb201_") and not isinstance(genotype, NB201Genotype):
            raise kt_errors.FatalValueError(
                f"TuneConfig.objective {config.objective!r} needs NAS-Bench-201 cells, but the "
                f"search found a {getattr(genotype, 'space', type(genotype).__name__)!r} "
                "genotype: search with SearchConfig.supernet = @nb201_supernet"
            )
        if self.table is not None and isinstance(genotype, NB201Genotype):
            lookup = self.table.lookup(genotype)
            for field in NB201_ACCURACY_FIELDS:
                metrics[f"nb201_{field}"] = float(getattr(lookup, field))
        if config.objective.startswith("train_"):
            if not isinstance(genotype, Genotype):
                raise kt_errors.FatalValueError(
                    f"TuneConfig.objective {config.objective!r} trains DARTS-space networks, "
                    f"but the search found a {getattr(genotype, 'space', '?')!r} genotype; "
                    "use an nb201_* objective for NAS-Bench-201 cells"
                )
            train = config.train
            if budget is not None and config.mode == "random":
                train = dataclasses.replace(train, epochs=int(budget))
            results = train_and_evaluate(
                trial_dir / "train",
                genotype,
                learner=config.train_learner,
                network=config.network,
                config=train,
            )
            metrics["train_test_top1"] = float(results["test_top1"])
            metrics["train_test_top5"] = float(results["test_top5"])
            metrics["params_m"] = float(results["params_m"])
            metrics["macs_m"] = float(results["macs_m"])
            best = results.get("best")
            if best and "top1" in best:
                metrics["train_best_top1"] = float(best["top1"])
        return metrics

    def _write_record(
        self,
        trial,
        trial_dir: Path,
        status: str,
        metrics: Mapping[str, float] | None = None,
        genotype=None,
        genotype_path: Path | None = None,
        extra: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        values = trial.hyperparameters.values
        record: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "status": status,
            "mode": self.config.mode,
            "objective": self.config.objective,
            "value": None if metrics is None else metrics.get(self.config.objective),
            "hyperparameters": tuned_values(values),
            "budget_epochs": values.get(BUDGET),
            "metrics": dict(metrics or {}),
            "genotype": None if genotype is None else genotype.to_json_dict(),
            "genotype_path": None if genotype_path is None else str(genotype_path),
            "error": error,
            **dict(extra or {}),
        }
        _write_json(trial_dir / TRIAL_RECORD, record)

    # -- results ------------------------------------------------------------------------
    def summary(self) -> TuningResult:
        """Every trial of the project so far (from keras-tuner's oracle and il_tf's records)."""
        records = []
        for trial_id in self.oracle.start_order:
            trial = self.oracle.trials[trial_id]
            path = Path(self.get_trial_dir(trial_id)) / TRIAL_RECORD
            own = json.loads(path.read_text()) if path.is_file() else {}
            completed = trial.status == "COMPLETED"
            metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
            records.append(
                TrialRecord(
                    trial_id=trial_id,
                    status=trial.status,
                    value=float(trial.score) if completed and trial.score is not None else None,
                    hyperparameters=tuned_values(trial.hyperparameters.values),
                    budget_epochs=trial.hyperparameters.values.get(BUDGET),
                    metrics=metrics,
                    genotype=own.get("genotype") if completed else None,
                    genotype_path=own.get("genotype_path") if completed else None,
                    workdir=str(path.parent),
                    message=None if completed else _last_line(trial.message),
                )
            )
        best = None
        completed = [r for r in records if r.value is not None]
        if completed:
            # The highest objective; on ties the earliest trial, so that the answer
            # does not depend on the oracle's (unordered) reload of its trials.
            best = min(completed, key=lambda r: (-r.value, int(r.trial_id)))
        return TuningResult(
            project_dir=self.path,
            objective=self.config.objective,
            mode=self.config.mode,
            trials=tuple(records),
            best=best,
            trials_run=self.trials_run,
        )


# ------------------------------------------------------------------------------ results
@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the summary shows it."""

    trial_id: str
    status: str  # keras-tuner's: COMPLETED, FAILED, INVALID, RUNNING, ...
    value: float | None  # the objective (None unless COMPLETED)
    hyperparameters: dict[str, Any]
    budget_epochs: int | None
    metrics: dict[str, float]
    genotype: dict[str, Any] | None
    genotype_path: str | None
    workdir: str
    message: str | None  # last line of the error of a failed trial

    def genotype_text(self, project_dir: Path) -> str:
        if self.genotype and "arch" in self.genotype:
            return self.genotype["arch"]
        if self.genotype_path:
            try:
                return str(Path(self.genotype_path).relative_to(project_dir))
            except ValueError:
                return self.genotype_path
        return "-"


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """The trials of a tuning project, its best trial and how many trials this call ran."""

    project_dir: Path
    objective: str
    mode: str
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    trials_run: int

    def to_json(self) -> dict[str, Any]:
        return {
            "project_dir": str(self.project_dir),
            "objective": self.objective,
            "mode": self.mode,
            "best_trial": None if self.best is None else self.best.trial_id,
            "best_value": None if self.best is None else self.best.value,
            "best_genotype_path": None if self.best is None else self.best.genotype_path,
            "trials": [dataclasses.asdict(t) for t in self.trials],
        }

    def table(self) -> str:
        """A text table of the trials (hyperparameters in mode 'search', cells otherwise)."""
        hp_names: list[str] = []
        if self.mode == "search":
            for t in self.trials:
                hp_names += [k for k in t.hyperparameters if k not in hp_names]
        secondary = [
            m
            for m in ("search_val_accuracy", "train_test_top1", "nb201_cifar10_test")
            if m != self.objective and any(m in t.metrics for t in self.trials)
        ]
        budget = any(t.budget_epochs is not None for t in self.trials)
        header = ["trial", "status", self.objective, *secondary, *hp_names]
        header += ["epochs"] if budget else []
        header += ["seconds", "genotype"]
        rows = []
        for t in self.trials:
            mark = "*" if self.best is not None and t.trial_id == self.best.trial_id else ""
            row = [t.trial_id + mark, t.status, _fmt(t.value, ".2f")]
            row += [_fmt(t.metrics.get(m), ".2f") for m in secondary]
            row += [_fmt(t.hyperparameters.get(k)) for k in hp_names]
            row += [str(t.budget_epochs)] if budget else []
            row += [_fmt(t.metrics.get("trial_seconds"), ".0f")]
            row += [t.genotype_text(self.project_dir) if t.value is not None else t.message or "-"]
            rows.append(row)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def report(self) -> str:
        """The table and the best trial, as the tool prints them."""
        lines = [
            f"trials of {self.project_dir} ({self.trials_run} run by this call):",
            self.table(),
        ]
        if self.best is None:
            lines.append("no trial completed")
        else:
            lines.append(
                f"best trial {self.best.trial_id}: {self.objective} = {self.best.value:.2f}"
            )
            lines.append(f"genotype: {self.best.genotype_path}")
            lines.append(f"trial directory: {self.best.workdir}")
        return "\n".join(lines)


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


# ------------------------------------------------------------------------------ entry point
def run_tuning(
    config: TuneConfig,
    project_dir: str | Path,
    overwrite: bool = False,
    config_text: str | None = None,
) -> TuningResult:
    """Runs (or resumes) the tuning described by ``config`` in ``project_dir``.

    The project directory is a run directory (``il_tf.rundir``): locked while the tuning
    runs, its settings in ``run.json`` (a resumed project must have the same ones, except
    ``max_trials`` and the other settings that do not change a trial), ``config_text``
    (the gin config) in ``config.gin``. ``overwrite`` deletes an existing project first.
    Raises :class:`TuningError` when no trial has completed, and ValueError for bad
    settings (``rundir.RunDirError`` for a project in use, with other settings, or not
    writable).
    """
    if not isinstance(config, TuneConfig):
        raise ValueError(f"config must be a TuneConfig, got {config!r}")
    project_dir = Path(project_dir).absolute()
    with rundir.RunDir(project_dir, KIND, legacy_files=[legacy.TUNING_SETTINGS_FILE]) as run:
        if overwrite:
            run.clear()
        run.check(config.fingerprint())
        tuner = ILTuner(config, project_dir)
        run.begin(config_text)
        # keras-tuner's own files (oracle.json, trial.json, ...) are written by it.
        with rundir.io_errors(project_dir, "write to"):
            return _search(tuner, config)


def _search(tuner: ILTuner, config: TuneConfig) -> TuningResult:
    try:
        tuner.search(verbose=config.verbose)
    except RuntimeError as e:
        if "consecutive failures" not in str(e):
            raise
        _write_json(tuner.path / SUMMARY_FILE, tuner.summary().to_json())
        failed = [t for t in tuner.summary().trials if t.status == "FAILED"]
        detail = "; ".join(f"trial {t.trial_id}: {t.message}" for t in failed[-3:])
        raise TuningError(
            f"stopped after {config.max_consecutive_failed_trials} consecutive failed trials "
            f"({detail}); details in {tuner.path}/trial_<id>/trial.json"
        ) from None
    result = tuner.summary()
    _write_json(tuner.path / SUMMARY_FILE, result.to_json())
    if result.best is None:
        failed = [t for t in result.trials if t.message]
        detail = "; ".join(f"trial {t.trial_id}: {t.message}" for t in failed[-3:])
        raise TuningError(
            f"no trial completed in {tuner.path}" + (f" ({detail})" if detail else "")
        )
    return result
