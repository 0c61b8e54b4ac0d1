"""Ctrl-C and SIGTERM: a search or a training run stops at a step boundary with a checkpoint,
says so in one line, exits 130 / 143, and the same command resumes it to the files of an
uninterrupted run, byte for byte. Real signals to real tool processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from il_tf import cli, interrupts

from .conftest import PROJECT_ROOT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(PROJECT_ROOT)}
TIMEOUT = 900
# The quick-start search shrunk: 2 epochs of 3 iterations, a checkpoint after each.
SEARCH = [
    "--gin_file=gin_configs/quickstart.gin",
    *(
        f"--gin_bindings={b}"
        for b in (
            "SearchConfig.epochs = 2",
            "SearchConfig.iterations_per_epoch = 3",
            "SearchConfig.checkpoint_every = 1",
            "SearchConfig.eval_batches = 1",
            "SearchConfig.method = 'first_order'",
            "SearchConfig.draw = False",
            "darts_supernet.channels = 4",
            "darts_supernet.num_cells = 1",
            "darts_supernet.ops = ['none', 'max_pool_3x3', 'skip_connect', 'sep_conv_3x3']",
        )
    ),
]
SEARCH_FILES = (
    "metrics.jsonl",
    "genotype.json",
    "genotypes/epoch_001.json",
    "genotypes/epoch_002.json",
)
# The quick-start training shrunk: 8x8 digits, 2 cells of 4 channels, 2 epochs of 3 steps,
# a checkpoint after every step.
TRAIN = [
    "--gin_file=gin_configs/train/quickstart.gin",
    "--genotype=DARTS_V2",
    *(
        f"--gin_bindings={b}"
        for b in (
            "Learner.image_size = None",
            "NetworkConfig.channels = 4",
            "NetworkConfig.layers = 2",
            "TrainConfig.epochs = 2",
            "TrainConfig.steps_per_epoch = 3",
            "TrainConfig.checkpoint_every_steps = 1",
        )
    ),
]


def resume_line(unit: str, position: int) -> str:
    return f"interrupted at {unit} {position}; checkpoint written; run the same command to resume"


class Tool:
    """A tool in its own process; its output lines are collected as they come."""

    def __init__(self, tool: str, workdir: Path, args: list[str]):
        self.workdir = workdir
        self.process = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "tools" / tool), f"--workdir={workdir}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=PROJECT_ROOT,
            env=ENV,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n").split("\r")[-1])

    def wait_until(self, done, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert self.process.poll() is None, f"ended before {what}:\n{self.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"no {what}"
            time.sleep(0.05)

    def wait_for_line(self, text: str) -> None:
        self.wait_until(lambda: any(text in line for line in self.out), repr(text))

    def wait_for_checkpoint(self, number: int) -> None:
        pointer = self.workdir / "checkpoints" / "checkpoint"
        self.wait_until(
            lambda: pointer.is_file() and f'"ckpt-{number}"' in pointer.read_text(),
            f"checkpoint {number}",
        )

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        for reader in self._readers:
            reader.join()
        return code

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def run_to_end(tool: str, workdir: Path, args: list[str]) -> Tool:
    proc = Tool(tool, workdir, args)
    assert proc.finish() == 0, proc.stderr[-3000:]
    return proc


def interrupted_at(proc: Tool, code: int, unit: str) -> int:
    """Checks the exit code and the one line (the last, no traceback); returns its position."""
    assert proc.finish() == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    said = [line for line in proc.out + proc.err if "interrupted" in line]
    assert len(said) == 1 and proc.err[-1] == said[0], proc.stderr[-3000:]
    position = int(said[0].split()[3].rstrip(";"))
    assert said[0] == resume_line(unit, position)
    # The checkpoint of that position is the newest.
    pointer = (proc.workdir / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{position}"' in pointer, pointer
    return position


def assert_same_files(workdir: Path, reference: Path, names) -> None:
    for name in names:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name


# ------------------------------------------------------------------------------ in process
def test_a_signal_inside_handled_is_recorded_not_raised():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")
    before = signal.getsignal(signal.SIGTERM)
    assert interrupts.requested() is None
    with interrupts.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while interrupts.requested() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert interrupts.requested() == signal.SIGTERM
        strategy = tf.distribute.get_strategy()
        saved = []
        with pytest.raises(interrupts.Interrupted) as caught:
            interrupts.stop_if_requested(strategy, lambda: saved.append(7), 7)
        assert saved == [7]
        assert caught.value.exit_code == 143
        assert str(caught.value) == resume_line("iteration", 7)
    assert signal.getsignal(signal.SIGTERM) is before
    assert interrupts.requested() is None


def test_without_handled_nothing_is_requested_or_saved():
    saved = []
    interrupts.stop_if_requested(tf.distribute.get_strategy(), lambda: saved.append(1), 1)
    assert saved == [] and interrupts.agreed(tf.distribute.get_strategy()) is None


def test_gin_errors_become_one_line():
    error = ValueError(
        "No configurable matching 'Foo'.\n  In bindings string line 1\n    Foo.bar = 1"
    )
    assert cli.one_line(error) == (
        "No configurable matching 'Foo'. (In bindings string line 1: Foo.bar = 1)"
    )
    error = ValueError(
        "SearchConfig.epochs must be an int >= 1, got 0\n"
        "  In call to configurable 'SearchConfig' (<class 'il_tf.learning.search.SearchConfig'>)"
    )
    assert cli.one_line(error) == "SearchConfig.epochs must be an int >= 1, got 0"


# ------------------------------------------------------------------------------ the tools
@pytest.fixture(scope="module")
def search_reference(tmp_path_factory) -> Path:
    """The uninterrupted search."""
    workdir = tmp_path_factory.mktemp("interrupts") / "search"
    run_to_end("search.py", workdir, SEARCH)
    return workdir


@pytest.mark.slow
def test_search_sigterm_while_compiling_then_sigint_mid_run(search_reference, tmp_path):
    workdir = tmp_path / "run"
    first = Tool("search.py", workdir, SEARCH)
    first.wait_for_line("compiling the step functions")
    first.send(signal.SIGTERM)
    # The first iteration (the one compiling) ends, then the run stops.
    assert interrupted_at(first, 143, "iteration") == 1
    second = Tool("search.py", workdir, SEARCH)
    second.wait_for_checkpoint(2)  # mid-epoch
    second.send(signal.SIGINT)
    assert interrupted_at(second, 130, "iteration") >= 2
    third = run_to_end("search.py", workdir, SEARCH)
    assert "resumed from" in third.stdout
    assert_same_files(workdir, search_reference, SEARCH_FILES)


@pytest.mark.slow
def test_search_second_sigint_exits_at_once_with_the_last_checkpoint(search_reference, tmp_path):
    workdir = tmp_path / "run"
    run_to_end("search.py", workdir, [*SEARCH, "--stop_after=1"])
    second = Tool("search.py", workdir, SEARCH)
    second.wait_for_line("compiling the step functions")
    second.send(signal.SIGINT)
    time.sleep(0.3)
    second.send(signal.SIGINT)
    assert second.finish(timeout=60) == 130, second.stderr[-3000:]
    # It did not wait for the iteration that was compiling.
    assert not any("compiled and ran" in line for line in second.out), second.stdout
    assert second.err[-1] == interrupts.AGAIN_MESSAGE, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    pointer = (workdir / "checkpoints" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-1"' in pointer
    run_to_end("search.py", workdir, SEARCH)
    assert_same_files(workdir, search_reference, SEARCH_FILES)


def checkpoint_tensors(directory: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(directory))
    names = set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.slow
def test_training_sigterm_mid_epoch_resumes_exactly(tmp_path):
    reference = run_to_end("train.py", tmp_path / "reference", TRAIN)
    workdir = tmp_path / "run"
    first = Tool("train.py", workdir, TRAIN)
    first.wait_for_checkpoint(1)
    first.send(signal.SIGTERM)
    assert 1 <= interrupted_at(first, 143, "step") < 6
    second = run_to_end("train.py", workdir, TRAIN)
    # The result line, once.
    for proc in (second, reference):
        result_lines = [line for line in proc.out + proc.err if line.startswith("test top-1")]
        assert len(result_lines) == 1, proc.stdout + proc.stderr
    results = [json.loads((w / "results.json").read_text()) for w in (workdir, reference.workdir)]
    for r in results:
        del r["command"]  # names the workdir
    assert results[0] == results[1]
    a = checkpoint_tensors(workdir / "checkpoints")
    b = checkpoint_tensors(reference.workdir / "checkpoints")
    assert a.keys() == b.keys()
    for name in a.keys() - {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"}:  # saves, not state
        assert np.array_equal(a[name], b[name]), name
