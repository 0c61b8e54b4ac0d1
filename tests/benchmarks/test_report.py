"""benchmarks/report.py: the caption names date, machine, code and command; both files are written."""

from __future__ import annotations

import json
import platform

from benchmarks import report


def test_the_caption_names_when_where_which_code_and_the_command():
    info = report.machine()
    assert info["machine"] == platform.machine() and info["cpus"] >= 1
    assert len(info["date"]) == 10 and info["tensorflow"][0].isdigit()
    text = report.caption(info, "python benchmarks/x.py --a=1")
    assert text.startswith(f"Measured {info['date']} on {info['machine']}, {info['cpus']} CPUs")
    assert f"TensorFlow {info['tensorflow']}, commit {info['commit']}" in text
    assert text.endswith(": `python benchmarks/x.py --a=1`")


def test_write_gives_the_records_and_the_captioned_table(tmp_path):
    info = {**report.machine(), "date": "2026-01-02", "commit": "abc1234"}
    table = report.markdown_table(["name", "ms"], [["a", 1.5], ["b", 2]], right=1)
    assert table.splitlines()[1] == "|---|---:|"
    report.write(str(tmp_path / "r.json"), str(tmp_path / "r.md"), info, "cmd", [{"a": 1}], table)
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["records"] == [{"a": 1}] and document["command"] == "cmd"
    assert document["commit"] == "abc1234"
    caption, blank, *rows = (tmp_path / "r.md").read_text().splitlines()
    assert "2026-01-02" in caption and "commit abc1234" in caption and blank == ""
    assert rows[2] == "| a | 1.5 |"
