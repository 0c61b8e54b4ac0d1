"""Settings of a tuning run: ``TuneConfig`` (gin), its objectives, oracles and hyperparameters.

Two modes share one tuner (``il_tf.tuning.tuner``):

* ``mode='search'``: every trial runs a whole interleaved search (``run_search``) with some
  of its settings (λ, rounds, learning rates, ...) drawn by the oracle, then scores the
  genotype it found.
* ``mode='random'``: every trial samples a genotype uniformly from a search space (DARTS or
  NAS-Bench-201), the random-search baseline, and scores it the same way.

Hyperparameters of the search are given as a gin dict, one entry per setting::

    TuneConfig.hyperparameters = {
        'proximity': {'min': 1e-4, 'max': 1e-1, 'sampling': 'log'},  # a float range
        'rounds': {'min': 1, 'max': 3},                                # an int range
        'method': ['first_order', 'chain_finite_difference'],         # a choice
        'seed': 0,                                                     # fixed
    }

The methods a ``method`` choice may name are ``il_tf.learning.hypergradients.METHODS``;
every value of a choice is checked, as the search checks it, before the first trial.

A list is a ``Choice``; a dict with ``min``/``max`` is an ``Int`` (both ints) or ``Float``
range (optional ``step``, ``sampling`` = linear/log/reverse_log, ``default``); a dict with
``values`` is a ``Choice`` (optional ``default``, ``ordered``); anything else is ``Fixed``.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gin

from il_tf.data.learners import Learner
from il_tf.learning.engine import OptimizerSettings
from il_tf.learning.search_config import SearchConfig
from il_tf.models.networks import NetworkConfig
from il_tf.nb201_lookup import NB201_ACCURACY_FIELDS
from il_tf.settings_checks import check_int
from il_tf.spaces.genotypes import GENOTYPE_OPS
from il_tf.training.loop import TrainConfig

MODES = ("search", "random")
SPACES = ("darts", "nb201")
ORACLES = ("random", "bayesian", "hyperband", "grid")

#: Objective name -> what it measures (all in %, all maximized). The name is also the
#: metric reported to keras-tuner.
OBJECTIVES: dict[str, str] = {
    "search_val_accuracy": "the search's own validation accuracy at its end, mean over "
    "its learners (mode 'search' only)",
    "train_test_top1": "test top-1 of the found or sampled cell's network after a brief "
    "training (train_and_evaluate with TuneConfig.train_learner / network / train)",
    "train_best_top1": "best top-1 during that training on the learner's held-out validation "
    "split (needs TuneConfig.train_learner val_fraction > 0)",
    **{
        f"nb201_{field}": f"NAS-Bench-201 look-up of the cell's {field} accuracy "
        "(needs TuneConfig.nb201_table)"
        for field in NB201_ACCURACY_FIELDS
    },
}

#: Search settings that ``TuneConfig.hyperparameters`` may tune: ``SearchConfig`` fields ...
SEARCH_SETTINGS = (
    "method",
    "schedule",
    "rounds",
    "steps_per_stage",
    "proximity",
    "epochs",
    "iterations_per_epoch",
    "arch_warmup_epochs",
    "seed",
    "eval_batches",
)
#: ... and ``OptimizerSettings`` fields (``arch_lr``, ``weight_lr``, ...).
OPTIMIZER_SETTINGS = tuple(f.name for f in dataclasses.fields(OptimizerSettings))
TUNABLE_SETTINGS = SEARCH_SETTINGS + OPTIMIZER_SETTINGS

_RANGE_KEYS = {"min", "max", "step", "sampling", "default"}
_CHOICE_KEYS = {"values", "default", "ordered"}


# ------------------------------------------------------------------------------ hyperparameters
@dataclasses.dataclass(frozen=True)
class HyperparameterSpec:
    """One tuned setting: its name and the keras-tuner hyperparameter that draws it."""

    name: str
    kind: str  # "choice", "int", "float" or "fixed"
    options: tuple[tuple[str, Any], ...]

    def declare(self, hp) -> Any:
        """Declares the hyperparameter on ``hp`` (keras-tuner) and returns its value."""
        kwargs = dict(self.options)
        if self.kind == "choice":
            return hp.Choice(self.name, **kwargs)
        if self.kind == "int":
            return hp.Int(self.name, **kwargs)
        if self.kind == "float":
            return hp.Float(self.name, **kwargs)
        return hp.Fixed(self.name, **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **dict(self.options)}


def _plain(value: Any) -> Any:
    """gin gives lists and tuples alike; keras-tuner wants plain Python scalars."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def parse_hyperparameters(space: Mapping[str, Any] | None) -> tuple[HyperparameterSpec, ...]:
    """``TuneConfig.hyperparameters`` as specs; raises ValueError naming a bad entry."""
    if space is None:
        return ()
    if not isinstance(space, Mapping):
        raise ValueError(
            "TuneConfig.hyperparameters must be a dict {setting: spec}, e.g. "
            "{'proximity': {'min': 1e-4, 'max': 1e-1, 'sampling': 'log'}, 'rounds': [1, 2]}; "
            f"got {space!r}"
        )
    specs = []
    for name, raw in space.items():
        where = f"TuneConfig.hyperparameters[{name!r}]"
        if name not in TUNABLE_SETTINGS:
            raise ValueError(
                f"{where}: unknown setting {name!r}; tunable settings: "
                f"{', '.join(TUNABLE_SETTINGS)}"
            )
        raw = _plain(raw)
        if isinstance(raw, list):
            spec = HyperparameterSpec(name, "choice", (("values", raw),))
        elif isinstance(raw, Mapping):
            keys = set(raw)
            if "values" in keys:
                if keys - _CHOICE_KEYS:
                    raise ValueError(
                        f"{where}: a choice takes the keys {sorted(_CHOICE_KEYS)}, "
                        f"got {sorted(keys)}"
                    )
                spec = HyperparameterSpec(name, "choice", tuple(sorted(raw.items())))
            elif {"min", "max"} <= keys:
                if keys - _RANGE_KEYS:
                    raise ValueError(
                        f"{where}: a range takes the keys {sorted(_RANGE_KEYS)}, got {sorted(keys)}"
                    )
                ints = all(
                    isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)
                    for k in ("min", "max")
                ) and isinstance(raw.get("step", 1), int)
                options = {"min_value": raw["min"], "max_value": raw["max"]}
                for key in ("step", "sampling", "default"):
                    if key in raw:
                        options[key] = raw[key]
                spec = HyperparameterSpec(
                    name, "int" if ints else "float", tuple(sorted(options.items()))
                )
            else:
                raise ValueError(
                    f"{where}: a dict spec needs 'min' and 'max' (a range) or 'values' "
                    f"(a choice), got keys {sorted(keys)}"
                )
        else:
            spec = HyperparameterSpec(name, "fixed", (("value", raw),))
        specs.append(spec)
    # Let keras-tuner check what it will draw (ranges, sampling, types).
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for spec in specs:
        try:
            spec.declare(hp)
        except (ValueError, TypeError) as e:
            raise ValueError(f"TuneConfig.hyperparameters[{spec.name!r}]: {e}") from None
    return tuple(specs)


def apply_hyperparameters(search: SearchConfig, values: Mapping[str, Any]) -> SearchConfig:
    """``search`` with the tuned settings ``values`` (SearchConfig and OptimizerSettings fields)."""
    unknown = sorted(set(values) - set(TUNABLE_SETTINGS))
    if unknown:
        raise ValueError(f"not tunable settings: {unknown}; tunable: {', '.join(TUNABLE_SETTINGS)}")
    search_values = {k: v for k, v in values.items() if k in SEARCH_SETTINGS}
    optimizer_values = {k: v for k, v in values.items() if k in OPTIMIZER_SETTINGS}
    if optimizer_values:
        search_values["optimizers"] = dataclasses.replace(search.optimizers, **optimizer_values)
    return dataclasses.replace(search, **search_values)


# ------------------------------------------------------------------------------ the config
def _learner_record(learner: Learner) -> dict[str, Any]:
    record = {}
    for f in dataclasses.fields(learner):
        value = getattr(learner, f.name)
        if f.name == "source":
            value = getattr(value, "description", repr(value))
        record[f.name] = value
    return record


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Every setting of a tuning run; bound in gin (``TuneConfig.max_trials = 20``).

    Attributes:
      mode: ``search`` (each trial runs an interleaved search with tuned settings) or
        ``random`` (each trial samples a genotype uniformly: the random-search baseline).
      objective: what a trial reports and the oracle maximizes; see :data:`OBJECTIVES`.
      oracle: keras-tuner oracle: ``random``, ``bayesian`` (Gaussian process), ``hyperband``
        (the budget ``tuner/epochs`` sets the search epochs in mode ``search`` and the
        training epochs in mode ``random``; trials start from scratch) or ``grid``.
      max_trials: trials in all (not used by ``hyperband``, which stops by its own budget);
        raising it and starting again continues a finished tuning.
      seed: the oracle's seed (keras-tuner treats 0 as "unseeded", so it gets seed + 1).
      hyperparameters: mode ``search``: the settings to tune (module docstring).
      search: mode ``search``: the base search; default ``SearchConfig()`` as bound in gin.
      space: mode ``random``: ``darts`` or ``nb201``.
      darts_ops: mode ``random``, DARTS space: the ops drawn on each kept edge.
      darts_steps: mode ``random``, DARTS space: intermediate nodes per cell.
      train_learner: ``train_*`` objectives: the data of the brief training.
      network: ``train_*`` objectives: the evaluation network (default ``NetworkConfig()``
        as bound in gin).
      train: ``train_*`` objectives: the training settings (default ``TrainConfig()`` as
        bound in gin); the same for every trial and both modes.
      nb201_table: a NAS-Bench-201 table path; needed by ``nb201_*`` objectives, and when
        set the look-ups of NAS-Bench-201 cells are reported in every mode.
      oracle_options: extra keyword arguments of the oracle (``num_initial_points``,
        ``alpha``, ``beta`` for ``bayesian``; ``max_epochs``, ``factor``,
        ``hyperband_iterations`` for ``hyperband``).
      max_retries_per_trial, max_consecutive_failed_trials: keras-tuner's failure handling.
      verbose: keras-tuner's per-trial display (0 = one line per trial from il_tf only).
    """

    mode: str = "search"
    objective: str = "search_val_accuracy"
    oracle: str = "random"
    max_trials: int = 10
    seed: int = 0
    hyperparameters: Mapping[str, Any] | None = None
    search: SearchConfig | None = None
    space: str = "darts"
    darts_ops: Sequence[str] = GENOTYPE_OPS
    darts_steps: int = 4
    train_learner: Learner | None = None
    network: NetworkConfig | None = None
    train: TrainConfig | None = None
    nb201_table: str | None = None
    oracle_options: Mapping[str, Any] | None = None
    max_retries_per_trial: int = 0
    max_consecutive_failed_trials: int = 3
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown TuneConfig.mode {self.mode!r}; allowed: {list(MODES)}")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown TuneConfig.objective {self.objective!r}; allowed: {list(OBJECTIVES)}"
            )
        if self.oracle not in ORACLES:
            raise ValueError(f"unknown TuneConfig.oracle {self.oracle!r}; allowed: {list(ORACLES)}")
        for name, minimum in (
            ("max_trials", 1),
            ("seed", 0),
            ("max_retries_per_trial", 0),
            ("max_consecutive_failed_trials", 1),
            ("verbose", 0),
        ):
            check_int("TuneConfig", name, getattr(self, name), minimum)
        options = dict(self.oracle_options or {})
        object.__setattr__(self, "oracle_options", options)
        specs = parse_hyperparameters(self.hyperparameters)
        object.__setattr__(self, "_specs", specs)
        train_objective = self.objective.startswith("train_")
        nb201_objective = self.objective.startswith("nb201_")

        if self.mode == "search":
            if self.search is None:
                # Built here, not at import, so that gin bindings of SearchConfig apply.
                object.__setattr__(self, "search", SearchConfig())
            if not isinstance(self.search, SearchConfig):
                raise ValueError(
                    f"TuneConfig.search must be a SearchConfig (gin: @SearchConfig()), "
                    f"got {self.search!r}"
                )
            if not specs:
                raise ValueError(
                    "TuneConfig.hyperparameters is empty: name the search settings to tune, "
                    "e.g. {'proximity': {'min': 1e-4, 'max': 1e-1, 'sampling': 'log'}}"
                )
            self._check_choices(specs)
        else:
            if self.hyperparameters:
                raise ValueError(
                    "TuneConfig.hyperparameters is for mode 'search'; mode 'random' draws "
                    "the genotype itself (set TuneConfig.space)"
                )
            if self.objective == "search_val_accuracy":
                raise ValueError(
                    "TuneConfig.objective 'search_val_accuracy' needs mode 'search' (random "
                    "genotypes have no search); use a train_* or nb201_* objective"
                )
            if self.space not in SPACES:
                raise ValueError(
                    f"unknown TuneConfig.space {self.space!r}; allowed: {list(SPACES)}"
                )
            if self.space == "nb201" and not nb201_objective:
                raise ValueError(
                    f"TuneConfig.objective {self.objective!r} does not apply to the nb201 "
                    "space (its networks are not trained here); use an nb201_* objective "
                    "with TuneConfig.nb201_table"
                )
            if self.space == "darts" and nb201_objective:
                raise ValueError(
                    f"TuneConfig.objective {self.objective!r} needs NAS-Bench-201 cells; "
                    "set TuneConfig.space = 'nb201' or use a train_* objective"
                )
            if self.space == "darts":
                ops = tuple(self.darts_ops)
                bad = [op for op in ops if op not in GENOTYPE_OPS]
                if not ops or bad or len(set(ops)) != len(ops):
                    raise ValueError(
                        f"TuneConfig.darts_ops must be distinct ops from {list(GENOTYPE_OPS)} "
                        f"('none' is never kept in a cell), got {list(ops)}"
                    )
                object.__setattr__(self, "darts_ops", ops)
                if (
                    isinstance(self.darts_steps, bool)
                    or not isinstance(self.darts_steps, int)
                    or self.darts_steps < 1
                ):
                    raise ValueError(
                        f"TuneConfig.darts_steps must be an int >= 1, got {self.darts_steps!r}"
                    )
            if self.oracle == "hyperband" and not train_objective:
                raise ValueError(
                    "TuneConfig.oracle 'hyperband' needs a budget to vary: in mode 'random' "
                    "only the train_* objectives train anything"
                )
        if nb201_objective and not self.nb201_table:
            raise ValueError(
                f"TuneConfig.objective {self.objective!r} needs a NAS-Bench-201 table: set "
                "TuneConfig.nb201_table (e.g. '../shared/data/nasbench201.json.gz')"
            )
        if self.nb201_table is not None:
            path = Path(self.nb201_table).expanduser()
            if path.is_dir():
                path = path / "nasbench201.json.gz"
            if not path.is_file():
                raise ValueError(
                    f"TuneConfig.nb201_table {str(self.nb201_table)!r} is not a file (the gzip "
                    "JSON NAS-Bench-201 table, e.g. ../shared/data/nasbench201.json.gz; see "
                    "il_tf/nb201_lookup.py)"
                )
        if train_objective:
            if not isinstance(self.train_learner, Learner):
                raise ValueError(
                    f"TuneConfig.objective {self.objective!r} trains the cell's network: set "
                    "TuneConfig.train_learner (gin: @train/Learner())"
                )
            if self.objective == "train_best_top1" and not self.train_learner.val_fraction:
                raise ValueError(
                    "TuneConfig.objective 'train_best_top1' is the best VALIDATION top-1 of the "
                    "training, but TuneConfig.train_learner holds out no validation data "
                    "(val_fraction=0; gin: train/Learner.val_fraction = 0.2); test accuracy "
                    "never chooses (that would leak the test set)"
                )
            if self.network is None:
                object.__setattr__(self, "network", NetworkConfig())
            if self.train is None:
                object.__setattr__(self, "train", TrainConfig())
            if not isinstance(self.network, NetworkConfig):
                raise ValueError(
                    f"TuneConfig.network must be a NetworkConfig, got {self.network!r}"
                )
            if not isinstance(self.train, TrainConfig):
                raise ValueError(f"TuneConfig.train must be a TrainConfig, got {self.train!r}")
            if self.train.steps_per_run is not None:
                raise ValueError(
                    "TuneConfig.train.steps_per_run must be None: a trial trains to the end "
                    "(an interrupted tuning resumes the trial's training by itself)"
                )

    def _check_choices(self, specs: Sequence[HyperparameterSpec]) -> None:
        """Every value of a choice (and each fixed value) must make a valid search."""
        for spec in specs:
            options = dict(spec.options)
            values = options.get("values", [options.get("value")])
            if spec.kind in ("int", "float"):
                values = [options["min_value"], options["max_value"]]
            for value in values:
                try:
                    apply_hyperparameters(self.search, {spec.name: value})
                except (ValueError, TypeError) as e:
                    raise ValueError(
                        f"TuneConfig.hyperparameters[{spec.name!r}]: value {value!r} makes an "
                        f"invalid search: {e}"
                    ) from None

    @property
    def hyperparameter_specs(self) -> tuple[HyperparameterSpec, ...]:
        return self._specs  # type: ignore[attr-defined]

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed tuning must share with the one that made the project directory.

        ``max_trials`` (to extend a finished tuning), ``verbose``, the failure handling and
        the table's path may change between starts.
        """
        record: dict[str, Any] = {
            "mode": self.mode,
            "objective": self.objective,
            "oracle": self.oracle,
            "seed": self.seed,
            "oracle_options": dict(self.oracle_options),
        }
        if self.mode == "search":
            search = self.search
            record["hyperparameters"] = [s.to_json() for s in self.hyperparameter_specs]
            record["search"] = {
                **search.fingerprint(),
                "supernet": getattr(search.supernet, "__name__", type(search.supernet).__name__),
                **{
                    name: getattr(search, name)
                    for name in ("proximity", "epochs", "iterations_per_epoch")
                },
                "arch_warmup_epochs": search.arch_warmup_epochs,
                "eval_batches": search.eval_batches,
                "optimizers": dataclasses.asdict(search.optimizers),
            }
        else:
            record["space"] = self.space
            if self.space == "darts":
                record["darts_ops"] = list(self.darts_ops)
                record["darts_steps"] = self.darts_steps
        if self.objective.startswith("train_"):
            record["train_learner"] = _learner_record(self.train_learner)
            record["network"] = self.network.to_dict()
            record["train"] = self.train.to_dict()
        return _jsonable(record)
