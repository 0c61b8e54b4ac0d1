r"""Times the README's commands end to end: the quick start's search and the default test run.

    python benchmarks/end_to_end.py --commands=quickstart,tests --json=PATH --markdown=PATH

Each command runs from the repository root in its own process, exactly as the README gives
it (the quick start in a fresh temporary workdir), one after the other. Each prints one
JSON line: wall seconds, CPU seconds (which other jobs inflate less), the peak resident
memory of the command's largest process, the exit status, and what the command itself
reports: the quick start's first iteration (compiling the step functions included) and
the genotype it found; the test run's summary line. --json=PATH also writes the lines to a file, --markdown=PATH the table of
docs/benchmarks.md, captioned with the date, machine and commit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

#: The README's commands (after the install), as a user types them.
COMMANDS = {
    "quickstart": "python tools/search.py --gin_file=gin_configs/quickstart.gin "
    "--workdir={workdir}/quickstart",
    "tests": "python -m pytest -q",
}

FLAGS = flags.FLAGS
flags.DEFINE_list("commands", ["quickstart"], f"some of {list(COMMANDS)}")
flags.DEFINE_string("json", None, "also write the records (and the machine) to this file")
flags.DEFINE_string("markdown", None, "also write the captioned Markdown table to this file")


def run(name: str, workdir: str) -> dict:
    """Runs one README command and returns what it took and what it printed."""
    text = COMMANDS[name].format(workdir=workdir)
    argv = [sys.executable, *text.split()[1:]]
    env = {**os.environ, "PYTHONPATH": str(report.REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=report.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read()
    # wait4: this command's own usage (its largest process, the test run's workers
    # included), not the maximum over every command run so far.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    seconds = time.perf_counter() - started
    peak_kb = usage.ru_maxrss  # kB on Linux
    record = {
        "command": text.replace(workdir, "WORKDIR"),
        "name": name,
        "exit": proc.returncode,
        "seconds": round(seconds, 1),
        # User + system CPU time of the command and its children.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(peak_kb / 1024),
    }
    if name == "quickstart":
        first = re.search(r"first iteration in ([0-9.]+) s", out)
        record["first_iteration_s"] = float(first.group(1)) if first else None
        # "genotype: <cell>" after every epoch; the last such line is the file's path.
        cells = [c for c in re.findall(r"^genotype: (.*)$", out, re.M) if not c.endswith(".json")]
        record["genotype"] = cells[-1] if cells else None
    if name == "tests":
        summary = [line for line in out.splitlines() if re.search(r" in [0-9.]+s", line)]
        record["summary"] = summary[-1].strip("= ") if summary else None
        # The failing tests by name (pytest's short summary), so a record says what failed.
        record["failed"] = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    if proc.returncode:
        record["tail"] = out.strip().splitlines()[-5:]
    return record


def markdown(records: list[dict]) -> str:
    """The table of docs/benchmarks.md: one row per command."""
    rows = []
    for r in records:
        said = r.get("summary") or (
            f"first iteration {r['first_iteration_s']} s" if r.get("first_iteration_s") else ""
        )
        rows.append(
            [
                f"`{r['command']}`",
                said,
                r["exit"],
                f"{r['seconds']:.1f}",
                f"{r['cpu_seconds']:.1f}",
                r["peak_rss_mb"],
            ]
        )
    header = ["command", "it reported", "exit", "end to end s", "CPU s", "peak RSS MB"]
    return report.markdown_table(header, rows, right=4)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [c for c in FLAGS.commands if c not in COMMANDS]
    if unknown or not FLAGS.commands:
        raise app.UsageError(f"--commands={FLAGS.commands}: some of {list(COMMANDS)} allowed")
    info, command, records = report.machine(), report.command_line(), []
    with tempfile.TemporaryDirectory(prefix="il_tf_end_to_end_") as workdir:
        for name in FLAGS.commands:
            record = run(name, workdir)
            print(json.dumps(record), flush=True)
            records.append(record)
            report.write(FLAGS.json, FLAGS.markdown, info, command, records, markdown(records))
    if any(r["exit"] for r in records):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
