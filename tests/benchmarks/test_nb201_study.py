"""benchmarks/nb201_study.py end to end on tiny variants, and its report from a ledger."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from ..conftest import PROJECT_ROOT

STUDY = str(PROJECT_ROOT / "benchmarks" / "nb201_study.py")
TINY = [
    "--seeds=0",
    "--epochs=1",
    "--iterations_per_epoch=1",
    "--channels=4",
    "--batch_size=8",
    "--val_fraction=0.98",
]


def _run(cmd):
    return subprocess.run(
        [sys.executable, *cmd], capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT
    )


@pytest.mark.slow
def test_nb201_study_tiny(tmp_path, cifar10_folder, nb201_table_path):
    work = tmp_path / "work"
    cmd = [
        STUDY,
        f"--data_root={cifar10_folder}",
        f"--table={nb201_table_path}",
        f"--workdir={work}",
        # The remedy first: its gin setting must not leak into the next run.
        "--variants=darts_2nd_aux_skip,il_first_order",
        *TINY,
        "--partition=0,1,2/3,4,5/6,7",
    ]
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert results["command"].endswith("--partition=0,1,2/3,4,5/6,7")
    aux, run = results["runs"]
    assert run["variant"] == "il_first_order" and 0 < run["argmax"]["cifar10_test"] <= 100
    assert "none" not in run["exclude_none"]["arch"]
    assert aux["settings"]["aux_skip"] == {"start": 1.0}
    assert run["settings"]["aux_skip"] == {"start": 0.0}
    assert run["settings"]["beta_decay"]["weight"] == 0.0
    # The same seed starts both variants from the same supernet and α.
    assert len(run["init_digest"]) == 16 and aux["init_digest"] == run["init_digest"]
    assert run["partition"] == "0,1,2/3,4,5/6,7"
    assert run["setting"]["learners"] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert aux["setting"]["learners"] == [list(range(10))]
    assert run["commit"] is None or len(run["commit"].removesuffix("-dirty")) == 40
    (epoch,) = run["epochs"]
    assert epoch["epoch"] == 1 and 0 < epoch["entropy"] <= math.log(5) + 1e-6
    assert sum(epoch["mass"].values()) == pytest.approx(1.0, abs=1e-4)
    assert epoch["argmax"]["arch"] == run["argmax"]["arch"]
    assert run["seconds"] > 0 and run["cpu_seconds"] > 0
    aux_dir = work / "darts_2nd_aux_skip" / "seed_0"
    assert json.loads((aux_dir / "run.json").read_text())["settings"]["aux_skip"] == {"start": 1.0}
    (record,) = [json.loads(line) for line in (aux_dir / "metrics.jsonl").open()]
    assert record["aux_skip"] == 1.0  # one iteration: it ran at the start value
    table = (work / "table.md").read_text()
    assert "| il_first_order | argmax | 1 |" in table and "DrNAS (published)" in table
    assert "| il_first_order | exclude_none | 1 |" in table
    assert "| darts_2nd_aux_skip − il_first_order | argmax | 1 |" in table
    assert "| random search, 100 look-ups (expected) |" in table
    run_dir = work / "il_first_order" / "seed_0"
    assert (run_dir / "genotype.json").is_file()
    assert len(json.loads((run_dir / "run.json").read_text())["settings"]["learners"]) == 3
    for png in (run_dir / "alpha.png", work / "il_first_order.png", work / "summary.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    # A rerun resumes from the ledger: the finished runs are not repeated.
    again = _run(cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len((work / "runs.jsonl").read_text().splitlines()) == 2
    assert "epoch 1/1" not in again.stdout
    # Another workdir with the same ledger (a study moved to another machine): nothing runs.
    moved = tmp_path / "moved"
    elsewhere = _run([*cmd, f"--workdir={moved}", f"--ledger={work / 'runs.jsonl'}"])
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert "epoch 1/1" not in elsewhere.stdout and not (moved / "il_first_order").exists()
    assert (
        "| darts_2nd_aux_skip − il_first_order | argmax | 1 |" in (moved / "table.md").read_text()
    )
    # --summarize_only: the table of the finished runs asked for; a missing one is not run.
    summary = [*cmd[:4], "--summarize_only", "--variants=il_first_order", *TINY[1:],
               "--partition=0,1,2/3,4,5/6,7"]  # fmt: skip
    only = _run([*summary, "--seeds=0,1"])
    assert only.returncode == 0, only.stderr[-3000:]
    assert len((work / "runs.jsonl").read_text().splitlines()) == 2
    assert not (work / "il_first_order" / "seed_1").exists()
    table = (work / "table.md").read_text()
    assert "--summarize_only" in table and "| il_first_order | argmax | 1 |" in table
    assert "darts_2nd_aux_skip" not in table
    calib = _run([*cmd[:4], "--report=calibration", "--variants=il_first_order", "--seeds=0"])
    assert calib.returncode == 0, calib.stderr[-3000:]
    assert "| il_first_order | 0.003 | 1 × 1 | 1 |" in (work / "calibration.md").read_text()
    # Another seed, or another setting (here the arch lr), is not in the ledger.
    for flag in ("--seeds=5", "--arch_lr=0.01"):
        none = _run([*summary, flag])
        assert none.returncode != 0 and "no finished run of variants" in none.stderr


@pytest.mark.slow
def test_nb201_study_own_regime(tmp_path, cifar10_folder, nb201_table_path):
    """A tenth of the images per learner; DARTS learns exactly the first IL learner's data."""
    cmd = [
        STUDY,
        f"--data_root={cifar10_folder}",
        f"--table={nb201_table_path}",
        f"--workdir={tmp_path}",
        "--variants=darts_1st,il_first_order",
        *TINY,
        "--val_fraction=0.5",
        "--partition=random:1",
        "--train_fraction=0.1",
        "--darts_data=first_learner",
    ]
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    darts, il = (json.loads(line) for line in (tmp_path / "runs.jsonl").open())
    assert il["setting"]["learners"] == [[0, 1, 4, 7, 8], [2, 3, 5, 6, 9]]
    assert darts["setting"]["learners"] == [[0, 1, 4, 7, 8]]
    assert darts["setting"]["train_fraction"] == 0.1 and darts["partition"] == "random:1"
    assert darts["init_digest"] == il["init_digest"]

    def settings(variant):
        return json.loads((tmp_path / variant / "seed_0" / "run.json").read_text())["settings"]

    d, i = settings("darts_1st"), settings("il_first_order")
    assert d["learners"] == i["learners"][:1]
    assert "0.1 of each class's train images (seed 0)" in d["learners"][0]["source"]
    # 5 classes × 500 kept images, half held out for validation.
    name = d["learners"][0]["name"]
    assert d["data"]["learners"][name] == i["data"]["learners"][name]
    assert d["data"]["learners"][name]["num_train"] + d["data"]["learners"][name]["num_val"] == 2500


def _ledger_row(variant, seed, c10, learners):
    setting = {"epochs": 4, "iterations_per_epoch": 25, "image_size": 16, "channels": 8,
               "cells_per_stage": 1, "batch_size": 32, "val_fraction": 0.5, "arch_lr": 0.003,
               "train_fraction": 1.0, "learners": learners}  # fmt: skip
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    rule = {"arch": arch, "cifar10_test": c10, "cifar100_test": 70.0, "imagenet16_test": 40.0,
            "parameter_free": False, "skip_dominated": False, "disconnected": False}  # fmt: skip
    mass = dict.fromkeys(
        ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"), 0.2
    )
    epochs = [{"epoch": e, "entropy": 1.6 - 0.2 * e, "mass": mass,
               "argmax": {"arch": arch, "cifar10_test": c10},
               "exclude_none": {"arch": arch, "cifar10_test": c10}} for e in range(1, 5)]  # fmt: skip
    return {"variant": variant, "seed": seed, "partition": "0,1,2,3,4/5,6,7,8,9",
            "setting": setting, "argmax": rule, "exclude_none": rule, "epochs": epochs,
            "seconds": 10.0, "cpu_seconds": 20.0, "commit": None, "init_digest": "x"}  # fmt: skip


def test_nb201_study_reports_from_a_ledger_alone(tmp_path):
    """A committed ledger is enough for the report: no workdir of any run, no data."""
    halves = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    rows = [_ledger_row("darts_2nd", s, 90.0 + s, [list(range(10))]) for s in range(3)]
    rows += [_ledger_row("il_chain_finite_difference", s, 91.0 + 2 * s, halves) for s in range(3)]
    rows.append(_ledger_row("il_first_order", 0, 93.0, [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]))
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [STUDY, f"--workdir={tmp_path / 'w'}", f"--ledger={ledger}", "--summarize_only",
           "--table=/nonexistent", "--seeds=0,1,2",
           "--variants=darts_2nd,il_chain_finite_difference,il_first_order"]  # fmt: skip
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "w" / "table.md").read_text()
    # Differences −1, −2, −3: paired t p by hand = 2·t.sf(2·√3, 2); Wilcoxon exact 2/8.
    assert "| darts_2nd − il_chain_finite_difference | argmax | 3 | -1.00, -2.00, -3.00 |" in table
    assert "| 0.0742 | 0.25 |" in table
    # il_first_order's run has another pairing of the classes: not this setting's.
    assert "| il_first_order |" not in table and "− il_first_order" not in table
    for png in ("summary.png", "darts_2nd.png", "il_chain_finite_difference.png"):
        assert (tmp_path / "w" / png).read_bytes()[:4] == b"\x89PNG"
    ledger.write_text(json.dumps({"variant": "darts_2nd", "seed": 0}) + "\n")
    old = _run(cmd)
    assert old.returncode != 0 and "has no 'setting'" in old.stderr


@pytest.mark.slow
def test_nb201_study_rejects_bad_flags(tmp_path):
    for flag, msg in [
        ("--partition=0,1/1,2", "classes [1] are in more than one learner"),
        ("--partition=random:x", "the seed after 'random:' must be an int >= 0"),
        ("--train_fraction=0", "--train_fraction=0.0: must be in (0, 1]"),
    ]:
        proc = _run([STUDY, f"--workdir={tmp_path}", flag])
        assert proc.returncode != 0
        assert msg in proc.stderr


@pytest.mark.slow
def test_nb201_study_refuses_a_workdir_another_study_holds(tmp_path):
    from il_tf.rundir import locked

    (tmp_path / "runs.jsonl").write_text("")
    cmd = [STUDY, f"--workdir={tmp_path}", "--summarize_only"]
    with locked(tmp_path, read_only_ok=False):
        proc = _run(cmd)
    assert proc.returncode != 0
    assert f"{tmp_path} is in use by another run (pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr
