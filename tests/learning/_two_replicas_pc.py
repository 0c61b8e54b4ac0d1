"""``_two_replicas.py`` on a PC-DARTS / P-DARTS supernet: partial channels, β, skip dropout.

Run as a script (logical devices must be configured before TensorFlow starts):
    python tests/learning/_two_replicas_pc.py METHOD [eager|graph]
Prints one JSON line with the largest absolute differences of α (and β) and of the
weights between 1 device and 2 replicas.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _two_replicas as base  # noqa: E402  (sets up the two logical CPUs first)

from il_tf.learning.search_model import SearchModel, build_search_model  # noqa: E402
from il_tf.spaces.darts_supernet import DartsSupernet  # noqa: E402


def build() -> SearchModel:
    encoder = DartsSupernet(
        channels=4, num_cells=2, ops=base.OPS, partial_channels=2, skip_dropout=0.5
    )
    assert encoder.edge_normalization
    return build_search_model(encoder, base.CLASSES, (8, 8, 3), seed=0, arch_seed=1)


if __name__ == "__main__":
    base.build = build  # `run` and `main` look `build` up in their module
    base.main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "graph")
