"""Run directories: the one place that reads and writes a run's own record files.

Search, progressive search, training and tuning each run in a directory (``--workdir``,
tuning's ``--project_dir``); export writes next to a training run. Whatever tool made
it, the files this module owns mean the same thing:

================  ==========================================================================
``run.json``      the run: ``kind`` (``search``, ``progressive_search``, ``train``,
                  ``tune``), ``settings`` (every setting of the FIRST start, what a
                  restart is compared with) and ``starts``: one entry per start that did
                  work (time, host, pid, command, and the settings it changed, old -> new).
                  Written when a start is about to do its first step, never before.
``config.gin``    the gin configuration of the first start (files and bindings, as
                  parsed), for rerunning the run; a later start whose gin text differs
                  from the one before writes ``config.<n>.gin`` (n = its number in
                  ``starts``, from 1; its entry there names the file).
``.lock``         the lock of the run using the directory: the holder keeps an OS lock
                  (``fcntl.flock``) on it and writes its host, pid and start time into it.
                  A dead process holds no lock; the file then names the last holder.
================  ==========================================================================

The files the runs write themselves (``genotype.json``, ``metrics.jsonl``,
``results.json``, ``checkpoints/``, ...) are listed where they are written
(``il_tf/learning/search.py``, ``il_tf/learning/reporting.py``,
``il_tf/training/loop.py``, ``il_tf/tuning/tuner.py``) and in the README; every JSON
result goes through :func:`write_json` / :func:`write_text`.

Guarantees:

- **One run per directory.** :class:`RunDir` takes an exclusive lock before it writes
  anything; a second start on the same directory fails at once naming the holder. In a
  multi-worker run only the chief locks and writes; other workers write their throw-away
  files (checkpoints every worker must take part in) to :meth:`RunDir.scratch`, a
  temporary folder outside the directory that is removed when the run ends (or, when
  the worker was killed, by the next start of a worker on its host).
- **Restarts are checked.** :meth:`RunDir.check` compares every setting with the run's
  (the first start's, plus the changes later starts were allowed to make) and names each
  difference, old -> new. Settings a caller declares *free* may change (they do not change
  what is computed); *extendable* ones (epochs) may only grow, and only when the user
  asks for it (``--extend``).
- **Nothing is written for a start that fails before its first step.** Checks only read;
  :meth:`RunDir.begin` writes ``run.json`` and ``config.gin`` when the run is about to do
  real work. A start that fails before ``begin`` removes what it created (the lock file,
  the directory itself when it made it).
- **Files are whole and readable.** Writes go to a temporary file in the same folder,
  then ``os.replace``: a crash leaves the old file or the new one (the next start
  removes the temporary files, and TensorFlow's ``ckpt-N_temp`` folders, that a killed
  process left). Files get mode ``0666 & ~umask`` (as ``open`` would), not
  ``mkstemp``'s 0600, so a model server running as another user can read them.
- **Disk errors are one line.** Every ``OSError`` (and TensorFlow's I/O errors) on the
  directory becomes a :class:`RunDirError` naming the path and the cause; the tools print
  it as ``error: ...`` and exit 1.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from il_tf import legacy

RUN_FILE = "run.json"
CONFIG_FILE = "config.gin"
LOCK_FILE = ".lock"
# In a worker's scratch folder: the host and pid of the process that made it.
SCRATCH_OWNER_FILE = "owner.json"
FORMAT = "il_tf.run/v2"
KINDS = ("search", "progressive_search", "train", "tune")
_KIND_NAMES = {"progressive_search": "progressive search", "train": "training", "tune": "tuning"}
# Temporary files of write_text carry this mark (a start removes those a killed one left).
_TMP_MARK = "il_tf-"
# TensorFlow writes a checkpoint into DIR/ckpt-N_temp/ first (left behind by a kill).
_CHECKPOINT_TEMP = re.compile(r"^ckpt-\d+_temp$")


class RunDirError(ValueError):
    """A run directory cannot be used: in use, other settings, or not writable."""


# ------------------------------------------------------------------------------ errors
def _reason(error: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """The cause of an I/O error as one line (no TensorFlow op names, no paths twice)."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        name = error.filename
        # The file is named when it is not ``path`` itself or its temporary sibling.
        if name is not None and (
            path is None or Path(os.fsdecode(name)).parent != Path(path).parent
        ):
            reason = f"{reason} ({os.fsdecode(name)})"
    else:
        reason = getattr(error, "message", None) or str(error)
        # TensorFlow wraps the cause: "{{function_node ...}} PATH; CAUSE [Op:SaveV2]".
        reason = re.sub(r"\{\{[^}]*\}\}\s*", "", reason)
        reason = re.sub(r"\s*\[Op:[^\]]*\].*$", "", reason, flags=re.S)
        # ... where PATH is TensorFlow's temporary file: the cause is what matters.
        reason = re.sub(r"^/\S+; ", "", reason.strip())
    return " ".join(reason.split())


@contextlib.contextmanager
def io_errors(path: str | os.PathLike[str], action: str = "write") -> Iterator[None]:
    """Turns an ``OSError`` or TensorFlow I/O error inside the block into a RunDirError.

    The message reads ``cannot {action} {path}: {cause}``.
    """
    try:
        yield
    except RunDirError:
        raise
    except Exception as e:
        if not _is_io_error(e):
            raise
        raise RunDirError(f"cannot {action} {path}: {_reason(e, path)}") from e


def _is_io_error(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    # TensorFlow's errors (checkpoints, summaries); TensorFlow is not imported for them:
    # this module also serves code that never loads it (genotype files).
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(error, tf.errors.OpError)


# ------------------------------------------------------------------------------ writing files
def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` to ``path`` atomically, with mode ``0666 & ~umask``; returns the path.

    The text goes to a temporary file in the same folder (flushed to disk), which then
    replaces ``path``. Parent folders are created. Raises RunDirError on any I/O error,
    leaving ``path`` as it was.
    """
    path = Path(path)
    data = text.encode("utf-8")
    make_dirs(path.parent)
    with io_errors(path):
        while True:
            tmp = path.with_name(f".{path.name}.{_TMP_MARK}{secrets.token_hex(4)}.tmp")
            try:
                # 0o666: the kernel applies the umask, as for any new file.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def json_text(record: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``record`` as indented JSON text with a final newline (what :func:`write_json` writes)."""
    return json.dumps(record, indent=2, default=default) + "\n"


def write_json(
    path: str | os.PathLike[str], record: Any, default: Callable[[Any], Any] | None = None
) -> Path:
    """Writes ``record`` as JSON to ``path`` atomically (see :func:`write_text`).

    The record is serialized first, so an unserializable value fails before the disk
    is touched.
    """
    return write_text(path, json_text(record, default))


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Appends one line to ``path`` (flushed to disk); on failure the file is as before.

    A partial line (disk full mid-write) is cut off again, so the file never ends in
    half a record. Raises RunDirError on any I/O error.
    """
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with io_errors(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def remove_partial_files(root: str | os.PathLike[str]) -> list[Path]:
    """Removes what killed writes left under ``root``; returns the paths removed.

    The temporary files of :func:`write_text` and TensorFlow's ``ckpt-N_temp`` folders
    (the finished files were never touched: the rename that publishes a write is its
    last step). Only safe while no other process writes there: under the lock.
    """
    removed = []
    for path in sorted(Path(root).rglob("*")):
        name = path.name
        if path.is_file() and name.startswith(".") and f".{_TMP_MARK}" in name:
            if name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                removed.append(path)
        elif path.is_dir() and _CHECKPOINT_TEMP.match(name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A JSON object from ``path``; RunDirError naming ``what`` when missing or unreadable."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"cannot read {what} {path}: {_reason(e)}") from None
    if not isinstance(record, dict):
        raise RunDirError(f"{what} {path} is not a JSON object")
    return record


def make_dirs(path: str | os.PathLike[str]) -> Path | None:
    """Creates ``path`` and missing parents; returns the topmost folder created (or None).

    RunDirError when ``path`` or a parent is a file, or cannot be created.
    """
    path = Path(path)
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f"cannot create the directory {path}: "
                raise RunDirError(f"{where}{p} exists and is not a directory")
            break
        missing.append(p)
    with io_errors(path, "create the directory"):
        path.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def chmod_as_umask(path: str | os.PathLike[str]) -> None:
    """Gives a folder made by ``tempfile.mkdtemp`` (mode 0700) the mode a new folder gets."""
    umask = os.umask(0)
    os.umask(umask)
    with io_errors(path, "set the mode of"):
        os.chmod(path, 0o777 & ~umask)


# ------------------------------------------------------------------------------ settings
def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"dotted.name": value}`` (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _unflatten_into(settings: dict[str, Any], name: str, value: Any) -> None:
    *parents, last = name.split(".")
    node = settings
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=repr))


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def default_command() -> str:
    """This process's command line, as a shell would take it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv = ["python", *argv]
    return shlex.join(argv)


# ------------------------------------------------------------------------------ the lock
class _Lock:
    """An exclusive ``flock`` on ``DIR/.lock`` that names its holder in the file."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self.fd: int | None = None
        self.created = False

    def acquire(self, create: bool = True) -> list[Path]:
        """Locks the directory, creating it first when ``create``; returns the folders created.

        Nothing is ever removed here: a start that loses the race leaves the winner's
        directory as it found it.
        """
        created: list[Path] = []
        with io_errors(self.path, "create the lock file"):
            for _ in range(10):
                # exist_ok: a start that created the directory owns nothing more than one
                # that found it; only the lock decides which start may use (or remove) it.
                top = make_dirs(self.path.parent) if create else None
                if top is not None:
                    created.append(top)
                existed = self.path.exists()
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                except FileNotFoundError:
                    if not create:
                        raise
                    continue  # the directory was removed by a start that failed: again
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RunDirError(self._in_use_message()) from None
                except BaseException:
                    os.close(fd)
                    raise
                # The file may have been removed (by a start that failed) between our
                # open and our lock: then the lock guards nothing; take it again.
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self.fd, self.created = fd, not existed
                    break
                os.close(fd)
            else:
                raise RunDirError(f"cannot lock {self.path}: it keeps being replaced")
            holder = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": _now(),
                "command": default_command(),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return created

    def _in_use_message(self) -> str:
        directory = self.path.parent
        try:
            holder = json.loads(self.path.read_text())
            who = f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "a process that is just starting"
        return (
            f"{directory} is in use by another run ({who}); wait for it to end, stop it, "
            "or use another directory"
        )

    def release(self, undo: bool = False, remove_folders: Sequence[Path] = ()) -> None:
        """Releases the lock; with ``undo``, first removes what this start made, still locked.

        ``undo`` removes the lock file when this start created it, and then the folders of
        ``remove_folders`` (those this start created) that are empty (``rmdir`` refuses a
        folder another start has written to meanwhile: nothing of another run is deleted).
        """
        if self.fd is None:
            return
        if undo:
            if self.created:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            for folder in [self.path.parent, *self.path.parent.parents]:
                if not any(folder == f or f in folder.parents for f in remove_folders):
                    break
                try:
                    folder.rmdir()  # only if empty
                except OSError:
                    break
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None


@contextlib.contextmanager
def locked(directory: str | os.PathLike[str], read_only_ok: bool = True) -> Iterator[bool]:
    """Holds the lock of an existing run directory while the block reads it.

    For tools that read a run (export): a run still writing the directory makes this
    fail at once, naming it. When ``read_only_ok`` and the directory is read-only to this
    process (no lock file can be made), the block runs without the lock (yields False).
    """
    lock = _Lock(Path(directory))
    try:
        lock.acquire(create=False)
    except RunDirError as e:
        cause = e.__cause__
        if not (read_only_ok and isinstance(cause, OSError) and cause.errno in _READ_ONLY):
            raise
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


# ------------------------------------------------------------------------------ the run
class RunDir:
    """One start of a run in its directory: lock, restart check, record, scratch space.

    Use as a context manager around the whole start::

        with RunDir(workdir, "train") as run:
            run.check(settings, free=[...], extendable=["train.epochs"], extend=extend)
            ...                                  # build, restore: read only
            run.begin(config_text)                # run.json, config.gin
            ...                                  # the steps

    Entering creates the directory when needed and takes the lock (the chief only);
    leaving releases it and removes the scratch folder; leaving before :meth:`begin`
    with an error also removes what entering created.

    Args:
      path: the run directory.
      kind: one of ``KINDS``; a directory of another kind is refused.
      chief: whether this process writes the directory (default:
        ``il_tf.distribute.is_chief()``). Other workers neither lock nor write.
      legacy_files: files of older il_tf versions that held ``{"fingerprint": settings}``
        in place of ``run.json`` (read when ``run.json`` is absent).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        kind: str,
        chief: bool | None = None,
        legacy_files: Sequence[str] = (),
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}; allowed: {list(KINDS)}")
        self.path = Path(path)
        self.kind = kind
        if chief is None:
            from il_tf import distribute

            chief = distribute.is_chief()
        self.chief = chief
        self.record: dict[str, Any] | None = None  # run.json as read at the start
        self.changed: dict[str, list[Any]] = {}
        self.begun = False
        self._settings: dict[str, Any] | None = None
        self._lock = _Lock(self.path)
        self._created: list[Path] = []
        self._scratch: Path | None = None
        self._legacy_files = tuple(legacy_files)

    # -- entering and leaving --------------------------------------------------------------
    def __enter__(self) -> RunDir:
        if self.chief:
            # Created and locked in one step; a refused start removes nothing.
            self._created = self._lock.acquire()
            try:
                self.record = self._read()
            except BaseException:
                self._lock.release(undo=True, remove_folders=self._created)
                raise
            return self
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory")
        self.record = self._read()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        failed_early = exc_type is not None and not self.begun
        # A start that fails before its first step leaves nothing behind: the lock file
        # and the folders it created, removed while it still holds the lock.
        self._lock.release(undo=failed_early, remove_folders=self._created)

    # -- the record ------------------------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        path = self.path / RUN_FILE
        if not path.is_file():
            path = next(
                (self.path / f for f in self._legacy_files if (self.path / f).is_file()), None
            )
            if path is None:
                return None
        # Records of earlier il_tf versions are read as this format (il_tf/legacy.py).
        record = legacy.upgrade_record(read_json(path, "run record"), self.kind, FORMAT)
        if record.get("format") != FORMAT:
            raise RunDirError(
                f"{path}: unknown run record format {record.get('format')!r}, expected {FORMAT!r}"
            )
        if record.get("kind") != self.kind:
            raise RunDirError(
                f"{self.path} holds a {record.get('kind')} run, not a {self.kind} run; "
                "use another directory"
            )
        return record

    def settings(self) -> dict[str, Any] | None:
        """The run's settings now: the first start's with later starts' changes (None: new)."""
        if self.record is None:
            return None
        settings = json.loads(json.dumps(self.record["settings"]))
        for start in self.record.get("starts", []):
            for name, (_, new) in start.get("changed", {}).items():
                _unflatten_into(settings, name, new)
        return settings

    @property
    def starts(self) -> int:
        """How many starts did work before this one."""
        return 0 if self.record is None else len(self.record.get("starts", []))

    def check(
        self,
        settings: Mapping[str, Any],
        free: Sequence[str] = (),
        extendable: Sequence[str] = (),
        extend: bool = False,
        extend_flag: str = "--extend",
        legacy_settings: Mapping[str, Any] | None = None,
    ) -> dict[str, list[Any]]:
        """Compares this start's ``settings`` with the run's; returns what changed.

        Raises RunDirError listing every setting (dotted name) that differs, old -> new,
        except those in ``free`` (they may change) and those in ``extendable`` that grow
        while ``extend`` is True. A new directory accepts any settings. Nothing is
        written. Returns ``{name: [old, new]}`` of the accepted changes (for ``run.json``).
        A directory of an older il_tf that recorded fewer settings (``{"fingerprint":
        ...}``) is compared with ``legacy_settings`` (default: ``settings``), in the
        settings both hold.
        """
        settings = jsonable(dict(settings))
        self._settings = settings
        old = self.settings()
        self.changed = {}
        if old is None:
            return {}
        legacy = self.record is not None and self.record.get("legacy")
        compared = jsonable(dict(legacy_settings)) if legacy and legacy_settings else settings
        before, after = flatten(old), flatten(compared)
        refused, not_extended, wrong_way = [], [], []
        for name in sorted(set(before) | set(after)):
            if legacy and (name not in before or name not in after):
                continue  # the first format recorded fewer settings
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            if name in free or any(name.startswith(f"{f}.") for f in free):
                self.changed[name] = [a, b]
            elif name in extendable:
                grows = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > a
                if not grows:
                    wrong_way.append(f"{name} {_short(a)} -> {_short(b)}")
                elif not extend:
                    not_extended.append(f"{name} {_short(a)} -> {_short(b)}")
                else:
                    self.changed[name] = [a, b]
            else:
                refused.append(f"{name} {_short(a)} -> {_short(b)}")
        own = self.path / (CONFIG_FILE if (self.path / CONFIG_FILE).is_file() else RUN_FILE)
        if refused or wrong_way:
            fixes = [f"resume it with its own settings ({own})"]
            if wrong_way:
                fixes.append(f"{', '.join(n.split()[0] for n in wrong_way)} can only grow")
            raise RunDirError(
                f"{self.path} holds a {self.kind} run with other settings: "
                f"{'; '.join(refused + wrong_way + not_extended)}. Nothing was changed; "
                f"{', or '.join(fixes)}, or use a new directory"
            )
        if not_extended:
            raise RunDirError(
                f"{self.path} holds a {self.kind} run with other settings: "
                f"{'; '.join(not_extended)}. Nothing was changed; to extend the run pass "
                f"{extend_flag}, or resume it with its own settings ({own}), or use a new directory"
            )
        return dict(self.changed)

    def begin(self, config_text: str | None = None, command: str | None = None) -> None:
        """Records this start (``run.json``, ``config.gin``): the run is about to do work.

        Call after :meth:`check` and everything else that may fail on bad input.
        Writes nothing on workers other than the chief.
        """
        if self._settings is None:
            raise RuntimeError("RunDir.begin() needs check() first")
        self.begun = True
        if not self.chief:
            return
        with io_errors(self.path, "clean up"):
            remove_partial_files(self.path)
        record = self.record
        if record is None or record.get("legacy"):
            record = {"format": FORMAT, "kind": self.kind, "settings": self._settings, "starts": []}
            if self.record is not None:
                record["note"] = "started by an older il_tf, which kept no history of its starts"
        record = {**record, "starts": list(record.get("starts", []))}
        number = len(record["starts"]) + 1
        start: dict[str, Any] = {
            "start": number,
            "time": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": command or default_command(),
            "changed": self.changed,
        }
        config_file = None
        if config_text:
            # Compared with the gin text of the latest start that recorded one.
            latest = self.path / next(
                (s["config"] for s in reversed(record["starts"]) if "config" in s), CONFIG_FILE
            )
            with io_errors(latest, "read"):
                previous = latest.read_text(encoding="utf-8") if latest.is_file() else None
            if not (self.path / CONFIG_FILE).exists():
                config_file = self.path / CONFIG_FILE
            elif previous != config_text:
                config_file = self.path / f"config.{number}.gin"
            if config_file is not None:
                write_text(config_file, config_text)
                start["config"] = config_file.name
        record["starts"].append(start)
        write_json(self.path / RUN_FILE, record)
        self.record = record

    def clear(self) -> None:
        """Deletes everything in the directory but the lock: the run starts anew (chief only)."""
        if not self.chief:
            return
        with io_errors(self.path, "clear"):
            for entry in self.path.iterdir():
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.record = None

    # -- where to write --------------------------------------------------------------------
    def scratch(self, name: str) -> Path:
        """Where this process writes ``name``: ``DIR/name`` on the chief, else a temporary
        folder outside ``DIR`` that is removed when the run ends (multi-worker runs: every
        worker takes part in saving a checkpoint, only the chief's is kept). The folder of
        a killed worker is removed by the next worker that makes one on the same host."""
        if self.chief:
            return self.path / name
        if self._scratch is None:
            remove_dead_scratch()
            self._scratch = Path(tempfile.mkdtemp(prefix=f"il_tf_{self.kind}_worker_"))
            # Its owner, so that a later start can remove it when this process was killed.
            owner = {"host": socket.gethostname(), "pid": os.getpid()}
            write_json(self._scratch / SCRATCH_OWNER_FILE, owner)
        return self._scratch / name


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_scratch(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Removes the scratch folders (:meth:`RunDir.scratch`) whose process is gone; returns them.

    A worker killed with ``kill -9`` (or by a crash) cannot remove its own folder. Only
    folders whose owner file names this host and a process that no longer exists are
    removed: a folder of a running worker, of another host sharing the folder, or one
    without an owner file (just being made, or made by an older il_tf) stays.
    ``root``: where the folders are (default: the system's temporary directory).
    """
    removed = []
    for folder in sorted(Path(root or tempfile.gettempdir()).glob("il_tf_*_worker_*")):
        try:
            owner = json.loads((folder / SCRATCH_OWNER_FILE).read_text(encoding="utf-8"))
            host, pid = owner["host"], int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host == socket.gethostname() and pid != os.getpid() and not _is_running(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def read_settings(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """The current settings of the ``kind`` run in ``path`` (RunDirError when there is none)."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise RunDirError(
            f"{path} is not a {_KIND_NAMES.get(kind, kind)} run directory: "
            f"{path / RUN_FILE} is missing"
        )
    run = RunDir(path, kind, chief=False)
    run.record = run._read()
    settings = run.settings()
    assert settings is not None
    return settings
