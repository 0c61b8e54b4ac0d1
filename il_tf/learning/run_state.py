"""Where a search run stands: its checkpointed state and the learners' streams from there.

The learners' pipelines are pure functions of (seed, position) and nothing else is
random, so the iteration fixes the whole data and RNG state of a search
(:func:`data_positions`). A checkpoint holds the engine's variables and optimizers, the
iteration, the data positions (a check), the seed and the epoch's running statistics, so
that a resumed epoch reports what an uninterrupted one does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from il_tf import distribute, legacy, rundir
from il_tf.data.learners import LearnerData
from il_tf.learning.engine import SearchEngine
from il_tf.learning.reporting import RunningStats
from il_tf.learning.stage_schedule import Schedule


class SearchError(RuntimeError):
    """A search cannot continue (non-finite loss, incompatible workdir, ...)."""


def data_positions(schedule: Schedule, num_learners: int, iteration: int) -> np.ndarray:
    """Train and validation batches each learner has consumed after ``iteration`` iterations."""
    return np.array(
        [[iteration * schedule.batches_per_iteration(k), iteration] for k in range(num_learners)],
        np.int64,
    )


class SearchInputs:
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


class RunState:
    """A search's checkpointed state: the engine's, the iteration, data positions, statistics.

    Args:
      engine: the search engine (its variables and optimizers are checkpointed).
      names: the learners' names (the heads' names in the checkpoint).
      schedule: the stages of an iteration (the data positions follow from it).
      seed: the run's seed (checked on restore).
      iterations_per_epoch: iterations per epoch (an epoch's start has empty statistics).
    """

    def __init__(
        self,
        engine: SearchEngine,
        names: Sequence[str],
        schedule: Schedule,
        seed: int,
        iterations_per_epoch: int,
    ):
        self.schedule = schedule
        self.num_learners = len(names)
        self.seed = seed
        self.ipe = iterations_per_epoch
        # Host-side state, created outside the strategy scope (plain variables): the
        # iteration and, per learner, the train and validation batches consumed.
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.positions = tf.Variable(
            tf.zeros((self.num_learners, 2), tf.int64), trainable=False, name="data_positions"
        )
        self.seed_variable = tf.Variable(seed, dtype=tf.int64, trainable=False, name="seed")
        # Per learner, the epoch's running statistics of the training steps and of the
        # hypergradient's validation (loss sum, correct, count).
        self.epoch_stats = tf.Variable(
            tf.zeros((self.num_learners, 2, 3), tf.float64), trainable=False, name="epoch_stats"
        )
        self.checkpoint = tf.train.Checkpoint(
            **engine.checkpoint_objects(names),
            iteration=self.iteration,
            data_positions=self.positions,
            seed=self.seed_variable,
            epoch_stats=self.epoch_stats,
        )
        self.manager: tf.train.CheckpointManager | None = None  # made by open()

    def restore(self, directory: Path, total_iterations: int) -> int:
        """Restores the last checkpoint in ``directory`` (reads only); the iteration to start at."""
        latest = tf.train.latest_checkpoint(str(directory))
        if not latest:
            return 0
        with rundir.io_errors(latest, "read the checkpoint"):
            status = self.checkpoint.restore(latest)
            names = {name for name, _ in tf.train.list_variables(latest)}
        if not legacy.check_restored(status, names):
            logging.warning(
                "%s holds no running statistics: this epoch's train loss and accuracy "
                "cover only the iterations from here on",
                latest,
            )
        it = int(self.iteration)
        expected = data_positions(self.schedule, self.num_learners, it)
        if (self.positions.numpy() != expected).any() or int(self.seed_variable) != self.seed:
            raise SearchError(
                f"checkpoint {latest} was written with another seed or data schedule "
                f"(data positions {self.positions.numpy().tolist()}, expected "
                f"{expected.tolist()}); use a new --workdir"
            )
        if it > total_iterations:
            raise SearchError(
                f"checkpoint {latest} is at iteration {it}, past this run's "
                f"{total_iterations} iterations"
            )
        print(f"resumed from {latest} at iteration {it}", flush=True)
        return it

    def open(self, directory: Path, keep: int) -> None:
        """Starts writing checkpoints to ``directory``, keeping the last ``keep``."""
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        """The last checkpoint written (None before the first)."""
        return self.manager.latest_checkpoint if self.manager else None

    def advance(self, it: int) -> None:
        """Records that ``it`` iterations are done."""
        self.iteration.assign(it)

    def save(self, it: int, stats: tuple[Sequence[RunningStats], Sequence[RunningStats]]) -> None:
        """Checkpoints iteration ``it`` with the epoch's running ``stats`` (train, arch_val)."""
        self.positions.assign(data_positions(self.schedule, self.num_learners, it))
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

    def running_stats(self, it: int) -> tuple[list[RunningStats], list[RunningStats]]:
        """The epoch's statistics so far: restored mid-epoch, empty at an epoch's start."""
        train = [RunningStats() for _ in range(self.num_learners)]
        arch_val = [RunningStats() for _ in range(self.num_learners)]
        if it % self.ipe:
            for k, (t, a) in enumerate(self.epoch_stats.numpy().tolist()):
                train[k] = RunningStats(*t)
                arch_val[k] = RunningStats(*a)
        return train, arch_val
