"""One search iteration on 1 device and on 2 replicas (two logical CPUs); prints the gap.

Run as a script (logical devices must be configured before TensorFlow starts):
    python tests/learning/_two_replicas.py METHOD [eager|graph] [segmented]
Prints one JSON line with the largest absolute differences of α and of the weights.
``eager`` runs the step functions eagerly (same math, no tracing: seconds instead
of minutes for the 2-replica trace).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from il_tf import distribute  # noqa: E402

DEVICES = distribute.use_logical_cpus(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# float64: the finite-difference links divide by 2ε, which would turn float32
# summation-order noise between 1 and 2 replicas into differences near the tolerance.
keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")

from il_tf.learning.engine import OptimizerSettings, SearchEngine  # noqa: E402
from il_tf.learning.search_model import SearchModel, build_search_model  # noqa: E402
from il_tf.learning.stage_schedule import make_schedule  # noqa: E402
from il_tf.spaces.darts_supernet import DartsSupernet  # noqa: E402

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
CLASSES = (3, 4)
GLOBAL_BATCH = 8


def build() -> SearchModel:
    return build_search_model(
        DartsSupernet(channels=4, num_cells=2, ops=OPS), CLASSES, (8, 8, 3), seed=0, arch_seed=1
    )


def run(devices, method, schedule, train, val, segmented=False):
    strategy = tf.distribute.MirroredStrategy(devices)
    engine = SearchEngine(
        strategy,
        build,
        schedule,
        method,
        0.1,
        OptimizerSettings(arch_lr=0.01),
        total_weight_steps=100,
        segmented_gradients=segmented,
    )

    def split(batch):
        return distribute.split_batch(strategy, tuple(tf.constant(a) for a in batch))

    train_d = [[tuple(split(b) for b in step) for step in stage] for stage in train]
    val_d = [split(b) for b in val]
    engine.iteration(train_d, val_d)
    arch = [v.numpy() for v in engine.model.arch.arch_variables]
    weights = [v.numpy() for v in engine.weight_variables]
    if strategy.num_replicas_in_sync > 1:
        # Replicas must hold identical copies after the step.
        for v in engine.weight_variables:
            copies = strategy.experimental_local_results(v.value)
            assert all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies[1:])
    return arch, weights


def main(method: str, mode: str, segmented: bool = False) -> None:
    tf.config.run_functions_eagerly(mode == "eager")
    rng = np.random.default_rng(0)
    # Two steps per stage check the stage's step loop; segment-wise gradients do not
    # interact with it, so their (slower, eager) case takes one step per stage.
    steps_per_stage = 1 if segmented else 2
    schedule = make_schedule(2, 1, "interleaved", steps_per_stage=steps_per_stage)

    def batch(k):
        return (
            rng.normal(size=(GLOBAL_BATCH, 8, 8, 3)).astype(np.float64),
            rng.integers(0, CLASSES[k], GLOBAL_BATCH).astype(np.int32),
        )

    train = [
        [[batch(k) for k in stage.learners] for _ in range(steps_per_stage)]
        for stage in schedule.stages
    ]
    val = [batch(k) for k in range(2)]
    arch1, w1 = run(DEVICES[:1], method, schedule, train, val, segmented)
    arch2, w2 = run(DEVICES, method, schedule, train, val, segmented)
    arch0 = build().arch.numpy()
    print(
        json.dumps(
            {
                "alpha_max_diff": max(
                    float(np.abs(a - b).max()) for a, b in zip(arch1, arch2, strict=True)
                ),
                "weights_max_diff": max(
                    float(np.abs(a - b).max()) for a, b in zip(w1, w2, strict=True)
                ),
                "alpha_moved": max(
                    float(np.abs(a - b).max()) for a, b in zip(arch1, arch0.values(), strict=True)
                ),
            }
        )
    )


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2] if len(sys.argv) > 2 else "graph",
        len(sys.argv) > 3 and sys.argv[3] == "segmented",
    )
