"""What a search shows its user: metrics lines, genotype files, TensorBoard, pictures."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from il_tf import rundir
from il_tf.learning import plots
from il_tf.learning.objective import LossStats
from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.drawing import DrawingUnavailable, draw_genotype

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
        self, workdir: Path, op_names: Sequence[str] | Mapping[str, Sequence[str]], draw: bool
    ):
        self.workdir = workdir
        self.op_names = dict(op_names) if isinstance(op_names, Mapping) else tuple(op_names)
        self.draw = draw
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
            for key, value in record.get("nb201", {}).items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(f"nb201/{key}", value, step=step)
            write_arch_summaries(arch, self.op_names, genotype.to_text(), step)
        self.tensorboard.flush()
        append_jsonl(self.workdir / "metrics.jsonl", record)
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
