"""Runs one command as N workers of a multi-worker cluster on this machine.

    python tools/local_cluster.py --workers=2 -- \
        python tools/search.py --gin_file=gin_configs/quickstart.gin --workdir=runs/two_workers

Each worker is its own process with its own ``TF_CONFIG`` (gRPC on free localhost ports;
worker 0 is the chief), so the command runs under ``MultiWorkerMirroredStrategy`` exactly
as it would on N machines. Output lines are prefixed with ``[worker i]``. Exits when every
worker has exited: 0 if all succeeded, else the first failing worker's code; once a
worker has failed, the others are killed after ``--grace`` seconds if they have not
stopped by themselves. Ctrl-C is passed on to every worker (a search or training stops at
its next step with a checkpoint); a second Ctrl-C kills them. GPUs are hidden from the
workers unless ``--gpus``.
"""

from __future__ import annotations

import subprocess
import sys

from absl import app, flags

from il_tf.cluster import LocalCluster

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Number of worker processes (>= 1).")
flags.DEFINE_float("timeout", None, "Kill every worker after this many seconds (default: none).")
flags.DEFINE_float(
    "grace", 300.0, "Once a worker has failed, kill the others after this many seconds."
)
flags.DEFINE_bool("gpus", False, "Let the workers see the GPUs (default: CPU only).")


def main(argv):
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise app.UsageError("give the command to run after --, e.g. -- python tools/search.py ...")
    if FLAGS.workers < 1:
        print(f"error: --workers must be >= 1, got {FLAGS.workers}", file=sys.stderr)
        return 1
    cluster = LocalCluster(command, workers=FLAGS.workers, gpus=FLAGS.gpus)
    try:
        code = cluster.run(timeout=FLAGS.timeout, grace=FLAGS.grace)
    except KeyboardInterrupt:  # the second Ctrl-C: the first was passed on to the workers
        print("interrupted again: workers killed", file=sys.stderr)
        return 130
    except subprocess.TimeoutExpired:
        print(
            f"error: workers still running after --timeout={FLAGS.timeout} s: killed",
            file=sys.stderr,
        )
        return 1
    if code and code not in (130, 143):  # stopped by Ctrl-C or SIGTERM: they said so
        print(f"error: a worker failed (exit code {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(app.run(main))
