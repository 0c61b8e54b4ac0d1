"""The training state and step functions of an evaluation run (a custom loop, not ``fit``).

A :class:`Trainer` owns the network, the optimizer state, the step counter and the
checkpoint object, all created in the strategy scope, and compiles two step functions:

``train_step`` (per replica): forward with the auxiliary head and drop-path, loss
``CE(main) + w · CE(aux)`` scaled for the global batch, gradients, then one all-reduce, so
every replica holds the global-batch gradient; then (float16) unscaling and the finite
check; clipping to the global norm (which the Keras optimizer cannot do under a strategy: it
clips per replica before summing); and :class:`~il_tf.training.optim.ReferenceSGD`, which
adds the coupled weight decay and applies the update without reducing again.

``eval_step``: sums of loss, top-1 and top-5 hits over a (possibly partial) batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from il_tf.models.networks import GenotypeNetwork, NetworkConfig, build_network
from il_tf.spaces.genotypes import Genotype
from il_tf.training.optim import DynamicLossScale, ReferenceSGD


@contextlib.contextmanager
def dtype_policy(name: str | None) -> Iterator[None]:
    """Sets Keras's global dtype policy (e.g. ``mixed_bfloat16``) inside the block only."""
    previous = keras.mixed_precision.dtype_policy()
    if name is not None:
        keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def per_example_loss(
    labels: tf.Tensor, logits: tf.Tensor, num_classes: int, label_smoothing: float = 0.0
) -> tf.Tensor:
    """Cross-entropy per example; targets (1 - s)·onehot + s/K with label smoothing s."""
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        targets = tf.one_hot(labels, num_classes) * (1.0 - label_smoothing)
        targets += label_smoothing / num_classes
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def sum_across_replicas(grads: list[tf.Tensor]) -> list[tf.Tensor]:
    """The global-batch gradient on every replica: one all-reduce (SUM) of the local ones.

    The local gradients are of losses already divided by the global batch size, so the sum
    is the gradient of the global-batch mean. Call in replica context.
    """
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)


def clip_by_global_norm(grads: list[tf.Tensor], max_norm: float) -> tuple[list, tf.Tensor]:
    """(grads scaled by min(1, max_norm / (norm + 1e-6)), norm), as ``clip_grad_norm_``.

    ``max_norm`` <= 0 leaves the gradients unchanged. Applied to the all-reduced gradients,
    the norm is that of the global-batch gradient, the same on every replica.
    """
    norm = tf.linalg.global_norm(grads)
    if max_norm <= 0:
        return list(grads), norm
    factor = tf.minimum(1.0, max_norm / (norm + 1e-6))
    return [g * factor for g in grads], norm


def model_weights(model: keras.Model) -> list:
    """All weights of ``model`` (trainable or not), in Keras's deterministic order.

    Checkpoints track this list instead of the model object: TensorFlow's object graph does
    not see layers that Keras 3 keeps in Python lists (cells, the ops of a cell, the steps
    of ``ops.Sequential``), so ``tf.train.Checkpoint(model=model)`` silently saves only a
    few of the weights. Positions are stable for a given genotype and network config.
    """
    return list(model.weights)


def weights_checkpoint(model: keras.Model, **extra: Any) -> tf.train.Checkpoint:
    """A checkpoint of ``model``'s weights (see :func:`model_weights`) and ``extra`` objects."""
    return tf.train.Checkpoint(weights=model_weights(model), **extra)


class Trainer:
    """Network, optimizer state and compiled steps of one evaluation run.

    Args:
      genotype, network_config: the network.
      num_classes, image_shape: the learner's classes and (height, width, channels).
      global_batch_size: examples per step over all replicas (the loss is averaged over it).
      strategy: the ``tf.distribute`` strategy (the model is built in its scope).
      momentum, weight_decay, auxiliary_weight, label_smoothing, grad_clip_norm: training
        settings (see ``TrainConfig``).
      mixed_precision: None, "mixed_float16" (with dynamic loss scaling) or "mixed_bfloat16".
      jit_compile: compile the forward/backward pass with XLA.
    """

    def __init__(
        self,
        genotype: Genotype,
        network_config: NetworkConfig,
        num_classes: int,
        image_shape: Sequence[int],
        global_batch_size: int,
        strategy: tf.distribute.Strategy,
        *,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        auxiliary_weight: float = 0.4,
        label_smoothing: float = 0.0,
        grad_clip_norm: float = 5.0,
        mixed_precision: str | None = None,
        jit_compile: bool = False,
    ) -> None:
        self.strategy = strategy
        self.num_classes = int(num_classes)
        self.global_batch_size = int(global_batch_size)
        self.auxiliary_weight = float(auxiliary_weight) if network_config.auxiliary else 0.0
        self.label_smoothing = float(label_smoothing)
        self.grad_clip_norm = float(grad_clip_norm)
        self.top_k = min(5, self.num_classes)
        with strategy.scope():
            with dtype_policy(mixed_precision):
                self.model: GenotypeNetwork = build_network(
                    genotype, self.num_classes, image_shape, network_config
                )
            self.variables = list(self.model.trainable_variables)
            self.optimizer = ReferenceSGD(self.variables, momentum, weight_decay)
            self.loss_scale = DynamicLossScale() if mixed_precision == "mixed_float16" else None
            self.learning_rate = tf.Variable(0.0, trainable=False, name="learning_rate")
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_metric = tf.Variable(-1.0, trainable=False, name="best_metric")
        tracked: dict[str, Any] = {
            "weights": model_weights(self.model),
            "optimizer": self.optimizer,
            "step": self.step,
            "best_metric": self.best_metric,
        }
        if self.loss_scale is not None:
            tracked["loss_scale"] = self.loss_scale
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.model_checkpoint = weights_checkpoint(self.model, step=self.step)
        self._forward_backward = tf.function(self._forward_backward_fn, jit_compile=jit_compile)
        self.train_step = tf.function(self._train_step_fn)
        self.eval_step = tf.function(self._eval_step_fn, reduce_retracing=True)

    # -- training --------------------------------------------------------------------------

    def _forward_backward_fn(self, images, labels, seed):
        with tf.GradientTape() as tape:
            logits, aux_logits = self.model(images, training=True, seed=seed, with_aux=True)
            main = per_example_loss(labels, logits, self.num_classes, self.label_smoothing)
            total = main
            if aux_logits is not None and self.auxiliary_weight:
                aux = per_example_loss(labels, aux_logits, self.num_classes, self.label_smoothing)
                total = main + self.auxiliary_weight * aux
            # Sum over the replica's examples / global batch: the all-reduced sum of these
            # gradients is the gradient of the global-batch mean.
            loss = tf.nn.compute_average_loss(total, global_batch_size=self.global_batch_size)
            scaled = self.loss_scale.scale_loss(loss) if self.loss_scale is not None else loss
        grads = tape.gradient(scaled, self.variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32)
        )
        return grads, {
            "loss_sum": tf.reduce_sum(total),
            "main_loss_sum": tf.reduce_sum(main),
            "correct": correct,
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def _replica_train_step(self, images, labels, seed):
        grads, sums = self._forward_backward(images, labels, seed)
        grads = sum_across_replicas(grads)
        if self.loss_scale is not None:
            grads, finite = self.loss_scale.unscale(grads)
            self.loss_scale.update(finite)
        else:
            finite = tf.constant(True)
        grads, norm = clip_by_global_norm(grads, self.grad_clip_norm)
        self.optimizer.apply(grads, self.variables, self.learning_rate, finite)
        # Every replica saw the same norm; report it once (divided back after the SUM).
        replicas = tf.cast(tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
        skipped = 1.0 - tf.cast(finite, tf.float32)
        return {**sums, "grad_norm": norm / replicas, "skipped": skipped / replicas}

    def _train_step_fn(self, batch, seed):
        images, labels = batch
        per_replica = self.strategy.run(self._replica_train_step, args=(images, labels, seed))
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()
        }

    # -- evaluation ------------------------------------------------------------------------

    def _replica_eval_step(self, images, labels):
        logits = self.model(images, training=False)
        loss = per_example_loss(labels, logits, self.num_classes)
        logits = tf.cast(logits, tf.float32)
        labels = tf.cast(labels, tf.int32)
        return {
            "loss_sum": tf.reduce_sum(loss),
            "top1": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)),
            "top5": tf.reduce_sum(
                tf.cast(tf.math.in_top_k(labels, logits, self.top_k), tf.float32)
            ),
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def _eval_step_fn(self, batch):
        images, labels = batch
        per_replica = self.strategy.run(self._replica_eval_step, args=(images, labels))
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()
        }

    def evaluate(
        self,
        dataset: tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset],
    ) -> dict[str, float]:
        """Loss, top-1 and top-5 accuracy (in %) over one pass of ``dataset``.

        ``dataset`` is a data set of global batches, or a function of a worker's
        ``InputContext`` giving that worker's part in per-replica batches.
        """
        if isinstance(dataset, tf.data.Dataset):
            batches = self.strategy.experimental_distribute_dataset(dataset)
        else:
            batches = self.strategy.distribute_datasets_from_function(dataset)
        totals: dict[str, float] = {}
        for batch in batches:
            for k, v in self.eval_step(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = totals.get("count", 0.0)
        if not count:
            raise ValueError("evaluation data set is empty")
        return {
            "loss": totals["loss_sum"] / count,
            "top1": 100.0 * totals["top1"] / count,
            "top5": 100.0 * totals["top5"] / count,
            "count": int(count),
        }
