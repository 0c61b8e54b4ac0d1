r"""Scores IL against DARTS in the NAS-Bench-201 space by table look-up, seeds paired.

    python benchmarks/nb201_study.py --data_root=../shared/data/cifar10 \
        --table=../shared/data/nasbench201.json.gz --workdir=runs/nb201_bench --seeds=0,1,2

Runs a set of searches on learners built from an image folder of CIFAR-10 — DARTS (one
learner on all classes, first and second order) and IL (two learners on disjoint sets of
the classes) with each hypergradient method and with the blocked and joint schedules —
for several seeds, looks the found cells up in the table with both derivation rules, and
reports every variant beside random search and the published rows, and every pair of
variants seed by seed. Every variant of a seed starts from the same supernet weights and
α (the row's ``init_digest`` shows it), and variants with the same learners read the same
batches in the same order.

Each finished run is one line of the ledger (``--ledger``, default WORKDIR/runs.jsonl):
its setting, the final cells and look-ups under both rules, α's entropy and op masses
and the cells per epoch, wall and CPU time, the commit. A run whose variant, seed and
setting are in the ledger is not repeated, so the same command resumes an interrupted
study (an interrupted run restarts from its last checkpoint under
WORKDIR/<variant>/seed_<seed>), and a ledger committed to the repository lets a study
continue on another machine. ``--summarize_only`` runs nothing and writes the report of
the selected variants and seeds from the ledger (WORKDIR/table.md, results.json and the
figures); ``--report=calibration`` tabulates how far α moved in every setting the ledger
holds for the selected variants (WORKDIR/calibration.md).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data_root", "../shared/data/cifar10", "CIFAR-10 image folder (ROOT/train/<class>)"
)
flags.DEFINE_string("table", "../shared/data/nasbench201.json.gz", "NAS-Bench-201 table")
flags.DEFINE_string("workdir", "runs/nb201_bench", "where every run and the reports go")
flags.DEFINE_string(
    "ledger",
    "",
    "the JSON-lines file of finished runs, read to skip and summarize them and appended to "
    "(default WORKDIR/runs.jsonl); one ledger may hold runs of several settings and workdirs",
)
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
    "learners separated by '/' (K = number of groups), or random:SEED for two learners of "
    "5 classes drawn with that seed; DARTS variants use all 10 classes (see --darts_data)",
)
flags.DEFINE_float(
    "train_fraction",
    1.0,
    "each learner keeps this fraction of each of its classes' training images (chosen by "
    "the run seed, the same images for every variant of a seed), e.g. 0.1",
)
flags.DEFINE_enum(
    "darts_data",
    "all_classes",
    ["all_classes", "first_learner"],
    "what the one-learner (DARTS) variants learn from: all 10 classes, or exactly the first "
    "IL learner's classes and images (IL's own regime: DARTS sees one learner's data)",
)
flags.DEFINE_bool("figures", True, "write one figure per variant and a summary figure")
flags.DEFINE_bool(
    "summarize_only",
    False,
    "run nothing: write the report of the selected variants and seeds from the ledger's "
    "runs of this setting (e.g. a study run in chunks)",
)
flags.DEFINE_enum(
    "report",
    "study",
    ["study", "calibration"],
    "study: run and report this setting; calibration: run nothing, tabulate how far α "
    "moved in every setting of the selected variants in the ledger",
)
flags.DEFINE_float(
    "max_hours",
    0.0,
    "start no run once the chunk has run this long, nor one that would take it past this "
    "if it lasted as long as the longest run of the chunk so far (0 = no limit)",
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


def learner_groups(split: str) -> list[list[int]]:
    """The class lists of a variant's learners under the current flags."""
    from benchmarks.nb201_stats import resolve_partition

    groups = [list(g) for g in resolve_partition(FLAGS.partition, len(CLASSES))]
    if split == "partition":
        return groups
    if FLAGS.darts_data == "first_learner":
        return groups[:1]
    return [list(range(len(CLASSES)))]


def run_setting(variant: str) -> dict:
    """What a run of ``variant`` depends on besides its seed (the ledger's ``setting``)."""
    return {
        "epochs": FLAGS.epochs,
        "iterations_per_epoch": FLAGS.iterations_per_epoch,
        "image_size": FLAGS.image_size,
        "channels": FLAGS.channels,
        "cells_per_stage": FLAGS.cells_per_stage,
        "batch_size": FLAGS.batch_size,
        "val_fraction": FLAGS.val_fraction,
        "arch_lr": FLAGS.arch_lr,
        "train_fraction": FLAGS.train_fraction,
        "learners": learner_groups(VARIANTS[variant].split),
    }


def learners(groups: list[list[int]], seed: int):
    """One Learner per class group; the same classes give the same learner (name, data)."""
    from benchmarks.subset_source import ClassFractionSource
    from il_tf.data.learners import Learner
    from il_tf.data.sources import ImageFolderSource

    source = ImageFolderSource(FLAGS.data_root)
    if FLAGS.train_fraction < 1:
        source = ClassFractionSource(source, FLAGS.train_fraction, seed)
    common = dict(
        image_size=FLAGS.image_size, batch_size=FLAGS.batch_size, val_fraction=FLAGS.val_fraction
    )
    if groups == [list(range(len(CLASSES)))]:
        return (Learner("cifar10", source, **common),)
    return tuple(
        Learner(
            "classes_" + "_".join(map(str, group)),
            source,
            classes=[CLASSES[c] for c in group],
            **common,
        )
        for group in groups
    )


def init_digest(config, groups: list[list[int]]) -> str:
    """A digest of the supernet's initial weights and α of a run (the heads excluded)."""
    from il_tf.learning.search_model import build_search_model
    from il_tf.spaces.architecture import AuxSkipSettings

    model = build_search_model(
        config.supernet,
        [len(g) for g in groups],
        (FLAGS.image_size, FLAGS.image_size, 3),
        seed=config.seed,
        arch_dtype="float32",
        aux_skip=AuxSkipSettings(),
    )
    h = hashlib.sha256()
    for v in [*model.encoder.weights, *model.arch.arch_variables]:
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


@functools.cache
def commit() -> str | None:
    """The commit of the running code (``-dirty`` with uncommitted changes), if in git."""
    try:
        run = functools.partial(subprocess.run, capture_output=True, text=True, check=True)
        head = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty.stdout.strip() else "")


def run_one(variant: str, seed: int, workdir: Path) -> dict:
    """Runs (or resumes) one search and returns its ledger row."""
    import gin

    from il_tf.learning.arch_regularizers import BetaDecaySettings
    from il_tf.learning.engine import OptimizerSettings
    from il_tf.learning.plots import read_history
    from il_tf.learning.search import SearchConfig, run_search
    from il_tf.spaces.architecture import AuxSkipSettings
    from il_tf.spaces.factories import nb201_supernet

    split, method, schedule, rounds, beta_decay, aux_skip = VARIANTS[variant]
    # The remedies are gin settings read by the search; bound for every run (0 = off).
    gin.bind_parameter(f"{BetaDecaySettings.__name__}.weight", float(beta_decay))
    gin.bind_parameter(f"{AuxSkipSettings.__name__}.start", float(aux_skip))
    setting = run_setting(variant)
    config = SearchConfig(
        learners=learners(setting["learners"], seed),
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
    digest = init_digest(config, setting["learners"])
    started, cpu = time.time(), time.process_time()
    result = run_search(config, workdir)
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu
    meta = json.loads(Path(result.genotype_path).read_text())
    return {
        "variant": variant,
        "seed": seed,
        "partition": FLAGS.partition,
        "setting": setting,
        **score(meta["alpha"]["cell"]),
        "epochs": [epoch_entry(r) for r in read_history(workdir)],
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "commit": commit(),
        "init_digest": digest,
        "workdir": str(workdir),
        "settings": {
            "method": method,
            "schedule": schedule,
            "rounds": rounds,
            "beta_decay": dataclasses.asdict(BetaDecaySettings()),
            "aux_skip": dataclasses.asdict(AuxSkipSettings()),
        },
    }


@functools.cache
def _table():
    from il_tf.nb201_lookup import NB201Table

    return NB201Table.load(FLAGS.table)


def score(alpha, full: bool = True) -> dict:
    """Per derivation rule, the cell derived from ``alpha`` and its look-ups (with ``full``
    all three accuracies and the collapse flags, else the CIFAR-10 test accuracy)."""
    from benchmarks.nb201_stats import DERIVATIONS, FIELDS, cell_flags
    from il_tf.spaces.nb201_genotype import derive_nb201_genotype

    out = {}
    for rule in DERIVATIONS:
        genotype = derive_nb201_genotype(alpha, rule)
        found = _table().lookup(genotype).to_dict()
        entry = {"arch": genotype.to_arch_string()}
        entry.update({f: found[f] for f in (FIELDS if full else FIELDS[:1])})
        if full:
            entry.update(cell_flags(genotype))
        out[rule] = entry
    return out


def epoch_entry(record: dict) -> dict:
    """A per-epoch record of a run (``genotypes/epoch_NNN.json``) as a ledger entry: the
    edges' mean α-softmax entropy, the op masses and both rules' cells and look-ups."""
    from benchmarks.nb201_stats import edge_entropy, op_mass
    from il_tf.spaces.nb201_genotype import NB201_OPS

    meta = record.get("metadata", record)
    logits = meta["alpha"]["cell"]
    return {
        "epoch": int(meta["epoch"]),
        "entropy": round(edge_entropy(logits), 5),
        "mass": {op: round(m, 5) for op, m in op_mass(logits, NB201_OPS).items()},
        **score(logits, full=False),
    }


def read_ledger(path: Path) -> list[dict]:
    """The ledger's rows (none when the file does not exist yet)."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "setting" not in row:
            raise app.UsageError(
                f"{str(path)!r} line {n} has no 'setting' (a runs file of the study tool before "
                "the paired study); give a new --ledger"
            )
        rows.append(row)
    return rows


def _key(variant: str, seed: int, setting: dict) -> str:
    return json.dumps([variant, seed, setting], sort_keys=True)


def random_search_references() -> list[dict]:
    """Expected results of random searches of 10 and 100 look-ups (selection by CIFAR-10
    valid), for every reported field."""
    from benchmarks.nb201_stats import FIELDS, random_search_reference

    results = list(_table().results())
    valid = [r.cifar10_valid for r in results]
    out = []
    for n in (10, 100):
        ref = {"n": n}
        for f in FIELDS:
            ref[f] = random_search_reference(valid, [getattr(r, f) for r in results], n)
        out.append(ref)
    return out


def write_figures(rows_by_variant: dict[str, list[dict]], workdir: Path) -> None:
    """Per variant: the argmax cell's look-up, the mean edge entropy and the none / skip mass
    per epoch, one colour per seed; and a summary joining each seed's runs across variants."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.nb201_stats import DERIVATIONS, ENTROPY_FRACTION
    from il_tf.nb201_lookup import PUBLISHED_NB201

    seeds = sorted({r["seed"] for rows in rows_by_variant.values() for r in rows})
    color = {s: f"C{i % 10}" for i, s in enumerate(seeds)}
    for v, rows in rows_by_variant.items():
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for r in rows:
            ep = [e["epoch"] for e in r["epochs"]]
            c = color[r["seed"]]
            axes[0].plot(ep, [e["argmax"]["cifar10_test"] for e in r["epochs"]], marker="o",
                         ms=3, color=c, label=f"seed {r['seed']}")  # fmt: skip
            axes[1].plot(ep, [e["entropy"] for e in r["epochs"]], marker=".", color=c)
            axes[2].plot(ep, [e["mass"]["none"] for e in r["epochs"]], color=c)
            axes[2].plot(ep, [e["mass"]["skip_connect"] for e in r["epochs"]], color=c, ls="--")
        for y in (math.log(5), ENTROPY_FRACTION * math.log(5)):
            axes[1].axhline(y, ls=":", lw=0.8, color="grey")
        axes[0].set(xlabel="epoch", ylabel="CIFAR-10 test (look-up, %)")
        axes[0].set_title("argmax cell per epoch", fontsize=9)
        axes[1].set(xlabel="epoch", ylabel="nats")
        axes[1].set_title("mean edge entropy of α softmax (ln 5, half)", fontsize=9)
        axes[2].set(xlabel="epoch", ylabel="mean softmax mass")
        axes[2].set_title("none (solid), skip_connect (dashed)", fontsize=9)
        axes[0].legend(fontsize=6)
        fig.suptitle(v, fontsize=10)
        fig.tight_layout()
        fig.savefig(workdir / f"{v}.png", dpi=80)
        plt.close(fig)
    names = [v for v, rows in rows_by_variant.items() if rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(names)), 3.8), sharey=True)
    for ax, rule in zip(axes, DERIVATIONS, strict=True):
        for s in seeds:
            xs, ys = [], []
            for i, v in enumerate(names):
                row = next((r for r in rows_by_variant[v] if r["seed"] == s), None)
                if row is not None:
                    xs.append(i)
                    ys.append(row[rule]["cifar10_test"])
            ax.plot(xs, ys, marker="o", ms=4, lw=0.8, color=color[s], label=f"seed {s}")
        for name, va in (("DARTS-V2", "bottom"), ("DrNAS", "top"), ("optimal", "bottom")):
            value = PUBLISHED_NB201[name].value("cifar10_test")[0]
            ax.axhline(value, ls="--", lw=0.8, color="grey")
            ax.text(0.99, value, name, fontsize=7, va=va, ha="right",
                    transform=ax.get_yaxis_transform())  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=7)
        ax.set_title(f"final cell per seed, {rule}", fontsize=9)
    axes[0].set_ylabel("CIFAR-10 test (look-up, %)")
    axes[1].legend(fontsize=6, loc="lower right")
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
    from benchmarks.nb201_stats import PartitionError, resolve_partition

    missing = [v for v in variants if VARIANTS[v].method not in METHODS]
    if missing:
        raise app.UsageError(
            f"variants {missing} use hypergradient methods this il_tf lacks "
            f"({sorted({VARIANTS[v].method for v in missing})}); known methods: {sorted(METHODS)}"
        )
    try:
        resolve_partition(FLAGS.partition, len(CLASSES))
    except PartitionError as e:
        raise app.UsageError(str(e)) from e
    if not 0 < FLAGS.train_fraction <= 1:
        raise app.UsageError(
            f"--train_fraction={FLAGS.train_fraction}: must be in (0, 1] (the fraction of each "
            "class's training images kept), e.g. 0.1"
        )
    running = FLAGS.report == "study" and not FLAGS.summarize_only
    for path, what in ((FLAGS.data_root, "--data_root"), (FLAGS.table, "--table")):
        if running and not Path(path).exists():
            raise app.UsageError(f"{what} {path!r} does not exist")
    workdir = Path(FLAGS.workdir)
    ledger = Path(FLAGS.ledger) if FLAGS.ledger else workdir / "runs.jsonl"
    if not running and not ledger.is_file():
        raise app.UsageError(f"--summarize_only: {str(ledger)!r} does not exist (no runs)")
    workdir.mkdir(parents=True, exist_ok=True)
    from il_tf.rundir import RunDirError, locked

    # One study process per workdir: two would run the same searches and both append.
    try:
        with locked(workdir, read_only_ok=False):
            if FLAGS.report == "calibration":
                calibration(variants, workdir, ledger)
            else:
                study(variants, workdir, ledger)
    except RunDirError as e:
        raise app.UsageError(str(e)) from e


def calibration(variants: list[str], workdir: Path, ledger: Path) -> None:
    """Writes WORKDIR/calibration.md: α's movement per setting of the selected variants."""
    from benchmarks.nb201_report import calibration_table
    from benchmarks.nb201_stats import alpha_moved

    seeds = {int(s) for s in FLAGS.seeds}
    groups: dict[str, list[dict]] = {}
    for r in read_ledger(ledger):
        if r["variant"] in variants and r["seed"] in seeds:
            key = json.dumps([r["variant"], r["setting"]], sort_keys=True)
            groups.setdefault(key, []).append(r)
    if not groups:
        raise app.UsageError(
            f"--report=calibration: no run of variants {variants} with seeds {FLAGS.seeds} "
            f"in {str(ledger)!r}"
        )
    entries = []
    for rows in groups.values():
        s = rows[0]["setting"]
        entries.append(
            {
                "variant": rows[0]["variant"],
                "setting": s,
                "verdict": alpha_moved(rows),
                "seconds": statistics.fmean(r["seconds"] for r in rows),
                "cost": s["epochs"] * s["iterations_per_epoch"],
            }
        )
    entries.sort(key=lambda e: (e["variant"], e["cost"], e["setting"]["arch_lr"]))
    command = shlex.join([sys.executable, *sys.argv])
    text = f"Command: `{command}`\n\n" + calibration_table(entries)
    (workdir / "calibration.md").write_text(text)
    print(text)


def study(variants: list[str], workdir: Path, ledger: Path) -> None:
    """Runs the variants' unfinished seeds, then writes the report, results and figures."""
    import keras

    from benchmarks.nb201_report import study_report
    from benchmarks.nb201_stats import pairs, summarize

    command = shlex.join([sys.executable, *sys.argv])
    done = {_key(r["variant"], r["seed"], r["setting"]): r for r in read_ledger(ledger)}
    rows_by_variant: dict[str, list[dict]] = {v: [] for v in variants}
    started, longest = time.time(), 0.0
    for seed in [int(s) for s in FLAGS.seeds]:
        for variant in variants:
            key = _key(variant, seed, run_setting(variant))
            if key in done:
                rows_by_variant[variant].append(done[key])
                continue
            if FLAGS.summarize_only:  # not finished: left out of the summary
                continue
            elapsed = time.time() - started
            if FLAGS.max_hours and elapsed + longest > FLAGS.max_hours * 3600:
                print(f"--max_hours={FLAGS.max_hours}: stopping before {variant} seed {seed} "
                      f"({elapsed:.0f} s run, longest run {longest:.0f} s)", flush=True)  # fmt: skip
                break
            begun = time.time()
            row = run_one(variant, seed, workdir / variant / f"seed_{seed}")
            longest = max(longest, time.time() - begun)
            rows_by_variant[variant].append(row)
            ledger.parent.mkdir(parents=True, exist_ok=True)
            with open(ledger, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("variant", "seed", "argmax", "seconds")}),
                  flush=True)  # fmt: skip
            keras.backend.clear_session()
            gc.collect()
        else:
            continue
        break  # out of time
    rows_by_variant = {v: rows for v, rows in rows_by_variant.items() if rows}
    if not rows_by_variant:
        raise app.UsageError(
            f"--summarize_only: no finished run of variants {variants} with seeds "
            f"{FLAGS.seeds} and this setting in {str(ledger)!r}"
        )
    summary = summarize(rows_by_variant)
    comparisons = pairs(rows_by_variant)
    references = random_search_references() if Path(FLAGS.table).is_file() else []
    (workdir / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "seconds": round(time.time() - started, 1),
                "runs": [r for rows in rows_by_variant.values() for r in rows],
                "summary": summary,
                "pairs": comparisons,
                "random_search": references,
            },
            indent=2,
        )
    )
    text = study_report(command, summary, comparisons, rows_by_variant, references)
    (workdir / "table.md").write_text(text)
    if FLAGS.figures:
        write_figures(rows_by_variant, workdir)
    print(text)


if __name__ == "__main__":
    app.run(main)
