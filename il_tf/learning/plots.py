"""Pictures of a search: each edge's α softmax over the epochs, and the looked-up accuracy.

Read from the per-epoch records a search already writes (``genotypes/epoch_NNN.json``:
the α logits and, with a NAS-Bench-201 table, the looked-up accuracies), so a plot can
be redrawn from any finished or interrupted workdir.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: The PNG written next to ``genotype.json``.
PLOT_NAME = "alpha.png"
NB201_FIELDS = (
    ("cifar10_test", "CIFAR-10"),
    ("cifar100_test", "CIFAR-100"),
    ("imagenet16_test", "ImageNet16-120"),
)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def column_names(op_names: Sequence[str] | Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    """The column names of architecture tensor ``name``: shared, or its own from a mapping."""
    if isinstance(op_names, Mapping):
        return tuple(op_names.get(name, ()))
    return op_names


def read_history(workdir: str | Path) -> list[dict]:
    """The per-epoch records of a workdir (``genotypes/epoch_NNN.json``), in epoch order."""
    files = sorted((Path(workdir) / "genotypes").glob("epoch_*.json"))
    return [json.loads(f.read_text()) for f in files]


def _meta(record: dict) -> dict:
    # save_genotype keeps the metadata beside the genotype; accept both layouts.
    return record.get("metadata", record)


def alpha_history(records: Sequence[dict]) -> tuple[list[int], dict[str, np.ndarray]]:
    """Epochs and, per architecture tensor, the softmax array ``[epochs, edges, ops]``."""
    epochs, per_name = [], {}
    for record in records:
        meta = _meta(record)
        epochs.append(int(meta["epoch"]))
        for name, logits in meta["alpha"].items():
            a = np.asarray(logits, np.float64)
            if a.ndim == 2:
                per_name.setdefault(name, []).append(_softmax(a))
    return epochs, {k: np.stack(v) for k, v in per_name.items()}


def write_search_plot(
    workdir: str | Path,
    op_names: Sequence[str] | Mapping[str, Sequence[str]],
    path: str | Path | None = None,
) -> Path | None:
    """Draws the workdir's α softmax per edge over the epochs (and NAS-Bench-201 look-ups).

    ``op_names`` names the ops: one list for every tensor, or one per tensor name.
    Returns the PNG's path, or None when the workdir has no epoch record yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_history(workdir)
    if not records:
        return None
    epochs, alphas = alpha_history(records)
    lookups = [_meta(r).get("nb201") for r in records]
    has_lookup = all(isinstance(x, dict) for x in lookups)
    panels = [(name, e) for name, a in alphas.items() for e in range(a.shape[1])]
    n = len(panels) + (1 if has_lookup else 0)
    cols = min(n, 3 if n <= 9 else 4)
    rows = -(-n // cols)
    # One draw, shared axes and no automatic layout: a plot of 28 edges takes a
    # fraction of a second instead of seconds, after every epoch.
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False, sharex=True
    )
    flat = axes.ravel()
    for ax, (name, e) in zip(flat, panels, strict=False):
        a = alphas[name]
        columns = column_names(op_names, name)
        for j in range(a.shape[2]):
            label = columns[j] if j < len(columns) else f"op {j}"
            ax.plot(epochs, a[:, e, j], marker=".", label=label)
        # A tensor of one row (a choice point) is titled by its name alone.
        ax.set_title(name if a.shape[1] == 1 else f"{name} edge {e}", fontsize=8, pad=2)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1])
        ax.tick_params(labelsize=7)
    if panels and isinstance(op_names, Mapping):
        for ax, _ in zip(flat, panels, strict=False):  # each choice has its own candidates
            ax.legend(fontsize=6, loc="upper left")
    elif panels:
        flat[0].legend(fontsize=6, loc="upper left")
    if has_lookup:
        ax = flat[len(panels)]
        for field, label in NB201_FIELDS:
            ax.plot(epochs, [x[field] for x in lookups], marker="o", label=label)
        ax.set_title("derived cell, looked-up test accuracy (%)", fontsize=8, pad=2)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle(f"α softmax per edge over the epochs ({Path(workdir).name})", fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.92, wspace=0.25, hspace=0.45)
    out = Path(path) if path is not None else Path(workdir) / PLOT_NAME
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
