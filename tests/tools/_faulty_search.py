"""Runs tools/search.py with a fault injected; used by test_search_faults.py.

    python tests/tools/_faulty_search.py FAULT [tools/search.py flags ...]

FAULT is ``none``, ``kill_at_checkpoint:N`` (SIGKILL while checkpoint N is being
written: its files are on disk, the ``checkpoint`` file does not point to it yet) or
``kill_in_write:NAME:K`` (SIGKILL during the K-th write of a file called NAME: its
temporary file is written, the rename that publishes it has not happened).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "search.py"


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, *args = fault.split(":")
    if kind == "none":
        return
    if kind == "kill_at_checkpoint":
        from tensorflow.python.lib.io import file_io

        target = f'model_checkpoint_path: "ckpt-{int(args[0])}"'
        atomic_write = file_io.atomic_write_string_to_file

        def write(filename, contents, overwrite=True):
            if os.path.basename(filename) == "checkpoint" and target in contents:
                _die()
            return atomic_write(filename, contents, overwrite)

        file_io.atomic_write_string_to_file = write
        return
    if kind == "kill_in_write":
        name, count = args[0], int(args[1])
        seen = [0]
        replace = os.replace

        def replace_or_die(src, dst, **kwargs):
            if os.path.basename(os.fspath(dst)) == name:
                seen[0] += 1
                if seen[0] == count:
                    _die()
            return replace(src, dst, **kwargs)

        os.replace = replace_or_die
        return
    raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = [str(TOOL), *sys.argv[2:]]
    runpy.run_path(str(TOOL), run_name="__main__")
