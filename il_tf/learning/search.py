"""The interleaved architecture search, from a gin-bound config to a genotype in a workdir.

``run_search(config, workdir)`` builds the learners' pipelines and the search engine,
resumes from the workdir's last checkpoint when there is one, runs the epochs, and keeps
the workdir current: ``genotype.json`` and cell drawings after every epoch, TensorBoard
summaries, ``metrics.jsonl``, checkpoints. Its parts: the settings
(``il_tf/learning/search_config.py``), the memory and compile plan
(``il_tf/learning/plan.py``), the engine's builder (``il_tf/learning/build.py``),
the checkpointed state (``il_tf/learning/run_state.py``) and what the user sees
(``il_tf/learning/reporting.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from il_tf import distribute, interrupts, legacy, rundir
from il_tf.data.learners import LearnerData, build_learner_data
from il_tf.learning import reporting
from il_tf.learning.build import build_engine
from il_tf.learning.engine import NonFiniteLossError
from il_tf.learning.plan import choose_plan
from il_tf.learning.run_state import RunState, SearchError, SearchInputs
from il_tf.learning.search_config import (
    EXTENDABLE_SETTINGS,
    FREE_SETTINGS,
    SearchConfig,
    run_settings,
)
from il_tf.learning.stage_schedule import Schedule
from il_tf.spaces.space import check_space

__all__ = ["FREE_SETTINGS", "SearchConfig", "SearchError", "SearchResult", "run_search"]

KIND = "search"


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a finished search leaves: the genotype, where it is, the final metrics."""

    genotype: object
    workdir: Path
    genotype_path: Path | None  # None when the run stopped before its end
    metrics: dict


def iterations_per_epoch(
    config: SearchConfig, schedule: Schedule, datas: Sequence[LearnerData]
) -> int:
    """``config.iterations_per_epoch``, or enough for every learner to see its train split."""
    return config.iterations_per_epoch or max(
        math.ceil(d.steps_per_epoch / schedule.batches_per_iteration(k))
        for k, d in enumerate(datas)
    )


def _check_batches(datas: Sequence[LearnerData], replicas: int) -> None:
    for d in datas:
        if d.batch_size % replicas:
            raise ValueError(
                f"learner {d.name!r}: batch_size {d.batch_size} is not divisible by the "
                f"{replicas} replicas (it is the global batch)"
            )


class _Run:
    """One start of a search in its workdir: checks and resumes it, then runs its epochs."""

    def __init__(
        self,
        config: SearchConfig,
        run: rundir.RunDir,
        strategy: tf.distribute.Strategy,
        extend: bool = False,
        config_text: str | None = None,
        on_begin: Callable[[], None] | None = None,
    ):
        self.config, self.run_dir, self.workdir = config, run, run.path
        self.strategy, self.extend = strategy, extend
        self.config_text, self.on_begin = config_text, on_begin
        self.schedule = config.make_schedule()
        # Built without weights (cheap): the look-ups check the space before any data.
        space = check_space(config.supernet(), "SearchConfig.supernet")
        reporters = reporting.genotype_reporters(config, space)
        self.datas = [build_learner_data(lr, config.seed) for lr in config.learners]
        self.names = [d.name for d in self.datas]
        _check_batches(self.datas, strategy.num_replicas_in_sync)
        self.ipe = iterations_per_epoch(config, self.schedule, self.datas)
        self.total_iterations = config.epochs * self.ipe
        self.plan = choose_plan(config, self.datas, space)
        self.engine = build_engine(
            config,
            self.datas,
            strategy,
            self.total_iterations * self.schedule.num_steps,
            self.plan,
            total_arch_steps=(config.epochs - config.arch_warmup_epochs) * self.ipe,
        )
        self.model = self.engine.model
        self.state = RunState(self.engine, self.names, self.schedule, config.seed, self.ipe)
        self.reporter = reporting.EpochReporter(
            self.engine, self.datas, config, strategy, reporters
        )
        self.progress = reporting.Progress(self.names, self.ipe, config.epochs)

    def restore(self) -> int:
        """Checks the settings against the run's, restores its last checkpoint (reads only).

        Returns the iteration to start from.
        """
        encoder = self.model.encoder
        self.run_dir.check(
            run_settings(self.config, encoder, self.ipe, self.datas, self.plan.record()),
            free=FREE_SETTINGS,
            extendable=EXTENDABLE_SETTINGS,
            extend=self.extend,
            legacy_settings=legacy.search_settings(self.config.fingerprint(), encoder),
        )
        return self.state.restore(self.workdir / "checkpoints", self.total_iterations)

    def begin(self, it: int) -> None:
        """The start is about to do its first step: record it, open the files it writes."""
        if self.on_begin is not None:
            self.on_begin()
        self.run_dir.begin(self.config_text)
        print(self.plan.describe(), flush=True)
        self.state.open(self.run_dir.scratch("checkpoints"), self.config.keep_checkpoints)
        if self.run_dir.chief:
            self.reporter.open(self.workdir, it)

    def run(self, stop_after: int | None = None) -> SearchResult:
        """Runs the epochs from the last checkpoint; stops early after ``stop_after``."""
        config, state = self.config, self.state
        start = it = self.restore()
        inputs = SearchInputs(self.datas, self.schedule, self.strategy, start)
        self.begin(start)
        metrics: dict = {}
        if it >= self.total_iterations:
            print(f"search in {self.workdir} already finished ({it} iterations)", flush=True)
            metrics = reporting.last_metrics(self.workdir)

        def stops(it: int) -> bool:
            return stop_after is not None and it - start >= stop_after

        while it < self.total_iterations:
            epoch = it // self.ipe
            stats = state.running_stats(it)
            self.progress.start_epoch(epoch)
            while it < (epoch + 1) * self.ipe:
                # SIGINT/SIGTERM (tools/search.py): a checkpoint here, then Interrupted.
                interrupts.stop_if_requested(
                    self.strategy, functools.partial(state.save, it, stats), it
                )
                self._iteration(it, epoch, inputs.next(), stats)
                it += 1
                state.advance(it)
                self.progress.update(it - epoch * self.ipe, stats[0])
                if it % self.ipe and (it % config.checkpoint_every == 0 or stops(it)):
                    state.save(it, stats)
                if it % self.ipe and stops(it):
                    return self._stopped(it, metrics)
            metrics = self.reporter.report(epoch, it, *stats)
            # The next epoch starts with empty statistics.
            state.save(it, state.running_stats(it))
            if stops(it) and it < self.total_iterations:
                return self._stopped(it, metrics)
        genotype_path = self.workdir / "genotype.json"
        return SearchResult(self.model.genotype(), self.workdir, genotype_path, metrics)

    def _iteration(self, it: int, epoch: int, batches, stats) -> None:
        """Runs iteration ``it`` on ``batches`` (train, val); adds to the epoch's ``stats``."""
        update_arch = epoch >= self.config.arch_warmup_epochs
        try:
            result = self.progress.run(
                lambda: self.engine.iteration(*batches, update_arch=update_arch)
            )
        except NonFiniteLossError as e:
            raise SearchError(
                reporting.non_finite_message(
                    e,
                    it,
                    epoch,
                    self.names,
                    self.schedule,
                    self.strategy,
                    batches,
                    self.state.latest,
                )
            ) from e
        train_stats, arch_val = stats
        for k in range(len(self.datas)):
            for st in result.train[k]:
                train_stats[k].add(st)
            if result.val[k] is not None:
                arch_val[k].add(result.val[k])

    def _stopped(self, it: int, metrics: dict) -> SearchResult:
        print(f"stopped at iteration {it}; run again on {self.workdir} to resume")
        return SearchResult(self.model.genotype(), self.workdir, None, metrics)


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
    with rundir.RunDir(workdir, KIND) as run_dir:
        run = _Run(config, run_dir, strategy, extend, config_text, on_begin)
        with run.plan.graph_options():
            result = run.run(stop_after)
        distribute.sync_workers(strategy)
    if result.genotype_path is not None:
        print(f"search finished in {time.time() - started:.1f} s", flush=True)
    return result
