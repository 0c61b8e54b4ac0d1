"""``tests/learning/_two_replicas.py`` on a choice supernet (``_choice_builders.tiny_builder``).

Run as a script (logical devices must be configured before TensorFlow starts):
    python tests/spaces/_choice_two_replicas.py METHOD [eager|graph] [segmented]
Prints one JSON line with the largest absolute differences of α and of the weights
between 1 device and 2 replicas.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "learning"))
# The repository root, for ``tests.spaces._choice_builders`` (run as a script).
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import _two_replicas as base  # noqa: E402  (sets up the two logical CPUs first)

from il_tf.learning.search_model import SearchModel, build_search_model  # noqa: E402
from il_tf.spaces.choice_space import ChoiceSupernet  # noqa: E402
from tests.spaces._choice_builders import tiny_builder  # noqa: E402


def build() -> SearchModel:
    return build_search_model(
        ChoiceSupernet(tiny_builder), base.CLASSES, (8, 8, 3), seed=0, arch_seed=1
    )


if __name__ == "__main__":
    base.build = build  # `run` and `main` look `build` up in their module
    base.main(
        sys.argv[1],
        sys.argv[2] if len(sys.argv) > 2 else "graph",
        len(sys.argv) > 3 and sys.argv[3] == "segmented",
    )
