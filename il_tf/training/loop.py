"""Training a found network from scratch and measuring it: ``train_and_evaluate``.

A run lives in one work directory (``il_tf.rundir`` owns ``run.json``, ``config.gin`` and
the lock; the training's own files are listed below). It is a custom loop rather than
``keras.Model.fit``: the step all-reduces gradients once and clips their global norm (see
``il_tf.training.trainer``), and resuming restores the exact data position. Batches are a pure
function of (seed, batch index) (see ``il_tf.data.learners``) and drop-path masks of (seed,
step), so a resumed run continues exactly where the last checkpoint left off, mid-epoch
too: the result equals that of an uninterrupted run.

::

    WORKDIR/run.json          kind "train"; settings: genotype, network, train, data (what
                              export rebuilds the network from); the history of starts
    WORKDIR/config.gin        the gin configuration of the first start (il_tf.rundir)
    WORKDIR/checkpoints/      the last checkpoints (model, optimizer, step): a run started
                              again on the same WORKDIR continues from the newest one
    WORKDIR/best/             the weights with the best VALIDATION top-1 so far (+ best.json);
                              only when the learner holds out validation data
    WORKDIR/tensorboard/      train and eval scalars (``tensorboard --logdir WORKDIR``)
    WORKDIR/results.json      test top-1 / top-5 of the last checkpoint, parameters,
                              multiply-adds, genotype, epochs, the command

Model selection never looks at the test split: without validation data (``val_fraction
= 0``) no "best" checkpoint is kept, the last checkpoint is the result (and what
``tools/export.py`` exports), and test accuracy during training is only logged.

Distribution comes from ``il_tf.distribute.make_strategy()``: MirroredStrategy over the
local GPUs (or the CPU), MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster
(every worker runs the same command; only the chief writes files and holds the lock).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gin
import keras
import tensorflow as tf
from absl import logging

from il_tf import distribute, interrupts, rundir
from il_tf.data.learners import Learner, LearnerData, build_learner_data
from il_tf.models.flops import complexity
from il_tf.models.networks import NetworkConfig
from il_tf.settings_checks import check_bool, check_int, check_number
from il_tf.spaces.genotypes import Genotype, load_genotype
from il_tf.training import lr_schedule as schedules
from il_tf.training.trainer import Trainer

KIND = "train"
RESULTS_FILE = "results.json"
LAST_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"
TENSORBOARD_DIR = "tensorboard"
MIXED_PRECISION_POLICIES = (None, "mixed_float16", "mixed_bfloat16")
# Settings that may differ when a run is restarted (they do not change what is computed).
RESTART_FREE_SETTINGS = (
    "eval_every_epochs",
    "eval_batch_size",
    "checkpoint_every_steps",
    "log_every_steps",
    "jit_compile",
    "progress",
    "steps_per_run",
)


OWNER = "TrainConfig"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of an evaluation run (the network's are in ``NetworkConfig``).

    Defaults are the DARTS CIFAR-10 settings (600 epochs, batch 96 set on the Learner).

    Attributes:
      epochs: training epochs.
      learning_rate: initial SGD learning rate.
      lr_schedule: "cosine" (to ``lr_min``), "exponential" (× ``lr_decay`` per epoch) or
        "constant"; the rate changes once per epoch, as in the reference.
      lr_min, lr_decay: see ``lr_schedule``.
      momentum: SGD momentum.
      weight_decay: coupled L2 (added to the gradient, as PyTorch's SGD does).
      grad_clip_norm: clip the global-batch gradient to this global norm; 0 = off.
      auxiliary_weight: weight of the auxiliary head's loss (needs NetworkConfig.auxiliary).
      drop_path_rate: final drop-path rate, ramped linearly from 0 over the epochs.
      label_smoothing: in [0, 1).
      mixed_precision: None, "mixed_float16" (dynamic loss scaling) or "mixed_bfloat16".
      jit_compile: compile the forward/backward pass with XLA.
      seed: initialization, data order, augmentation and drop-path seed.
      steps_per_epoch: None = the learner's train examples // batch size.
      eval_every_epochs: evaluate (and update the best checkpoint) every this many epochs;
        0 = only after the last epoch.
      eval_split: the split evaluated during training: None = "val" when the learner
        holds out validation data (val_fraction > 0), else "test". Only "val" picks a best
        checkpoint; "test" is logged, never used to choose weights (that would leak the
        test set): the last checkpoint is then the result.
      eval_batch_size: None = the learner's batch size.
      checkpoint_every_steps: also checkpoint every this many steps (0 = at epoch ends only).
      log_every_steps: TensorBoard scalar interval.
      progress: "auto" (a live progress bar on a terminal, one line per epoch otherwise),
        "bar", "epoch" or "none".
      steps_per_run: stop this process after this many steps (checkpointed; run the same
        command again to continue), for jobs with a time limit; None = run to the end.
    """

    epochs: int = 600
    learning_rate: float = 0.025
    lr_schedule: str = "cosine"
    lr_min: float = 0.0
    lr_decay: float = 0.97
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip_norm: float = 5.0
    auxiliary_weight: float = 0.4
    drop_path_rate: float = 0.2
    label_smoothing: float = 0.0
    mixed_precision: str | None = None
    jit_compile: bool = False
    seed: int = 0
    steps_per_epoch: int | None = None
    eval_every_epochs: int = 1
    eval_split: str | None = None
    eval_batch_size: int | None = None
    checkpoint_every_steps: int = 0
    log_every_steps: int = 50
    progress: str = "auto"
    steps_per_run: int | None = None

    def __post_init__(self) -> None:
        check_int(OWNER, "epochs", self.epochs, 1)
        check_int(OWNER, "seed", self.seed, 0)
        check_int(
            OWNER, "eval_every_epochs", self.eval_every_epochs, 0, note=" (0 = only at the end)"
        )
        check_int(
            OWNER,
            "checkpoint_every_steps",
            self.checkpoint_every_steps,
            0,
            note=" (0 = epoch ends)",
        )
        check_int(OWNER, "log_every_steps", self.log_every_steps, 1)
        check_int(OWNER, "steps_per_epoch", self.steps_per_epoch, 1, optional=True)
        check_int(OWNER, "steps_per_run", self.steps_per_run, 1, optional=True)
        check_int(OWNER, "eval_batch_size", self.eval_batch_size, 1, optional=True)
        check_number(OWNER, "learning_rate", self.learning_rate, 0.0, above_minimum=True)
        check_number(OWNER, "lr_min", self.lr_min, 0.0)
        check_number(OWNER, "lr_decay", self.lr_decay, 0.0, 1.0, above_minimum=True)
        check_number(OWNER, "momentum", self.momentum, 0.0, 1.0, below_maximum=True)
        check_number(OWNER, "weight_decay", self.weight_decay, 0.0)
        check_number(OWNER, "grad_clip_norm", self.grad_clip_norm, 0.0, note=" (0 = no clipping)")
        check_number(OWNER, "auxiliary_weight", self.auxiliary_weight, 0.0)
        check_number(OWNER, "drop_path_rate", self.drop_path_rate, 0.0, 1.0, below_maximum=True)
        check_number(OWNER, "label_smoothing", self.label_smoothing, 0.0, 1.0, below_maximum=True)
        if self.lr_schedule not in schedules.LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {list(schedules.LR_SCHEDULES)}, "
                f"got {self.lr_schedule!r}"
            )
        if self.lr_schedule == "cosine" and self.lr_min > self.learning_rate:
            raise ValueError(
                f"TrainConfig.lr_min ({self.lr_min}) must not exceed learning_rate "
                f"({self.learning_rate})"
            )
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(
                f"TrainConfig.mixed_precision must be one of {list(MIXED_PRECISION_POLICIES)}, "
                f"got {self.mixed_precision!r}"
            )
        if self.eval_split not in (None, "val", "test"):
            raise ValueError(
                f"TrainConfig.eval_split must be None, 'val' or 'test', got {self.eval_split!r}"
            )
        if self.progress not in ("auto", "bar", "epoch", "none"):
            raise ValueError(
                f"TrainConfig.progress must be 'auto', 'bar', 'epoch' or 'none', "
                f"got {self.progress!r}"
            )
        check_bool(OWNER, "jit_compile", self.jit_compile)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------
# The run


def run_settings(
    genotype: Genotype, network: NetworkConfig, config: TrainConfig, data: LearnerData
) -> dict[str, Any]:
    """The run's settings in ``run.json``: everything needed to rebuild, resume and export it."""
    return {
        "genotype": genotype.to_json_dict(),
        "network": network.to_dict(),
        "train": config.to_dict(),
        "data": {
            "learner": data.name,
            "source": data.learner.source.description,
            "num_classes": data.num_classes,
            "class_names": list(data.class_names),
            "image_shape": list(data.image_shape),
            "normalization": {
                "mean": list(data.normalization.mean),
                "std": list(data.normalization.std),
            },
            "batch_size": data.batch_size,
            "num_train": data.num_train,
            "num_val": data.num_val,
        },
    }


class _Summaries:
    """TensorBoard writers (no-ops on workers other than the chief)."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / TENSORBOARD_DIR
        with rundir.io_errors(self.root, "write"):
            if distribute.is_chief():
                self.train = tf.summary.create_file_writer(str(self.root / "train"))
                self.eval = tf.summary.create_file_writer(str(self.root / "eval"))
            else:
                self.train = self.eval = tf.summary.create_noop_writer()

    def write(self, writer, step: int, scalars: Mapping[str, float]) -> None:
        with rundir.io_errors(self.root, "write"), writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            writer.flush()


class _Run:
    """One start of a training run: checked settings, restored state, loop, results."""

    def __init__(
        self,
        run: rundir.RunDir,
        genotype: Genotype,
        learner: Learner,
        network: NetworkConfig,
        config: TrainConfig,
        command: str | None,
        config_text: str | None,
        extend: bool,
    ) -> None:
        self.run, self.workdir = run, run.path
        self.genotype, self.network, self.config = genotype, network, config
        self.command = command or rundir.default_command()
        # MultiWorkerMirroredStrategy must exist before any other TF work of the process.
        self.strategy = distribute.make_strategy()
        self.data = data = build_learner_data(learner, config.seed)
        if data.num_classes < 2:
            raise ValueError(
                f"Learner {learner.name!r} has {data.num_classes} class; training needs >= 2"
            )
        self.eval_split = config.eval_split or ("val" if data.num_val else "test")
        if self.eval_split == "val" and not data.num_val:
            raise ValueError(
                f"TrainConfig.eval_split='val' but Learner {learner.name!r} holds out no "
                f"validation data (val_fraction={learner.val_fraction}); set val_fraction > 0 "
                f"or eval_split='test'"
            )
        # Only validation accuracy chooses weights; test accuracy would leak the test set.
        self.select_best = self.eval_split == "val"
        run.check(
            run_settings(genotype, network, config, data),
            free=[f"train.{name}" for name in RESTART_FREE_SETTINGS],
            extendable=["train.epochs"],
            extend=extend,
        )
        self.steps_per_epoch = config.steps_per_epoch or data.steps_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch
        self.eval_batch = config.eval_batch_size or data.batch_size

        keras.utils.set_random_seed(config.seed)
        self.trainer = Trainer(
            genotype,
            network,
            data.num_classes,
            data.image_shape,
            data.batch_size,
            self.strategy,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            auxiliary_weight=config.auxiliary_weight,
            label_smoothing=config.label_smoothing,
            grad_clip_norm=config.grad_clip_norm,
            mixed_precision=config.mixed_precision,
            jit_compile=config.jit_compile,
        )
        self._restore()
        # Everything that can fail on bad input has run: from here on the run writes.
        run.begin(config_text, self.command)
        self.last = tf.train.CheckpointManager(
            self.trainer.checkpoint, str(run.scratch(LAST_DIR)), max_to_keep=2
        )
        self.best = tf.train.CheckpointManager(
            self.trainer.model_checkpoint, str(run.scratch(BEST_DIR)), max_to_keep=1
        )
        self.summaries = _Summaries(self.workdir)
        self.progress = config.progress
        if self.progress == "auto":
            self.progress = "bar" if sys.stdout.isatty() else "epoch"

    def _restore(self) -> None:
        """Restores the newest checkpoint, if any (reads only)."""
        trainer, workdir = self.trainer, self.workdir
        latest = tf.train.latest_checkpoint(str(workdir / LAST_DIR))
        if latest:
            with rundir.io_errors(latest, "read the checkpoint"):
                trainer.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("resuming from %s (step %d)", latest, int(trainer.step.numpy()))
        self.step = int(trainer.step.numpy())
        if self.step > self.total_steps:
            raise ValueError(
                f"the checkpoint {latest} is at step {self.step}, past this run's "
                f"{self.total_steps} steps"
            )
        best_file = workdir / BEST_DIR / BEST_FILE
        self.best_info = rundir.read_json(best_file, "best record") if best_file.is_file() else None

    def _save(self, manager: tf.train.CheckpointManager) -> None:
        self.trainer.step.assign(self.step)
        try:
            with rundir.io_errors(manager.directory, "write the checkpoint to"):
                manager.save(checkpoint_number=self.step)
        except rundir.RunDirError:
            rundir.remove_partial_files(manager.directory)  # the last checkpoint stays
            raise

    def train(self) -> dict[str, Any]:
        """Trains to the end (or for ``steps_per_run`` steps); returns the results record."""
        config, data = self.config, self.data
        if getattr(self.genotype, "space", None) == "choices":
            what = f"the network of builder {self.genotype.builder}"
        else:
            what = f"the {self.network.kind} network"
        logging.info(
            "training %s on %r: %d epochs x %d steps, global batch %d, %d replica(s), "
            "evaluating on %r",
            what, data.name, config.epochs, self.steps_per_epoch, data.batch_size,
            self.strategy.num_replicas_in_sync, self.eval_split,
        )  # fmt: skip
        if not self.select_best and self.progress != "none":
            print(
                f"no validation split (Learner {data.name!r} val_fraction="
                f"{data.learner.val_fraction}): {self.eval_split} accuracy is only logged, no "
                "best checkpoint is chosen by it; the last checkpoint is the result",
                flush=True,
            )
        stop_at = self.total_steps
        if config.steps_per_run is not None:
            stop_at = min(stop_at, self.step + config.steps_per_run)
        # One input pipeline per worker: each reads only its replicas' slices of the batches.
        start = self.step
        batches = self.strategy.distribute_datasets_from_function(
            lambda context: data.train_dataset(start_batch=start, input_context=context)
        )
        iterator = iter(batches)
        while self.step < stop_at:
            epoch = self.step // self.steps_per_epoch
            epoch_end = min((epoch + 1) * self.steps_per_epoch, stop_at)
            line = self._train_epoch(iterator, epoch, epoch_end)
            if self.step % self.steps_per_epoch == 0:
                line += self._end_epoch(epoch + 1)
            self._save(self.last)
            if self.progress != "none":
                print(line, flush=True)
        if self.step < self.total_steps:
            return {"finished": False, "step": self.step, "total_steps": self.total_steps}
        return self._results()

    def _train_epoch(self, iterator, epoch: int, end: int) -> str:
        config, trainer = self.config, self.trainer
        lr = schedules.learning_rate(
            epoch, config.epochs, config.learning_rate, config.lr_schedule, config.lr_min,
            config.lr_decay,
        )  # fmt: skip
        rate = schedules.drop_path_rate(epoch, config.epochs, config.drop_path_rate)
        trainer.learning_rate.assign(lr)
        trainer.model.drop_path_rate.assign(rate)
        if self.progress == "bar":
            print(f"Epoch {epoch + 1}/{config.epochs}")
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["lr"])
        sums: dict[str, float] = {}
        first, start = self.step, time.perf_counter()
        while self.step < end:
            # SIGINT/SIGTERM (tools/train.py): a checkpoint here, then Interrupted.
            interrupts.stop_if_requested(
                self.strategy, lambda: self._save(self.last), self.step, "step"
            )
            # Drop-path masks are a function of (seed, step): a resumed run draws the same.
            seed = tf.constant([config.seed, self.step], tf.int64)
            out = {k: float(v) for k, v in trainer.train_step(next(iterator), seed).items()}
            self.step += 1
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            loss, accuracy = out["loss_sum"] / out["count"], out["correct"] / out["count"]
            if self.progress == "bar":
                position = self.step - epoch * self.steps_per_epoch
                bar.update(position, [("loss", loss), ("acc", accuracy), ("lr", lr)])
            if self.step % config.log_every_steps == 0:
                scalars = {
                    "loss": loss,
                    "accuracy": 100.0 * accuracy,
                    "grad_norm": out["grad_norm"],
                    "learning_rate": lr,
                    "drop_path_rate": rate,
                }
                if trainer.loss_scale is not None:
                    scalars["loss_scale"] = float(trainer.loss_scale.scale.numpy())
                self.summaries.write(self.summaries.train, self.step, scalars)
            if config.checkpoint_every_steps and self.step % config.checkpoint_every_steps == 0:
                self._save(self.last)
        seconds = time.perf_counter() - start
        count = max(sums.get("count", 0.0), 1.0)
        stats = {
            "epoch_loss": sums.get("loss_sum", 0.0) / count,
            "epoch_accuracy": 100.0 * sums.get("correct", 0.0) / count,
            "images_per_second": sums.get("count", 0.0) / seconds,
        }
        self.summaries.write(self.summaries.train, self.step, stats)
        if sums.get("skipped"):
            logging.warning("%d step(s) skipped: non-finite float16 gradients", sums["skipped"])
        return (
            f"epoch {epoch + 1}/{config.epochs} (step {self.step}): train loss "
            f"{stats['epoch_loss']:.4f} acc {stats['epoch_accuracy']:.2f}% lr {lr:.4g} "
            f"drop-path {rate:.3g}, {self.step - first} steps at "
            f"{stats['images_per_second']:.1f} img/s"
        )

    def _end_epoch(self, epochs_done: int) -> str:
        """Evaluates when due and keeps the best checkpoint; returns text for the epoch line."""
        every = self.config.eval_every_epochs
        if not (self.step == self.total_steps or (every and epochs_done % every == 0)):
            return ""
        split = self.eval_split
        metrics = self.trainer.evaluate(
            lambda context: self.data.eval_dataset(split, self.eval_batch, context)
        )
        self.summaries.write(
            self.summaries.eval, self.step, {f"{split}_{k}": v for k, v in metrics.items()}
        )
        if self.select_best and metrics["top1"] > float(self.trainer.best_metric.numpy()):
            self.trainer.best_metric.assign(metrics["top1"])
            self._save(self.best)
            self.best_info = {"step": self.step, "epoch": epochs_done, "split": split, **metrics}
            if self.run.chief:
                rundir.write_json(self.workdir / BEST_DIR / BEST_FILE, self.best_info)
        return f"; {split} top-1 {metrics['top1']:.2f}% top-5 {metrics['top5']:.2f}%"

    def _results(self) -> dict[str, Any]:
        trainer, data = self.trainer, self.data
        test = trainer.evaluate(lambda context: data.test_dataset(self.eval_batch, context))
        size = complexity(trainer.model, data.image_shape)
        results = {
            "finished": True,
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "test_loss": test["loss"],
            "num_test": test["count"],
            "checkpoint": "last",
            "params": size.params,
            "params_m": size.params_m,
            "macs": size.macs,
            "macs_m": size.macs_m,
            "image_shape": list(data.image_shape),
            "epochs": self.config.epochs,
            "steps": self.step,
            "genotype": self.genotype.to_json_dict(),
            "network": self.network.to_dict(),
            "learner": data.name,
            "best": self.best_info,
            "command": self.command,
        }
        if self.run.chief:
            rundir.write_json(self.workdir / RESULTS_FILE, results)
        return results


@gin.configurable(denylist=["workdir", "genotype", "command", "config_text", "extend"])
def train_and_evaluate(
    workdir: str | os.PathLike[str],
    genotype: Genotype | str,
    learner: Learner = gin.REQUIRED,
    network: NetworkConfig | None = None,
    config: TrainConfig | None = None,
    command: str | None = None,
    config_text: str | None = None,
    extend: bool = False,
) -> dict[str, Any]:
    """Trains ``genotype``'s network from scratch on ``learner``; returns the results record.

    Continues from the newest checkpoint when ``workdir`` holds one of the same run (a
    finished run is only evaluated again); a run with other settings is refused, except
    more epochs with ``extend``. ``network`` and ``config`` default to the DARTS CIFAR
    settings. The record, also written to ``WORKDIR/results.json``, holds test top-1 /
    top-5 accuracy in % of the last checkpoint, parameters and multiply-adds, the genotype,
    the epochs and ``command``; ``finished`` is False when ``config.steps_per_run`` stopped
    the run early (then nothing is evaluated). ``config_text`` (the gin configuration)
    goes to ``WORKDIR/config.gin``. Raises ``rundir.RunDirError`` (a ValueError) when the
    workdir is in use, holds other settings or cannot be written.
    """
    # Settings are checked before anything is computed or written.
    network = NetworkConfig() if network is None else network
    config = TrainConfig() if config is None else config
    if isinstance(genotype, (str, os.PathLike)):
        genotype = load_genotype(genotype)
    if getattr(genotype, "space", None) == "choices":
        # A searched Keras builder's network: built from the genotype alone.
        logging.info("a choices genotype: NetworkConfig and drop-path do not apply")
    elif not isinstance(genotype, Genotype):
        raise ValueError(
            f"training needs a DARTS-space genotype, got a "
            f"{getattr(genotype, 'space', type(genotype).__name__)!r} genotype: {genotype!r}"
        )
    if not isinstance(learner, Learner):
        raise ValueError(f"train_and_evaluate needs a Learner (gin: @Learner()), got {learner!r}")
    if not isinstance(network, NetworkConfig):
        raise ValueError(f"network must be a NetworkConfig, got {network!r}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {config!r}")
    if config.auxiliary_weight and not network.auxiliary:
        logging.warning(
            "TrainConfig.auxiliary_weight=%s is unused: NetworkConfig.auxiliary is False",
            config.auxiliary_weight,
        )
    with rundir.RunDir(workdir, KIND) as run:
        training = _Run(run, genotype, learner, network, config, command, config_text, extend)
        results = training.train()
        distribute.sync_workers(training.strategy)
        return results


def read_run_settings(workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of the training run in ``workdir`` (RunDirError when there is none)."""
    return rundir.read_settings(workdir, KIND)
