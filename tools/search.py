"""Runs an interleaved architecture search from gin files.

    python tools/search.py --gin_file=gin_configs/quickstart.gin [--workdir=DIR]
        [--gin_bindings='SearchConfig.epochs = 5']

Started again on the same workdir it resumes where it stopped; a workdir of a search
with other settings is refused (--extend allows more SearchConfig.epochs), and a second
start while the first runs fails at once, naming it. Without ``--workdir`` a new one is
made under ``runs/``. A config that binds
``ProgressiveConfig`` runs a progressive (P-DARTS) search: one search per stage
in ``WORKDIR/stage_<i>/``, the final genotype in ``WORKDIR/genotype.json``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from il_tf import cli, interrupts  # noqa: E402

FLAGS = flags.FLAGS
cli.define_gin_flags()
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, genotype.json).")
flags.DEFINE_integer(
    "stop_after", None, "Stop (with a checkpoint) after this many iterations; rerun to resume."
)
flags.DEFINE_bool(
    "extend",
    False,
    "Allow more epochs than the search in --workdir was started with (SearchConfig.epochs; "
    "a progressive search's last stage).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Ctrl-C / SIGTERM: stop at the next iteration with a checkpoint (exit 130 / 143).
    with interrupts.handled():
        search()


def search() -> None:
    cli.quiet_tensorflow_logs()
    config_text = cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    from il_tf.learning import progressive
    from il_tf.learning.search import SearchConfig, SearchError, run_search

    workdir = cli.workdir_for(FLAGS.workdir, FLAGS.gin_file, "search")
    # settings, data, workdir (RunDirError); a lost worker of a cluster; a signal
    with cli.one_line_errors(workdir, (ValueError, SearchError)):
        config = cli.configured(SearchConfig)
        stages = (
            cli.configured(progressive.ProgressiveConfig) if progressive.is_configured() else None
        )
        common = {
            "stop_after": FLAGS.stop_after,
            "extend": FLAGS.extend,
            "config_text": config_text,
        }
        if stages is not None:
            result = progressive.run_progressive(config, stages, workdir, **common)
        else:
            result = run_search(config, workdir, **common)
    if result.genotype_path is not None:
        print(f"genotype: {result.genotype_path}")
    print(f"workdir: {result.workdir}")


if __name__ == "__main__":
    sys.exit(app.run(main))
