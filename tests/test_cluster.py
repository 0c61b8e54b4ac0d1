"""The local cluster launcher: one TF_CONFIG per worker, prefixed output, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from il_tf.cluster import LocalCluster, free_ports, tf_configs

from .conftest import PROJECT_ROOT

PRINT_CONFIG = (
    "import os; print(os.environ['TF_CONFIG']); print(os.environ['CUDA_VISIBLE_DEVICES'] == '')"
)


def test_each_worker_gets_its_own_task_of_one_cluster():
    cluster = LocalCluster([sys.executable, "-c", PRINT_CONFIG], workers=3, out=None)
    assert cluster.run(timeout=60) == 0
    configs = [json.loads(cluster.output(i).splitlines()[0]) for i in range(3)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert all(c["cluster"] == {"worker": addresses} for c in configs)
    assert len(set(addresses)) == 3 and all(a.startswith("localhost:") for a in addresses)
    assert all(cluster.output(i).splitlines()[1] == "True" for i in range(3))  # no GPUs
    assert sum(line.startswith("[worker 1] ") for line in cluster.lines) == 2


def test_a_failing_worker_fails_the_cluster_after_all_exit():
    code = (
        "import json, os, sys; sys.exit(3 * json.loads(os.environ['TF_CONFIG'])['task']['index'])"
    )
    cluster = LocalCluster([sys.executable, "-c", code], workers=2, out=None)
    assert cluster.run(timeout=60) == 3
    assert [p.returncode for p in cluster.processes] == [0, 3]


def test_workers_left_waiting_for_a_failed_one_are_killed_after_the_grace_time():
    code = (
        "import json, os, sys, time\n"
        "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 1: sys.exit(5)\n"
        "time.sleep(60)"
    )
    cluster = LocalCluster([sys.executable, "-c", code], workers=2, out=None)
    started = time.monotonic()
    assert cluster.run(timeout=50, grace=1) == 5
    assert time.monotonic() - started < 30
    assert cluster.processes[0].returncode < 0  # killed
    assert "[cluster] a worker failed 1 s ago; killing the others" in cluster.lines


def test_timeout_kills_every_worker():
    cluster = LocalCluster([sys.executable, "-c", "import time; time.sleep(60)"], out=None)
    with pytest.raises(subprocess.TimeoutExpired):
        cluster.run(timeout=1)
    assert all(p.returncode is not None for p in cluster.processes)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        LocalCluster(["true"], workers=0)
    with pytest.raises(ValueError, match="needs a command"):
        LocalCluster([])
    with pytest.raises(ValueError, match="at least one worker address"):
        tf_configs([])
    assert len(set(free_ports(4))) == 4


def test_the_tool_runs_a_command_on_every_worker():
    tool = [sys.executable, str(PROJECT_ROOT / "tools" / "local_cluster.py")]
    proc = subprocess.run(
        [*tool, "--workers=2", "--", sys.executable, "-c", PRINT_CONFIG],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"index": 0') == 1 and proc.stdout.count('"index": 1') == 1
    failing = subprocess.run(
        [*tool, "--workers=2", "--", sys.executable, "-c", "raise SystemExit(2)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failing.returncode == 2
    assert "error: a worker failed (exit code 2)" in failing.stderr
    usage = subprocess.run([*tool, "--workers=2"], capture_output=True, text=True, timeout=120)
    assert usage.returncode != 0 and "give the command to run after --" in usage.stderr


def test_the_tool_passes_ctrl_c_on_to_the_workers(tmp_path):
    worker = (
        "import sys, time\n"
        "from il_tf import interrupts\n"
        "with interrupts.handled():\n"
        "    print('ready', flush=True)\n"
        "    while interrupts.requested() is None:\n"
        "        time.sleep(0.05)\n"
        "    print(f'stopping on signal {interrupts.requested()}', flush=True)\n"
        "    sys.exit(130)\n"
    )
    tool = [sys.executable, str(PROJECT_ROOT / "tools" / "local_cluster.py")]
    proc = subprocess.Popen(
        [*tool, "--workers=2", "--", sys.executable, "-c", worker],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        # As in a terminal's foreground: a test run started in the background (`cmd &`)
        # inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        ready = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(line.rstrip().endswith("] ready") for line in ready), ready
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends the tool
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out.count(f"stopping on signal {int(signal.SIGINT)}") == 2, out
    assert "killed" not in err and "error" not in err, err


def test_tf_config_tool_prints_one_workers_config():
    tool = [sys.executable, str(PROJECT_ROOT / "tools" / "tf_config.py")]
    # Hosts as `scontrol show hostnames` prints them (one per line), or with their ports.
    proc = subprocess.run(
        [*tool, "--hosts=node01\nnode02\n", "--port=2222", "--index=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "cluster": {"worker": ["node01:2222", "node02:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    bad = subprocess.run(
        [*tool, "--hosts=a:1,b:2", "--index=2"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert "error: --index=2 is not a worker of the 2 hosts (0..1)" in bad.stderr
