"""The search of tests/cluster/tiny_search.gin in one process, as a reference for the clusters.

    python tests/cluster/_search.py WORKDIR REPLICAS [GIN_BINDING ...]

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

import tensorflow as tf  # noqa: E402

from il_tf import cli  # noqa: E402
from il_tf.learning.search import SearchConfig, run_search  # noqa: E402

GIN_FILE = cli.PROJECT_ROOT / "tests" / "cluster" / "tiny_search.gin"

if __name__ == "__main__":
    cli.parse_gin([str(GIN_FILE)], sys.argv[3:])
    strategy = tf.distribute.MirroredStrategy(DEVICES) if DEVICES else None
    result = run_search(cli.configured(SearchConfig), sys.argv[1], strategy)
    print(f"done: {result.genotype_path}", flush=True)
