"""Real multi-worker runs: two worker processes (MultiWorkerMirroredStrategy, gRPC on
localhost) against one process with the same global batch, a killed worker, a restart.

Slow (minutes each: two processes trace the step functions on 2 shared cores).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from il_tf.cluster import LocalCluster

from ..conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
SEARCH_GIN = HERE / "tiny_search.gin"
# gin_configs/train/quickstart.gin shrunk: 8x8 digits, 2 cells of 4 channels, 2 x 3 steps.
TRAIN_BINDINGS = [
    "Learner.image_size = None",
    "NetworkConfig.channels = 4",
    "NetworkConfig.layers = 2",
    "TrainConfig.epochs = 2",
    "TrainConfig.steps_per_epoch = 3",
]
TIMEOUT = 1800


def search_command(workdir: Path, method: str) -> list[str]:
    return [
        sys.executable,
        str(PROJECT_ROOT / "tools" / "search.py"),
        f"--gin_file={SEARCH_GIN}",
        f"--workdir={workdir}",
        f"--gin_bindings=SearchConfig.method = {method!r}",
    ]


def run_cluster(command: list[str], workers: int = 2, env: dict | None = None) -> LocalCluster:
    cluster = LocalCluster(command, workers=workers, env=env, cwd=PROJECT_ROOT, out=None)
    code = cluster.run(timeout=TIMEOUT)
    assert code == 0, "\n".join(cluster.lines[-60:])
    return cluster


def run_alone(script: str, workdir: Path, replicas: int, *bindings: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / script), str(workdir), str(replicas), *bindings],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def checkpoint_tensors(directory: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(directory))
    names = set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    return {name: reader.get_tensor(name) for name in names}


def assert_same_checkpoints(a: Path, b: Path, atol: float, weights: str) -> None:
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert set(ta) == set(tb)
    assert sum(name.startswith(weights) for name in ta) > 10  # the weights are there
    for name in ta:
        np.testing.assert_allclose(ta[name], tb[name], rtol=0, atol=atol, err_msg=name)


def genotype_record(workdir: Path) -> dict:
    return json.loads((workdir / "genotype.json").read_text())


def assert_same_search(a: Path, b: Path, weights_atol: float = 1e-5) -> None:
    ra, rb = genotype_record(a), genotype_record(b)
    assert ra["genotype"] == rb["genotype"]
    assert ra["iteration"] == rb["iteration"] == 4
    for name in ra["alpha"]:
        np.testing.assert_allclose(ra["alpha"][name], rb["alpha"][name], rtol=0, atol=1e-5)
    assert_same_checkpoints(a / "checkpoints", b / "checkpoints", weights_atol, "encoder/")


@pytest.fixture(scope="module")
def two_worker_searches(tmp_path_factory):
    """Method -> the workdir of a finished two-worker search (each run once per module)."""
    root = tmp_path_factory.mktemp("two_worker_searches")
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            workdir = root / method
            cluster = run_cluster(search_command(workdir, method))
            assert f"genotype: {workdir / 'genotype.json'}" in cluster.output(0)
            done[method] = workdir
        return done[method]

    return get


@pytest.mark.parametrize("method", ["chain_finite_difference", "chain_exact"])
def test_two_workers_search_as_one_process(two_worker_searches, tmp_path, method):
    two_workers = two_worker_searches(method)
    binding = f"SearchConfig.method = {method!r}"
    # One process with the same two replicas (two logical CPUs): the same computation.
    run_alone("_search.py", tmp_path / "two_replicas", 2, binding)
    assert_same_search(two_workers, tmp_path / "two_replicas")
    if method == "chain_finite_difference":
        # One device on the whole global batch: α and the genotype to 1e-5; the weights to
        # float32 summation order (1 vs 2 partial sums of every gradient and BN moment; in
        # float64, tests/learning/test_search.py checks 2 replicas against 1 device to 1e-5
        # for every method).
        run_alone("_search.py", tmp_path / "one_device", 1, binding)
        assert_same_search(two_workers, tmp_path / "one_device", weights_atol=1e-4)
    # Only the chief writes the run's files; the other worker's checkpoint copies go to
    # the workdir's tmp/ folder.
    events = list((two_workers / "tensorboard").iterdir())
    assert len(events) == 1, events


def test_two_workers_train_as_one_process(tmp_path):
    command = [
        sys.executable,
        str(PROJECT_ROOT / "tools" / "train.py"),
        f"--gin_file={PROJECT_ROOT / 'gin_configs' / 'train' / 'quickstart.gin'}",
        "--genotype=DARTS_V2",
        f"--workdir={tmp_path / 'two_workers'}",
        *[f"--gin_bindings={b}" for b in TRAIN_BINDINGS],
    ]
    run_cluster(command)
    # The training network's batch normalization is per replica: the reference is one
    # process with two replicas on the same global batch.
    run_alone("_train.py", tmp_path / "two_replicas", 2, *TRAIN_BINDINGS)
    a, b = tmp_path / "two_workers", tmp_path / "two_replicas"
    assert_same_checkpoints(a / "checkpoints", b / "checkpoints", 1e-5, "weights/")
    results = [json.loads((w / "results.json").read_text()) for w in (a, b)]
    for key in ("test_top1", "test_top5", "test_loss", "num_test", "steps"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-5), key


def test_killed_worker_stops_the_other_and_a_restart_resumes(two_worker_searches, tmp_path):
    method = "chain_finite_difference"
    workdir = tmp_path / "killed"
    cluster = LocalCluster(search_command(workdir, method), cwd=PROJECT_ROOT, out=None).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (workdir / "checkpoints" / "ckpt-1.index").exists():
            assert cluster.processes[0].poll() is None, "\n".join(cluster.lines[-40:])
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.2)
        cluster.kill(1)  # kill -9 the non-chief in the middle of the search
        killed = time.monotonic()
        chief = cluster.processes[0]
        chief.wait(timeout=180)  # bounded: it must not wait for the dead worker forever
        waited = time.monotonic() - killed
    finally:
        cluster.kill_all()
    cluster.wait()
    chief_output = cluster.output(0)
    assert chief.returncode == 1, chief_output[-3000:]
    # The one line is the last thing the chief says (no gRPC lines after it).
    assert chief_output.splitlines()[-1].startswith(
        "error: lost contact with another worker of the cluster"
    ), chief_output[-3000:]
    assert "Traceback" not in chief_output
    assert not (workdir / "genotype.json").exists() or genotype_record(workdir)["iteration"] < 4
    print(f"the chief stopped {waited:.1f} s after the other worker was killed")
    # The same command on every worker again: resumes from the chief's last checkpoint.
    restarted = run_cluster(search_command(workdir, method))
    for worker in (0, 1):
        assert "resumed from" in restarted.output(worker)
    assert_same_search(workdir, two_worker_searches(method))


# What a search writes per epoch; a resumed search writes the same bytes.
RESULT_FILES = (
    "metrics.jsonl",
    "genotype.json",
    "genotypes/epoch_001.json",
    "genotypes/epoch_002.json",
)
INTERRUPTED = re.compile(
    r"interrupted at iteration (\d+); checkpoint written; run the same command to resume"
)


def test_sigterm_to_one_worker_stops_both_at_one_iteration_and_a_restart_resumes(
    two_worker_searches, tmp_path
):
    method = "chain_finite_difference"
    workdir = tmp_path / "sigterm"
    cluster = LocalCluster(search_command(workdir, method), cwd=PROJECT_ROOT, out=None).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (workdir / "checkpoints" / "ckpt-1.index").exists():
            assert cluster.processes[0].poll() is None, "\n".join(cluster.lines[-40:])
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.2)
        cluster.kill(1, signal.SIGTERM)  # as a scheduler preempting one machine would
        codes = cluster.wait(timeout=TIMEOUT)
    finally:
        cluster.kill_all()
    assert codes == [143, 143], "\n".join(cluster.lines[-60:])
    stops = set()
    for worker in (0, 1):
        output = cluster.output(worker)
        assert "Traceback" not in output, output[-3000:]
        said = [line for line in output.splitlines() if "interrupted" in line]
        assert len(said) == 1 and output.splitlines()[-1] == said[0], output[-3000:]
        stops.add(int(INTERRUPTED.fullmatch(said[0]).group(1)))
    (stop,) = stops  # both workers stopped at the same iteration, with its checkpoint
    pointer = (workdir / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{stop}"' in pointer
    restarted = run_cluster(search_command(workdir, method))
    for worker in (0, 1):
        assert f"resumed from {workdir / 'checkpoints' / f'ckpt-{stop}'}" in restarted.output(
            worker
        )
    reference = two_worker_searches(method)
    for name in RESULT_FILES:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name


# The quick start's own search (gin_configs/quickstart.gin), cut to one epoch of 4
# iterations.
QUICKSTART = [
    f"--gin_file={PROJECT_ROOT / 'gin_configs' / 'quickstart.gin'}",
    "--gin_bindings=SearchConfig.epochs = 1",
    "--gin_bindings=SearchConfig.iterations_per_epoch = 4",
]


def keras_home(root: Path, floatx: str) -> dict[str, str]:
    """The environment of a process whose Keras layers, weights and α are ``floatx``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "keras.json").write_text(json.dumps({"floatx": floatx, "backend": "tensorflow"}))
    return {"KERAS_HOME": str(root)}


def alpha_gap(a: Path, b: Path) -> tuple[float, float]:
    """The largest |Δα| between two searches, and the largest |α| of the first."""
    ra, rb = genotype_record(a), genotype_record(b)
    assert ra["iteration"] == rb["iteration"] == 4
    gap = max(np.abs(np.subtract(ra["alpha"][n], rb["alpha"][n])).max() for n in ra["alpha"])
    size = max(np.abs(ra["alpha"][n]).max() for n in ra["alpha"])
    return float(gap), float(size)


@pytest.mark.parametrize("floatx", ["float64", "float32"])
def test_two_workers_against_one_process_on_the_quickstart(tmp_path, floatx):
    env = keras_home(tmp_path / "keras", floatx)
    search = [sys.executable, str(PROJECT_ROOT / "tools" / "search.py"), *QUICKSTART]
    one = subprocess.run(
        [*search, f"--workdir={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
    )
    assert one.returncode == 0, one.stderr[-3000:]
    run_cluster([*search, f"--workdir={tmp_path / 'two'}"], env=env)
    gap, size = alpha_gap(tmp_path / "one", tmp_path / "two")
    print(f"{floatx}: max |Δα| {gap:.3g} (max |α| {size:.3g})")
    reader = tf.train.load_checkpoint(str(tmp_path / "two" / "checkpoints"))
    arch = [n for n in reader.get_variable_to_dtype_map() if n.startswith("arch/")]
    assert arch and all(reader.get_variable_to_dtype_map()[n].name == floatx for n in arch)
    if floatx == "float64":
        # The same computation: only the order of summation differs, at float64 rounding.
        assert gap < 1e-12
        assert (
            genotype_record(tmp_path / "one")["genotype"]
            == (genotype_record(tmp_path / "two")["genotype"])
        )
        return
    # float32: the same computation, rounded differently (the order of the sums). The
    # finite-difference links (÷ 2ε) make that rounding as large as some hypergradient
    # entries, and Adam's normalized steps pass it on in full: α differs by up to a few
    # steps of arch_lr, which no tolerance on α can tell from an error, and the genotype
    # may differ. The losses are the check: they agree to a fraction of a percent.
    ends = [
        json.loads((tmp_path / w / "metrics.jsonl").read_text().splitlines()[-1])["learners"]
        for w in ("one", "two")
    ]
    for learner, entry in ends[0].items():
        for name in ("train_loss", "val_loss", "hypergradient_val_loss"):
            assert ends[1][learner][name] == pytest.approx(entry[name], rel=2e-2), (learner, name)
