"""Files of a training work directory: the run record, results, checkpoint locations.

::

    WORKDIR/run.json          what the run is (genotype, network, training and data settings);
                              written at the start, a restarted run must match it
    WORKDIR/config.gin        the gin configuration of the latest start (for the record)
    WORKDIR/checkpoints/      the last checkpoints (model, optimizer, step): a run started
                              again on the same WORKDIR continues from the newest one
    WORKDIR/best/             weights with the best evaluation top-1 so far (+ best.json)
    WORKDIR/tensorboard/      train and eval scalars (``tensorboard --logdir WORKDIR``)
    WORKDIR/results.json      test top-1 / top-5, parameters, multiply-adds, genotype, epochs,
                              the command

Every JSON file is written to a temporary file and renamed, so an interrupted write leaves
the previous version; nothing is written before the settings are checked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from il_tf import distribute

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.gin"
LAST_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"
TENSORBOARD_DIR = "tensorboard"
RUN_FORMAT = "il_tf.train_run/v1"


def write_json_atomically(path: Path, record: Mapping[str, Any]) -> None:
    """Writes ``record`` as JSON to ``path`` via a temporary file and a rename."""
    text = json.dumps(record, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; ValueError naming ``what`` when missing or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return record


def read_run_record(workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``run.json`` of a training work directory (ValueError when there is none)."""
    path = Path(workdir) / RUN_FILE
    if not path.is_file():
        raise ValueError(
            f"{workdir} is not a training work directory: {path} is missing "
            f"(tools/train.py writes it)"
        )
    record = read_json(path, "run record")
    if record.get("format") != RUN_FORMAT:
        raise ValueError(
            f"{path}: unknown run record format {record.get('format')!r}, expected {RUN_FORMAT!r}"
        )
    return record


def check_restart(
    workdir: Path, new: Mapping[str, Any], free_train_settings: Sequence[str]
) -> None:
    """Raises ValueError naming every setting in which ``new`` differs from the stored run.

    ``free_train_settings`` may differ (they do not change what is computed).
    """
    old = read_run_record(workdir)
    new = json.loads(json.dumps(new))  # tuples -> lists, as stored
    differences = []
    for section in ("genotype", "network", "data", "train"):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if section == "train" and key in free_train_settings:
                continue
            if before.get(key) != after.get(key):
                differences.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    if differences:
        raise ValueError(
            f"work directory {workdir} holds a different run; differing settings:\n  "
            + "\n  ".join(differences)
            + f"\nUse a new --workdir, or the settings stored in {workdir / RUN_FILE}. "
            "Nothing was changed."
        )


def write_dir(directory: Path) -> Path:
    """Where this worker writes checkpoints: ``directory`` on the chief, else a scratch one.

    Under MultiWorkerMirroredStrategy every worker must take part in saving, but only the
    chief's files are kept (the others are deleted after each save, see :func:`cleanup`).
    """
    if distribute.is_chief():
        return directory
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    worker = f"{task.get('type')}_{task.get('index')}"
    return directory.parent / ".workers" / worker / directory.name


def cleanup(directory: str | os.PathLike[str]) -> None:
    """Deletes a non-chief worker's scratch checkpoint directory."""
    if not distribute.is_chief():
        shutil.rmtree(directory, ignore_errors=True)
