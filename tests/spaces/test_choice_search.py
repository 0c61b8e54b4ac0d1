"""A Keras builder searched, trained and exported by the tools, and on two replicas."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from il_tf.spaces.choice_genotype import ChoiceGenotype
from il_tf.spaces.genotypes import load_genotype

from ..conftest import PROJECT_ROOT

SEARCH_BINDINGS = [
    "SearchConfig.epochs = 1",
    "SearchConfig.iterations_per_epoch = 2",
    "SearchConfig.eval_batches = 1",
    "mobilenet_v2_backbone.stem = 4",
    "mobilenet_v2_backbone.stages = [[4, 1, 1], [8, 2, 2]]",
    "mobilenet_v2_backbone.last = 8",
]
TRAIN_BINDINGS = ["TrainConfig.epochs = 1", "TrainConfig.steps_per_epoch = 3"]


def run_tool(tool: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tools" / tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


@pytest.mark.slow
def test_search_train_export_serve_on_the_digits(tmp_path):
    search, train, export = tmp_path / "search", tmp_path / "train", tmp_path / "models" / "1"
    proc = run_tool(
        "search.py",
        "--gin_file=gin_configs/search/choices_mobilenet_digits.gin",
        f"--workdir={search}",
        *(f"--gin_bindings={b}" for b in SEARCH_BINDINGS),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    genotype = load_genotype(search / "genotype.json")
    assert isinstance(genotype, ChoiceGenotype)
    assert genotype.builder == "il_tf.spaces.examples.mobilenet:mobilenet_v2_backbone"
    assert genotype.arguments["stages"] == [[4, 1, 1], [8, 2, 2]]
    assert (search / "alpha.png").is_file()

    proc = run_tool(
        "train.py",
        "--gin_file=gin_configs/train/choices_digits.gin",
        f"--genotype={search / 'genotype.json'}",
        f"--workdir={train}",
        *(f"--gin_bindings={b}" for b in TRAIN_BINDINGS),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((train / "results.json").read_text())
    assert results["genotype"] == genotype.to_json_dict() and results["params"] > 0

    proc = run_tool("export.py", f"--workdir={train}", f"--export_dir={export}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (export / "model.tflite").is_file()
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)  # any size is resized
    blobs = tf.constant([tf.io.encode_png(image).numpy() for image in images])
    out = serve(image_bytes=blobs)
    assert out["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "method, mode",
    [
        ("chain_exact", "eager"),
        pytest.param("chain_finite_difference", "eager segmented", marks=pytest.mark.slow),
        pytest.param("unrolled", "eager", marks=pytest.mark.slow),
    ],
)
def test_two_replicas_equal_one_device(method, mode):
    # Batch statistics are synchronized and every gradient all-reduced on a choice
    # supernet too: 2 replicas on halves of a batch compute the 1-device step.
    script = PROJECT_ROOT / "tests" / "spaces" / "_choice_two_replicas.py"
    proc = subprocess.run(
        [sys.executable, str(script), method, *mode.split()],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["alpha_moved"] > 1e-3
    assert result["alpha_max_diff"] < 1e-5
    assert result["weights_max_diff"] < 1e-5
