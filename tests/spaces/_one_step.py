"""The hypergradient through one SGD step of a search supernet, for graph-vs-eager checks."""

from __future__ import annotations

import tensorflow as tf

ZERO = tf.UnconnectedGradients.ZERO


def one_step_hypergradient(net, x, t_train, t_val, xi: float = 0.1):
    """``step(weights, arch)``: d/d(arch, weights) of a validation loss after one SGD step.

    The result involves Hessian-vector products w.r.t. the weights and the
    architecture, like the unrolled hypergradient.
    """

    def step(weights, arch):
        with tf.GradientTape() as outer:
            outer.watch([weights, arch])
            with tf.GradientTape() as inner:
                inner.watch(weights)
                y, _ = net.stateless_call(weights, [], x, arch)
                loss = 0.5 * tf.reduce_sum(tf.square(y - t_train))
            grads = inner.gradient(loss, weights, unconnected_gradients=ZERO)
            stepped = [w - xi * g for w, g in zip(weights, grads, strict=True)]
            y, _ = net.stateless_call(stepped, [], x, arch)
            val = tf.reduce_sum(y * t_val) + 0.25 * tf.reduce_sum(tf.square(y))
        return outer.gradient(val, [arch, weights], unconnected_gradients=ZERO)

    return step
