"""The one place where search and training get their ``tf.distribute`` strategy.

- ``TF_CONFIG`` names a cluster with more than one task: ``MultiWorkerMirroredStrategy``
  (how runs go past one machine; every worker runs the same command).
- Otherwise ``MirroredStrategy`` over the visible GPUs, or over the CPU when there
  is none: the same code path on one device as on many.
"""

from __future__ import annotations

import json
import os

import gin
import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multi_worker", "default")


def cluster_size() -> int:
    """Number of tasks ``TF_CONFIG`` names (0 when it is unset or names no cluster)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from e
    cluster = config.get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values())


@gin.configurable
def make_strategy(kind: str = "auto", devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The strategy for this process.

    Args:
      kind: ``auto`` (multi-worker when ``TF_CONFIG`` names a cluster, else mirrored),
        ``mirrored``, ``multi_worker`` or ``default`` (no distribution at all).
      devices: devices for ``mirrored`` (default: all GPUs, else the CPU).
    """
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r}; allowed: {list(STRATEGIES)}")
    if kind == "auto":
        kind = "multi_worker" if cluster_size() > 1 else "mirrored"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "default":
        return tf.distribute.get_strategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or ["/cpu:0"]
    return tf.distribute.MirroredStrategy(devices)


def is_chief() -> bool:
    """True on the worker that writes files (the only one without ``TF_CONFIG`` too)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    return task.get("type", "chief") == "chief" or (
        task.get("type") == "worker"
        and task.get("index", 0) == 0
        and "chief" not in json.loads(raw).get("cluster", {})
    )


def use_logical_cpus(count: int) -> list[str]:
    """Splits the CPU into ``count`` logical devices (call before TF is used).

    For testing multi-replica code on a machine without GPUs.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def split_batch(strategy: tf.distribute.Strategy, batch):
    """Splits a global batch (a structure of tensors) into per-replica slices.

    Every replica gets the equal slice with its replica id, so N replicas see
    exactly the examples one device would. Used instead of
    ``experimental_distribute_dataset``, whose multi-device iterators are slow to
    tear down; pipelines here are deterministic, so every worker of a
    multi-worker run computes the same global batch and keeps its own slices.
    """
    n = strategy.num_replicas_in_sync
    if n == 1:
        return batch

    def value_fn(ctx: tf.distribute.ReplicaContext):
        return tf.nest.map_structure(
            lambda t: tf.split(t, n, axis=0)[ctx.replica_id_in_sync_group], batch
        )

    return strategy.experimental_distribute_values_from_function(value_fn)


class BatchStream:
    """Iterates a dataset of global batches, yielding them split across replicas.

    tf.data's autotuning is off for these iterators: its tuning thread does not wake up
    when the iterator is deleted, so deleting an iterator waited out the thread's current
    tuning period (which doubles up to a minute). A finished search lingered about 30 s
    after its last epoch (measured: 30.7 s after a 57 s search; 0.1 s without
    autotuning). Without it, ``AUTOTUNE`` map parallelism is the number of CPU cores.
    """

    def __init__(self, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
        self._strategy = strategy
        options = tf.data.Options()
        options.autotune.enabled = False
        self._iterator = iter(dataset.with_options(options))

    def __iter__(self):
        return self

    def __next__(self):
        return split_batch(self._strategy, next(self._iterator))
