"""A training run of gin_configs/train/quickstart.gin in one process, as a cluster's reference.

    python tests/cluster/_train.py WORKDIR REPLICAS [GIN_BINDING ...]

REPLICAS > 1 splits the CPU into that many logical devices (MirroredStrategy): one process
with the replica layout of a cluster of REPLICAS one-device workers.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from il_tf import distribute  # noqa: E402

REPLICAS = int(sys.argv[2])
# Logical devices must exist before TensorFlow starts.
DEVICES = distribute.use_logical_cpus(REPLICAS) if REPLICAS > 1 else None

from il_tf import cli  # noqa: E402
from il_tf.training.loop import train_and_evaluate  # noqa: E402

GIN_FILE = cli.PROJECT_ROOT / "gin_configs" / "train" / "quickstart.gin"

if __name__ == "__main__":
    bindings = sys.argv[3:]
    if DEVICES:
        bindings += ["make_strategy.kind = 'mirrored'", f"make_strategy.devices = {DEVICES}"]
    cli.parse_gin([str(GIN_FILE)], bindings)
    results = train_and_evaluate(sys.argv[1], "DARTS_V2")
    print(f"done: test top-1 {results['test_top1']:.4f}", flush=True)
