"""The one place where search and training get their ``tf.distribute`` strategy.

- ``TF_CONFIG`` names a cluster with more than one task: ``MultiWorkerMirroredStrategy``
  (how runs go past one machine; every worker runs the same command).
- Otherwise ``MirroredStrategy`` over the visible GPUs, or over the CPU when there
  is none: the same code path on one device as on many.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import gin
import tensorflow as tf

from il_tf import interrupts

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
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        interrupts.take_back()  # its runtime took SIGTERM over
        return strategy
    if kind == "default":
        return tf.distribute.get_strategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or ["/cpu:0"]
    return tf.distribute.MirroredStrategy(devices)


# What a collective raises when another worker died, restarted or cannot be reached.
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.FailedPreconditionError,
)


def lost_worker_message(error: BaseException, workdir: object) -> str | None:
    """A one-line explanation when ``error`` means a worker of this cluster was lost, else None.

    TensorFlow aborts every worker's collectives when a peer process dies (a few seconds:
    its connections close) or stops answering the coordination service's heartbeats.
    """
    if cluster_size() < 2 or not isinstance(error, _PEER_ERRORS):
        return None
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    cause = next((line for line in lines if "aborted by" in line), None)
    cause = cause or next((line for line in lines if line), type(error).__name__)
    return (
        f"lost contact with another worker of the cluster ({cause}); start every worker again "
        f"with the same command to resume from the chief's last checkpoint in {workdir}"
    )


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


def input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext:
    """This process's input pipeline among all of ``strategy``'s: one pipeline per worker.

    Under ``MultiWorkerMirroredStrategy`` worker w owns the replicas w·L .. w·L + L - 1
    (L local devices each); one process is one pipeline owning every replica.
    """
    n = strategy.num_replicas_in_sync
    if n == 1:
        return tf.distribute.InputContext(1, 0, 1)
    ids = strategy.experimental_local_results(
        strategy.experimental_distribute_values_from_function(
            lambda ctx: ctx.replica_id_in_sync_group
        )
    )
    ids = [int(i) for i in ids]
    local = len(ids)
    if ids != list(range(ids[0], ids[0] + local)) or ids[0] % local or n % local:
        raise RuntimeError(
            f"this worker's replicas {ids} of {n} are not one contiguous block of equal size; "
            "every worker needs the same number of devices"
        )
    return tf.distribute.InputContext(n // local, ids[0] // local, n)


def split_batch(strategy: tf.distribute.Strategy, batch):
    """Splits a global batch (a structure of tensors) into per-replica slices.

    Every replica gets the equal slice with its replica id, so N replicas see exactly
    the examples one device would. For one process (in tests); the pipelines of a run
    give each worker only its replicas' slices (:class:`BatchStream`).
    """
    n = strategy.num_replicas_in_sync
    if n == 1:
        return batch

    def value_fn(ctx: tf.distribute.experimental.ValueContext):
        return tf.nest.map_structure(
            lambda t: tf.split(t, n, axis=0)[ctx.replica_id_in_sync_group], batch
        )

    return strategy.experimental_distribute_values_from_function(value_fn)


class BatchStream:
    """This worker's replicas' slices of a stream of global batches, one step at a time.

    ``dataset_fn(input_context)`` must yield, for each global batch in order, the batches of
    this worker's replicas (L consecutive elements, one per local replica, in replica order),
    as ``LearnerData``'s pipelines do; a worker thus reads and augments only its own
    examples, and N replicas together see exactly the examples of one global batch. Used
    instead of ``distribute_datasets_from_function``, whose multi-device iterators are slow
    to tear down.

    tf.data's autotuning is off for these iterators: its tuning thread does not wake up
    when the iterator is deleted, so deleting an iterator waited out the thread's current
    tuning period (which doubles up to a minute): a finished search lingered for tens of
    seconds after its last epoch, and exits at once without autotuning. Without it,
    ``AUTOTUNE`` map parallelism is the number of CPU cores.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
        context: tf.distribute.InputContext | None = None,
    ):
        self._strategy = strategy
        self._context = context or input_context(strategy)
        n = self._context.num_replicas_in_sync
        self._local = n // self._context.num_input_pipelines
        self._first = self._context.input_pipeline_id * self._local
        options = tf.data.Options()
        options.autotune.enabled = False
        self._iterator = iter(dataset_fn(self._context).with_options(options))

    def __iter__(self):
        return self

    def __next__(self):
        parts = [next(self._iterator) for _ in range(self._local)]
        if self._context.num_replicas_in_sync == 1:
            return parts[0]
        first = self._first
        return self._strategy.experimental_distribute_values_from_function(
            lambda ctx: parts[ctx.replica_id_in_sync_group - first]
        )


def sync_workers(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has called it (a no-op in one process).

    At the end of a multi-worker run, so that no worker exits while another still
    runs: the survivor's runtime would report the exited one as failed.
    """
    if input_context(strategy).num_input_pipelines == 1:
        return

    @tf.function
    def all_reduce():
        ones = strategy.run(lambda: tf.ones([]))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    all_reduce()
