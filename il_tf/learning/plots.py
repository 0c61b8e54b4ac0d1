"""Pictures of a search: each edge's α softmax over the epochs, and the looked-up accuracy.

The α panels show each op's softmax minus the uniform share 1/num_ops, on one axis
scaled to the largest deviation of the run: early in a search α moves by far less than
the 0–1 range of a softmax, and on that range every line would look flat.

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
# The α panels' y-axis spans at least ±this (see deviation_limit).
_MIN_DEVIATION_LIMIT = 1e-4
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


def deviation_from_uniform(weights: np.ndarray) -> np.ndarray:
    """Each op's softmax minus the uniform share ``1 / num_ops`` (ops on the last axis)."""
    weights = np.asarray(weights, np.float64)
    return weights - 1.0 / weights.shape[-1]


def deviation_limit(deviations: Sequence[np.ndarray]) -> float:
    """The half-height of the α panels' shared y-axis: the largest deviation, with a margin.

    Never below a small floor, so that a run whose α has not moved (an epoch of
    weight-only warm-up) draws flat lines at zero instead of an axis of rounding noise.
    """
    largest = max((float(np.abs(d).max()) for d in deviations if d.size), default=0.0)
    return max(1.1 * largest, _MIN_DEVIATION_LIMIT)


def search_figure(workdir: str | Path, op_names: Sequence[str] | Mapping[str, Sequence[str]]):
    """The workdir's α deviation per edge over the epochs (and NAS-Bench-201 look-ups).

    A matplotlib figure (the caller closes it), or None when the workdir has no epoch
    record yet. ``op_names`` names the ops: one list for every tensor, or one per tensor
    name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
    height = 2.2 * rows + 0.6  # the panels, and a band for the title and the legend
    # One draw, shared axes and no automatic layout: a plot of 28 edges takes a
    # fraction of a second instead of seconds, after every epoch.
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, height), squeeze=False, sharex=True)
    flat = axes.ravel()
    deviations = {name: deviation_from_uniform(a) for name, a in alphas.items()}
    limit = deviation_limit(list(deviations.values()))
    for ax, (name, e) in zip(flat, panels, strict=False):
        d = deviations[name]
        columns = column_names(op_names, name)
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        for j in range(d.shape[2]):
            label = columns[j] if j < len(columns) else f"op {j}"
            ax.plot(epochs, d[:, e, j], marker=".", label=label)
        # A tensor of one row (a choice point) is titled by its name alone.
        ax.set_title(name if d.shape[1] == 1 else f"{name} edge {e}", fontsize=8, pad=2)
        ax.set_ylim(-limit, limit)
        ax.tick_params(labelsize=7)
    if panels and isinstance(op_names, Mapping):
        for ax, _ in zip(flat, panels, strict=False):  # each choice has its own candidates
            ax.legend(fontsize=6, loc="upper left")
    elif panels:
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncol=len(labels),
            fontsize=7,
            bbox_to_anchor=(0.5, 1 - 0.3 / height),
            frameon=False,
        )
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    num_ops = sorted({a.shape[2] for a in alphas.values()})
    uniform = " or ".join(f"1/{k}" for k in num_ops) if num_ops else "1/num_ops"
    fig.suptitle(
        f"α softmax minus uniform ({uniform}) per edge over the epochs, grey line = uniform "
        f"({Path(workdir).name})",
        fontsize=10,
        y=1 - 0.05 / height,
        va="top",
    )
    fig.subplots_adjust(
        left=0.05,
        right=0.98,
        bottom=0.5 / height,
        top=1 - 0.75 / height,
        wspace=0.25,
        hspace=0.45,
    )
    return fig


def write_search_plot(
    workdir: str | Path,
    op_names: Sequence[str] | Mapping[str, Sequence[str]],
    path: str | Path | None = None,
) -> Path | None:
    """Writes ``search_figure`` as a PNG (``alpha.png`` in the workdir unless ``path``).

    Returns the PNG's path, or None when the workdir has no epoch record yet.
    """
    import matplotlib.pyplot as plt

    fig = search_figure(workdir, op_names)
    if fig is None:
        return None
    out = Path(path) if path is not None else Path(workdir) / PLOT_NAME
    try:
        fig.savefig(out, dpi=80)
    finally:
        plt.close(fig)
    return out
