"""Prints the TF_CONFIG of one worker of a multi-worker cluster (for job scripts).

    export TF_CONFIG=$(python tools/tf_config.py --hosts=node1,node2 --port=23456 --index=0)

``--hosts`` lists every worker's host, in the same order on every worker (commas or
whitespace, so ``"$(scontrol show hostnames)"`` works); a host without ``:port`` gets
``--port``. Worker 0 is the chief: the one that writes the run's files.
"""

from __future__ import annotations

import json
import re
import sys

from absl import app, flags

from il_tf.cluster import tf_configs

FLAGS = flags.FLAGS
flags.DEFINE_string("hosts", None, "every worker's host (or host:port), in order")
flags.DEFINE_integer("port", 23456, "the port of hosts given without one")
flags.DEFINE_integer("index", None, "this worker's position in --hosts (0 = the chief)")
flags.mark_flags_as_required(["hosts", "index"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    hosts = [h for h in re.split(r"[\s,]+", FLAGS.hosts) if h]
    if not hosts:
        print(f"error: --hosts={FLAGS.hosts!r} names no host", file=sys.stderr)
        return 1
    if not 0 <= FLAGS.index < len(hosts):
        print(
            f"error: --index={FLAGS.index} is not a worker of the {len(hosts)} hosts "
            f"(0..{len(hosts) - 1})",
            file=sys.stderr,
        )
        return 1
    addresses = [h if ":" in h else f"{h}:{FLAGS.port}" for h in hosts]
    print(json.dumps(tf_configs(addresses)[FLAGS.index]))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
