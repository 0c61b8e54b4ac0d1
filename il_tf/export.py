"""Exporting a trained network: a SavedModel with serving signatures, and TFLite.

Signatures of the SavedModel (both return the same outputs):

``serving_default(image_bytes)``
    ``image_bytes``: string ``[B]``, each an encoded JPEG, PNG, GIF or BMP image of any size.
    Decoded (grayscale tiled to RGB or RGB converted to gray as the network needs), resized
    to the network's input size (bilinear, antialiased, rounded to 8 bits: what the training
    pipeline does) and normalized inside the graph. Bytes that are not an image raise
    ``InvalidArgumentError`` naming the offending index.
``predict_images(images)``
    ``images``: float32 ``[B, H, W, C]`` at the network's input size, pixel values in
    0..255 (not normalized: the signature normalizes with the training statistics).

Outputs: ``probabilities`` float32 ``[B, num_classes]``; ``top_k_indices`` int32
``[B, k]``; ``top_k_probabilities`` float32 ``[B, k]``; ``top_k_classes`` string ``[B, k]``
(class names), k = min(top_k, num_classes).

The TFLite file holds the ``predict_images`` signature.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from il_tf import rundir
from il_tf.models.networks import GenotypeNetwork, NetworkConfig, build_network
from il_tf.spaces.genotypes import genotype_from_json_dict
from il_tf.training.loop import BEST_DIR, LAST_DIR, read_run_settings
from il_tf.training.trainer import weights_checkpoint

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
EXPORT_INFO_FILE = "il_tf_export.json"
TFLITE_FILE = "model.tflite"
CHECKPOINT_CHOICES = ("best", "last")
# Leading bytes of the formats tf.io.decode_image reads.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A network restored from a training work directory, with what serving needs."""

    model: GenotypeNetwork
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checkpoint_path: str
    record: dict[str, Any]

    def normalize(self, images: tf.Tensor) -> tf.Tensor:
        """Pixel values 0..255 -> the network's normalized inputs."""
        images = tf.cast(images, tf.float32) / 255.0
        return (images - tf.constant(self.mean)) / tf.constant(self.std)


def load_trained_model(workdir: str | os.PathLike[str], checkpoint: str = "best") -> TrainedModel:
    """Rebuilds the network of a training run and restores its weights (in float32).

    Args:
      workdir: a work directory of ``tools/train.py``.
      checkpoint: "best" (best validation top-1; the last checkpoint when the run kept no
        best one: it has no validation split, or never evaluated), "last", or a checkpoint
        path prefix.
    """
    workdir = Path(workdir)
    record = read_run_settings(workdir)
    if checkpoint in CHECKPOINT_CHOICES:
        path = None
        if checkpoint == "best":
            path = tf.train.latest_checkpoint(str(workdir / BEST_DIR))
        path = path or tf.train.latest_checkpoint(str(workdir / LAST_DIR))
        if path is None:
            raise ValueError(f"{workdir} holds no checkpoint yet (train first)")
    elif tf.io.gfile.exists(f"{checkpoint}.index"):
        path = checkpoint
    else:
        raise ValueError(
            f"checkpoint must be one of {list(CHECKPOINT_CHOICES)} or a checkpoint path prefix "
            f"(a file PREFIX.index must exist), got {checkpoint!r}"
        )
    data = record["data"]
    genotype = genotype_from_json_dict(record["genotype"])
    network = NetworkConfig(**record["network"])
    image_shape = tuple(int(d) for d in data["image_shape"])
    # Exported graphs compute in float32 whatever precision training used.
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_network(genotype, int(data["num_classes"]), image_shape, network)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    status = weights_checkpoint(model).restore(path)
    status.expect_partial().assert_existing_objects_matched()
    return TrainedModel(
        model=model,
        class_names=tuple(data["class_names"]),
        image_shape=image_shape,  # type: ignore[arg-type]
        mean=tuple(float(m) for m in data["normalization"]["mean"]),
        std=tuple(float(s) for s in data["normalization"]["std"]),
        checkpoint_path=path,
        record=record,
    )


class ServingModule(tf.Module):
    """The exported object: the network's weights and the two serving functions."""

    def __init__(self, trained: TrainedModel, top_k: int = 5):
        super().__init__(name="il_tf_serving")
        self._trained = trained
        height, width, channels = trained.image_shape
        self.k = min(int(top_k), len(trained.class_names))
        # Saved explicitly (the object graph does not reach weights Keras keeps in lists),
        # as the tf.Variables behind the Keras variables, which the TFLite converter freezes.
        self.weights = [v.value for v in trained.model.weights]
        self.class_names = tf.constant(list(trained.class_names))
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[
                tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
            ],
        )

    def _outputs(self, normalized: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self._trained.model(normalized, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        top = tf.math.top_k(probabilities, k=self.k)
        indices = tf.cast(top.indices, tf.int32)
        return {
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_probabilities": top.values,
            "top_k_classes": tf.gather(self.class_names, indices),
        }

    def _serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(self._trained.normalize(images))

    def _decode(self, index: tf.Tensor, data: tf.Tensor) -> tf.Tensor:
        height, width, channels = self._trained.image_shape
        head = tf.strings.substr(data, 0, 8)
        known = tf.reduce_any(
            [tf.strings.substr(data, 0, len(s)) == s for s in _SIGNATURES], axis=0
        )
        message = tf.strings.format(
            "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image (its first bytes are {}); "
            "serving_default takes encoded image files",
            (index, head),
        )
        check = tf.debugging.Assert(known, [message])
        with tf.control_dependencies([check]):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, channels])
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))

        def resize() -> tf.Tensor:
            # As the training pipeline: bilinear, antialiased, rounded back to 8 bits.
            resized = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

        image = tf.cond(same, lambda: image, resize)
        return tf.cast(tf.ensure_shape(image, [height, width, channels]), tf.float32)

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        height, width, channels = self._trained.image_shape
        indices = tf.range(tf.size(image_bytes))
        images = tf.map_fn(
            lambda pair: self._decode(pair[0], pair[1]),
            (indices, image_bytes),
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return self._serve_images(images)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export`."""

    saved_model: Path
    tflite: Path | None
    checkpoint: str
    tflite_max_abs_difference: float | None = None


def export(
    workdir: str | os.PathLike[str],
    export_dir: str | os.PathLike[str],
    checkpoint: str = "best",
    top_k: int = 5,
    tflite: bool = True,
) -> ExportResult:
    """Exports a training run as a SavedModel (and TFLite) in ``export_dir``.

    ``export_dir`` must not exist or be empty (TF Serving wants ``MODEL_BASE/<version>``,
    e.g. ``models/darts/1``). The TFLite model's outputs are checked against the SavedModel
    on random images. The training run's directory is locked while it is read (a run still
    training there makes this fail at once). The export is written to a temporary folder
    beside ``export_dir`` and renamed: a failed export leaves nothing behind; files and
    folders get the modes the umask gives. Raises ValueError for bad arguments and
    ``rundir.RunDirError`` (a ValueError) when a directory cannot be used.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    export_dir = Path(export_dir)
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise ValueError(
            f"export directory {export_dir} exists and is not empty; choose a new one "
            f"(TF Serving expects MODEL_BASE/<version number>)"
        )
    read_run_settings(workdir)  # a training run directory, before its lock is touched
    with rundir.locked(workdir):
        trained = load_trained_model(workdir, checkpoint)
    module = ServingModule(trained, top_k)
    created = rundir.make_dirs(export_dir.parent)
    tmp = None
    try:
        with rundir.io_errors(export_dir, "write the export to"):
            # A fresh folder per export (two exports never share one); mkdtemp makes it
            # 0700, which a model server running as another user could not read.
            tmp = Path(
                tempfile.mkdtemp(prefix=f".{export_dir.name}.partial-", dir=export_dir.parent)
            )
            rundir.chmod_as_umask(tmp)
            tflite_difference = _write_export(tmp, trained, module, workdir, tflite)
            if export_dir.exists():
                export_dir.rmdir()
            os.replace(tmp, export_dir)
    except BaseException:
        # Nothing half-written is left behind (export_dir itself was never touched).
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return ExportResult(
        saved_model=export_dir,
        tflite=export_dir / TFLITE_FILE if tflite else None,
        checkpoint=trained.checkpoint_path,
        tflite_max_abs_difference=tflite_difference,
    )


def _write_export(
    tmp: Path,
    trained: TrainedModel,
    module: ServingModule,
    workdir: str | os.PathLike[str],
    tflite: bool,
) -> float | None:
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={BYTES_SIGNATURE: module.serve_bytes, IMAGES_SIGNATURE: module.serve_images},
    )
    info = {
        "workdir": str(Path(workdir).resolve()),
        "checkpoint": trained.checkpoint_path,
        "signatures": {
            BYTES_SIGNATURE: "image_bytes: string [B] (encoded JPEG/PNG/GIF/BMP, any size)",
            IMAGES_SIGNATURE: (
                f"images: float32 [B, {', '.join(map(str, trained.image_shape))}], "
                "pixel values 0..255"
            ),
        },
        "outputs": ["probabilities", "top_k_indices", "top_k_probabilities", "top_k_classes"],
        "top_k": module.k,
        "image_shape": list(trained.image_shape),
        "class_names": list(trained.class_names),
        "normalization": {"mean": list(trained.mean), "std": list(trained.std)},
    }
    difference = None
    if tflite:
        tflite_path = tmp / TFLITE_FILE
        tflite_path.write_bytes(convert_to_tflite(tmp))
        difference = compare_tflite(tmp, tflite_path, trained.image_shape)
        info["tflite"] = {"file": TFLITE_FILE, "max_abs_difference": difference}
    rundir.write_json(tmp / EXPORT_INFO_FILE, info)
    return difference


def convert_to_tflite(saved_model_dir: str | os.PathLike[str]) -> bytes:
    """The ``predict_images`` signature of a SavedModel as a float32 TFLite model."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[IMAGES_SIGNATURE]
    )
    return converter.convert()


def compare_tflite(
    saved_model_dir: str | os.PathLike[str],
    tflite_path: str | os.PathLike[str],
    image_shape: Sequence[int],
    batch: int = 2,
    seed: int = 0,
) -> float:
    """Largest |probability difference| between TFLite and the SavedModel on random images.

    Raises ValueError when the predicted classes differ or the difference exceeds 1e-4.
    """
    images = np.random.default_rng(seed).uniform(0, 255, (batch, *image_shape)).astype("float32")
    expected = tf.saved_model.load(str(saved_model_dir)).signatures[IMAGES_SIGNATURE](
        images=tf.constant(images)
    )
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to LiteRT (ai_edge_litert); it still works.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(tflite_path))
    runner = interpreter.get_signature_runner(IMAGES_SIGNATURE)
    got = runner(images=images)
    difference = float(np.max(np.abs(got["probabilities"] - expected["probabilities"].numpy())))
    same_top = np.array_equal(got["top_k_indices"][:, 0], expected["top_k_indices"].numpy()[:, 0])
    if difference > 1e-4 or not same_top:
        raise ValueError(
            f"the TFLite model disagrees with the SavedModel (max |Δp| = {difference:.3g}, "
            f"same top-1: {same_top})"
        )
    return difference
