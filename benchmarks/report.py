"""What every benchmark writes: its records as JSON and its table as Markdown, captioned.

The caption names when and where the figures were measured (date, machine architecture,
CPU count, memory, TensorFlow version, commit) and the command that produced them, so a
table pasted into docs/benchmarks.md says by itself where it comes from.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


#: What the measured code is made of: edits elsewhere (the docs) do not change a figure.
CODE = ("il_tf", "benchmarks", "tools", "gin_configs", "setup.cfg", "pyproject.toml")


def _commit() -> str:
    """The repository's short commit, with "+changes" when the code differs from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", *CODE) else "")


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 2**20, 1)  # MemTotal, kB
    except (OSError, ValueError, IndexError):
        return None


def _tensorflow() -> str:
    for name in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def machine() -> dict:
    """Where and when: date (UTC), ``uname -m``, CPUs, memory, TensorFlow, commit, and
    the load average when the run started (other jobs on the machine slow every figure)."""
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "tensorflow": _tensorflow(),
        "commit": _commit(),
        "load": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
    }


def command_line() -> str:
    """This process's command, as typed from the repository root, without the output
    flags (--json, --markdown): where the results go does not change them."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    args = [a for a in sys.argv[1:] if not a.startswith(("--json=", "--markdown="))]
    return shlex.join(["python", script, *args])


def caption(info: dict, command: str) -> str:
    """One line: when, on what, with which code, by which command."""
    memory = f", {info['memory_gb']:g} GB" if info.get("memory_gb") else ""
    load = ""
    if info.get("load") is not None:
        end = info.get("load_end", info["load"])
        load = f" (load average {info['load']:g} at the start, {end:g} at the end)"
    return (
        f"Measured {info['date']} on {info['machine']}, {info['cpus']} CPUs{memory}{load}, "
        f"TensorFlow {info['tensorflow']}, commit {info['commit']}: `{command}`"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], right: int = 0) -> str:
    """A Markdown table; the last ``right`` columns are right-aligned (numbers)."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(
    json_path: str | None,
    markdown_path: str | None,
    info: dict,
    command: str,
    records: list[dict],
    table: str,
) -> None:
    """Writes the records (with machine and command) and the captioned table, if asked.

    Called after every record, so an interrupted run keeps what it measured.
    """
    if hasattr(os, "getloadavg"):
        info = {**info, "load_end": round(os.getloadavg()[0], 1)}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        document = {**info, "command": command, "records": records}
        Path(json_path).write_text(json.dumps(document, indent=1) + "\n")
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(f"{caption(info, command)}\n\n{table}")
