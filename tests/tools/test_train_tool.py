"""tools/train.py end to end on the embedded digits: results, resuming, refusing bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from il_tf.data.learners import Learner
from il_tf.models.networks import NetworkConfig
from il_tf.training.loop import TrainConfig, train_and_evaluate

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = PROJECT_ROOT / "gin_configs" / "train" / "quickstart.gin"
# The quickstart config shrunk to seconds: 8x8 digits, 2 cells of 4 channels, 2 x 3 steps.
TINY = [
    "Learner.image_size = None",
    "NetworkConfig.channels = 4",
    "NetworkConfig.layers = 2",
    "TrainConfig.epochs = 2",
    "TrainConfig.steps_per_epoch = 3",
]


def run_tool(workdir: Path, *bindings: str, genotype: str = "DARTS_V2", extra=()):
    args = [
        sys.executable,
        str(PROJECT_ROOT / "tools" / "train.py"),
        f"--gin_file={QUICKSTART}",
        f"--genotype={genotype}",
        f"--workdir={workdir}",
    ]
    args += [f"--gin_bindings={b}" for b in [*TINY, *bindings]]
    args += list(extra)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        args, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    """A run stopped after 4 of 6 steps, then started again with the same command."""
    workdir = tmp_path_factory.mktemp("train_tool") / "run"
    first = run_tool(workdir, "TrainConfig.steps_per_run = 4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped at step 4 of 6" in first.stdout
    assert not (workdir / "results.json").exists()
    second = run_tool(workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    return workdir, first, second


def test_the_tool_writes_results(interrupted_then_resumed):
    workdir, _, second = interrupted_then_resumed
    results = json.loads((workdir / "results.json").read_text())
    assert results["finished"] and results["steps"] == 6 and results["epochs"] == 2
    assert 0 <= results["test_top1"] <= results["test_top5"] <= 100
    assert results["num_test"] == 360
    assert results["params"] > 0 and results["macs"] > 0
    assert results["genotype"]["normal"][0] == ["sep_conv_3x3", 0]
    assert "tools/train.py" in results["command"] and "--genotype=DARTS_V2" in results["command"]
    assert "test top-1" in second.stdout
    for name in ("run.json", "config.gin", "checkpoints", "tensorboard"):
        assert (workdir / name).exists(), name
    # No validation split: no "best" checkpoint chosen by test accuracy; the last one counts.
    assert not (workdir / "best").exists() and results["best"] is None
    assert results["checkpoint"] == "last"
    assert "no validation split" in second.stdout
    # run.json: the settings of the first start and both starts.
    record = json.loads((workdir / "run.json").read_text())
    assert record["kind"] == "train" and record["settings"]["train"]["steps_per_run"] == 4
    assert [s["changed"] for s in record["starts"]] == [{}, {"train.steps_per_run": [4, None]}]
    assert all("tools/train.py" in s["command"] for s in record["starts"])


def test_resuming_continues_exactly(interrupted_then_resumed, tmp_path):
    workdir, _, _ = interrupted_then_resumed
    resumed = json.loads((workdir / "results.json").read_text())
    # The same run without interruption, in this process.
    straight = train_and_evaluate(
        tmp_path / "straight",
        "DARTS_V2",
        Learner("digits", val_fraction=0.0, batch_size=64, crop_padding=2, flip=False),
        NetworkConfig(channels=4, layers=2),
        TrainConfig(
            epochs=2, steps_per_epoch=3, learning_rate=0.05, drop_path_rate=0.1, progress="none"
        ),
    )
    assert straight["test_loss"] == pytest.approx(resumed["test_loss"], rel=1e-6, abs=1e-7)
    assert straight["test_top1"] == resumed["test_top1"]


def test_a_different_run_on_the_same_workdir_is_refused(interrupted_then_resumed):
    workdir, _, _ = interrupted_then_resumed
    before = {p: p.read_bytes() for p in workdir.glob("*.json")}
    out = run_tool(workdir, genotype="DARTS_V1")
    assert out.returncode != 0
    assert "holds a train run with other settings" in out.stderr
    assert "genotype.normal" in out.stderr and "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in workdir.glob("*.json")} == before


@pytest.mark.slow
def test_more_epochs_only_with_extend(interrupted_then_resumed, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(interrupted_then_resumed[0], workdir)
    before = {p: p.read_bytes() for p in workdir.glob("*.json")}
    refused = run_tool(workdir, "TrainConfig.epochs = 3")
    assert refused.returncode == 1 and "train.epochs 2 -> 3" in refused.stderr
    assert "--extend" in refused.stderr
    assert {p: p.read_bytes() for p in workdir.glob("*.json")} == before
    extended = run_tool(workdir, "TrainConfig.epochs = 3", extra=["--extend"])
    assert extended.returncode == 0, extended.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 9 and results["epochs"] == 3
    starts = json.loads((workdir / "run.json").read_text())["starts"]
    assert starts[-1]["changed"] == {"train.epochs": [2, 3]}
    assert (workdir / f"config.{len(starts)}.gin").is_file()


def test_a_data_error_leaves_no_workdir(tmp_path):
    out = run_tool(
        tmp_path / "run",
        "Learner.source = @ImageFolderSource()",
        f"ImageFolderSource.root = '{tmp_path / 'no_such_folder'}'",
    )
    assert out.returncode == 1 and "no_such_folder" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    out = run_tool(tmp_path / "bad", "TrainConfig.epochs = 0")
    assert out.returncode != 0
    assert "TrainConfig.epochs must be an int >= 1, got 0" in out.stderr
    assert not (tmp_path / "bad").exists()
    missing = run_tool(tmp_path / "bad2", genotype="NO_SUCH_CELL")
    assert missing.returncode != 0 and "unknown genotype 'NO_SUCH_CELL'" in missing.stderr
    assert not (tmp_path / "bad2").exists()
