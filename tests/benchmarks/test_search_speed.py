"""benchmarks/search_speed.py's --profile bookkeeping: exclusive times, tracing apart, first calls."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest

from ..conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_tool", PROJECT_ROOT / "benchmarks" / "search_speed.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_call_is_timed_without_the_calls_nested_in_it(bench):
    calls = bench.CallTimes()
    inner = calls.wrap("inner", lambda: time.sleep(0.1))

    def outer_body():
        time.sleep(0.05)
        inner()
        inner()

    calls.wrap("outer", outer_body)()
    assert dict(calls.calls) == {"outer": 1, "inner": 2}
    assert calls.seconds["inner"] >= 0.2
    # The outer call's own time is its 50 ms sleep, not the 200 ms spent inside ``inner``.
    assert 0.05 <= calls.seconds["outer"] < calls.seconds["inner"] / 2
    total = calls.seconds["inner"] + calls.seconds["outer"] + 0.02  # 20 ms outside both
    profile = calls.per_step(steps=2, total_seconds=total)
    assert list(profile) == ["inner", "outer", "python"]  # largest first
    assert profile["inner"][0] == 1.0  # calls per step
    assert profile["python"][1] == pytest.approx(1000 * 0.02 / 2, abs=0.1)


class _Traced:
    """Stands in for a tf.function: tracing takes 50 ms and yields a 3-op graph."""

    class _Graph:
        def get_operations(self):
            return ["a", "b", "c"]

    class _Concrete:
        def __init__(self):
            self.graph = _Traced._Graph()

    def __init__(self):
        self.traces = 0

    def get_concrete_function(self, *args):
        self.traces += 1
        time.sleep(0.05)
        return self._Concrete()

    def __call__(self, x):
        return x + 1


def test_a_first_call_reports_its_tracing_apart_and_its_graph(bench):
    calls = bench.CallTimes()
    fn = _Traced()
    timed = calls.wrap("step", fn)
    assert timed(1) == 2 and timed(2) == 3
    assert fn.traces == 1  # traced once, at the first call only
    assert calls.trace_seconds["step"] >= 0.05
    assert calls.seconds["step"] < calls.trace_seconds["step"]  # tracing is not run time
    [(name, trace_s, run_s, before, traced, ran, trimmed, ops)] = calls.first_calls
    assert (name, ops) == ("step", 3)
    assert trace_s >= 0.05 and run_s >= 0
    assert min(before, traced, ran, trimmed) > 0  # resident MB, read from /proc
    calls.reset()
    assert not calls.seconds and not calls.trace_seconds


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--edges=bogus", "--edges=['bogus']: 'auto', 'wide' and/or 'single' allowed"),
        pytest.param(
            "--cell_parts=6", "--cell_parts=6: 1 to 5 (steps + 1) allowed", marks=pytest.mark.slow
        ),
    ],
)
def test_a_bad_supernet_form_is_a_one_line_usage_error(flag, message):
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "search_speed.py"), flag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert message in proc.stderr


def test_the_markdown_table_has_a_row_per_case_and_names_a_failure(bench):
    base = {"config": "S", "learners": 1, "first_step_s": 10.04, "median_ms": 400.0}
    base.update(min_ms=390.0, max_ms=420.0, expected_passes=1, peak_rss_mb=1800)
    fd = {**base, "learners": 2, "method": "chain_finite_difference", "median_ms": 4000.0}
    fd.update(passes=10.0, passes_cpu=9.5, expected_passes=18)
    failed = {"config": "S", "learners": 2, "method": "unrolled", "error": "killed by SIGKILL"}
    rows = bench.markdown([{**base, "method": "forward_backward"}, fd, failed]).splitlines()
    assert (
        rows[2]
        == "| darts | S | 1, 1 | forward_backward | 10.0 | 400 (390–420) | 1 (base) | 1 | 1800 |"
    )
    assert rows[3] == (
        "| darts | S | 2, 2 | chain_finite_difference | 10.0 | 4000 (390–420) | 10.00 (9.50) | 18 | 1800 |"
    )
    assert rows[4].startswith("| darts | S | 2, 2 | unrolled | failed: killed by SIGKILL |")
