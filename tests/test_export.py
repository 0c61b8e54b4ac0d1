"""Export round trip: SavedModel signatures in a fresh process, saved_model_cli, TFLite."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from il_tf.data.learners import Learner
from il_tf.export import (
    EXPORT_INFO_FILE,
    IMAGES_SIGNATURE,
    TFLITE_FILE,
    export,
    load_trained_model,
)
from il_tf.models.networks import NetworkConfig
from il_tf.training.loop import TrainConfig, train_and_evaluate

# tf.lite.Interpreter announces its move to LiteRT (ai_edge_litert); it works in TF 2.21.
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny network trained for 4 steps on the digits, exported with TFLite."""
    root = tmp_path_factory.mktemp("export")
    workdir = root / "run"
    train_and_evaluate(
        workdir,
        "DARTS_V2",
        Learner("digits", val_fraction=0.0, batch_size=32, flip=False),
        NetworkConfig(channels=4, layers=2),
        TrainConfig(epochs=2, steps_per_epoch=2, progress="none"),
    )
    result = export(workdir, root / "models" / "digits" / "1", top_k=3)
    return workdir, result


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


_FRESH_PROCESS = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf

    export_dir, data_dir = sys.argv[1], sys.argv[2]
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    names = sorted(n for n in os.listdir(data_dir) if n.endswith(".img"))
    blobs = [open(os.path.join(data_dir, n), "rb").read() for n in names]
    outputs = {}
    for key, value in serve(image_bytes=tf.constant(blobs)).items():
        outputs["bytes_" + key] = value.numpy()
    pixels = np.load(os.path.join(data_dir, "pixels.npy"))
    images = loaded.signatures["predict_images"](images=tf.constant(pixels))
    for key, value in images.items():
        outputs["images_" + key] = value.numpy()
    try:
        serve(image_bytes=tf.constant([blobs[0], b"this is not an image"]))
        error = None
    except tf.errors.InvalidArgumentError as e:
        error = e.message
    # The process that loaded the model goes on serving after the bad request.
    again = serve(image_bytes=tf.constant(blobs[:1]))["probabilities"].numpy()
    np.savez(os.path.join(data_dir, "out.npz"), again=again, **outputs)
    print(json.dumps({"error": error}))
    """
)


def test_round_trip_in_a_fresh_process(exported, tmp_path):
    workdir, result = exported
    trained = load_trained_model(workdir, "best")
    height, width, _ = trained.image_shape
    rng = np.random.default_rng(0)
    native = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)  # any size: resized inside
    gray = rng.integers(0, 256, (height, width), dtype=np.uint8)  # grayscale: tiled to RGB
    blobs = [_png(native[0]), _png(native[1]), _png(other), _png(gray), _jpeg(other)]
    for i, blob in enumerate(blobs):
        (tmp_path / f"{i}.img").write_bytes(blob)
    pixels = rng.uniform(0, 255, (3, height, width, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)

    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(result.saved_model), str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    served = np.load(tmp_path / "out.npz", allow_pickle=True)  # our own file (string arrays)

    def keras_probabilities(images) -> np.ndarray:
        logits = trained.model(trained.normalize(tf.constant(images)), training=False)
        return tf.nn.softmax(logits).numpy()

    def resized(image: np.ndarray) -> np.ndarray:  # what the training pipeline does
        r = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(r), 0, 255).numpy()

    decoded_jpeg = tf.io.decode_jpeg(blobs[4], channels=3).numpy()
    expected_bytes = keras_probabilities(
        np.stack(
            [
                native[0].astype(np.float32),
                native[1].astype(np.float32),
                resized(other),
                np.repeat(gray[..., None], 3, axis=-1).astype(np.float32),
                resized(decoded_jpeg),
            ]
        )
    )
    np.testing.assert_allclose(served["bytes_probabilities"], expected_bytes, atol=1e-5)
    np.testing.assert_allclose(
        served["images_probabilities"], keras_probabilities(pixels), atol=1e-5
    )
    # Top-k outputs agree with the probabilities, and class names with indices.
    top = np.argsort(-served["bytes_probabilities"], axis=1)[:, :3]
    np.testing.assert_array_equal(served["bytes_top_k_indices"], top)
    names = np.array(trained.class_names)[served["bytes_top_k_indices"]]
    np.testing.assert_array_equal(served["bytes_top_k_classes"].astype(str), names)
    np.testing.assert_allclose(served["again"], served["bytes_probabilities"][:1], atol=1e-6)

    error = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert error is not None, "corrupt bytes were accepted"
    assert "image_bytes[1] is not a JPEG, PNG, GIF or BMP image" in error


def saved_model_cli() -> list[str]:
    """TensorFlow's ``saved_model_cli`` of the Python running the tests (no PATH needed)."""
    script = Path(sys.executable).parent / "saved_model_cli"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_runs_the_bytes_signature(exported, tmp_path):
    _, result = exported
    image = np.full((20, 20, 3), 128, np.uint8)
    np.save(tmp_path / "bytes.npy", np.array([_png(image)], dtype=object), allow_pickle=True)
    out = subprocess.run(
        [
            *saved_model_cli(),
            "run",
            "--dir",
            str(result.saved_model),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image_bytes={tmp_path / 'bytes.npy'}",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Result for output key top_k_classes" in out.stdout
    assert "Result for output key probabilities" in out.stdout


def test_tflite_agrees_with_the_saved_model(exported):
    _, result = exported
    info = json.loads((result.saved_model / EXPORT_INFO_FILE).read_text())
    assert info["tflite"]["max_abs_difference"] < 1e-4
    interpreter = tf.lite.Interpreter(model_path=str(result.saved_model / TFLITE_FILE))
    runner = interpreter.get_signature_runner(IMAGES_SIGNATURE)
    pixels = np.random.default_rng(1).uniform(0, 255, (1, *info["image_shape"]))
    pixels = pixels.astype(np.float32)
    saved = tf.saved_model.load(str(result.saved_model)).signatures[IMAGES_SIGNATURE]
    expected = saved(images=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(runner(images=pixels)["probabilities"], expected, atol=1e-5)


def test_export_refuses_a_used_directory_and_bad_checkpoints(exported, tmp_path):
    workdir, result = exported
    with pytest.raises(ValueError, match="exists and is not empty"):
        export(workdir, result.saved_model)
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        export(workdir, tmp_path / "x", checkpoint="newest")
    with pytest.raises(ValueError, match="is not a training run directory"):
        export(tmp_path, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_export_files_follow_the_umask_and_nothing_partial_is_left(exported):
    _, result = exported
    mask = os.umask(0)
    os.umask(mask)
    assert result.saved_model.stat().st_mode & 0o777 == 0o777 & ~mask
    for name in (EXPORT_INFO_FILE, TFLITE_FILE, "saved_model.pb"):
        assert (result.saved_model / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert [p.name for p in result.saved_model.parent.iterdir()] == ["1"]


def test_export_fails_at_once_while_a_run_holds_the_workdir(exported, tmp_path):
    from il_tf.rundir import RunDir, RunDirError

    workdir, _ = exported
    with RunDir(workdir, "train"), pytest.raises(RunDirError, match="is in use by another run"):
        export(workdir, tmp_path / "z")
    assert not (tmp_path / "z").exists()
