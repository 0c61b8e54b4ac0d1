"""Markdown tables of the NAS-Bench-201 study, from the summaries of benchmarks/nb201_stats.py.

The variants' accuracies and collapse counts beside random search and the published
searches, each seed's accuracies, the paired comparisons of every two variants, and the
calibration of the setting (how far α moved under each arch learning rate and length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from benchmarks.nb201_stats import DERIVATIONS, FIELDS

PUBLISHED = ("DARTS-V2", "GDAS", "DrNAS", "optimal")


def _stat(stat: Mapping) -> str:
    if stat["std"] is None:
        return f"{stat['mean']:.2f}"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.2f} ± {stat['std']:.2f} [{lo:.2f}, {hi:.2f}]"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def variant_table(summary: Sequence[Mapping], references: Sequence[Mapping] = ()) -> str:
    """Per variant and derivation rule: accuracies, collapse, drift, α's movement, time.

    ``references``: random-search rows (``n``, ``cifar10_test`` etc. as mean/std dicts).
    """
    lines = [
        "| variant | derivation | runs | CIFAR-10 test | CIFAR-100 test | ImageNet16-120 test "
        "| param-free / skip-dom. / disconn. | degraded (final − best) | cell changed after ¼ "
        "| edge entropy first → last (halved) | none mass | skip mass | wall s / CPU s per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        cells = " | ".join(_stat(e[f]) for f in FIELDS)
        flags = f"{e['parameter_free']} / {e['skip_dominated']} / {e['disconnected']}"
        drift = f"{e['degraded']} ({e['final_minus_best']:.2f})"
        first, last = e["entropy"]
        entropy = f"{first:.3f} → {last:.3f} ({e['entropy_halved']})"
        masses = " | ".join(
            f"{e['mass'][op][0]:.3f} → {e['mass'][op][1]:.3f}" for op in ("none", "skip_connect")
        )
        lines.append(
            f"| {e['variant']} | {e['derivation']} | {e['runs']} | {cells} | {flags} | {drift} "
            f"| {e['changed_after_quarter']} | {entropy} | {masses} "
            f"| {e['seconds']:.0f} / {e['cpu_seconds']:.0f} |"
        )
    for ref in references:
        cells = " | ".join(f"{ref[f]['mean']:.2f} ± {ref[f]['std']:.2f}" for f in FIELDS)
        lines.append(
            f"| random search, {ref['n']} look-ups (expected) | best CIFAR-10 valid | | {cells} "
            "| | | | | | | |"
        )
    from il_tf.nb201_lookup import PUBLISHED_NB201

    for name in PUBLISHED:
        row = PUBLISHED_NB201[name]
        cells = " | ".join(row.format(f) for f in FIELDS)
        lines.append(f"| {name} (published) | | | {cells} | | | | | | | |")
    return "\n".join(lines) + "\n"


def per_seed_table(rows_by_variant: Mapping[str, Sequence[Mapping]]) -> str:
    """Each seed's CIFAR-10 test look-up per variant, ``argmax / exclude_none``."""
    names = [v for v, rows in rows_by_variant.items() if rows]
    seeds = sorted({int(r["seed"]) for v in names for r in rows_by_variant[v]})
    lines = [
        "| seed | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for s in seeds:
        cells = []
        for v in names:
            row = next((r for r in rows_by_variant[v] if int(r["seed"]) == s), None)
            cells.append(
                "–"
                if row is None
                else " / ".join(f"{row[rule]['cifar10_test']:.2f}" for rule in DERIVATIONS)
                + (" (disc.)" if row["argmax"]["disconnected"] else "")
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(comparisons: Sequence[Mapping]) -> str:
    """Every pair: the per-seed differences a − b, their mean [95 % interval], p-values."""
    lines = [
        "| a − b | derivation | seeds | per-seed differences | mean [95 % CI] "
        "| paired t p | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        diffs = ", ".join(f"{d:+.2f}" for d in c["differences"])
        if c["ci95"] is None:
            mean = "–" if c["mean"] is None else f"{c['mean']:+.2f}"
        else:
            lo, hi = c["ci95"]
            mean = f"{c['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        lines.append(
            f"| {c['a']} − {c['b']} | {c['derivation']} | {c['n']} | {diffs} | {mean} "
            f"| {_p(c['p_t'])} | {_p(c['p_wilcoxon'])} |"
        )
    return "\n".join(lines) + "\n"


def calibration_table(entries: Sequence[Mapping]) -> str:
    """One line per (variant, setting): arch lr, length, and how far α moved.

    ``entries``: ``variant``, ``setting`` (a ledger row's), ``verdict``
    (:func:`benchmarks.nb201_stats.alpha_moved`) and ``seconds`` (mean wall time per run).
    """
    lines = [
        "| variant | arch lr | epochs × iterations | runs | final / initial edge entropy "
        "(per seed) | runs halved | argmax cell changed after ¼ (exclude_none) | α moved "
        "| wall s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        s, v = e["setting"], e["verdict"]
        ratios = ", ".join(f"{r:.2f}" for r in v["entropy_ratios"])
        lines.append(
            f"| {e['variant']} | {s['arch_lr']:g} | {s['epochs']} × {s['iterations_per_epoch']} "
            f"| {v['runs']} | {v['entropy_ratio']:.2f} ({ratios}) | {v['entropy_halved']} "
            f"| {v['changed_after_quarter']} ({v['exclude_none_changed_after_quarter']}) "
            f"| {'yes' if v['moved'] else 'no'} | {e['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _archs(archs: Sequence[str]) -> str:
    return ", ".join(f"`{a}`" for a in archs)


def study_report(
    command: str,
    summary: Sequence[Mapping],
    comparisons: Sequence[Mapping],
    rows_by_variant: Mapping[str, Sequence[Mapping]],
    references: Sequence[Mapping] = (),
) -> str:
    """The whole report of one setting: the command, the three tables and their legend."""
    return "\n".join(
        [
            f"Command: `{command}`",
            "",
            "Mean ± sample std [95 % t interval] over seeds of the looked-up test accuracy.",
            "Collapse counts: final cells that are parameter-free / skip-dominated (3 of 6",
            "edges skip_connect) / disconnected. Degraded: runs whose final cell scores at",
            "least 1 point below their best epoch's. Cell changed after ¼: runs whose final",
            "cell differs from the cell at the end of the first quarter of the search. Edge",
            "entropy: mean over edges and runs of the entropy (nats) of each edge's α softmax",
            "at the first and last epoch (ln 5 = 1.609 at the start), with the runs whose",
            "final entropy is at most half of ln 5; none / skip mass: mean softmax mass of",
            "the op, first epoch → last. Random search: the expected CIFAR-10 etc. test",
            "accuracy ± std of the cell with the best CIFAR-10 valid value among n cells",
            "drawn uniformly (exact, from the table).",
            "",
            variant_table(summary, references),
            "CIFAR-10 test per seed (argmax / exclude_none; disc.: the argmax cell is",
            "disconnected):",
            "",
            per_seed_table(rows_by_variant),
            "Paired comparisons of CIFAR-10 test (a − b per seed, same seeds: same initial",
            "supernet and α; two-sided p of the paired t-test and of the Wilcoxon",
            "signed-rank test, zero differences dropped):",
            "",
            paired_table(comparisons),
            "Cells found (one per seed, in seed order):",
            "",
            *(f"- {e['variant']} ({e['derivation']}): {_archs(e['archs'])}" for e in summary),
            "",
        ]
    )
