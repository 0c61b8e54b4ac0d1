"""The optimizer of the evaluation runs: the reference's SGD, applied to global gradients.

The reference DARTS training does, per step: loss gradient → clip to global norm 5 →
``torch.optim.SGD`` with momentum and *coupled* weight decay::

    d = g + wd * w;   buf = momentum * buf + d;   w -= lr * buf

Keras 3's optimizer differs in three ways that matter here: its weight decay is decoupled,
its momentum folds the learning rate into the buffer (different when the rate changes), and
under ``tf.distribute`` it clips each replica's gradient *before* summing them across
replicas. So the training step all-reduces the gradients itself, clips the global-batch
gradient, and hands it to :class:`ReferenceSGD`, which applies it without reducing again.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def _tf_variable(variable):
    """The ``tf.Variable`` (a MirroredVariable under a strategy) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class ReferenceSGD(tf.Module):
    """SGD with momentum and coupled L2 weight decay (PyTorch semantics).

    Create it inside the strategy scope. :meth:`apply` is called in replica context with
    gradients that are already the global-batch gradients (identical on every replica);
    every replica applies them to its copy, so replicas stay identical.
    """

    def __init__(self, variables: Sequence, momentum: float, weight_decay: float):
        super().__init__(name="reference_sgd")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        with self.name_scope:
            self.buffers = [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"momentum_{i}")
                for i, v in enumerate(variables)
            ]

    def _update(self, var, grad, buf, lr, apply_update):
        grad = tf.cast(grad, var.dtype)
        direction = grad + self.weight_decay * var if self.weight_decay else grad
        new_buf = self.momentum * buf + direction
        # On a skipped step (non-finite float16 gradients) nothing changes; tf.where also
        # keeps NaNs of the rejected branch out.
        new_buf = tf.where(apply_update, new_buf, buf)
        buf.assign(new_buf)
        return var.assign_sub(tf.where(apply_update, tf.cast(lr, var.dtype) * new_buf, 0.0))

    def apply(
        self,
        grads: Sequence[tf.Tensor],
        variables: Sequence,
        learning_rate: tf.Tensor,
        apply_update: tf.Tensor | bool = True,
    ) -> None:
        """Applies global-batch ``grads`` to ``variables`` (call in replica context)."""
        if len(grads) != len(self.buffers) or len(variables) != len(self.buffers):
            raise ValueError(
                f"ReferenceSGD was created for {len(self.buffers)} variables, got "
                f"{len(variables)} variables and {len(grads)} gradients"
            )
        apply_update = tf.convert_to_tensor(apply_update, tf.bool)
        targets = [_tf_variable(v) for v in variables]

        def merge_fn(strategy, grads, learning_rate, apply_update):
            for var, grad, buf in zip(targets, grads, self.buffers, strict=True):
                strategy.extended.update(
                    var, self._update, args=(grad, buf, learning_rate, apply_update), group=False
                )

        tf.distribute.get_replica_context().merge_call(
            merge_fn, args=(list(grads), learning_rate, apply_update)
        )


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16 training (as Keras's LossScaleOptimizer does).

    The loss is multiplied by ``scale`` before differentiation; gradients are divided by it
    after the all-reduce. A step with non-finite gradients is skipped and halves the scale;
    ``growth_interval`` finite steps in a row double it.
    """

    def __init__(self, initial_scale: float = 2.0**15, growth_interval: int = 2000):
        super().__init__(name="loss_scale")
        self.growth_interval = int(growth_interval)
        # Updated in replica context with identical values everywhere: first replica wins.
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        with self.name_scope:
            self.scale = tf.Variable(
                float(initial_scale), trainable=False, name="scale", aggregation=first
            )
            self.good_steps = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="good_steps", aggregation=first
            )

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        return loss * tf.cast(self.scale, loss.dtype)

    def unscale(self, grads: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
        """(gradients / scale in float32, whether all of them are finite)."""
        inverse = 1.0 / self.scale
        unscaled = [tf.cast(g, tf.float32) * inverse for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in unscaled])
        return unscaled, finite

    def update(self, finite: tf.Tensor) -> None:
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        new_scale = tf.where(
            finite, tf.where(grow, self.scale * 2.0, self.scale), tf.maximum(self.scale / 2.0, 1.0)
        )
        self.scale.assign(new_scale)
        self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1, 0))
