r"""How far two worker processes are from one process, on the quick start's own search.

    python benchmarks/worker_equality.py --seeds=0,1,2,3 --floatx=float32,float64

For each float type and seed it runs gin_configs/quickstart.gin (cut to --epochs epochs
of --iterations iterations) once in one process and once as two worker processes on this
machine (il_tf.cluster.LocalCluster, MultiWorkerMirroredStrategy, one CPU replica each),
with Keras' floatx set through a KERAS_HOME of its own (layers, weights and α in that
type). One record per run pair: the largest |Δα| and the largest |α|, whether the derived
genotypes are equal, and the largest relative difference of the learners' final losses.

Both runs compute the same sums over the same examples; only the order of summation
differs (one partial sum per replica, then the all-reduce). --json=PATH and
--markdown=PATH write the records and the captioned table of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("train_loss", "val_loss", "hypergradient_val_loss")

flags.DEFINE_list("seeds", ["0", "1", "2", "3"], "SearchConfig.seed of each run pair")
flags.DEFINE_list("floatx", ["float32", "float64"], "Keras floatx of the runs")
flags.DEFINE_integer("epochs", 1, "SearchConfig.epochs of every run")
flags.DEFINE_integer("iterations", 4, "SearchConfig.iterations_per_epoch of every run")
flags.DEFINE_string("json", None, "also write the records (and the machine) here")
flags.DEFINE_string("markdown", None, "also write the captioned Markdown table to this file")
FLAGS = flags.FLAGS


def search_command(workdir: Path, seed: int) -> list[str]:
    """The quick start's search, cut short, with the given seed."""
    return [
        sys.executable,
        str(REPO / "tools" / "search.py"),
        f"--gin_file={REPO / 'gin_configs' / 'quickstart.gin'}",
        f"--gin_bindings=SearchConfig.epochs = {FLAGS.epochs}",
        f"--gin_bindings=SearchConfig.iterations_per_epoch = {FLAGS.iterations}",
        f"--gin_bindings=SearchConfig.seed = {seed}",
        "--gin_bindings=SearchConfig.draw = False",
        f"--workdir={workdir}",
    ]


def keras_env(root: Path, floatx: str) -> dict[str, str]:
    """The environment of a process whose Keras layers, weights and α are ``floatx``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "keras.json").write_text(json.dumps({"floatx": floatx, "backend": "tensorflow"}))
    return {**os.environ, "KERAS_HOME": str(root)}


def final_record(workdir: Path) -> tuple[dict, dict]:
    """The run's genotype record and its last metrics line."""
    genotype = json.loads((workdir / "genotype.json").read_text())
    metrics = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    return genotype, metrics


def compare(one: Path, two: Path) -> dict:
    """The differences between two finished searches."""
    (ga, ma), (gb, mb) = final_record(one), final_record(two)
    names = sorted(ga["alpha"])
    gap = max(float(np.abs(np.subtract(ga["alpha"][n], gb["alpha"][n])).max()) for n in names)
    size = max(float(np.abs(ga["alpha"][n]).max()) for n in names)
    loss_gap = max(
        abs(mb["learners"][learner][name] - entry[name]) / max(abs(entry[name]), 1e-30)
        for learner, entry in ma["learners"].items()
        for name in LOSSES
        if name in entry
    )
    return {
        "iterations": ga["iteration"],
        "alpha_max_abs_diff": gap,
        "alpha_max_abs": size,
        "same_genotype": ga["genotype"] == gb["genotype"],
        "loss_max_rel_diff": float(loss_gap),
    }


def run_pair(floatx: str, seed: int, scratch: Path) -> dict:
    """One process and two workers on the same config; their differences."""
    from il_tf.cluster import LocalCluster

    env = keras_env(scratch / "keras", floatx)
    one, two = scratch / "one", scratch / "two"
    proc = subprocess.run(
        search_command(one, seed), capture_output=True, text=True, env=env, cwd=REPO
    )
    if proc.returncode:
        raise RuntimeError(f"one-process search failed:\n{proc.stderr[-3000:]}")
    cluster = LocalCluster(search_command(two, seed), workers=2, env=env, cwd=REPO, out=None)
    code = cluster.run()
    if code:
        tail = "\n".join(cluster.lines[-30:])
        raise RuntimeError(f"two-worker search failed (exit code {code}):\n{tail}")
    return {"floatx": floatx, "seed": seed, **compare(one, two)}


def markdown(records: list[dict]) -> str:
    """Per float type: the runs, the largest differences and how often the genotype differs."""
    rows = []
    for floatx in sorted({r["floatx"] for r in records}):
        runs = [r for r in records if r["floatx"] == floatx]
        gaps = [r["alpha_max_abs_diff"] for r in runs]
        rows.append(
            [
                floatx,
                runs[0]["iterations"],
                len(runs),
                f"{np.median(gaps):.1e} ({min(gaps):.1e}–{max(gaps):.1e})",
                f"{max(r['alpha_max_abs'] for r in runs):.1e}",
                f"{sum(not r['same_genotype'] for r in runs)} of {len(runs)}",
                f"{max(r['loss_max_rel_diff'] for r in runs):.1e}",
            ]
        )
    header = [
        "floatx",
        "iterations",
        "seeds",
        "max abs Δα, median (min–max)",
        "max abs α",
        "genotype differs",
        "max rel. Δ final loss",
    ]
    return report.markdown_table(header, rows, right=6)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    bad = sorted(set(FLAGS.floatx) - {"float32", "float64"})
    if bad:
        raise app.UsageError(f"--floatx={bad}: 'float32' and/or 'float64' allowed")
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds={FLAGS.seeds}: ints allowed") from None
    info, command, records = report.machine(), report.command_line(), []
    for floatx in FLAGS.floatx:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="il_tf_worker_equality_") as scratch:
                try:
                    record = run_pair(floatx, seed, Path(scratch))
                except RuntimeError as e:
                    print(f"error: {floatx}, seed {seed}: {e}", file=sys.stderr)
                    sys.exit(1)
            print(json.dumps(record), flush=True)
            records.append(record)
            report.write(FLAGS.json, FLAGS.markdown, info, command, records, markdown(records))


if __name__ == "__main__":
    app.run(main)
