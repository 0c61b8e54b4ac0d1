"""Statistics and checks of the NAS-Bench-201 study (benchmarks/nb201_study.py).

Pure Python (scipy for the t distribution), so they can be tested without a search:
class partitions from a flag, mean ± std with a 95 % t interval, Welch's t-test, the
collapse flags of a cell (parameter-free, skip-dominated, disconnected) and a search's
trajectory over its epochs (did its cell degrade, where did the α mass go).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from il_tf.spaces.nb201_genotype import NB201_EDGES, NB201Genotype

PARAMETRIC_OPS = ("nor_conv_1x1", "nor_conv_3x3")


class PartitionError(ValueError):
    """A malformed ``--partition`` flag."""


def parse_partition(text: str, num_classes: int = 10) -> tuple[tuple[int, ...], ...]:
    """``"0,1,2,3,4/5,6,7,8,9"`` → one class tuple per learner (K = groups).

    Each class index in ``0..num_classes-1`` may appear once at most; a group may not be
    empty. Not every class needs a learner (a partition of a subset is allowed).
    """
    groups = []
    for g, part in enumerate(text.split("/")):
        items = [x.strip() for x in part.split(",") if x.strip()]
        if not items:
            raise PartitionError(
                f"--partition={text!r}: learner {g} has no classes; write the learners' "
                "class indices separated by '/', e.g. --partition=0,1,2,3,4/5,6,7,8,9"
            )
        try:
            classes = tuple(int(x) for x in items)
        except ValueError as e:
            raise PartitionError(
                f"--partition={text!r}: learner {g} has a non-integer class ({e})"
            ) from e
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise PartitionError(
                f"--partition={text!r}: classes {bad} are outside 0..{num_classes - 1}"
            )
        groups.append(classes)
    flat = [c for g in groups for c in g]
    dup = sorted({c for c in flat if flat.count(c) > 1})
    if dup:
        raise PartitionError(
            f"--partition={text!r}: classes {dup} are in more than one learner (or twice)"
        )
    if any(len(g) < 2 for g in groups):
        raise PartitionError(
            f"--partition={text!r}: every learner needs at least 2 classes to classify"
        )
    return tuple(groups)


def t_quantile(p: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


def mean_std_ci(values: Sequence[float]) -> dict:
    """Mean, sample std and the 95 % t interval of the mean (None where n is too small)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": (mean - half, mean + half)}


def welch_test(a: Sequence[float], b: Sequence[float]) -> dict | None:
    """Welch's two-sided t-test of mean(a) vs mean(b): t, df, p (None if n < 2 in either)."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return {"t": math.copysign(math.inf, diff) if diff else 0.0, "df": None,
                "p": 0.0 if diff else 1.0}  # fmt: skip
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = 2 * float(stats.t.sf(abs(t), df))
    return {"t": t, "df": df, "p": p}


def cell_flags(genotype: NB201Genotype | str) -> dict[str, bool]:
    """Collapse flags of a cell.

    parameter_free: no convolution on any edge; skip_dominated: at least half of the
    edges (3 of 6) are ``skip_connect``; disconnected: no path from node 0 to node 3
    through edges other than ``none`` (the cell outputs zeros).
    """
    if isinstance(genotype, str):
        genotype = NB201Genotype.from_arch_string(genotype)
    ops = genotype.ops
    reach = {0}
    for e, (to, frm) in sorted(enumerate(NB201_EDGES), key=lambda x: x[1][0]):
        if frm in reach and ops[e] != "none":
            reach.add(to)
    return {
        "parameter_free": not any(op in PARAMETRIC_OPS for op in ops),
        "skip_dominated": sum(op == "skip_connect" for op in ops) >= len(ops) / 2,
        "disconnected": 3 not in reach,
    }


#: A run whose final cell scores this many points (CIFAR-10 test) below its best epoch's
#: cell has *degraded* (the DARTS failure: the cell gets worse as the search goes on).
DEGRADED_POINTS = 1.0


def trajectory(records: Sequence[dict], op_names: Sequence[str]) -> dict:
    """How a search's derived cell and α softmax moved over its epochs.

    ``records`` are its per-epoch records (``genotypes/epoch_NNN.json``, each with the
    ``alpha`` logits of ``cell`` and the ``nb201`` look-up), in epoch order. Returns the
    argmax cell's CIFAR-10 test accuracy per epoch, its best and final values, whether
    it degraded (final at least :data:`DEGRADED_POINTS` below the best), and per op
    the softmax mass averaged over the edges at the first and the last epoch.
    """
    if not records:
        raise ValueError("a trajectory needs at least one epoch record")
    # Per-epoch files keep the metadata beside the genotype or at the top level.
    records = [r.get("metadata", r) for r in records]
    accuracy = [float(r["nb201"]["cifar10_test"]) for r in records]

    def mass(record: dict) -> dict[str, float]:
        logits = [list(map(float, row)) for row in record["alpha"]["cell"]]
        per_edge = []
        for row in logits:
            top = max(row)
            z = [math.exp(x - top) for x in row]
            per_edge.append([x / sum(z) for x in z])
        return {op: statistics.fmean(p[j] for p in per_edge) for j, op in enumerate(op_names)}

    first, last = mass(records[0]), mass(records[-1])
    return {
        "cifar10_test_per_epoch": accuracy,
        "best": max(accuracy),
        "final": accuracy[-1],
        "degraded": accuracy[-1] <= max(accuracy) - DEGRADED_POINTS,
        "mass_first": first,
        "mass_last": last,
    }
