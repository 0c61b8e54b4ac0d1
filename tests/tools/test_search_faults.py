"""Faults on a search's workdir: kills, a second start, unwritable and full file systems.

Each ends with a clear one-line error (or a killed process) and a workdir from which the
same command resumes to files identical to those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .._tmpfs import tmpfs
from ..conftest import PROJECT_ROOT

DRIVER = Path(__file__).resolve().parent / "_faulty_search.py"
TOOL = PROJECT_ROOT / "tools" / "search.py"
# The quick-start config shrunk: 2 epochs of 3 iterations, a checkpoint after each.
TINY = [
    "SearchConfig.epochs = 2",
    "SearchConfig.iterations_per_epoch = 3",
    "SearchConfig.checkpoint_every = 1",
    "SearchConfig.eval_batches = 1",
    "SearchConfig.method = 'first_order'",
    "SearchConfig.draw = False",
    "darts_supernet.channels = 4",
    "darts_supernet.num_cells = 1",
    "darts_supernet.ops = ['none', 'max_pool_3x3', 'skip_connect', 'sep_conv_3x3']",
]
# What a search writes per epoch; a resumed search must write the same bytes.
RESULT_FILES = (
    "metrics.jsonl",
    "genotype.json",
    "genotypes/epoch_001.json",
    "genotypes/epoch_002.json",
)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PROJECT_ROOT)}


def command(workdir: Path, fault: str | None = None) -> list[str]:
    args = ["--gin_file=gin_configs/quickstart.gin", f"--workdir={workdir}"]
    args += [f"--gin_bindings={b}" for b in TINY]
    if fault is None:
        return [sys.executable, str(TOOL), *args]
    return [sys.executable, str(DRIVER), fault, *args]


def run(workdir: Path, fault: str | None = None, timeout: float = 900, extra=()):
    return subprocess.run(
        command(workdir, fault) + list(extra),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=ENV,
        timeout=timeout,
    )


def start(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env=ENV,
    )


def error_line(proc) -> str:
    """The tool's one ``error:`` line (and no traceback)."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def assert_whole(workdir: Path) -> None:
    """Nothing half written: every JSON file parses, no temporary file is left."""
    for path in workdir.rglob("*.json"):
        json.loads(path.read_text())
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            json.loads(line)


def assert_resumes_to_reference(workdir: Path, reference: Path, note: str) -> None:
    """The same command finishes the run, with the reference's files, byte for byte."""
    again = run(workdir)
    assert again.returncode == 0, f"{note}: {again.stderr[-3000:]}"
    for name in RESULT_FILES:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), (note, name)
    leftovers = [p for p in workdir.rglob("*") if ".il_tf-" in p.name or p.name.endswith("_temp")]
    assert not leftovers, (note, leftovers)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("faults") / "reference"
    proc = run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


# ------------------------------------------------------------------------------ fast
def test_a_workdir_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    line = error_line(run(tmp_path / "file" / "run", timeout=300))
    assert f"{tmp_path / 'file'} exists and is not a directory" in line
    assert (tmp_path / "file").read_text() == ""


@pytest.mark.parametrize(
    "binding, line",
    [
        (
            "Foo.bar = 1",
            "error: bad gin config: No configurable matching 'Foo'. "
            f"(In bindings string line {len(TINY) + 1}: Foo.bar = 1)",
        ),
        (
            "SearchConfig.epochs = 0",
            "error: SearchConfig.epochs must be an int >= 1, got 0 (gin: SearchConfig.epochs = ...)",
        ),
    ],
)
def test_a_bad_setting_is_the_only_line_on_stderr(tmp_path, binding, line):
    proc = run(tmp_path / "run", extra=[f"--gin_bindings={binding}"], timeout=300)
    assert proc.returncode == 1
    # Once: no absl "E... cli.py:NN]" line repeats it.
    assert proc.stderr.splitlines() == [line], proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_data_error_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()  # an empty workdir stays empty; no config.gin, no run.json, no lock
    bad = [
        "--gin_bindings=low/Learner.source = @ImageFolderSource()",
        f"--gin_bindings=ImageFolderSource.root = '{tmp_path / 'no_such_folder'}'",
    ]
    proc = subprocess.run(
        command(workdir) + bad,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=ENV,
        timeout=300,
    )
    assert "no_such_folder" in error_line(proc)
    assert list(workdir.iterdir()) == []


def test_a_read_only_workdir_is_a_one_line_error(tmp_path):
    # chmod does not stop root: a read-only file system does.
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        line = error_line(run(ro / "run", timeout=300))
        assert "Read-only file system" in line and str(ro / "run") in line


# ------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_sigkill_at_a_random_iteration_then_resume(reference, tmp_path):
    workdir = tmp_path / "run"
    target = random.randrange(1, 6)  # a checkpoint; the kill lands in the iteration after it
    proc = start(workdir)
    pointer = workdir / "checkpoints" / "checkpoint"
    try:
        while proc.poll() is None:
            if pointer.is_file() and f'"ckpt-{target}"' in pointer.read_text():
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before ckpt-{target}"
    assert_whole(workdir)
    assert_resumes_to_reference(workdir, reference, f"killed after ckpt-{target}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "kill_at_checkpoint:2",  # mid-epoch: the epoch's statistics come from it
        "kill_at_checkpoint:3",  # the epoch's end: its records were already written
        "kill_in_write:genotype.json:1",  # during the first epoch's records
        "kill_in_write:run.json:1",  # while recording the start
    ],
)
def test_sigkill_during_a_write_then_resume(reference, tmp_path, fault):
    workdir = tmp_path / "run"
    killed = run(workdir, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert_whole(workdir)
    assert_resumes_to_reference(workdir, reference, fault)


@pytest.mark.slow
def test_a_second_start_fails_at_once_naming_the_first(reference, tmp_path):
    workdir = tmp_path / "run"
    first = start(workdir)
    try:
        lock = workdir / ".lock"
        while first.poll() is None and not (
            lock.is_file() and f'"pid": {first.pid}' in lock.read_text()
        ):
            time.sleep(0.05)
        second = run(workdir, timeout=300)
        assert first.poll() is None, "the first run ended before the second failed"
        line = error_line(second)
        assert f"is in use by another run (pid {first.pid} on " in line
        out, err = first.communicate(timeout=900)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    for name in RESULT_FILES:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    assert len(json.loads((workdir / "run.json").read_text())["starts"]) == 1


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error_and_the_run_resumes(reference, tmp_path):
    used = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    files = sum(1 for _ in reference.rglob("*"))
    # Room for about half the run (tmpfs counts 4 KiB pages).
    size = (used // 2 + files * 4096 // 2) // 4096 * 4096
    with tmpfs(tmp_path / "disk", f"size={size}") as disk:
        workdir = disk / "run"
        proc = run(workdir)
        line = error_line(proc)
        assert "No space left on device" in line and str(workdir) in line, line
        assert_whole(workdir)
        subprocess.run(["mount", "-o", f"remount,size={64 << 20}", str(disk)], check=True)
        assert_resumes_to_reference(workdir, reference, f"disk of {size} bytes")
        shutil.rmtree(workdir)
