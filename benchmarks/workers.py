r"""Images decoded per worker and time per search iteration, for 1 and for N worker processes.

    python benchmarks/workers.py --workers=1,2 --steps=5 [--data=../shared/data/cifar10]

For each worker count W it starts W worker processes on this machine (il_tf.cluster
.LocalCluster: one TF_CONFIG each, MultiWorkerMirroredStrategy when W > 1, one CPU replica
per worker) that run the same search: two learners on an image folder (classes 0-4 and
5-9 of the CIFAR-10 folder, 32×32, global batch --batch each, the DARTS augmentation), read
without a decoded-image cache so that every image a step uses is decoded from its JPEG file
then; the supernet of benchmarks/search_speed.py's config S (5 cells, 8 channels, all 8 ops), the
default hypergradient method (K=2, R=1, T=1). Each worker prints one JSON line:

- ``input_only_ms_per_step``: its pipelines alone (decode, augment, batch; nothing else
  running in the process) producing one iteration's batches, the mean over --input_steps
  iterations pulled back to back;
- ``decoded_per_step``: JPEG files its pipelines decoded per iteration while the search
  ran (counted around the source's reader), over the --steps timed iterations;
- ``iteration_s``: median seconds per search iteration after --warmup untimed ones
  (first_iteration_s: the first, with tracing).

All W workers share this machine's cores, so the step time of W workers here says what
the coordination costs, not what W machines would gain. --json=PATH also writes the lines
to a file, --markdown=PATH the table of docs/benchmarks.md, captioned with the date,
machine and commit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("workers", ["1", "2"], "worker counts to measure, one cluster each")
flags.DEFINE_integer("steps", 5, "timed iterations")
flags.DEFINE_integer("warmup", 2, "untimed iterations first (the first one traces)")
flags.DEFINE_integer("input_steps", 50, "iterations' batches the pipelines alone produce")
flags.DEFINE_integer("batch", 32, "global batch of each learner (divisible by every count)")
flags.DEFINE_string(
    "data",
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "cifar10"
    ),
    "an image folder ROOT/{train,test}/<class>/*.jpg with 10 classes",
)
flags.DEFINE_string("json", None, "also write the workers' records (and the machine) here")
flags.DEFINE_string("markdown", None, "also write the captioned Markdown table to this file")
flags.DEFINE_bool("worker", False, "internal: run as one worker of the cluster")

SIZE, CHANNELS, CELLS = 32, 8, 5


def run_worker() -> dict:
    """One worker: builds the search, counts decoded images and times the iterations."""
    from il_tf.native_logs import import_tensorflow

    tf = import_tensorflow()
    from il_tf import distribute

    strategy = distribute.make_strategy()  # before any other TensorFlow work
    from il_tf.data.learners import Learner, build_learner_data
    from il_tf.data.sources import ImageFolderSource
    from il_tf.learning.build import build_engine
    from il_tf.learning.search_config import SearchConfig
    from il_tf.spaces.factories import darts_supernet

    decoded = tf.Variable(0, dtype=tf.int64, trainable=False)

    class CountingFolder(ImageFolderSource):
        """The image folder, counting the images its readers decode."""

        def reader(self, split):
            plain = super().reader(split)

            def read(index):
                image, label = plain.read(index)
                with tf.control_dependencies([decoded.assign_add(1)]):
                    return tf.identity(image), label

            return dataclasses.replace(plain, read=read)

    source = CountingFolder(FLAGS.data, cache_max_bytes=0)
    augment = {"crop_padding": 4, "flip": True, "cutout_length": 16}
    learners = [
        Learner(name, source, classes=classes, image_size=SIZE, batch_size=FLAGS.batch, **augment)
        for name, classes in (("first", list(range(5))), ("second", list(range(5, 10))))
    ]
    datas = [build_learner_data(learner, seed=0) for learner in learners]
    context = distribute.input_context(strategy)

    def streams():
        return [
            (
                distribute.BatchStream(strategy, lambda c, d=d: d.train_dataset(0, c), context),
                distribute.BatchStream(strategy, lambda c, d=d: d.val_dataset(0, c), context),
            )
            for d in datas
        ]

    # The search's own config and builder (the default method, K=2, R=1).
    config = SearchConfig(
        learners=tuple(learners),
        supernet=functools.partial(darts_supernet, channels=CHANNELS, num_cells=CELLS),
        method="chain_finite_difference",
        draw=False,
    )
    schedule = config.make_schedule()

    def next_batches(pipes):
        train = [[tuple(next(pipes[k][0]) for k in stage.learners)] for stage in schedule.stages]
        return train, [next(val) for _, val in pipes]

    # The pipelines alone, before the model exists: iterations' batches back to back, so
    # that the time is the pipelines' throughput, not what prefetching had ready.
    pipes = streams()
    next_batches(pipes)  # starts the pipelines
    started = time.perf_counter()
    for _ in range(FLAGS.input_steps):
        next_batches(pipes)
    input_seconds = (time.perf_counter() - started) / FLAGS.input_steps
    del pipes

    engine = build_engine(config, datas, strategy, total_weight_steps=1000)
    pipes = streams()
    started = time.perf_counter()
    engine.iteration(*next_batches(pipes))
    first = time.perf_counter() - started
    for _ in range(FLAGS.warmup - 1):
        engine.iteration(*next_batches(pipes))
    before = int(decoded.numpy())
    times = []
    for _ in range(FLAGS.steps):
        started = time.perf_counter()
        engine.iteration(*next_batches(pipes))
        times.append(time.perf_counter() - started)
    count = int(decoded.numpy()) - before
    distribute.sync_workers(strategy)
    return {
        "workers": context.num_input_pipelines,
        "worker": context.input_pipeline_id,
        "global_batch_per_learner": FLAGS.batch,
        "images_per_step_all_workers": 2 * 2 * FLAGS.batch,  # 2 learners × (train + val)
        "decoded_per_step": round(count / FLAGS.steps, 1),
        "input_only_ms_per_step": round(1000 * input_seconds, 1),
        "iteration_s": round(statistics.median(times), 2),
        "iteration_s_min_max": [round(min(times), 2), round(max(times), 2)],
        "first_iteration_s": round(first, 1),
    }


def markdown(records: list[dict]) -> str:
    """The table of docs/benchmarks.md: one row per worker of each cluster."""
    rows = [
        [
            r["workers"],
            r["worker"],
            r["decoded_per_step"],
            r["input_only_ms_per_step"],
            f"{r['iteration_s']:.1f} ({r['iteration_s_min_max'][0]:.1f}–"
            f"{r['iteration_s_min_max'][1]:.1f})",
            r["first_iteration_s"],
        ]
        for r in records
    ]
    header = [
        "workers",
        "worker",
        "images decoded per iteration",
        "pipelines alone, ms per iteration",
        "iteration s, median (min–max)",
        "first iteration s",
    ]
    return report.markdown_table(header, rows, right=4)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        print("RESULT " + json.dumps(run_worker()), flush=True)
        return
    from il_tf.cluster import LocalCluster

    counts = [int(w) for w in FLAGS.workers]
    if any(w < 1 or FLAGS.batch % w for w in counts):
        raise app.UsageError(f"--workers={FLAGS.workers}: each >= 1 and dividing --batch")
    if not os.path.isdir(os.path.join(FLAGS.data, "train")):
        print(f"error: image folder {FLAGS.data} is absent (--data)", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    info, command, records = report.machine(), report.command_line(), []
    for workers in counts:
        worker_command = [sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
        cluster = LocalCluster(worker_command, workers=workers, out=None)
        code = cluster.run()
        results = [line.split("RESULT ", 1)[1] for line in cluster.lines if "RESULT " in line]
        if code or len(results) != workers:
            print("\n".join(cluster.lines[-30:]), file=sys.stderr)
            print(f"error: the {workers}-worker cluster failed (exit code {code})", file=sys.stderr)
            sys.exit(1)
        for result in sorted(results):
            print(result, flush=True)
            records.append(json.loads(result))
        report.write(FLAGS.json, FLAGS.markdown, info, command, records, markdown(records))


if __name__ == "__main__":
    app.run(main)
