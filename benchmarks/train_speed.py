r"""Measures training throughput of an evaluation network, with and without XLA.

    python benchmarks/train_speed.py            # DARTS_V2, 20 cells, 36 channels, batch 96, 32x32

Times the full training step of tools/train.py (forward with auxiliary head and drop-path,
backward, all-reduce, global-norm clipping, SGD update) on one fixed batch of random images
kept on the device, so the input pipeline is not measured. Each setting prints one JSON line:
images/s is the median over --steps timed steps after --warmup untimed ones (the first of
which traces, and with XLA compiles). --json=PATH also writes the lines to a file,
--markdown=PATH the table of docs/benchmarks.md, captioned with the date, machine and commit.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

GENOTYPE = flags.DEFINE_string("genotype", "DARTS_V2", "genotype file or published name")
CHANNELS = flags.DEFINE_integer("channels", 36, "initial channels")
LAYERS = flags.DEFINE_integer("layers", 20, "cells")
BATCH = flags.DEFINE_integer("batch", 96, "global batch size")
IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "input height and width")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "classes")
KIND = flags.DEFINE_enum("kind", "cifar", ["cifar", "imagenet"], "network kind")
STEPS = flags.DEFINE_integer("steps", 10, "timed steps (>= 1)")
WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps first (>= 1: tracing, compiling)")
JIT = flags.DEFINE_enum("jit", "both", ["both", "on", "off"], "XLA settings to measure")
MIXED = flags.DEFINE_string("mixed_precision", None, "None, mixed_float16 or mixed_bfloat16")
JSON = flags.DEFINE_string("json", None, "also write the records (and the machine) to this file")
MARKDOWN = flags.DEFINE_string("markdown", None, "also write the captioned Markdown table here")


def measure(jit_compile: bool) -> dict:
    from il_tf.native_logs import import_tensorflow

    tf = import_tensorflow()

    from il_tf.models.networks import NetworkConfig
    from il_tf.spaces.genotypes import load_genotype
    from il_tf.training.trainer import Trainer

    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]
    )
    shape = (IMAGE_SIZE.value, IMAGE_SIZE.value, 3)
    build_start = time.perf_counter()
    trainer = Trainer(
        load_genotype(GENOTYPE.value),
        NetworkConfig(kind=KIND.value, channels=CHANNELS.value, layers=LAYERS.value),
        NUM_CLASSES.value,
        shape,
        BATCH.value,
        strategy,
        mixed_precision=MIXED.value,
        jit_compile=jit_compile,
    )
    build_seconds = time.perf_counter() - build_start
    trainer.learning_rate.assign(0.025)
    trainer.model.drop_path_rate.assign(0.1)
    images = tf.random.stateless_normal((BATCH.value, *shape), seed=(0, 0))
    labels = tf.random.stateless_uniform(
        (BATCH.value,), seed=(0, 1), maxval=NUM_CLASSES.value, dtype=tf.int32
    )
    batch = next(
        iter(
            strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, labels)))
        )
    )

    cpu: list[float] = []

    def step(i: int) -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        out = trainer.train_step(batch, tf.constant([0, i], tf.int64))
        float(out["loss_sum"])  # waits for the step to finish
        # CPU time of all the process's threads: other jobs on the machine inflate it
        # less than the wall time.
        cpu.append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    warmup = [step(i) for i in range(WARMUP.value)]
    timed = [step(WARMUP.value + i) for i in range(STEPS.value)]
    median = statistics.median(timed)
    median_cpu = statistics.median(cpu[WARMUP.value :])
    return {
        "genotype": GENOTYPE.value,
        "kind": KIND.value,
        "layers": LAYERS.value,
        "channels": CHANNELS.value,
        "batch": BATCH.value,
        "image_size": IMAGE_SIZE.value,
        "jit_compile": jit_compile,
        "mixed_precision": MIXED.value,
        "replicas": strategy.num_replicas_in_sync,
        "images_per_second": round(BATCH.value / median, 2),
        "step_seconds_median": round(median, 4),
        "step_seconds_min": round(min(timed), 4),
        "step_seconds_max": round(max(timed), 4),
        "step_cpu_seconds_median": round(median_cpu, 4),
        "timed_steps": len(timed),
        "first_step_seconds": round(warmup[0], 2),
        "build_seconds": round(build_seconds, 2),
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }


def markdown(records: list[dict]) -> str:
    """The table of docs/benchmarks.md: one row per XLA setting."""
    rows = []
    for r in records:
        xla = "on" if r["jit_compile"] else "off"
        if "error" in r:
            rows.append([xla, f"failed: {r['error']}", "", "", "", ""])
            continue
        rows.append(
            [
                xla,
                f"{r['genotype']}, {r['layers']} cells, {r['channels']} channels, "
                f"batch {r['batch']}, {r['image_size']}×{r['image_size']}, {r['device']}",
                r["images_per_second"],
                f"{r['step_seconds_median']:.2f} ({r['step_seconds_min']:.2f}–"
                f"{r['step_seconds_max']:.2f})",
                f"{r['step_cpu_seconds_median']:.2f}",
                r["first_step_seconds"],
            ]
        )
    header = [
        "XLA",
        "network",
        "images/s",
        "s per step, median (min–max)",
        "CPU s per step",
        "first step s",
    ]
    return report.markdown_table(header, rows, right=4)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if STEPS.value < 1 or WARMUP.value < 1:
        raise app.UsageError(
            f"--steps and --warmup must be >= 1, got {STEPS.value}, {WARMUP.value}"
        )
    from il_tf.native_logs import import_tensorflow

    # As the tools do: TensorFlow's uninformative start-up lines (no CUDA here) dropped.
    tf = import_tensorflow()
    tf.get_logger().setLevel("WARNING")
    settings = {"both": [False, True], "on": [True], "off": [False]}[JIT.value]
    info, command, records = report.machine(), report.command_line(), []
    for jit_compile in settings:
        try:
            record = measure(jit_compile)
        except Exception as e:  # report a setting that cannot run (e.g. an op XLA lacks)
            record = {"jit_compile": jit_compile, "error": f"{type(e).__name__}: {e}"[:500]}
        print(json.dumps(record), flush=True)
        records.append(record)
        report.write(JSON.value, MARKDOWN.value, info, command, records, markdown(records))


if __name__ == "__main__":
    app.run(main)
