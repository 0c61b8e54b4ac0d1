r"""Trains a found cell's network from scratch and writes its test accuracy.

    python tools/train.py --gin_file=gin_configs/train/quickstart.gin \
        --genotype=DARTS_V2 --workdir=/tmp/il_train_quickstart

--genotype is a genotype.json written by tools/search.py or a published name (DARTS_V1,
DARTS_V2, PC_DARTS, P_DARTS). A genotype of a searched Keras builder (@choice_supernet)
names its builder, whose network is trained instead of a DARTS one (NetworkConfig unused). Run the same command again to continue an interrupted run
(without --workdir a new one is made under runs/); a run with other settings is refused,
except more epochs with --extend, and a second start while the first runs fails at once.
Results: WORKDIR/results.json; curves: tensorboard --logdir WORKDIR/tensorboard.
"""

from __future__ import annotations

import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from il_tf import cli, interrupts  # noqa: E402

FLAGS = flags.FLAGS
cli.define_gin_flags()
flags.DEFINE_string(
    "genotype", None, "a genotype.json (from tools/search.py) or a published genotype name"
)
flags.DEFINE_string("workdir", None, "run directory (checkpoints, logs, results.json)")
flags.DEFINE_bool(
    "extend", False, "Allow more TrainConfig.epochs than the run in --workdir was started with."
)
flags.mark_flag_as_required("genotype")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Ctrl-C / SIGTERM: stop at the next step with a checkpoint (exit 130 / 143).
    with interrupts.handled():
        train()


def train() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    cli.quiet_tensorflow_logs()
    import il_tf.training.loop  # noqa: F401  (registers TrainConfig, NetworkConfig)
    from il_tf.spaces.genotypes import load_genotype
    from il_tf.training.loop import train_and_evaluate

    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    config_text = cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    workdir = cli.workdir_for(FLAGS.workdir, FLAGS.gin_file, "train")
    # bad settings, genotype, data or workdir (RunDirError); a lost worker of a cluster;
    # a signal
    with cli.one_line_errors(workdir):
        genotype = load_genotype(FLAGS.genotype)
        results = cli.configured(
            lambda: train_and_evaluate(
                workdir, genotype, command=command, config_text=config_text, extend=FLAGS.extend
            )
        )
    if not results["finished"]:
        print(
            f"stopped at step {results['step']} of {results['total_steps']}; "
            f"run the same command again to continue (workdir: {workdir})"
        )
        return
    print(
        f"test top-1 {results['test_top1']:.2f}%  top-5 {results['test_top5']:.2f}%  "
        f"params {results['params_m']:.3f} M  MACs {results['macs_m']:.1f} M  "
        f"-> {workdir / 'results.json'}"
    )


if __name__ == "__main__":
    app.run(main)
