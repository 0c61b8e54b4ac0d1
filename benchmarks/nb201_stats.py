"""Statistics and checks of the NAS-Bench-201 study (benchmarks/nb201_study.py).

Pure Python with numpy and scipy, so they can be tested without a search: class
partitions from a flag (given, or a random balanced split fixed by a seed), mean ± std
with a 95 % t interval, Welch's t-test, the paired comparison of two variants run with
the same seeds (per-seed differences, their interval, a paired t-test and a Wilcoxon
signed-rank test), the collapse flags of a cell, how far α moved in a search (the edges'
softmax entropy and op masses per epoch, whether the derived cell still changed after the
first quarter), the expected outcome of a random search by table look-ups, and the
summaries of a study's runs (its ledger rows, see ``benchmarks/nb201_study.py``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from il_tf.spaces.nb201_genotype import NB201_EDGES, NB201Genotype

PARAMETRIC_OPS = ("nor_conv_1x1", "nor_conv_3x3")
#: The derivation rules every run is scored with: ``argmax`` (the benchmark's own, ``none``
#: is a candidate) and ``exclude_none`` (never ``none``, as DARTS derives its cells).
DERIVATIONS = ("argmax", "exclude_none")
#: The looked-up accuracies reported per run.
FIELDS = ("cifar10_test", "cifar100_test", "imagenet16_test")
COLLAPSE_FLAGS = ("parameter_free", "skip_dominated", "disconnected")
RANDOM_PARTITION = "random:"


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
                "class indices separated by '/', e.g. --partition=0,1,2,3,4/5,6,7,8,9, "
                "or random:SEED"
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


def resolve_partition(text: str, num_classes: int = 10) -> tuple[tuple[int, ...], ...]:
    """The learners' classes of a ``--partition`` value.

    Either explicit groups (:func:`parse_partition`) or ``random:SEED``: the classes split
    into two learners of equal size (the first one smaller by one for an odd count) by a
    permutation drawn with numpy's generator seeded with SEED, each group sorted.
    """
    if not text.startswith(RANDOM_PARTITION):
        return parse_partition(text, num_classes)
    seed_text = text[len(RANDOM_PARTITION) :]
    if not seed_text.isdigit():
        raise PartitionError(
            f"--partition={text!r}: the seed after 'random:' must be an int >= 0, "
            "e.g. --partition=random:1"
        )
    order = np.random.default_rng(int(seed_text)).permutation(num_classes)
    half = num_classes // 2
    return tuple(tuple(sorted(int(c) for c in g)) for g in (order[:half], order[half:]))


def partition_text(groups: Sequence[Sequence[int]]) -> str:
    """The ``--partition`` spelling of class groups (``0,1,2,3,4/5,6,7,8,9``)."""
    return "/".join(",".join(str(c) for c in g) for g in groups)


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


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float]) -> dict:
    """Variant a against variant b over the seeds both ran (values by seed).

    Returns the seeds, the per-seed differences a − b, their mean, sample std and 95 % t
    interval, the paired two-sided t-test (``t``, ``p_t``) and the Wilcoxon signed-rank
    test (``w``, ``p_wilcoxon``: scipy's defaults, zero differences dropped and the exact
    distribution for small samples). A test that needs more seeds gives None; differences
    all equal give t = ±inf (p 0) or, all zero, t = 0 and p = 1 for both tests.
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out: dict = {"seeds": seeds, "differences": diffs}
    out.update(mean_std_ci(diffs) if diffs else {"n": 0, "mean": None, "std": None, "ci95": None})
    out.update(t=None, p_t=None, w=None, p_wilcoxon=None)
    if len(diffs) < 2:
        return out
    mean = statistics.fmean(diffs)
    if out["std"] == 0:
        out.update(t=math.copysign(math.inf, mean) if mean else 0.0, p_t=0.0 if mean else 1.0)
    else:
        test = stats.ttest_rel([float(a[s]) for s in seeds], [float(b[s]) for s in seeds])
        out.update(t=float(test.statistic), p_t=float(test.pvalue))
    if not any(diffs):
        out.update(w=0.0, p_wilcoxon=1.0)
    else:
        test = stats.wilcoxon(diffs)
        out.update(w=float(test.statistic), p_wilcoxon=float(test.pvalue))
    return out


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


# -- how far α moved ------------------------------------------------------------------------


def _softmax_rows(logits) -> np.ndarray:
    a = np.asarray(logits, np.float64)
    z = np.exp(a - a.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def edge_entropy(logits) -> float:
    """Mean over the edges (rows) of the entropy, in nats, of each edge's α softmax."""
    from scipy.special import entr

    return float(np.mean(entr(_softmax_rows(logits)).sum(axis=-1)))


def op_mass(logits, op_names: Sequence[str]) -> dict[str, float]:
    """Each op's softmax mass averaged over the edges (rows of the logits)."""
    p = _softmax_rows(logits)
    return {op: float(p[:, j].mean()) for j, op in enumerate(op_names)}


#: A run whose final cell scores this many points (CIFAR-10 test) below its best epoch's
#: cell has *degraded* (the DARTS failure: the cell gets worse as the search goes on).
DEGRADED_POINTS = 1.0
#: α has *moved* when the mean edge entropy at the end is at most this fraction of its
#: value at the start (α starts at 1e-3·N(0, 1), whose entropy is ln(ops) to 1e-6).
ENTROPY_FRACTION = 0.5


def quarter_epoch(epochs: int) -> int:
    """The last epoch of a search's first quarter (at least epoch 1)."""
    return max(1, epochs // 4)


def trajectory(epochs: Sequence[Mapping], rule: str = "argmax", num_ops: int = 5) -> dict:
    """How a search's derived cell and α softmax moved over its epochs.

    ``epochs`` are a run's per-epoch entries (ledger rows' ``epochs``: ``entropy``, ``mass``
    per op, and per derivation rule the cell's ``arch`` and ``cifar10_test``), in epoch
    order. Returns for ``rule`` the cell's CIFAR-10 test accuracy per epoch, its best and
    final values, whether it degraded (final at least :data:`DEGRADED_POINTS` below the
    best) and whether the final cell differs from the cell at the end of the first quarter
    (:func:`quarter_epoch`); and the mean edge entropy and the op masses at the first and
    the last epoch, with the final entropy's fraction of the initial ln(num_ops).
    """
    if not epochs:
        raise ValueError("a trajectory needs at least one epoch record")
    accuracy = [float(e[rule]["cifar10_test"]) for e in epochs]
    q = quarter_epoch(len(epochs))
    ratio = float(epochs[-1]["entropy"]) / math.log(num_ops)
    return {
        "cifar10_test_per_epoch": accuracy,
        "best": max(accuracy),
        "final": accuracy[-1],
        "degraded": accuracy[-1] <= max(accuracy) - DEGRADED_POINTS,
        "quarter_epoch": q,
        "changed_after_quarter": epochs[q - 1][rule]["arch"] != epochs[-1][rule]["arch"],
        "entropy_first": float(epochs[0]["entropy"]),
        "entropy_last": float(epochs[-1]["entropy"]),
        "entropy_ratio": ratio,
        "entropy_halved": ratio <= ENTROPY_FRACTION,
        "mass_first": dict(epochs[0]["mass"]),
        "mass_last": dict(epochs[-1]["mass"]),
    }


def alpha_moved(rows: Sequence[Mapping], num_ops: int = 5) -> dict:
    """The calibration's verdict on a set of runs of one variant and setting.

    α moved when the mean over runs of the final edge entropy is at most
    :data:`ENTROPY_FRACTION` of the initial ln(num_ops) and, in more than half of the
    runs, the final argmax cell differs from the cell at the end of the first quarter.
    """
    ts = [trajectory(r["epochs"], "argmax", num_ops) for r in rows]
    if not ts:
        raise ValueError("alpha_moved needs at least one run")
    ratio = statistics.fmean(t["entropy_ratio"] for t in ts)
    changed = sum(t["changed_after_quarter"] for t in ts)
    return {
        "runs": len(ts),
        "entropy_ratio": ratio,
        "entropy_ratios": [t["entropy_ratio"] for t in ts],
        "entropy_halved": sum(t["entropy_halved"] for t in ts),
        "changed_after_quarter": changed,
        "exclude_none_changed_after_quarter": sum(
            trajectory(r["epochs"], "exclude_none", num_ops)["changed_after_quarter"] for r in rows
        ),
        "moved": ratio <= ENTROPY_FRACTION and changed > len(ts) / 2,
    }


# -- random search by look-ups --------------------------------------------------------------


def random_search_reference(valid: Sequence[float], test: Sequence[float], n: int) -> dict:
    """Expected outcome of a random search of ``n`` table look-ups, exactly.

    The search draws ``n`` cells uniformly with replacement and keeps the one with the
    best ``valid`` value (ties broken uniformly); returns the mean and std of the kept
    cell's ``test`` value, from the distribution of the maximum of ``n`` draws.
    """
    if n < 1 or len(valid) != len(test) or len(valid) == 0:
        raise ValueError(f"need n >= 1 and equal, non-empty valid/test lists, got n={n}")
    total = len(valid)
    order = np.argsort(np.asarray(valid, np.float64), kind="stable")
    v = np.asarray(valid, np.float64)[order]
    t = np.asarray(test, np.float64)[order]
    # Groups of equal valid values: the kept cell is uniform within the best group drawn.
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    ends = np.r_[starts[1:], total]
    below = starts / total
    upto = ends / total
    prob = upto**n - below**n
    sums = np.add.reduceat(t, starts)
    squares = np.add.reduceat(t * t, starts)
    size = ends - starts
    mean = float(np.sum(prob * sums / size))
    second = float(np.sum(prob * squares / size))
    return {"n": n, "mean": mean, "std": math.sqrt(max(second - mean * mean, 0.0))}


# -- summaries of a study's runs --------------------------------------------------------------


def _by_seed(rows: Sequence[Mapping], rule: str, field: str) -> dict[int, float]:
    return {int(r["seed"]): float(r[rule][field]) for r in rows}


def summarize(rows_by_variant: Mapping[str, Sequence[Mapping]], num_ops: int = 5) -> list[dict]:
    """One entry per variant and derivation rule: the looked-up accuracies (mean ± std,
    interval), collapse counts, degraded runs, α's movement and the wall and CPU time."""
    out = []
    for variant, rows in rows_by_variant.items():
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: r["seed"])
        for rule in DERIVATIONS:
            entry: dict = {
                "variant": variant,
                "derivation": rule,
                "runs": len(rows),
                "seeds": [r["seed"] for r in rows],
            }
            for f in FIELDS:
                entry[f] = mean_std_ci([r[rule][f] for r in rows])
            for flag in COLLAPSE_FLAGS:
                entry[flag] = sum(bool(r[rule][flag]) for r in rows)
            ts = [trajectory(r["epochs"], rule, num_ops) for r in rows]
            entry["degraded"] = sum(t["degraded"] for t in ts)
            entry["final_minus_best"] = statistics.fmean(t["final"] - t["best"] for t in ts)
            entry["changed_after_quarter"] = sum(t["changed_after_quarter"] for t in ts)
            entry["entropy"] = [
                statistics.fmean(t[k] for t in ts) for k in ("entropy_first", "entropy_last")
            ]
            entry["entropy_halved"] = sum(t["entropy_halved"] for t in ts)
            entry["mass"] = {
                op: [statistics.fmean(t[k][op] for t in ts) for k in ("mass_first", "mass_last")]
                for op in ("none", "skip_connect")
            }
            entry["seconds"] = statistics.fmean(r["seconds"] for r in rows)
            entry["cpu_seconds"] = statistics.fmean(r["cpu_seconds"] for r in rows)
            entry["archs"] = [r[rule]["arch"] for r in rows]
            out.append(entry)
    return out


def pairs(
    rows_by_variant: Mapping[str, Sequence[Mapping]], field: str = "cifar10_test"
) -> list[dict]:
    """Every pair of variants (in the given order) compared seed by seed
    (:func:`paired_comparison` of ``field``), for each derivation rule."""
    out = []
    names = [v for v, rows in rows_by_variant.items() if rows]
    for a, b in itertools.combinations(names, 2):
        for rule in DERIVATIONS:
            test = paired_comparison(
                _by_seed(rows_by_variant[a], rule, field), _by_seed(rows_by_variant[b], rule, field)
            )
            out.append({"a": a, "b": b, "derivation": rule, "field": field, **test})
    return out
