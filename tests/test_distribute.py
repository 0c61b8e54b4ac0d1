"""Strategy helpers: a worker's input context, per-worker batch streams, lost-worker errors."""

from __future__ import annotations

import json
import subprocess
import sys

import tensorflow as tf

from il_tf import distribute

from .conftest import PROJECT_ROOT

TWO_REPLICAS = """
from il_tf import distribute
devices = distribute.use_logical_cpus(2)
import numpy as np, tensorflow as tf
strategy = tf.distribute.MirroredStrategy(devices)
context = distribute.input_context(strategy)
assert (context.num_input_pipelines, context.input_pipeline_id) == (1, 0)
batches = [np.arange(8 * n, 8 * n + 8) for n in range(3)]
def per_replica(context):
    # What a learner's pipeline yields: each global batch as one batch per replica.
    return tf.data.Dataset.from_tensor_slices(np.concatenate(batches).reshape(6, 4))
stream = distribute.BatchStream(strategy, per_replica)
for batch in batches:
    got = [t.numpy() for t in strategy.experimental_local_results(next(stream))]
    want = [t.numpy() for t in strategy.experimental_local_results(
        distribute.split_batch(strategy, tf.constant(batch)))]
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), (got, want)
distribute.sync_workers(strategy)  # one process: nothing to wait for
print("ok")
"""


def test_batch_stream_gives_each_local_replica_its_slice():
    proc = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_one_process_is_one_input_pipeline():
    context = distribute.input_context(tf.distribute.get_strategy())
    assert (context.num_input_pipelines, context.input_pipeline_id) == (1, 0)


def test_lost_worker_message_only_for_peer_errors_in_a_cluster(monkeypatch):
    error = tf.errors.UnavailableError(
        None,
        None,
        "Graph execution error:\n\nCollective ops is aborted by: recvmsg:Connection reset by peer\n"
        "The error could be from a previous operation.",
    )
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.lost_worker_message(error, "/runs/x") is None
    cluster = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    message = distribute.lost_worker_message(error, "/runs/x")
    assert message == (
        "lost contact with another worker of the cluster (Collective ops is aborted by: "
        "recvmsg:Connection reset by peer); start every worker again with the same command "
        "to resume from the chief's last checkpoint in /runs/x"
    )
    assert distribute.lost_worker_message(ValueError("bad"), "/runs/x") is None
    assert not distribute.is_chief()
