"""Search batch normalization on 2 replicas (two logical CPUs) against one device, float32.

Run as a script (logical devices must be configured before TensorFlow starts):
    python tests/spaces/_synchronized_batch_norm.py
Prints one JSON line: the largest absolute error of each against float64 statistics,
for a batch whose mean is large against its spread.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from il_tf import distribute  # noqa: E402

DEVICES = distribute.use_logical_cpus(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from il_tf.spaces.ops import BN_EPSILON, SearchBatchNorm  # noqa: E402


def main() -> None:
    x = np.random.default_rng(0).normal(100.0, 1.0, (8, 4, 4, 3)).astype(np.float32)
    exact = (x - x.mean((0, 1, 2), dtype=np.float64)) / np.sqrt(
        x.astype(np.float64).var((0, 1, 2)) + BN_EPSILON
    )
    bn = SearchBatchNorm()
    one = bn(tf.constant(x)).numpy()  # one device: TensorFlow's fused batch norm
    strategy = tf.distribute.MirroredStrategy(DEVICES)
    halves = distribute.split_batch(strategy, tf.constant(x))
    two = strategy.run(tf.function(bn.call), args=(halves,))
    two = np.concatenate([t.numpy() for t in strategy.experimental_local_results(two)])
    print(
        json.dumps(
            {
                "one_device_error": float(np.abs(one - exact).max()),
                "two_replicas_error": float(np.abs(two - exact).max()),
            }
        )
    )


if __name__ == "__main__":
    main()
