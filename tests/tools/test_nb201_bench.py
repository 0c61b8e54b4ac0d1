"""tools/nb201_bench.py end to end on one tiny variant."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import PROJECT_ROOT


def test_nb201_bench_tiny(tmp_path, cifar10_folder, nb201_table_path):
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "tools" / "nb201_bench.py"),
        f"--data_root={cifar10_folder}",
        f"--table={nb201_table_path}",
        f"--workdir={tmp_path}",
        "--variants=il_first_order",
        "--seeds=0",
        "--epochs=1",
        "--iterations_per_epoch=1",
        "--channels=4",
        "--batch_size=8",
        "--val_fraction=0.98",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"].endswith("--val_fraction=0.98")
    (run,) = results["runs"]
    assert run["variant"] == "il_first_order" and 0 < run["cifar10_test"] <= 100
    table = (tmp_path / "table.md").read_text()
    assert "il_first_order (this run)" in table and "DrNAS (published)" in table
    assert (tmp_path / "il_first_order" / "seed_0" / "genotype.json").is_file()
