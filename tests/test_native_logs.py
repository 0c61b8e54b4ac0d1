"""TensorFlow's start-up lines: the harmless ones dropped, every other line kept."""

from __future__ import annotations

import os
import subprocess
import sys

from il_tf import native_logs

from .conftest import PROJECT_ROOT


def test_known_lines_are_harmless_and_others_are_not():
    assert native_logs.is_harmless(
        "E0000 00:00:1.2 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
    )
    assert not native_logs.is_harmless("E0000 00:00:1.2 1 op_kernel.cc:1] OOM when allocating")


def test_a_tool_start_prints_no_cuda_error_but_keeps_other_native_lines():
    code = (
        "import os\n"
        "from il_tf import cli\n"
        "from il_tf.native_logs import harmless_lines_dropped\n"
        "with harmless_lines_dropped():\n"
        "    os.write(2, b'failed call to cuInit: nothing wrong\\nreal problem\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "cuInit" not in proc.stderr and "cuda_platform" not in proc.stderr
    assert "real problem" in proc.stderr


def test_importing_the_library_prints_no_error_line():
    # As in a notebook: no TF_CPP_MIN_LOG_LEVEL, the library imported, one op run.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import il_tf.learning.search\n"
        "import tensorflow as tf\n"
        "print(float(tf.reduce_sum(tf.ones(3))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3.0"
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("E0", "F0"))]
    assert not errors, errors
    assert "cuInit" not in proc.stderr


def test_nothing_written_to_stderr_after_the_last_words_is_shown():
    code = (
        "import os, sys\n"
        "from il_tf.native_logs import drop_stderr_from_now\n"
        "print('error: the one line', file=sys.stderr)\n"
        "drop_stderr_from_now()\n"
        "os.write(2, b'E0000 ring_alg.cc:291] Aborting RingReduce\\n')\n"
        "print('more', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == "error: the one line\n", proc.stderr
