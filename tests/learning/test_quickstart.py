"""The quick start shows a search learning: α leaves uniform and the derived cell settles.

Run on a finished workdir, this file prints the figures the test checks:

    python tests/learning/test_quickstart.py WORKDIR
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from il_tf.learning import plots
from il_tf.spaces.genotypes import Genotype, load_genotype

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What "α moved" means: some edge's strongest op holds at least this share of its
# softmax (uniform over the 8 DARTS ops is 1/8 = 0.125).
MOVED_SHARE = 0.2


def learning_figures(workdir: str | Path) -> dict:
    """From ``genotypes/epoch_*.json``: how far the final α left uniform, how long the cell held.

    ``strongest_share``: per architecture tensor, each edge's largest softmax weight
    after the last epoch; ``epochs_stable``: how many of the last epochs (counting
    the last) derived the final genotype.
    """
    records = plots.read_history(workdir)
    if not records:
        raise FileNotFoundError(f"no genotypes/epoch_*.json in {workdir}")
    final = records[-1]
    _, alphas = plots.alpha_history(records)
    shares = {name: a[-1].max(axis=-1) for name, a in alphas.items()}
    stable = 0
    for record in reversed(records):
        if record["genotype"] != final["genotype"]:
            break
        stable += 1
    return {
        "epochs": len(records),
        "strongest_share": shares,
        "epochs_stable": stable,
        "genotype": final["genotype"],
    }


def describe(figures: dict) -> str:
    """The figures in a few lines."""
    lines = [f"epochs: {figures['epochs']}"]
    for name, shares in figures["strongest_share"].items():
        lines.append(
            f"alpha {name}: strongest op's softmax max {shares.max():.3f}, median "
            f"{np.median(shares):.3f}, {int((shares >= MOVED_SHARE).sum())} of {len(shares)} "
            f"edges >= {MOVED_SHARE}"
        )
    lines.append(f"genotype unchanged over the last {figures['epochs_stable']} epoch(s)")
    return "\n".join(lines)


def test_learning_figures_of_a_history(tmp_path):
    history = tmp_path / "genotypes"
    history.mkdir()
    cells = [{"normal": [["sep_conv_3x3", 0]]}, {"normal": [["skip_connect", 1]]}]
    for epoch, (logit, genotype) in enumerate([(0.0, cells[0]), (1.0, cells[1]), (2.0, cells[1])]):
        alpha = np.zeros((2, 8))
        alpha[0, 3] = logit
        record = {"genotype": genotype, "epoch": epoch + 1, "alpha": {"normal": alpha.tolist()}}
        (history / f"epoch_{epoch + 1:03d}.json").write_text(json.dumps(record))
    figures = learning_figures(tmp_path)
    np.testing.assert_allclose(
        figures["strongest_share"]["normal"], [np.exp(2) / (np.exp(2) + 7), 1 / 8]
    )
    assert figures["epochs_stable"] == 2 and figures["epochs"] == 3
    assert "1 of 2 edges >= 0.2" in describe(figures)


@pytest.mark.slow
def test_quickstart_alpha_moves_and_the_cell_settles(tmp_path):
    # The quick start exactly as the README runs it.
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tools" / "search.py"),
            "--gin_file=gin_configs/quickstart.gin",
            f"--workdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert isinstance(load_genotype(tmp_path / "genotype.json"), Genotype)
    figures = learning_figures(tmp_path)
    summary = describe(figures)
    assert all(s.max() >= MOVED_SHARE for s in figures["strongest_share"].values()), summary
    assert figures["epochs_stable"] >= 2, summary


if __name__ == "__main__":
    print(describe(learning_figures(sys.argv[1])))
