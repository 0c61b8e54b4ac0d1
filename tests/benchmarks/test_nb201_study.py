"""benchmarks/nb201_study.py end to end on two tiny variants (one with a remedy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..conftest import PROJECT_ROOT


def test_nb201_bench_tiny(tmp_path, cifar10_folder, nb201_table_path):
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "benchmarks" / "nb201_study.py"),
        f"--data_root={cifar10_folder}",
        f"--table={nb201_table_path}",
        f"--workdir={tmp_path}",
        # The remedy first: its gin setting must not leak into the next run.
        "--variants=darts_2nd_aux_skip,il_first_order",
        "--seeds=0",
        "--epochs=1",
        "--iterations_per_epoch=1",
        "--channels=4",
        "--batch_size=8",
        "--val_fraction=0.98",
        "--partition=0,1,2/3,4,5/6,7",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"].endswith("--partition=0,1,2/3,4,5/6,7")
    aux, run = results["runs"]
    assert run["variant"] == "il_first_order" and 0 < run["cifar10_test"] <= 100
    assert aux["settings"]["aux_skip"] == {"start": 1.0}
    assert run["settings"]["aux_skip"] == {"start": 0.0}
    assert run["settings"]["beta_decay"]["weight"] == 0.0
    aux_dir = tmp_path / "darts_2nd_aux_skip" / "seed_0"
    assert json.loads((aux_dir / "run.json").read_text())["settings"]["aux_skip"] == {"start": 1.0}
    (record,) = [json.loads(line) for line in (aux_dir / "metrics.jsonl").open()]
    assert record["aux_skip"] == 1.0  # one iteration: it ran at the start value
    table = (tmp_path / "table.md").read_text()
    assert "| il_first_order | argmax | 1 |" in table and "DrNAS (published)" in table
    assert "| il_first_order | exclude_none | 1 |" in table
    assert "none" not in run["exclude_none/arch"]
    assert run["settings"]["partition"] == "0,1,2/3,4,5/6,7"
    run_dir = tmp_path / "il_first_order" / "seed_0"
    assert (run_dir / "genotype.json").is_file()
    assert len(json.loads((run_dir / "run.json").read_text())["settings"]["learners"]) == 3
    for png in (run_dir / "alpha.png", tmp_path / "il_first_order.png", tmp_path / "summary.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    # A rerun resumes from runs.jsonl: the finished run is not repeated.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    assert "epoch 1/1" not in again.stdout
    # --summarize_only: the table of the finished runs asked for; a missing one is not run.
    summary = [*cmd[:5], "--summarize_only", "--variants=il_first_order", "--seeds=0,1"]
    only = subprocess.run(summary, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert only.returncode == 0, only.stderr[-3000:]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "il_first_order" / "seed_1").exists()
    table = (tmp_path / "table.md").read_text()
    assert "--summarize_only" in table and "| il_first_order | argmax | 1 |" in table
    assert "darts_2nd_aux_skip" not in table
    summary[-1] = "--seeds=5"
    none = subprocess.run(summary, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert none.returncode != 0 and "no finished run of variants" in none.stderr


def test_nb201_bench_rejects_a_bad_partition(tmp_path):
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "benchmarks" / "nb201_study.py"),
        f"--workdir={tmp_path}",
        "--partition=0,1/1,2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode != 0
    assert "classes [1] are in more than one learner" in proc.stderr


def test_nb201_bench_refuses_a_workdir_another_study_holds(tmp_path):
    from il_tf.rundir import locked

    (tmp_path / "runs.jsonl").write_text("")
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "benchmarks" / "nb201_study.py"),
        f"--workdir={tmp_path}",
        "--summarize_only",
    ]
    with locked(tmp_path, read_only_ok=False):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode != 0
    assert f"{tmp_path} is in use by another run (pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr
