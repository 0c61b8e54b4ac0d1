r"""Exports a trained network (a tools/train.py work directory) for serving.

    python tools/export.py --workdir=/tmp/il_train_quickstart \
        --export_dir=/tmp/il_models/darts/1

Writes a SavedModel (signatures ``serving_default``: encoded image bytes -> probabilities and
top-k classes; ``predict_images``: float32 pixels 0..255 at the network's size) and, unless
--notflite, ``model.tflite`` (the ``predict_images`` signature, checked against the
SavedModel). Serving with TensorFlow Serving: docs/serving.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from il_tf import cli  # noqa: E402

WORKDIR = flags.DEFINE_string("workdir", None, "work directory of tools/train.py")
EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "new directory for the SavedModel (TF Serving: MODEL_BASE/<version>)"
)
CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'last' or a checkpoint path prefix")
TOP_K = flags.DEFINE_integer("top_k", 5, "classes returned by top_k_* outputs")
TFLITE = flags.DEFINE_boolean("tflite", True, "also write model.tflite (float signature)")
flags.mark_flags_as_required(["workdir", "export_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    cli.quiet_tensorflow_logs()
    from il_tf.export import export

    try:
        result = export(
            WORKDIR.value, EXPORT_DIR.value, CHECKPOINT.value, TOP_K.value, TFLITE.value
        )
    except ValueError as e:  # bad arguments, a workdir in use or unwritable (RunDirError)
        cli.fail(e)
    print(f"SavedModel: {result.saved_model} (weights: {result.checkpoint})")
    if result.tflite is not None:
        print(
            f"TFLite: {result.tflite} (max |probability difference| vs SavedModel: "
            f"{result.tflite_max_abs_difference:.2e})"
        )


if __name__ == "__main__":
    app.run(main)
