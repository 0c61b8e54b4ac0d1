r"""Scores IL against DARTS in the NAS-Bench-201 space by table look-up.

    python tools/nb201_bench.py --data_root=../shared/data/cifar10 \
        --table=../shared/data/nasbench201.json.gz --workdir=runs/nb201_bench --seeds=0,1,2

Runs a set of searches on learners built from an image folder of CIFAR-10 — DARTS (one
learner on all classes, first and second order) and IL (two learners on disjoint halves of
the classes) with each hypergradient method and with the blocked and joint schedules —
for several seeds, looks the found cells up in the table, and prints mean ± std beside
the published rows. Every run keeps its workdir (genotype.json, metrics, checkpoints) under
WORKDIR/<variant>/seed_<seed>; a run that finished is not repeated, so the same command
resumes an interrupted benchmark. WORKDIR/results.json and WORKDIR/table.md hold the
results and the command that produced them.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# name -> (learner split, method, schedule, rounds)
VARIANTS = {
    "darts_1st": ("single", "first_order", "interleaved", 1),
    "darts_2nd": ("single", "chain_finite_difference", "interleaved", 1),
    "il_first_order": ("halves", "first_order", "interleaved", 2),
    # The recorded table's il_finite_difference (the published IL algorithm).
    "il_per_learner_fd": ("halves", "per_learner_finite_difference", "interleaved", 2),
    "il_chain_fd": ("halves", "chain_finite_difference", "interleaved", 2),
    "il_chain_exact": ("halves", "chain_exact", "interleaved", 2),
    "il_unrolled": ("halves", "unrolled", "interleaved", 2),
    "blocked_chain_fd": ("halves", "chain_finite_difference", "blocked", 2),
    "joint_chain_fd": ("halves", "chain_finite_difference", "joint", 2),
}
FIELDS = ("cifar10_test", "cifar100_test", "imagenet16_test")


def learners(split: str):
    from il_tf.data.learners import Learner
    from il_tf.data.sources import ImageFolderSource

    source = ImageFolderSource(FLAGS.data_root)
    common = dict(
        image_size=FLAGS.image_size, batch_size=FLAGS.batch_size, val_fraction=FLAGS.val_fraction
    )
    if split == "single":
        return (Learner("cifar10", source, **common),)
    return (
        Learner("classes_0_4", source, classes=list(CLASSES[:5]), **common),
        Learner("classes_5_9", source, classes=list(CLASSES[5:]), **common),
    )


def run_one(variant: str, seed: int, workdir: Path) -> dict:
    from il_tf.learning.engine import OptimizerSettings
    from il_tf.learning.search import SearchConfig, run_search
    from il_tf.spaces.factories import nb201_supernet

    split, method, schedule, rounds = VARIANTS[variant]
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
        "arch": meta["nb201"]["arch"],
        **{f: meta["nb201"][f] for f in FIELDS},
        "seconds": round(time.time() - started, 1),
        "workdir": str(workdir),
        "settings": dataclasses.asdict(config.optimizers) | {"method": method},
    }


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        entry = {"variant": variant, "runs": len(mine)}
        for f in FIELDS:
            values = [r[f] for r in mine]
            entry[f] = (statistics.mean(values), statistics.pstdev(values))
        entry["archs"] = [r["arch"] for r in mine]
        out.append(entry)
    return out


def table_markdown(summary: list[dict], command: str) -> str:
    from il_tf.nb201_lookup import PUBLISHED_NB201

    lines = [
        f"Command: `{command}`",
        "",
        "| method | runs | CIFAR-10 test | CIFAR-100 test | ImageNet16-120 test |",
        "|---|---|---|---|---|",
    ]
    for e in summary:
        cells = " | ".join(f"{e[f][0]:.2f} ± {e[f][1]:.2f}" for f in FIELDS)
        lines.append(f"| {e['variant']} (this run) | {e['runs']} | {cells} |")
    for name in ("DARTS-V2", "GDAS", "DrNAS", "optimal"):
        row = PUBLISHED_NB201[name]
        cells = " | ".join(row.format(f) for f in FIELDS)
        lines.append(f"| {name} (published) | | {cells} |")
    lines += ["", "Cells found (one per seed):", ""]
    for e in summary:
        lines.append(f"- {e['variant']}: " + ", ".join(f"`{a}`" for a in e["archs"]))
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    variants = list(VARIANTS) if FLAGS.variants == ["all"] else FLAGS.variants
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise app.UsageError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    for path, what in ((FLAGS.data_root, "--data_root"), (FLAGS.table, "--table")):
        if not Path(path).exists():
            raise app.UsageError(f"{what} {path!r} does not exist")
    import keras

    workdir = Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, *sys.argv])
    rows = []
    started = time.time()
    for seed in [int(s) for s in FLAGS.seeds]:
        for variant in variants:
            row = run_one(variant, seed, workdir / variant / f"seed_{seed}")
            rows.append(row)
            print(json.dumps(row), flush=True)
            keras.backend.clear_session()
            gc.collect()
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
    print(text)


if __name__ == "__main__":
    app.run(main)
