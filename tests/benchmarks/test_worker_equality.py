"""benchmarks/worker_equality.py: bad flags are one-line usage errors, before any run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import PROJECT_ROOT


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--floatx=float16", "--floatx=['float16']: 'float32' and/or 'float64' allowed"),
        ("--seeds=a", "--seeds=['a']: ints allowed"),
    ],
)
def test_a_bad_flag_is_a_usage_error(tmp_path, flag, message):
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "worker_equality.py"), flag],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was run or written
