r"""Scores IL against DARTS in the NAS-Bench-201 space by table look-up.

    python benchmarks/nb201_study.py --data_root=../shared/data/cifar10 \
        --table=../shared/data/nasbench201.json.gz --workdir=runs/nb201_bench --seeds=0,1,2

Runs a set of searches on learners built from an image folder of CIFAR-10 — DARTS (one
learner on all classes, first and second order) and IL (two learners on disjoint halves of
the classes) with each hypergradient method and with the blocked and joint schedules —
for several seeds, looks the found cells up in the table, and prints mean ± std beside
the published rows. Every run keeps its workdir (genotype.json, metrics, checkpoints) under
WORKDIR/<variant>/seed_<seed>; a run that finished is not repeated, so the same command
resumes an interrupted benchmark. WORKDIR/results.json and WORKDIR/table.md hold the
results and the command that produced them. A study run in chunks (several commands, one
workdir) is summarized as a whole with --summarize_only, which runs nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data_root", "../shared/data/cifar10", "CIFAR-10 image folder (ROOT/train/<class>)"
)
flags.DEFINE_string("table", "../shared/data/nasbench201.json.gz", "NAS-Bench-201 table")
flags.DEFINE_string("workdir", "runs/nb201_bench", "where every run and the results go")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_list("variants", ["all"], "'all' or a subset of the variant names")
flags.DEFINE_integer("epochs", 4, "search epochs per run")
flags.DEFINE_integer("iterations_per_epoch", 25, "search iterations per epoch")
flags.DEFINE_integer("image_size", 16, "images are resized to this size")
flags.DEFINE_integer("channels", 8, "supernet channels (first stage)")
flags.DEFINE_integer("cells_per_stage", 1, "search cells per stage (the benchmark has 5)")
flags.DEFINE_integer("batch_size", 32, "batch size per learner")
flags.DEFINE_float("val_fraction", 0.5, "train split fraction held out as validation")
flags.DEFINE_float("arch_lr", 3e-3, "architecture Adam learning rate")
flags.DEFINE_string(
    "partition",
    "0,1,2,3,4/5,6,7,8,9",
    "the IL learners' classes: class indices (0 airplane ... 9 truck) per learner, "
    "learners separated by '/' (K = number of groups); DARTS variants use all 10 classes",
)
flags.DEFINE_bool("figures", True, "write one figure per variant and a summary figure")
flags.DEFINE_bool(
    "summarize_only",
    False,
    "run nothing: rebuild results.json, table.md and the figures from the finished runs of "
    "the selected variants and seeds in WORKDIR/runs.jsonl (e.g. a study run in chunks)",
)

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class Variant(NamedTuple):
    """One searched configuration: learners ("single" = one learner on all classes,
    "partition" = the --partition learners), hypergradient method, schedule, rounds R,
    and the remedies against collapse: the β-decay weight at the end of the search
    (``BetaDecaySettings.weight``, linear from 0) and the auxiliary skip's start weight
    (``AuxSkipSettings.start``, linear to 0); 0 = off."""

    split: str
    method: str
    schedule: str
    rounds: int
    beta_decay: float = 0.0
    aux_skip: float = 0.0


# β-decay's final weight: its gradient, 0.5·softmax/6 ≈ 0.017 per logit at the end, is of
# the order of the data hypergradient's RMS per logit (0.014-0.026, from the Adam second
# moments of a darts_2nd run at the study setting, docs/benchmarks.md §5).
BETA_DECAY = 0.5
# DARTS-'s auxiliary skip starts at weight 1.
AUX_SKIP = 1.0
# To add a variant (e.g. a new hypergradient method), add a line here; methods the
# installed il_tf does not know are reported by name when selected.
VARIANTS = {
    "darts_1st": Variant("single", "first_order", "interleaved", 1),
    # DARTS second order (one step: the chain is one link).
    "darts_2nd": Variant("single", "chain_finite_difference", "interleaved", 1),
    # DARTS (its one-step hypergradient) with as many weight steps per architecture
    # step as IL with K=2, R=2.
    "darts_2nd_r4": Variant("single", "per_learner_finite_difference", "interleaved", 4),
    "il_first_order": Variant("partition", "first_order", "interleaved", 2),
    # The published IL algorithm: one step per learner, other stages held constant.
    "il_finite_difference": Variant("partition", "per_learner_finite_difference", "interleaved", 2),
    "il_unrolled": Variant("partition", "unrolled", "interleaved", 2),
    "il_chain_finite_difference": Variant("partition", "chain_finite_difference", "interleaved", 2),
    "il_chain_exact": Variant("partition", "chain_exact", "interleaved", 2),
    "blocked_chain_finite_difference": Variant(
        "partition", "chain_finite_difference", "blocked", 2
    ),
    "joint_chain_finite_difference": Variant("partition", "chain_finite_difference", "joint", 2),
    # The remedies, with DARTS and with IL (the exclude_none derivation is scored for
    # every run).
    "darts_2nd_beta_decay": Variant(
        "single", "chain_finite_difference", "interleaved", 1, beta_decay=BETA_DECAY
    ),
    "darts_2nd_aux_skip": Variant(
        "single", "chain_finite_difference", "interleaved", 1, aux_skip=AUX_SKIP
    ),
    "il_chain_finite_difference_beta_decay": Variant(
        "partition", "chain_finite_difference", "interleaved", 2, beta_decay=BETA_DECAY
    ),
    "il_chain_finite_difference_aux_skip": Variant(
        "partition", "chain_finite_difference", "interleaved", 2, aux_skip=AUX_SKIP
    ),
}
BASELINES = ("darts_1st", "darts_2nd")
FIELDS = ("cifar10_test", "cifar100_test", "imagenet16_test")
DERIVATIONS = ("argmax", "exclude_none")


def learners(split: str):
    from il_tf.data.learners import Learner
    from il_tf.data.sources import ImageFolderSource

    source = ImageFolderSource(FLAGS.data_root)
    common = dict(
        image_size=FLAGS.image_size, batch_size=FLAGS.batch_size, val_fraction=FLAGS.val_fraction
    )
    if split == "single":
        return (Learner("cifar10", source, **common),)
    from benchmarks.nb201_stats import parse_partition

    return tuple(
        Learner(
            "classes_" + "_".join(map(str, group)),
            source,
            classes=[CLASSES[c] for c in group],
            **common,
        )
        for group in parse_partition(FLAGS.partition, len(CLASSES))
    )


def run_one(variant: str, seed: int, workdir: Path) -> dict:
    import gin

    from il_tf.learning.arch_regularizers import BetaDecaySettings
    from il_tf.learning.engine import OptimizerSettings
    from il_tf.learning.search import SearchConfig, run_search
    from il_tf.spaces.architecture import AuxSkipSettings
    from il_tf.spaces.factories import nb201_supernet

    split, method, schedule, rounds, beta_decay, aux_skip = VARIANTS[variant]
    # The remedies are gin settings read by the search; bound for every run (0 = off).
    gin.bind_parameter(f"{BetaDecaySettings.__name__}.weight", float(beta_decay))
    gin.bind_parameter(f"{AuxSkipSettings.__name__}.start", float(aux_skip))
    config = SearchConfig(
        learners=learners(split),
        supernet=functools.partial(
            nb201_supernet, channels=FLAGS.channels, cells_per_stage=FLAGS.cells_per_stage
        ),
        method=method,
        schedule=schedule,
        rounds=rounds,
        epochs=FLAGS.epochs,
        iterations_per_epoch=FLAGS.iterations_per_epoch,
        optimizers=OptimizerSettings(arch_lr=FLAGS.arch_lr),
        seed=seed,
        eval_batches=4,
        nb201_table=FLAGS.table,
    )
    started = time.time()
    result = run_search(config, workdir)
    meta = json.loads(Path(result.genotype_path).read_text())
    return {
        "variant": variant,
        "seed": seed,
        **score(meta["alpha"]["cell"]),
        "seconds": round(time.time() - started, 1),
        "workdir": str(workdir),
        "settings": dataclasses.asdict(config.optimizers)
        | {
            "method": method,
            "partition": FLAGS.partition if split == "partition" else None,
            "beta_decay": dataclasses.asdict(BetaDecaySettings()),
            "aux_skip": dataclasses.asdict(AuxSkipSettings()),
        },
    }


@functools.cache
def _table():
    from il_tf.nb201_lookup import NB201Table

    return NB201Table.load(FLAGS.table)


def score(alpha) -> dict:
    """Look-ups of the cell derived from the final α by each derivation rule."""
    from benchmarks.nb201_stats import cell_flags
    from il_tf.spaces.nb201_genotype import derive_nb201_genotype

    out = {}
    for rule in DERIVATIONS:
        genotype = derive_nb201_genotype(alpha, rule)
        found = _table().lookup(genotype).to_dict()
        prefix = "" if rule == "argmax" else f"{rule}/"
        out[prefix + "arch"] = genotype.to_arch_string()
        out.update({prefix + f: found[f] for f in FIELDS})
        out.update({prefix + k: v for k, v in cell_flags(genotype).items()})
    return out


def trajectories(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Each run's trajectory over its epochs (benchmarks.nb201_stats.trajectory), by (variant, seed)."""
    from benchmarks.nb201_stats import trajectory
    from il_tf.learning.plots import read_history
    from il_tf.spaces.nb201_genotype import NB201_OPS

    return {
        (r["variant"], r["seed"]): trajectory(read_history(r["workdir"]), NB201_OPS) for r in rows
    }


def summarize(rows: list[dict]) -> list[dict]:
    from benchmarks.nb201_stats import mean_std_ci, welch_test

    paths = trajectories(rows)
    out = []
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        for rule in DERIVATIONS:
            prefix = "" if rule == "argmax" else f"{rule}/"
            entry = {"variant": variant, "derivation": rule, "runs": len(mine)}
            for f in FIELDS:
                values = [r[prefix + f] for r in mine]
                entry[f] = mean_std_ci(values)
                for base in BASELINES:
                    theirs = [r[prefix + f] for r in rows if r["variant"] == base]
                    if variant != base:
                        entry[f"welch_vs_{base}/{f}"] = welch_test(values, theirs)
            for flag in ("parameter_free", "skip_dominated", "disconnected"):
                entry[flag] = sum(bool(r[prefix + flag]) for r in mine)
            entry["seconds"] = sum(r["seconds"] for r in mine)
            entry["archs"] = [r[prefix + "arch"] for r in mine]
            if rule == "argmax":  # the per-epoch look-ups are of the argmax cell
                ts = [paths[r["variant"], r["seed"]] for r in mine]
                entry["degraded"] = sum(t["degraded"] for t in ts)
                entry["final_minus_best"] = statistics.fmean(t["final"] - t["best"] for t in ts)
                entry["mass"] = {
                    op: [
                        statistics.fmean(t[k][op] for t in ts) for k in ("mass_first", "mass_last")
                    ]
                    for op in ("none", "skip_connect")
                }
            out.append(entry)
    return out


def _fmt(stat: dict) -> str:
    if stat["std"] is None:
        return f"{stat['mean']:.2f}"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.2f} ± {stat['std']:.2f} [{lo:.2f}, {hi:.2f}]"


def _p(test: dict | None) -> str:
    return "–" if test is None else f"{test['p']:.3g}"


def table_markdown(summary: list[dict], command: str) -> str:
    from il_tf.nb201_lookup import PUBLISHED_NB201

    lines = [
        f"Command: `{command}`",
        "",
        "Mean ± sample std [95 % t interval] over seeds; p: Welch's two-sided t-test of the",
        "CIFAR-10 test accuracy against each DARTS baseline (same derivation rule).",
        "",
        "Degraded: runs whose final cell scores at least 1 point below their best epoch's",
        "(argmax rule; final − best is the mean drop); none / skip mass: mean softmax mass",
        "of the op over the edges and runs, first epoch → last.",
        "",
        "| variant | derivation | runs | CIFAR-10 test | CIFAR-100 test | ImageNet16-120 test "
        "| p vs darts_1st | p vs darts_2nd | param-free / skip-dom. / disconn. | degraded "
        "(final − best) | none mass | skip mass | wall s per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        cells = " | ".join(_fmt(e[f]) for f in FIELDS)
        ps = " | ".join(_p(e.get(f"welch_vs_{b}/cifar10_test")) for b in BASELINES)
        flags_ = f"{e['parameter_free']} / {e['skip_dominated']} / {e['disconnected']}"
        if "degraded" in e:
            drift = f"{e['degraded']} ({e['final_minus_best']:.2f})"
            masses = " | ".join(
                f"{e['mass'][op][0]:.3f} → {e['mass'][op][1]:.3f}"
                for op in ("none", "skip_connect")
            )
        else:
            drift, masses = "–", "– | –"
        lines.append(
            f"| {e['variant']} | {e['derivation']} | {e['runs']} | {cells} | {ps} | {flags_} "
            f"| {drift} | {masses} | {e['seconds'] / e['runs']:.0f} |"
        )
    for name in ("DARTS-V2", "GDAS", "DrNAS", "optimal"):
        row = PUBLISHED_NB201[name]
        cells = " | ".join(row.format(f) for f in FIELDS)
        lines.append(f"| {name} (published) | | | {cells} | | | | | | | |")
    lines += ["", "Cells found (one per seed):", ""]
    for e in summary:
        archs = ", ".join(f"`{a}`" for a in e["archs"])
        lines.append(f"- {e['variant']} ({e['derivation']}): {archs}")
    return "\n".join(lines) + "\n"


def write_figures(rows: list[dict], workdir: Path) -> None:
    """One figure per variant (looked-up CIFAR-10 test per epoch, all seeds) and a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from il_tf.learning.plots import read_history
    from il_tf.nb201_lookup import PUBLISHED_NB201

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    for v in variants:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for r in (r for r in rows if r["variant"] == v):
            hist = read_history(r["workdir"])
            ax.plot([h["epoch"] for h in hist], [h["nb201"]["cifar10_test"] for h in hist],
                    marker="o", label=f"seed {r['seed']}")  # fmt: skip
        ax.set(xlabel="epoch", ylabel="CIFAR-10 test (look-up, %)")
        # Two lines: the longest variant names do not fit the width in one.
        ax.set_title(f"{v}\nderived cell per epoch", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(workdir / f"{v}.png", dpi=80)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(variants)), 3.5))
    for i, v in enumerate(variants):
        for j, rule in enumerate(DERIVATIONS):
            key = "cifar10_test" if rule == "argmax" else f"{rule}/cifar10_test"
            ys = [r[key] for r in rows if r["variant"] == v]
            ax.scatter([i + 0.15 * (2 * j - 1)] * len(ys), ys, marker="ox"[j], color=f"C{j}",
                       label=rule if i == 0 else None)  # fmt: skip
    # Labels at the right edge, inside the axes; DrNAS (94.36) sits just below the
    # optimum (94.37), so its label goes under its line.
    for name, va in (("DARTS-V2", "bottom"), ("DrNAS", "top"), ("optimal", "bottom")):
        value = PUBLISHED_NB201[name].value("cifar10_test")[0]
        ax.axhline(value, ls="--", lw=0.8, color="grey")
        ax.text(0.99, value, name, fontsize=7, va=va, ha="right",
                transform=ax.get_yaxis_transform())  # fmt: skip
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="CIFAR-10 test (look-up, %)", title="found cells per variant")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(workdir / "summary.png", dpi=80)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from il_tf.learning.hypergradients import METHODS

    if FLAGS.variants == ["all"]:  # every variant whose method this il_tf has
        variants = [v for v, spec in VARIANTS.items() if spec.method in METHODS]
    else:
        variants = FLAGS.variants
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    from benchmarks.nb201_stats import PartitionError, parse_partition

    missing = [v for v in variants if VARIANTS[v].method not in METHODS]
    if missing:
        raise app.UsageError(
            f"variants {missing} use hypergradient methods this il_tf lacks "
            f"({sorted({VARIANTS[v].method for v in missing})}); known methods: {sorted(METHODS)}"
        )
    try:
        parse_partition(FLAGS.partition, len(CLASSES))
    except PartitionError as e:
        raise app.UsageError(str(e)) from e
    for path, what in ((FLAGS.data_root, "--data_root"), (FLAGS.table, "--table")):
        if not FLAGS.summarize_only and not Path(path).exists():
            raise app.UsageError(f"{what} {path!r} does not exist")
    workdir = Path(FLAGS.workdir)
    # One line per finished run: a rerun of the same command skips them (resume).
    done_file = workdir / "runs.jsonl"
    if FLAGS.summarize_only and not done_file.is_file():
        raise app.UsageError(f"--summarize_only: {str(done_file)!r} does not exist (no runs)")
    workdir.mkdir(parents=True, exist_ok=True)
    from il_tf.rundir import RunDirError, locked

    # One study process per workdir: two would run the same searches and both append.
    try:
        with locked(workdir, read_only_ok=False):
            study(variants, workdir, done_file)
    except RunDirError as e:
        raise app.UsageError(str(e)) from e


def study(variants: list[str], workdir: Path, done_file: Path) -> None:
    """Runs the variants' unfinished seeds, then writes the table, results and figures."""
    import keras

    command = shlex.join([sys.executable, *sys.argv])
    done = {}
    if done_file.exists():
        for line in done_file.read_text().splitlines():
            r = json.loads(line)
            done[(r["variant"], r["seed"])] = r
    rows = []
    started = time.time()
    for seed in [int(s) for s in FLAGS.seeds]:
        for variant in variants:
            if (variant, seed) in done:
                rows.append(done[(variant, seed)])
                continue
            if FLAGS.summarize_only:  # not finished: left out of the summary
                continue
            row = run_one(variant, seed, workdir / variant / f"seed_{seed}")
            rows.append(row)
            with open(done_file, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            keras.backend.clear_session()
            gc.collect()
    if not rows:
        raise app.UsageError(
            f"--summarize_only: no finished run of variants {variants} with seeds "
            f"{FLAGS.seeds} in {str(done_file)!r}"
        )
    summary = summarize(rows)
    (workdir / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "seconds": round(time.time() - started, 1),
                "runs": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    text = table_markdown(summary, command)
    (workdir / "table.md").write_text(text)
    if FLAGS.figures:
        write_figures(rows, workdir)
    print(text)


if __name__ == "__main__":
    app.run(main)
