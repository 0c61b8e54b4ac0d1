"""The interleaved architecture search, from a gin-bound config to a genotype in a workdir.

``run_search(config, workdir)`` builds the learners' pipelines and the search
engine, resumes from the workdir's last checkpoint when there is one, runs the
epochs, and keeps the workdir current: ``genotype.json`` and cell drawings after
every epoch, TensorBoard summaries, ``metrics.jsonl``, checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from il_tf import distribute, interrupts, rundir
from il_tf.data.learners import Learner, LearnerData, build_learner_data, check_unique_names
from il_tf.learning.arch_regularizers import BetaDecaySettings
from il_tf.learning.engine import NonFiniteLossError, OptimizerSettings, SearchEngine
from il_tf.learning.hypergradients import get_method
from il_tf.learning.reporting import EpochWriter, RunningStats, softmax
from il_tf.learning.schedule import SCHEDULES, Schedule, make_schedule
from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.spaces.architecture import AuxSkipSettings
from il_tf.spaces.factories import darts_supernet
from il_tf.spaces.space import SearchSpace, check_space
from il_tf.validation import check_bool, check_int, check_number, invalid

OWNER = "SearchConfig"
KIND = "search"
# Settings a restarted search may change: they do not change what it computes.
FREE_SETTINGS = (
    "checkpoint_every",
    "keep_checkpoints",
    "draw",
    "nb201_table",
    "jit_compile",
    "graph_optimizer",
    "constant_folding",
    # The same gradients (to rounding), computed one segment at a time.
    "segmented_gradients",
)
# Settings a restarted search may raise when asked to (``extend``, tools/search.py --extend).
EXTENDABLE_SETTINGS = ("epochs",)
METRICS_FILE = "metrics.jsonl"


class SearchError(RuntimeError):
    """A search cannot continue (non-finite loss, incompatible workdir, ...)."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; bound in gin files (``SearchConfig.rounds = 2``).

    Attributes:
      learners: the learners (K ≥ 1); each has its own data and head.
      supernet: a factory of the searchable encoder (``@darts_supernet``, ...).
      method: hypergradient method (README's "Hypergradient methods"):
        ``chain_finite_difference`` (the default: through the whole chain,
        finite-difference Hessian-vector products), ``chain_exact``, ``unrolled``,
        ``per_learner_finite_difference`` or ``first_order``.
      schedule: ``interleaved`` (the method), ``blocked`` or ``joint`` (ablations).
      rounds: R, how often each learner trains the encoder per iteration.
      steps_per_stage: T, one-step updates per stage.
      proximity: λ of λ‖W − W_prev‖², coupling each stage to the encoder it received.
      order: learner names in stage order (default: as listed).
      epochs: search epochs.
      iterations_per_epoch: iterations per epoch (default: enough for every learner
        to see its train split once).
      arch_warmup_epochs: epochs of weight steps only before α starts to move.
      optimizers: learning rates, momentum, weight decay, clipping.
      seed: the run's seed (initialization, shuffling, augmentation).
      checkpoint_every: iterations between checkpoints (and at every epoch end).
      keep_checkpoints: how many checkpoints to keep.
      eval_batches: validation batches per learner evaluated after each epoch
        (None: the whole validation split).
      draw: draw the cells after every epoch (needs graphviz's ``dot``).
      nb201_table: a NAS-Bench-201 table path; when set, the found cell's
        accuracies are looked up and reported (NAS-Bench-201 space only).
      jit_compile: compile the steps with XLA.
      graph_optimizer: run TensorFlow's graph optimizer (grappler) on the step
        functions. False turns it off while the search runs: long unrolled chains
        then start in minutes instead of half an hour or more (unrolled, K=2, R=2 at
        bench config S: 6 min instead of more than 25), at the cost of more memory
        (docs/benchmarks.md).
      constant_folding: let the graph optimizer fold constants. False keeps it from
        storing constant tensors in the compiled functions: the exact chain at the
        paper's search size then peaked at 10.6 GB instead of 12.6 GB
        (docs/benchmarks.md §11).
      segmented_gradients: compute every gradient one supernet segment (a DARTS
        cell) at a time, recomputing its activations: the memory of one segment's
        activations instead of the whole network's, for one more forward pass per
        gradient (docs/benchmarks.md §10).
      mixed_precision: None (float32) or ``mixed_bfloat16``: the supernet and heads
        compute in bfloat16 with float32 weights; losses, α and every hypergradient
        stay float32. (float16 would need loss scaling inside the unrolled chain.)
    """

    learners: Sequence[Learner] | None = None
    supernet: Callable[[], keras.layers.Layer] = darts_supernet
    method: str = "chain_finite_difference"
    schedule: str = "interleaved"
    rounds: int = 1
    steps_per_stage: int = 1
    proximity: float = 1e-3
    order: Sequence[str] | None = None
    epochs: int = 50
    iterations_per_epoch: int | None = None
    arch_warmup_epochs: int = 0
    optimizers: OptimizerSettings | None = None
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    eval_batches: int | None = None
    draw: bool = True
    nb201_table: str | None = None
    jit_compile: bool = False
    graph_optimizer: bool = True
    constant_folding: bool = True
    segmented_gradients: bool = False
    mixed_precision: str | None = None

    def __post_init__(self):
        if self.optimizers is None:
            # Built here, not at import, so that gin bindings of OptimizerSettings apply.
            object.__setattr__(self, "optimizers", OptimizerSettings())
        if self.learners is None:
            object.__setattr__(self, "learners", (Learner("digits"),))
        learners = tuple(self.learners)
        if not learners:
            raise ValueError("SearchConfig.learners is empty; give at least one Learner")
        for item in learners:
            if not isinstance(item, Learner):
                raise ValueError(
                    f"SearchConfig.learners entries must be Learner(...), got {item!r} "
                    "(in gin: SearchConfig.learners = [@name/Learner()])"
                )
        check_unique_names(learners)
        object.__setattr__(self, "learners", learners)
        get_method(self.method)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {list(SCHEDULES)}")
        for name in ("rounds", "steps_per_stage", "epochs", "checkpoint_every", "keep_checkpoints"):
            check_int(OWNER, name, getattr(self, name), minimum=1)
        check_number(OWNER, "proximity", self.proximity, minimum=0)
        check_int(OWNER, "iterations_per_epoch", self.iterations_per_epoch, 1, optional=True)
        check_int(OWNER, "arch_warmup_epochs", self.arch_warmup_epochs, minimum=0)
        if self.arch_warmup_epochs > self.epochs:
            raise invalid(
                OWNER, "arch_warmup_epochs", f"<= epochs ({self.epochs})", self.arch_warmup_epochs
            )
        check_int(OWNER, "eval_batches", self.eval_batches, minimum=1, optional=True)
        check_int(OWNER, "seed", self.seed, minimum=0)
        if self.order is not None:
            names = [lr.name for lr in learners]
            if sorted(self.order) != sorted(names):
                raise ValueError(
                    f"SearchConfig.order {list(self.order)} must list each learner name once: {names}"
                )
        for name in (
            "jit_compile",
            "graph_optimizer",
            "constant_folding",
            "segmented_gradients",
            "draw",
        ):
            check_bool(OWNER, name, getattr(self, name))
        if self.mixed_precision not in (None, "mixed_bfloat16"):
            raise invalid(
                OWNER,
                "mixed_precision",
                "None or 'mixed_bfloat16' (float16 needs loss scaling, which the "
                "hypergradient chain does not do)",
                self.mixed_precision,
            )
        if self.nb201_table is not None and not Path(self.nb201_table).is_file():
            raise ValueError(
                f"SearchConfig.nb201_table {self.nb201_table!r} is not a file "
                "(the gzip JSON NAS-Bench-201 table; see il_tf/nb201_lookup.py)"
            )

    def make_schedule(self) -> Schedule:
        names = [lr.name for lr in self.learners]
        order = None if self.order is None else [names.index(n) for n in self.order]
        return make_schedule(
            len(self.learners), self.rounds, self.schedule, self.steps_per_stage, order
        )

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the workdir."""
        return {
            "learners": [
                {
                    "name": lr.name,
                    "source": getattr(lr.source, "description", repr(lr.source)),
                    "classes": None if lr.classes is None else list(lr.classes),
                    "image_size": lr.image_size,
                    "batch_size": lr.batch_size,
                    "val_fraction": lr.val_fraction,
                }
                for lr in self.learners
            ],
            "method": self.method,
            "schedule": self.schedule,
            "rounds": self.rounds,
            "steps_per_stage": self.steps_per_stage,
            "order": None if self.order is None else list(self.order),
            "seed": self.seed,
            "mixed_precision": self.mixed_precision,
        }

    def settings(self) -> dict:
        """Every setting as JSON values: what ``run.json`` records and a restart must match.

        The learners (their sources by description), the supernet factory with its
        arguments and gin bindings, the optimizers, the gin-bound β-decay settings, the
        auxiliary skip settings (when on) and every other field.
        """
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["learners"] = [_learner_settings(lr) for lr in self.learners]
        record["supernet"] = _factory_settings(self.supernet)
        record["optimizers"] = dataclasses.asdict(self.optimizers)
        record["beta_decay"] = dataclasses.asdict(BetaDecaySettings())
        aux_skip = AuxSkipSettings()
        if aux_skip.enabled:  # only when on: runs recorded before it existed still match
            record["aux_skip"] = dataclasses.asdict(aux_skip)
        return rundir.jsonable(record)


def _plain(value):
    """``value`` if it is plain JSON data, else a stable name for it (no memory addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **_plain(dataclasses.asdict(value))}
    return getattr(value, "__name__", type(value).__name__)


def _learner_settings(learner: Learner) -> dict:
    record = {f.name: getattr(learner, f.name) for f in dataclasses.fields(learner)}
    record["source"] = getattr(learner.source, "description", type(learner.source).__name__)
    return _plain(record)


def _factory_settings(factory) -> dict:
    """A supernet factory's name and arguments: ``functools.partial`` keywords over its
    gin bindings."""
    keywords: dict = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    try:
        bindings = dict(gin.get_bindings(factory))
    except (ValueError, TypeError):  # not a gin configurable
        bindings = {}
    return {
        "factory": getattr(factory, "__name__", type(factory).__name__),
        "arguments": _plain({**bindings, **keywords}),
    }


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a finished search leaves: the genotype, where it is, the final metrics."""

    genotype: object
    workdir: Path
    genotype_path: Path | None  # None when the run stopped before its end
    metrics: dict


def data_positions(schedule: Schedule, num_learners: int, iteration: int) -> np.ndarray:
    """Train and validation batches each learner has consumed after ``iteration`` iterations.

    The pipelines are pure functions of (seed, position) and nothing else is random,
    so this is the whole data and RNG state of a search.
    """
    return np.array(
        [[iteration * schedule.batches_per_iteration(k), iteration] for k in range(num_learners)],
        np.int64,
    )


class _Inputs:
    """The learners' train and validation streams, positioned at an iteration."""

    def __init__(
        self,
        datas: Sequence[LearnerData],
        schedule: Schedule,
        strategy: tf.distribute.Strategy,
        iteration: int,
    ):
        self.schedule = schedule
        positions = data_positions(schedule, len(datas), iteration)
        # Each worker reads only its replicas' slices of the global batches.
        self.train = [
            distribute.BatchStream(strategy, functools.partial(d.train_dataset, int(p[0])))
            for d, p in zip(datas, positions, strict=True)
        ]
        self.val = [
            distribute.BatchStream(strategy, functools.partial(d.val_dataset, int(p[1])))
            for d, p in zip(datas, positions, strict=True)
        ]

    def next(self) -> tuple[list, list]:
        """One iteration's batches: ``train[s][t]`` (one per learner of stage s), ``val[k]``."""
        train = [
            [
                tuple(next(self.train[k]) for k in stage.learners)
                for _ in range(self.schedule.steps_per_stage)
            ]
            for stage in self.schedule.stages
        ]
        return train, [next(v) for v in self.val]


def _nb201_table(config: SearchConfig, encoder: SearchSpace):
    """The NAS-Bench-201 table of ``config.nb201_table`` (None when unset)."""
    if not config.nb201_table:
        return None
    from il_tf.nb201_lookup import NB201Table
    from il_tf.spaces.nb201_genotype import NB201Genotype

    if not issubclass(encoder.genotype_type, NB201Genotype):
        raise ValueError(
            f"SearchConfig.nb201_table is set, but the supernet searches the "
            f"{encoder.space!r} space; the table scores cells of the NAS-Bench-201 space "
            "only (SearchConfig.supernet = @nb201_supernet)"
        )
    return NB201Table.load(config.nb201_table)


def build_model(config: SearchConfig, datas: Sequence[LearnerData]) -> SearchModel:
    """The search model of ``config``: its supernet, one head per learner, α (Keras' floatx:
    float32 unless a float64 run was asked for, as the equality tests do)."""
    return build_search_model(
        config.supernet,
        [d.num_classes for d in datas],
        [d.image_shape for d in datas],
        seed=config.seed,
        head_names=[f"head_{d.name}" for d in datas],
        mixed_precision=config.mixed_precision,
        # α and β stay in floatx (float32) whatever the layers compute in (bfloat16).
        arch_dtype=keras.config.floatx(),
        aux_skip=AuxSkipSettings(),
    )


class _Run:
    """One start of a search in its workdir: its data, engine, checkpoints and reports."""

    def __init__(
        self,
        config: SearchConfig,
        run: rundir.RunDir,
        strategy: tf.distribute.Strategy,
        extend: bool = False,
        config_text: str | None = None,
        on_begin: Callable[[], None] | None = None,
    ):
        self.config = config
        self.on_begin = on_begin
        self.run_dir = run
        self.workdir = run.path
        self.strategy = strategy
        self.chief = run.chief
        self.extend = extend
        self.config_text = config_text
        self.schedule = config.make_schedule()
        # Built without weights (cheap): the table check needs the space before any data.
        self.nb201_table = _nb201_table(
            config, check_space(config.supernet(), "SearchConfig.supernet")
        )
        self.datas = [build_learner_data(lr, config.seed) for lr in config.learners]
        self.names = [d.name for d in self.datas]
        replicas = strategy.num_replicas_in_sync
        for d in self.datas:
            if d.batch_size % replicas:
                raise ValueError(
                    f"learner {d.name!r}: batch_size {d.batch_size} is not divisible by the "
                    f"{replicas} replicas (it is the global batch)"
                )
        self.ipe = config.iterations_per_epoch or max(
            math.ceil(d.steps_per_epoch / self.schedule.batches_per_iteration(k))
            for k, d in enumerate(self.datas)
        )
        self.total_iterations = config.epochs * self.ipe
        self.engine = SearchEngine(
            strategy,
            functools.partial(build_model, config, self.datas),
            self.schedule,
            config.method,
            float(config.proximity),
            config.optimizers,
            total_weight_steps=self.total_iterations * self.schedule.num_steps,
            jit_compile=config.jit_compile,
            segmented_gradients=config.segmented_gradients,
        )
        self.model: SearchModel = self.engine.model
        # Host-side state, created outside the strategy scope (plain variables): the
        # iteration and, per learner, the train and validation batches consumed.
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.data_positions = tf.Variable(
            tf.zeros((len(self.datas), 2), tf.int64), trainable=False, name="data_positions"
        )
        self.seed = tf.Variable(config.seed, dtype=tf.int64, trainable=False, name="seed")
        # The epoch's running statistics so far, per learner: the training steps' and the
        # hypergradient's validation (loss sum, correct, count). In the checkpoint, so
        # that a resumed epoch reports what an uninterrupted one does.
        self.epoch_stats = tf.Variable(
            tf.zeros((len(self.datas), 2, 3), tf.float64), trainable=False, name="epoch_stats"
        )
        self.checkpoint = tf.train.Checkpoint(
            **self.engine.checkpoint_objects(self.names),
            iteration=self.iteration,
            data_positions=self.data_positions,
            seed=self.seed,
            epoch_stats=self.epoch_stats,
        )
        self.manager: tf.train.CheckpointManager | None = None  # made by begin()
        self.writer: EpochWriter | None = None
        # Whether this process has run an iteration (traced the step functions) yet.
        self._compiled = False

    # -- resume ----------------------------------------------------------------------

    def settings(self) -> dict:
        """The run's settings for ``run.json``: the config's, the data sizes, the shapes."""
        settings = self.config.settings()
        settings["supernet"].update(
            weights=[list(v.shape) for v in self.model.encoder.weights],
            arch={k: list(v) for k, v in self.model.encoder.arch_shapes().items()},
        )
        settings["data"] = {
            "iterations_per_epoch": self.ipe,
            "learners": {
                d.name: {"num_train": d.num_train, "num_val": d.num_val, "classes": d.num_classes}
                for d in self.datas
            },
        }
        return rundir.jsonable(settings)

    def _legacy_settings(self) -> dict:
        """What the first run.json format compared (``fingerprint``)."""
        fingerprint = self.config.fingerprint()
        fingerprint["supernet"] = {
            "weights": [list(v.shape) for v in self.model.encoder.weights],
            "arch": {k: list(v) for k, v in self.model.encoder.arch_shapes().items()},
        }
        return rundir.jsonable(fingerprint)

    def restore(self) -> int:
        """Checks the settings against the run's and restores its last checkpoint (reads only).

        Returns the iteration to start from.
        """
        self.run_dir.check(
            self.settings(),
            free=FREE_SETTINGS,
            extendable=EXTENDABLE_SETTINGS,
            extend=self.extend,
            legacy_settings=self._legacy_settings(),
        )
        latest = tf.train.latest_checkpoint(str(self.workdir / "checkpoints"))
        if not latest:
            return 0
        with rundir.io_errors(latest, "read the checkpoint"):
            status = self.checkpoint.restore(latest)
            names = {name for name, _ in tf.train.list_variables(latest)}
        if any(name.startswith("epoch_stats/") for name in names):
            status.assert_consumed()
        else:
            # Written before the statistics were checkpointed.
            status.assert_existing_objects_matched()
            logging.warning(
                "%s holds no running statistics: this epoch's train loss and accuracy "
                "cover only the iterations from here on",
                latest,
            )
        it = int(self.iteration)
        expected = self._positions(it)
        if (self.data_positions.numpy() != expected).any() or int(self.seed) != self.config.seed:
            raise SearchError(
                f"checkpoint {latest} was written with another seed or data schedule "
                f"(data positions {self.data_positions.numpy().tolist()}, expected "
                f"{expected.tolist()}); use a new --workdir"
            )
        if it > self.total_iterations:
            raise SearchError(
                f"checkpoint {latest} is at iteration {it}, past this run's "
                f"{self.total_iterations} iterations"
            )
        print(f"resumed from {latest} at iteration {it}", flush=True)
        return it

    def begin(self, it: int) -> None:
        """The start is about to do its first step: record it, open the files it writes."""
        if self.on_begin is not None:
            self.on_begin()
        self.run_dir.begin(self.config_text)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            str(self.run_dir.scratch("checkpoints")),
            max_to_keep=self.config.keep_checkpoints,
        )
        if not self.chief:
            return
        with rundir.io_errors(self.workdir, "write to"):
            self.writer = EpochWriter(self.workdir, self.model.encoder.op_names, self.config.draw)
        # Epochs written after the checkpoint we resume from are written again: drop them.
        metrics = self.workdir / METRICS_FILE
        if metrics.is_file():
            with rundir.io_errors(metrics, "read"):
                lines = metrics.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if _record_iteration(line) <= it]
            if kept != lines:
                rundir.write_text(metrics, "".join(f"{line}\n" for line in kept))

    def _positions(self, it: int) -> np.ndarray:
        return data_positions(self.schedule, len(self.datas), it)

    def _save(self, it: int, stats: Sequence[Sequence[RunningStats]]) -> None:
        """Checkpoints iteration ``it`` with the epoch's running ``stats`` (train, arch_val)."""
        self.data_positions.assign(self._positions(it))
        self.epoch_stats.assign(
            [
                [[s.loss_sum, s.correct, s.count] for s in (train, arch_val)]
                for train, arch_val in zip(*stats, strict=True)
            ]
        )
        try:
            with rundir.io_errors(self.manager.directory, "write the checkpoint to"):
                self.manager.save(checkpoint_number=it)
        except rundir.RunDirError:
            rundir.remove_partial_files(self.manager.directory)  # the last checkpoint stays
            raise

    def _running_stats(self, it: int) -> tuple[list[RunningStats], list[RunningStats]]:
        """The epoch's statistics so far: restored mid-epoch, empty at an epoch's start."""
        train = [RunningStats() for _ in self.datas]
        arch_val = [RunningStats() for _ in self.datas]
        if it % self.ipe:
            for k, (t, a) in enumerate(self.epoch_stats.numpy().tolist()):
                train[k] = RunningStats(*t)
                arch_val[k] = RunningStats(*a)
        return train, arch_val

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> SearchResult:
        config = self.config
        start = self.restore()
        inputs = _Inputs(self.datas, self.schedule, self.strategy, start)
        self.begin(start)
        it = start
        metrics: dict = {}
        if it >= self.total_iterations:
            print(f"search in {self.workdir} already finished ({it} iterations)", flush=True)
            path = self.workdir / METRICS_FILE
            with rundir.io_errors(path, "read"):
                records = path.read_text().splitlines() if path.is_file() else []
            metrics = json.loads(records[-1]) if records else {}
        while it < self.total_iterations:
            epoch = it // self.ipe
            train_stats, arch_val = self._running_stats(it)
            print(f"epoch {epoch + 1}/{config.epochs}", flush=True)
            bar = self._progress_bar()
            while it < (epoch + 1) * self.ipe:
                # SIGINT/SIGTERM (tools/search.py): a checkpoint here, then Interrupted.
                save = functools.partial(self._save, it, (train_stats, arch_val))
                interrupts.stop_if_requested(self.strategy, save, it)
                train_batches, val_batches = inputs.next()
                result = self._iteration(
                    it, epoch, train_batches, val_batches, epoch >= config.arch_warmup_epochs
                )
                for k in range(len(self.datas)):
                    for st in result.train[k]:
                        train_stats[k].add(st)
                    if result.val[k] is not None:
                        arch_val[k].add(result.val[k])
                if bar is None:
                    # The first iteration compiled the steps: the ETA starts after it.
                    bar = self._progress_bar()
                it += 1
                self.iteration.assign(it)
                bar.update(
                    it - epoch * self.ipe,
                    values=[(f"{n}_loss", train_stats[k].loss) for k, n in enumerate(self.names)],
                )
                stats = (train_stats, arch_val)
                if it % config.checkpoint_every == 0 and it % self.ipe:
                    self._save(it, stats)
                if stop_after is not None and it - start >= stop_after and it % self.ipe:
                    self._save(it, stats)
                    return self._stopped(it, stop_after, metrics)
            metrics = self._end_of_epoch(epoch, train_stats, arch_val)
            # The next epoch starts with empty statistics.
            self._save(it, self._running_stats(it))
            if stop_after is not None and it - start >= stop_after and it < self.total_iterations:
                return self._stopped(it, stop_after, metrics)
        genotype_path = self.workdir / "genotype.json"
        return SearchResult(self._genotype(), self.workdir, genotype_path, metrics)

    def _progress_bar(self) -> keras.utils.Progbar | None:
        """The epoch's progress bar; None until the step functions are compiled."""
        if not self._compiled:
            return None
        return keras.utils.Progbar(
            self.ipe, stateful_metrics=[f"{n}_loss" for n in self.names], unit_name="it"
        )

    def _iteration(self, it: int, epoch: int, train_batches, val_batches, update_arch: bool):
        first = not self._compiled
        if first:
            print(
                "compiling the step functions (the first iteration; the ETA starts after it) ...",
                flush=True,
            )
            compile_start = time.perf_counter()
        try:
            result = self.engine.iteration(train_batches, val_batches, update_arch=update_arch)
        except NonFiniteLossError as e:
            raise SearchError(
                self._non_finite_message(e, it, epoch, train_batches, val_batches)
            ) from e
        if first:
            self._compiled = True
            print(
                f"compiled and ran the first iteration in "
                f"{time.perf_counter() - compile_start:.1f} s",
                flush=True,
            )
        return result

    def _stopped(self, it: int, stop_after: int, metrics: dict) -> SearchResult:
        print(f"stopped at iteration {it}; run again on {self.workdir} to resume")
        return SearchResult(self._genotype(), self.workdir, None, metrics)

    def _non_finite_message(
        self, error: NonFiniteLossError, it: int, epoch: int, train_batches, val_batches
    ) -> str:
        detail = error.describe(self.names)
        # Name the learners whose input batches hold NaN/inf (the usual cause).
        bad_inputs = []
        for s, stage in enumerate(self.schedule.stages):
            for step in train_batches[s]:
                for k, batch in zip(stage.learners, step, strict=True):
                    if not _all_finite(self.strategy, batch[0]):
                        bad_inputs.append(f"learner {self.names[k]!r} train batch (stage {s})")
        for k, batch in enumerate(val_batches):
            if not _all_finite(self.strategy, batch[0]):
                bad_inputs.append(f"learner {self.names[k]!r} validation batch")
        if bad_inputs:
            detail += "; NaN/inf in the input images of " + ", ".join(dict.fromkeys(bad_inputs))
        last = self.manager.latest_checkpoint if self.manager else None
        kept = (
            f"the last good checkpoint {last} is intact"
            if last
            else "no checkpoint had been written yet"
        )
        return (
            f"non-finite loss at iteration {it} (epoch {epoch + 1}): {detail}; nothing was "
            f"applied or saved, {kept}. Check the data for NaN/inf and lower "
            "the learning rates (SearchConfig.optimizers)."
        )

    # -- reporting -------------------------------------------------------------------

    def _genotype(self):
        return self.model.encoder.derive(self.model.arch.numpy())

    def _evaluate(self, k: int) -> RunningStats:
        d = self.datas[k]
        n = max(1, d.num_val // d.batch_size)
        if self.config.eval_batches is not None:
            n = min(n, self.config.eval_batches)
        batches = distribute.BatchStream(self.strategy, functools.partial(d.val_dataset, 0))
        return self.engine.evaluate(k, itertools.islice(batches, n))

    def _end_of_epoch(self, epoch: int, train_stats, arch_val) -> dict:
        genotype = self._genotype()
        arch = self.model.arch.numpy()
        record: dict = {"epoch": epoch + 1, "iteration": int(self.iteration), "learners": {}}
        for k, name in enumerate(self.names):
            val = self._evaluate(k)
            entry = {"val_loss": val.loss, "val_accuracy": val.accuracy}
            train = train_stats[k]
            entry.update(train_loss=train.loss, train_accuracy=train.accuracy)
            if arch_val[k].count:
                entry.update(hypergradient_val_loss=arch_val[k].loss)
            record["learners"][name] = entry
        aux_skip = self.model.arch.aux_skip_value()
        if aux_skip is not None:
            record["aux_skip"] = aux_skip
        lookup = None
        if self.nb201_table is not None:
            lookup = self.nb201_table.lookup(genotype).to_dict()
            record["nb201"] = lookup
        record["genotype"] = genotype.to_json_dict()
        summary = "  ".join(
            f"{name}: val loss {e['val_loss']:.4f} acc {100 * e['val_accuracy']:.2f}%"
            + (f", train acc {100 * e['train_accuracy']:.2f}%" if "train_accuracy" in e else "")
            for name, e in record["learners"].items()
        )
        print(f"epoch {epoch + 1}: {summary}\ngenotype: {genotype.to_text()}", flush=True)
        if lookup is not None:
            print(
                "NAS-Bench-201 look-up: CIFAR-10 test {cifar10_test:.2f}, CIFAR-100 test "
                "{cifar100_test:.2f}, ImageNet16-120 test {imagenet16_test:.2f}".format(**lookup),
                flush=True,
            )
        if self.writer is None:
            return record
        metadata = {
            "epoch": epoch + 1,
            "epochs": self.config.epochs,
            "iteration": record["iteration"],
            "method": self.config.method,
            "schedule": self.config.schedule,
            "learners": self.names,
            "seed": self.config.seed,
            "alpha": {name: a.tolist() for name, a in arch.items()},
            "alpha_softmax": {name: softmax(a).tolist() for name, a in arch.items() if a.ndim == 2},
            "metrics": record["learners"],
        }
        if lookup is not None:
            metadata["nb201"] = lookup
        with rundir.io_errors(self.workdir, "write to"):
            self.writer.write(
                record, genotype, arch, metadata, float(self.engine.weight_optimizer.learning_rate)
            )
        return record


def _record_iteration(line: str) -> float:
    """The iteration of a ``metrics.jsonl`` line (infinite for a line cut short by a crash)."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _all_finite(strategy: tf.distribute.Strategy, images) -> bool:
    return all(
        bool(tf.reduce_all(tf.math.is_finite(t)))
        for t in strategy.experimental_local_results(images)
    )


def grappler_options(graph_optimizer: bool, constant_folding: bool) -> dict[str, bool]:
    """Grappler's options for these ``SearchConfig`` settings ({}: TensorFlow's defaults)."""
    options = {}
    if not graph_optimizer:
        options["disable_meta_optimizer"] = True
    if not constant_folding:
        options["constant_folding"] = False
    return options


@contextlib.contextmanager
def _graph_optimizer(config: SearchConfig):
    # Grappler's options are process-wide and read when a function first runs, so
    # they are set for the whole search and restored after it.
    options = grappler_options(config.graph_optimizer, config.constant_folding)
    if not options:
        yield
        return
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options(options)
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {
                "disable_meta_optimizer": previous.get("disable_meta_optimizer", False),
                "constant_folding": previous.get("constant_folding", True),
            }
        )


def run_search(
    config: SearchConfig,
    workdir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    stop_after: int | None = None,
    extend: bool = False,
    config_text: str | None = None,
    on_begin: Callable[[], None] | None = None,
) -> SearchResult:
    """Runs (or resumes) the search described by ``config`` in ``workdir``.

    The workdir is a run directory (``il_tf.rundir``): locked while the search runs (a
    second start fails at once, naming this one), its settings in ``run.json``. A workdir
    of a search with other settings is refused; ``extend`` lets a restart raise
    ``epochs``. ``stop_after``: stop, with a checkpoint, once this many iterations have
    run in this call (for time-limited jobs); calling again on the workdir resumes.
    ``config_text`` (the gin config) goes to ``config.gin``. ``on_begin`` is called when
    the search is about to do its first step (after every check). Raises
    ``rundir.RunDirError`` (a ValueError) for a workdir in use, with other settings, or
    not writable.
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    strategy = strategy or distribute.make_strategy()
    started = time.time()
    with rundir.RunDir(workdir, KIND) as run, _graph_optimizer(config):
        result = _Run(config, run, strategy, extend, config_text, on_begin).run(stop_after)
        distribute.sync_workers(strategy)
    if result.genotype_path is not None:
        print(f"search finished in {time.time() - started:.1f} s", flush=True)
    return result
