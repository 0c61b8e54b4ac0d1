"""What a search shows its user: progress, epoch reports, metrics lines, genotype files,
TensorBoard, pictures.

The workdir keeps ``metrics.jsonl`` (one record per epoch), ``genotype.json`` and
``genotypes/epoch_NNN.json``, the α plot (``alpha.png``), the cell drawings and
TensorBoard summaries (:class:`EpochWriter`). Look-ups of the found cell (the
NAS-Bench-201 table's, ``SearchConfig.nb201_table``) join each epoch's report as
reporter objects (:func:`genotype_reporters`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from il_tf import distribute, rundir
from il_tf.learning import plots
from il_tf.learning.objective import LossStats
from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.drawing import DrawingUnavailable, draw_genotype

METRICS_FILE = "metrics.jsonl"

# A perceptually ordered colour ramp (dark blue → teal → yellow), for heat maps.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64
)


@dataclasses.dataclass
class RunningStats:
    """Sums of loss, correct predictions and examples over several steps."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0

    def add(self, stats: LossStats) -> None:
        self.loss_sum += float(stats.loss_sum)
        self.correct += float(stats.correct)
        self.count += float(stats.count)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def heat_map(weights: np.ndarray, cell: int = 12) -> np.ndarray:
    """An RGB uint8 image of a matrix with values in [0, 1], ``cell`` pixels per entry."""
    w = np.clip(np.asarray(weights, np.float64), 0.0, 1.0)
    pos = w * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return rgb.astype(np.uint8)


def write_arch_summaries(
    arch: Mapping[str, np.ndarray],
    op_names: Sequence[str] | Mapping[str, Sequence[str]],
    genotype_text: str,
    step: int,
) -> None:
    """α softmax heat maps (rows = edges, columns = ops) and the genotype, to TensorBoard.

    ``op_names`` names the columns: one list for every tensor, or one per tensor name.
    """
    for name, logits in arch.items():
        if logits.ndim != 2:
            continue
        weights = softmax(logits)
        tf.summary.image(f"alpha/{name}", heat_map(weights)[None], step=step)
        columns = plots.column_names(op_names, name)
        header = "| edge | " + " | ".join(columns[: weights.shape[1]]) + " |"
        rule = "|---" * (weights.shape[1] + 1) + "|"
        rows = [
            f"| {e} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
            for e, row in enumerate(weights)
        ]
        tf.summary.text(f"alpha/{name}_table", "\n".join([header, rule, *rows]), step=step)
    tf.summary.text("genotype", genotype_text, step=step)


def append_jsonl(path: Path, record: Mapping) -> None:
    """Appends one JSON record as a line (flushed and synced; never half a line)."""
    rundir.append_line(path, json.dumps(record, sort_keys=True))


class EpochWriter:
    """Writes a search's per-epoch outputs into its workdir (the chief's job).

    ``metrics.jsonl`` (one record per epoch), ``genotype.json`` and
    ``genotypes/epoch_NNN.json``, the α plot (``alpha.png``), the cell drawings, and
    TensorBoard scalars, α heat maps and the genotype text.
    """

    def __init__(
        self,
        workdir: Path,
        op_names: Sequence[str] | Mapping[str, Sequence[str]],
        draw: bool,
        lookups: Sequence[str] = (),
    ):
        self.workdir = workdir
        self.op_names = dict(op_names) if isinstance(op_names, Mapping) else tuple(op_names)
        self.draw = draw
        # Record keys of the genotype look-ups, whose numbers go to TensorBoard too.
        self.lookups = tuple(lookups)
        self.tensorboard = tf.summary.create_file_writer(str(workdir / "tensorboard"))
        self._drawing_warned = False

    def write(
        self,
        record: Mapping,
        genotype,
        arch: Mapping[str, np.ndarray],
        metadata: Mapping,
        weight_lr: float,
    ) -> None:
        """Writes epoch ``record["epoch"]``: its metrics record, genotype and pictures."""
        step = record["iteration"]
        with self.tensorboard.as_default():
            for name, entry in record["learners"].items():
                for key, value in entry.items():
                    tf.summary.scalar(f"{name}/{key}", value, step=step)
            tf.summary.scalar("lr/weights", weight_lr, step=step)
            for lookup in self.lookups:
                for key, value in record.get(lookup, {}).items():
                    if isinstance(value, (int, float)):
                        tf.summary.scalar(f"{lookup}/{key}", value, step=step)
            write_arch_summaries(arch, self.op_names, genotype.to_text(), step)
        self.tensorboard.flush()
        append_jsonl(self.workdir / METRICS_FILE, record)
        genotypes_lib.save_genotype(self.workdir / "genotype.json", genotype, dict(metadata))
        history = self.workdir / "genotypes"
        history.mkdir(exist_ok=True)
        genotypes_lib.save_genotype(
            history / f"epoch_{record['epoch']:03d}.json", genotype, dict(metadata)
        )
        plots.write_search_plot(self.workdir, self.op_names)
        if self.draw:
            self._draw(genotype)

    def _draw(self, genotype) -> None:
        try:
            draw_genotype(genotype, self.workdir, basename="genotype")
        except DrawingUnavailable as e:
            if not self._drawing_warned:
                # Once, and on one stream (absl's logging.warning would repeat it).
                print(f"warning: {e}", flush=True)
                self._drawing_warned = True

    def drop_after(self, iteration: int) -> None:
        """Drops the metrics records of epochs past ``iteration`` (a resumed run writes
        them again)."""
        metrics = self.workdir / METRICS_FILE
        if not metrics.is_file():
            return
        with rundir.io_errors(metrics, "read"):
            lines = metrics.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _record_iteration(line) <= iteration]
        if kept != lines:
            rundir.write_text(metrics, "".join(f"{line}\n" for line in kept))


def _record_iteration(line: str) -> float:
    """The iteration of a ``metrics.jsonl`` line (infinite for a line cut short by a crash)."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def last_metrics(workdir: Path) -> dict:
    """The last record of the workdir's ``metrics.jsonl`` ({} when there is none)."""
    path = workdir / METRICS_FILE
    with rundir.io_errors(path, "read"):
        records = path.read_text().splitlines() if path.is_file() else []
    return json.loads(records[-1]) if records else {}


class GenotypeReporter(Protocol):
    """Something reported with each epoch's genotype (a look-up of the found cell)."""

    #: The key of its entry in the epoch's record.
    key: str

    def report(self, genotype) -> tuple[dict[str, Any], str]:
        """The record entry for ``genotype`` and a line to print."""


def genotype_reporters(config, space) -> list[GenotypeReporter]:
    """The look-ups a search ``config`` reports each epoch, checked against its ``space``.

    NAS-Bench-201's when ``config.nb201_table`` is set (the space must be that
    benchmark's).
    """
    if not config.nb201_table:
        return []
    from il_tf.nb201_lookup import NB201Reporter

    return [NB201Reporter.for_space(config.nb201_table, space)]


class Progress:
    """A search's console lines: each epoch's header and progress bar, the first compile."""

    def __init__(self, names: Sequence[str], iterations_per_epoch: int, epochs: int):
        self.names = list(names)
        self.ipe = iterations_per_epoch
        self.epochs = epochs
        # Whether this process has run an iteration (traced the step functions) yet.
        self.compiled = False
        self._bar: keras.utils.Progbar | None = None

    def start_epoch(self, epoch: int) -> None:
        """Prints epoch ``epoch``'s header (0-based) and starts its bar."""
        print(f"epoch {epoch + 1}/{self.epochs}", flush=True)
        self._bar = self._new_bar()

    def _new_bar(self) -> keras.utils.Progbar | None:
        # None until the step functions are compiled: the ETA starts after that.
        if not self.compiled:
            return None
        return keras.utils.Progbar(
            self.ipe, stateful_metrics=[f"{n}_loss" for n in self.names], unit_name="it"
        )

    def run(self, iteration: Callable[[], Any]) -> Any:
        """Runs one iteration; the first one compiles the steps, and is announced."""
        if self.compiled:
            return iteration()
        print(
            "compiling the step functions (the first iteration; the ETA starts after it) ...",
            flush=True,
        )
        started = time.perf_counter()
        result = iteration()
        self.compiled = True
        print(
            f"compiled and ran the first iteration in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        return result

    def update(self, done: int, train_stats: Sequence[RunningStats]) -> None:
        """``done`` iterations of the epoch are done; shows the learners' train losses."""
        if self._bar is None:
            self._bar = self._new_bar()
        self._bar.update(
            done, values=[(f"{n}_loss", train_stats[k].loss) for k, n in enumerate(self.names)]
        )


class EpochReporter:
    """Reports each epoch's end: evaluates the learners, prints, writes the epoch's files.

    Args:
      engine: the search engine (its model, evaluation and learning rate).
      datas: the learners' data (their validation splits are evaluated).
      config: the ``SearchConfig`` (eval_batches, epochs, method, schedule, seed, draw).
      strategy: the distribution strategy.
      reporters: look-ups of the found cell (:func:`genotype_reporters`).
    """

    def __init__(self, engine, datas, config, strategy, reporters: Sequence[GenotypeReporter]):
        self.engine = engine
        self.model = engine.model
        self.datas = datas
        self.names = [d.name for d in datas]
        self.config = config
        self.strategy = strategy
        self.reporters = list(reporters)
        self.workdir: Path | None = None
        self.writer: EpochWriter | None = None  # the chief's, made by open()

    def open(self, workdir: Path, iteration: int) -> None:
        """Starts writing to ``workdir`` (the chief only), from ``iteration`` on."""
        self.workdir = workdir
        with rundir.io_errors(workdir, "write to"):
            self.writer = EpochWriter(
                workdir,
                self.model.encoder.op_names,
                self.config.draw,
                [r.key for r in self.reporters],
            )
        self.writer.drop_after(iteration)

    def _evaluate(self, k: int) -> RunningStats:
        d = self.datas[k]
        n = max(1, d.num_val // d.batch_size)
        if self.config.eval_batches is not None:
            n = min(n, self.config.eval_batches)
        batches = distribute.BatchStream(self.strategy, functools.partial(d.val_dataset, 0))
        return self.engine.evaluate(k, itertools.islice(batches, n))

    def report(self, epoch: int, iteration: int, train_stats, arch_val) -> dict:
        """Reports epoch ``epoch`` (0-based), ended at ``iteration``; returns its record."""
        genotype = self.model.genotype()
        arch = self.model.arch.numpy()
        record: dict = {"epoch": epoch + 1, "iteration": iteration, "learners": {}}
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
        lookups, lines = {}, []
        for reporter in self.reporters:
            lookups[reporter.key], line = reporter.report(genotype)
            lines.append(line)
        record.update(lookups)
        record["genotype"] = genotype.to_json_dict()
        summary = "  ".join(
            f"{name}: val loss {e['val_loss']:.4f} acc {100 * e['val_accuracy']:.2f}%"
            + (f", train acc {100 * e['train_accuracy']:.2f}%" if "train_accuracy" in e else "")
            for name, e in record["learners"].items()
        )
        print(f"epoch {epoch + 1}: {summary}\ngenotype: {genotype.to_text()}", flush=True)
        for line in lines:
            print(line, flush=True)
        if self.writer is None:
            return record
        config = self.config
        metadata = {
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "iteration": iteration,
            "method": config.method,
            "schedule": config.schedule,
            "learners": self.names,
            "seed": config.seed,
            "alpha": {name: a.tolist() for name, a in arch.items()},
            "alpha_softmax": {name: softmax(a).tolist() for name, a in arch.items() if a.ndim == 2},
            "metrics": record["learners"],
            **lookups,
        }
        with rundir.io_errors(self.workdir, "write to"):
            self.writer.write(
                record, genotype, arch, metadata, float(self.engine.weight_optimizer.learning_rate)
            )
        return record


def non_finite_message(
    error, it: int, epoch: int, names, schedule, strategy, batches, last_checkpoint
) -> str:
    """The one-line error of a non-finite loss at iteration ``it``: where, and what to do.

    ``error`` is the engine's ``NonFiniteLossError``; ``batches`` the iteration's
    (train, val) batches, whose images are checked for NaN/inf (the usual cause).
    """
    train_batches, val_batches = batches
    detail = error.describe(names)
    bad_inputs = []
    for s, stage in enumerate(schedule.stages):
        for step in train_batches[s]:
            for k, batch in zip(stage.learners, step, strict=True):
                if not _all_finite(strategy, batch[0]):
                    bad_inputs.append(f"learner {names[k]!r} train batch (stage {s})")
    for k, batch in enumerate(val_batches):
        if not _all_finite(strategy, batch[0]):
            bad_inputs.append(f"learner {names[k]!r} validation batch")
    if bad_inputs:
        detail += "; NaN/inf in the input images of " + ", ".join(dict.fromkeys(bad_inputs))
    kept = (
        f"the last good checkpoint {last_checkpoint} is intact"
        if last_checkpoint
        else "no checkpoint had been written yet"
    )
    return (
        f"non-finite loss at iteration {it} (epoch {epoch + 1}): {detail}; nothing was "
        f"applied or saved, {kept}. Check the data for NaN/inf and lower "
        "the learning rates (SearchConfig.optimizers)."
    )


def _all_finite(strategy: tf.distribute.Strategy, images) -> bool:
    return all(
        bool(tf.reduce_all(tf.math.is_finite(t)))
        for t in strategy.experimental_local_results(images)
    )
