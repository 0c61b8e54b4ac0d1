r"""Tunes the interleaved search with keras-tuner, or runs the random-search baseline.

    python tools/tune.py --gin_file=gin_configs/tune/search_quickstart.gin \
        --project_dir=/tmp/il_tune_search_quickstart
    python tools/tune.py --gin_file=gin_configs/tune/random_nb201.gin \
        --project_dir=/tmp/il_tune_random_nb201 \
        [--gin_bindings="TuneConfig.nb201_table = '/path/to/nasbench201.json.gz'"]

Started again on the same --project_dir it resumes: an interrupted trial continues from its
checkpoints and a finished tuning runs nothing new (raise TuneConfig.max_trials to add
trials). --overwrite deletes the project first. Without --project_dir a new one is made under
runs/. Prints a table of the trials, the best one and its genotype; PROJECT_DIR/summary.json
holds the same. See docs/tuning.md.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from il_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
cli.define_gin_flags()
flags.DEFINE_string(
    "project_dir", None, "keras-tuner project directory (trials, their workdirs, summary)."
)
flags.DEFINE_bool("overwrite", False, "Delete an existing project in --project_dir first.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    cli.quiet_tensorflow_logs()
    config_text = cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    from il_tf.tuning import TuneConfig, TuningError, run_tuning

    project_dir = cli.workdir_for(FLAGS.project_dir, FLAGS.gin_file, "tune")
    try:
        config = cli.configured(TuneConfig)
        result = run_tuning(config, project_dir, overwrite=FLAGS.overwrite, config_text=config_text)
    except (ValueError, TuningError) as e:
        cli.fail(e)
    print(result.report())
    print(f"summary: {result.project_dir / 'summary.json'}")


if __name__ == "__main__":
    sys.exit(app.run(main))
