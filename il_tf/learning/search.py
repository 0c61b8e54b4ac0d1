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

from il_tf import distribute
from il_tf.data.learners import Learner, LearnerData, build_learner_data, check_unique_names
from il_tf.learning.engine import NonFiniteLossError, OptimizerSettings, SearchEngine
from il_tf.learning.hypergradients import get_method
from il_tf.learning.reporting import EpochWriter, RunningStats, softmax
from il_tf.learning.schedule import SCHEDULES, Schedule, make_schedule
from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.spaces.factories import darts_supernet
from il_tf.spaces.space import SearchSpace, check_space
from il_tf.validation import check_bool, check_int, check_number, invalid

OWNER = "SearchConfig"


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
        for name in ("jit_compile", "graph_optimizer", "draw"):
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
        self.train = [
            distribute.BatchStream(strategy, d.train_dataset(start_batch=int(positions[k, 0])))
            for k, d in enumerate(datas)
        ]
        self.val = [
            distribute.BatchStream(strategy, d.val_dataset(start_batch=int(positions[k, 1])))
            for k, d in enumerate(datas)
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
    """The search model of ``config``: its supernet, one head per learner, α (float32)."""
    return build_search_model(
        config.supernet,
        [d.num_classes for d in datas],
        [d.image_shape for d in datas],
        seed=config.seed,
        head_names=[f"head_{d.name}" for d in datas],
        mixed_precision=config.mixed_precision,
        # α and β stay float32 whatever the layers compute in.
        arch_dtype="float32",
    )


class _Run:
    """One search run in one workdir: its data, engine, checkpoints and reports."""

    def __init__(self, config: SearchConfig, workdir: Path, strategy: tf.distribute.Strategy):
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.chief = distribute.is_chief()
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
        )
        self.model: SearchModel = self.engine.model
        # Host-side state, created outside the strategy scope (plain variables): the
        # iteration and, per learner, the train and validation batches consumed.
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.data_positions = tf.Variable(
            tf.zeros((len(self.datas), 2), tf.int64), trainable=False, name="data_positions"
        )
        self.seed = tf.Variable(config.seed, dtype=tf.int64, trainable=False, name="seed")
        self.checkpoint = tf.train.Checkpoint(
            **self.engine.checkpoint_objects(self.names),
            iteration=self.iteration,
            data_positions=self.data_positions,
            seed=self.seed,
        )
        ckpt_dir = workdir / "checkpoints"
        if not self.chief:
            # Non-chief workers of a multi-worker run write throw-away copies.
            ckpt_dir = workdir / "tmp" / f"worker_{id(self)}"
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(ckpt_dir), max_to_keep=config.keep_checkpoints
        )
        self.writer = (
            EpochWriter(workdir, self.model.encoder.op_names, config.draw) if self.chief else None
        )
        # Whether this process has run an iteration (traced the step functions) yet.
        self._compiled = False

    # -- resume ----------------------------------------------------------------------

    def restore_or_start(self) -> int:
        run_file = self.workdir / "run.json"
        # Compare in JSON form (tuples and lists alike).
        fingerprint = self.config.fingerprint()
        fingerprint["supernet"] = {
            "weights": [list(v.shape) for v in self.model.encoder.weights],
            "arch": {k: list(v) for k, v in self.model.encoder.arch_shapes().items()},
        }
        fingerprint = json.loads(json.dumps(fingerprint))
        latest = self.manager.latest_checkpoint
        if latest:
            if run_file.exists():
                previous = json.loads(run_file.read_text()).get("fingerprint")
                if previous is not None and previous != fingerprint:
                    changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                    raise SearchError(
                        f"workdir {self.workdir} holds a search with other settings "
                        f"({', '.join(changed)} differ); resume it with its own config "
                        f"({self.workdir / 'config.gin'}) or use a new --workdir"
                    )
            self.checkpoint.restore(latest).assert_consumed()
            it = int(self.iteration)
            expected = self._positions(it)
            if (self.data_positions.numpy() != expected).any() or int(
                self.seed
            ) != self.config.seed:
                raise SearchError(
                    f"checkpoint {latest} was written with another seed or data schedule "
                    f"(data positions {self.data_positions.numpy().tolist()}, expected "
                    f"{expected.tolist()}); use a new --workdir"
                )
            print(f"resumed from {latest} at iteration {it}", flush=True)
        elif self.chief:
            record = {
                "fingerprint": fingerprint,
                "iterations_per_epoch": self.ipe,
                "total_iterations": self.total_iterations,
            }
            _atomic_write(run_file, json.dumps(record, indent=2))
        return int(self.iteration)

    def _positions(self, it: int) -> np.ndarray:
        return data_positions(self.schedule, len(self.datas), it)

    def _save(self, it: int) -> None:
        self.data_positions.assign(self._positions(it))
        self.manager.save(checkpoint_number=it)

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> SearchResult:
        config = self.config
        start = self.restore_or_start()
        inputs = _Inputs(self.datas, self.schedule, self.strategy, start)
        it = start
        metrics: dict = {}
        if it >= self.total_iterations:
            print(f"search in {self.workdir} already finished ({it} iterations)", flush=True)
            records = (self.workdir / "metrics.jsonl").read_text().splitlines()
            metrics = json.loads(records[-1]) if records else {}
        while it < self.total_iterations:
            epoch = it // self.ipe
            train_stats = [RunningStats() for _ in self.datas]
            arch_val = [RunningStats() for _ in self.datas]
            print(f"epoch {epoch + 1}/{config.epochs}", flush=True)
            bar = self._progress_bar()
            while it < (epoch + 1) * self.ipe:
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
                if it % config.checkpoint_every == 0 and it % self.ipe:
                    self._save(it)
                if stop_after is not None and it - start >= stop_after and it % self.ipe:
                    self._save(it)
                    return self._stopped(it, stop_after, metrics)
            metrics = self._end_of_epoch(epoch, train_stats, arch_val)
            self._save(it)
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
        logging.info("stopping after %d iterations (at %d); rerun to resume", stop_after, it)
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
        last = self.manager.latest_checkpoint
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
        batches = distribute.BatchStream(self.strategy, d.val_dataset().take(n))
        return self.engine.evaluate(k, batches)

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
        self.writer.write(
            record, genotype, arch, metadata, float(self.engine.weight_optimizer.learning_rate)
        )
        return record


def _all_finite(strategy: tf.distribute.Strategy, images) -> bool:
    return all(
        bool(tf.reduce_all(tf.math.is_finite(t)))
        for t in strategy.experimental_local_results(images)
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def _graph_optimizer(enabled: bool):
    # Grappler's options are process-wide and read when a function first runs, so
    # they are set for the whole search and restored after it.
    if enabled:
        yield
        return
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": previous.get("disable_meta_optimizer", False)}
        )


def run_search(
    config: SearchConfig,
    workdir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    stop_after: int | None = None,
) -> SearchResult:
    """Runs (or resumes) the search described by ``config`` in ``workdir``.

    ``stop_after``: stop, with a checkpoint, once this many iterations have run in
    this call (for time-limited jobs); calling again on the workdir resumes.
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or distribute.make_strategy()
    started = time.time()
    with _graph_optimizer(config.graph_optimizer):
        run = _Run(config, workdir, strategy)
        result = run.run(stop_after)
    if result.genotype_path is not None:
        print(f"search finished in {time.time() - started:.1f} s", flush=True)
    return result
