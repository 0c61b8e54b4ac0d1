"""Run directories: atomic writes with the umask's mode, the lock, restart checks, history."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

from il_tf import rundir
from il_tf.rundir import RunDir, RunDirError
from il_tf.spaces.genotypes import get_published, save_genotype

from ._tmpfs import tmpfs
from .conftest import PROJECT_ROOT


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# ------------------------------------------------------------------------------ files
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_follow_the_umask(tmp_path, mask, mode):
    with umask(mask):
        text = rundir.write_text(tmp_path / "a" / "x.txt", "hello")
        data = rundir.write_json(tmp_path / "r.json", {"a": 1})
        genotype = save_genotype(tmp_path / "genotype.json", get_published("DARTS_V2"))
        rundir.append_line(tmp_path / "m.jsonl", "{}")
    for path in (text, data, genotype, tmp_path / "m.jsonl"):
        assert path.stat().st_mode & 0o777 == mode, path
    assert json.loads(data.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "genotype.json", "m.jsonl", "r.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = rundir.write_text(tmp_path / "x.json", "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "replace", broken_replace)
    with pytest.raises(RunDirError, match=r"cannot write .*x.json: No space left on device"):
        rundir.write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_a_path_under_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError) as e:
        rundir.write_text(tmp_path / "file" / "x.json", "x")
    assert "file exists and is not a directory" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        RunDir(tmp_path / "file", "train").__enter__()
    with pytest.raises(RunDirError, match="cannot create the directory .*file exists and is not"):
        RunDir(tmp_path / "file" / "run", "train").__enter__()


def test_read_only_and_full_file_systems(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        with pytest.raises(RunDirError, match="Read-only file system"):
            RunDir(ro / "run", "train").__enter__()
    with tmpfs(tmp_path / "full", "size=16k") as full:
        rundir.append_line(full / "m.jsonl", "a" * 100)
        with pytest.raises(RunDirError, match="No space left on device"):
            rundir.append_line(full / "m.jsonl", "b" * 64_000)
        # The partial line was cut off again.
        assert (full / "m.jsonl").read_text() == "a" * 100 + "\n"
        with pytest.raises(RunDirError, match="No space left on device"):
            rundir.write_text(full / "big.json", "c" * 64_000)
        assert sorted(p.name for p in full.iterdir()) == ["m.jsonl"]


# ------------------------------------------------------------------------------ the lock
def test_a_second_start_fails_at_once_naming_the_holder(tmp_path):
    with RunDir(tmp_path / "run", "search") as first:
        with pytest.raises(RunDirError) as e:
            RunDir(tmp_path / "run", "search").__enter__()
        message = str(e.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert "is in use by another run" in message and "\n" not in message
        first.check({"a": 1})
        first.begin()
    # Released on exit: the next start runs.
    with RunDir(tmp_path / "run", "search") as again:
        assert again.starts == 1


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from il_tf.rundir import RunDir
    with RunDir(sys.argv[1], "train") as run:
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {holder.pid} on"):
            RunDir(workdir, "train").__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunDir(workdir, "train") as run:
        assert run.record is None


def test_a_start_refused_between_creating_and_locking_leaves_the_winner_intact(
    tmp_path, monkeypatch
):
    """The race of two starts on a new directory: the loser removes nothing of the winner's."""
    workdir = tmp_path / "new" / "run"
    runs = contextlib.ExitStack()
    real_make_dirs = rundir.make_dirs
    held: list[bool] = []

    def make_dirs_then_let_another_start_win(path):
        created = real_make_dirs(path)
        if not held:  # the loser, held between creating the directory and locking it
            held.append(True)
            run = runs.enter_context(RunDir(workdir, "search", chief=True))
            run.check({"a": 1})
            run.begin("x = 1\n")
            rundir.write_json(workdir / "genotype.json", {"epoch": 1})
        return created

    monkeypatch.setattr(rundir, "make_dirs", make_dirs_then_let_another_start_win)
    with runs:
        with pytest.raises(RunDirError, match="is in use by another run"):
            with RunDir(workdir, "search", chief=True):
                pass
        monkeypatch.setattr(rundir, "make_dirs", real_make_dirs)
        names = sorted(p.name for p in workdir.iterdir())
        assert names == [".lock", "config.gin", "genotype.json", "run.json"]
        # The winner still holds its lock: a third start is refused too.
        with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
            RunDir(workdir, "search").__enter__()
    # Its lock released, the directory resumes as the winner left it.
    with RunDir(workdir, "search") as again:
        assert again.starts == 1


_STARTER = textwrap.dedent(
    """
    import os, sys, time
    from il_tf.rundir import RunDir, RunDirError, write_json
    go = float(sys.argv[2])
    while time.time() < go:
        pass
    try:
        with RunDir(sys.argv[1], "search", chief=True) as run:
            run.check({"a": 1})
            run.begin()
            for i in range(20):
                write_json(run.path / f"result_{i}.json", {"pid": os.getpid()})
            write_json(run.path / "done.json", {"pid": os.getpid()})
        print("ran")
    except RunDirError as e:
        print("refused" if "is in use by another run" in str(e) else f"error {e}")
    """
)


def test_eight_simultaneous_starts_run_exactly_one(tmp_path):
    """8 processes start on one new directory at the same instant, 5 times over."""
    import time

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for attempt in range(5):
        workdir = tmp_path / f"attempt_{attempt}" / "run"
        go = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _STARTER, str(workdir), str(go)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(8)
        ]
        outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
        ran = outcomes.count("ran")
        assert ran >= 1 and outcomes.count("refused") == 8 - ran, outcomes
        # Only one start ran at a time: each result file set is one process's, complete.
        done = json.loads((workdir / "done.json").read_text())["pid"]
        record = json.loads((workdir / rundir.RUN_FILE).read_text())
        assert record["starts"][-1]["pid"] == done
        assert len(record["starts"]) == ran
        assert all(
            json.loads((workdir / f"result_{i}.json").read_text())["pid"] == done for i in range(20)
        )


def test_only_the_chief_locks_and_writes(tmp_path):
    with RunDir(tmp_path / "run", "train") as chief:
        # A worker of the same run: no lock, no files; its scratch space is outside.
        with RunDir(tmp_path / "run", "train", chief=False) as worker:
            worker.check({"a": 1})
            worker.begin("x = 1\n")
            scratch = worker.scratch("checkpoints")
            scratch.mkdir()
            assert tmp_path not in scratch.parents
        assert not scratch.exists() and not scratch.parent.exists()
        assert chief.scratch("checkpoints") == tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [rundir.LOCK_FILE]


def test_a_killed_workers_scratch_is_removed_by_the_next_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with RunDir(tmp_path / "run", "search", chief=False) as worker:
            dead_folder = worker.scratch("checkpoints").parent
            owner = json.loads((dead_folder / rundir.SCRATCH_OWNER_FILE).read_text())
            assert owner == {"host": socket.gethostname(), "pid": os.getpid()}
            # As if another worker process made it and was killed (kill -9 skips __exit__).
            worker._scratch = None
        killed.kill()
        killed.wait()
        folders = {"dead": dead_folder}
        for name, host, pid in [
            ("running", socket.gethostname(), alive.pid),
            ("other_host", "elsewhere", killed.pid),
        ]:
            folders[name] = tmp_path / "tmp" / f"il_tf_search_worker_{name}"
            folders[name].mkdir()
            rundir.write_json(folders[name] / rundir.SCRATCH_OWNER_FILE, {"host": host, "pid": pid})
        folders["no_owner"] = tmp_path / "tmp" / "il_tf_train_worker_old"
        folders["no_owner"].mkdir()
        rundir.write_json(dead_folder / rundir.SCRATCH_OWNER_FILE, {**owner, "pid": killed.pid})
        with RunDir(tmp_path / "run", "search", chief=False) as worker:
            mine = worker.scratch("checkpoints").parent
            assert not folders["dead"].exists()
            assert all(folders[n].is_dir() for n in ("running", "other_host", "no_owner"))
        assert not mine.exists()
    finally:
        alive.kill()
        alive.wait()


# ------------------------------------------------------------------------------ restarts
def _start(path, settings, config_text=None, **check):
    with RunDir(path, "search") as run:
        changed = run.check(settings, **check)
        run.begin(config_text, command="cmd")
    return changed


def test_restart_check_names_every_difference_and_extends_only_when_asked(tmp_path):
    path = tmp_path / "run"
    settings = {"epochs": 2, "method": "a", "learners": [{"name": "x"}], "opt": {"lr": 0.1}}
    _start(path, settings, "first\n")
    other = {**settings, "method": "b", "opt": {"lr": 0.2}}
    with pytest.raises(RunDirError) as e:
        _start(path, other, extendable=["epochs"])
    message = str(e.value)
    assert 'method "a" -> "b"' in message and "opt.lr 0.1 -> 0.2" in message
    assert "config.gin" in message and "\n" not in message
    # More epochs: only with --extend.
    more = {**settings, "epochs": 4}
    with pytest.raises(RunDirError, match="epochs 2 -> 4.*pass --extend"):
        _start(path, more, extendable=["epochs"])
    assert _start(path, more, "second\n", extendable=["epochs"], extend=True) == {"epochs": [2, 4]}
    # The extended run is the reference now; fewer epochs are refused even with --extend.
    assert _start(path, more, "second\n", extendable=["epochs"]) == {}
    with pytest.raises(RunDirError, match="epochs 4 -> 3.*epochs can only grow"):
        _start(path, {**settings, "epochs": 3}, extendable=["epochs"], extend=True)
    # Free settings change without a flag.
    assert _start(path, {**more, "method": "c"}, free=["method"]) == {"method": ["a", "c"]}
    record = json.loads((path / rundir.RUN_FILE).read_text())
    assert record["kind"] == "search" and record["settings"] == rundir.jsonable(settings)
    starts = record["starts"]
    assert [s["start"] for s in starts] == [1, 2, 3, 4]
    assert [s["changed"] for s in starts] == [{}, {"epochs": [2, 4]}, {}, {"method": ["a", "c"]}]
    assert all(s["pid"] == os.getpid() and s["command"] == "cmd" and s["time"] for s in starts)
    # config.gin is the first start's; a start with another gin text keeps its own.
    assert (path / "config.gin").read_text() == "first\n"
    assert (path / "config.2.gin").read_text() == "second\n"
    assert starts[1]["config"] == "config.2.gin" and "config" not in starts[2]
    # Another kind of run is refused.
    with pytest.raises(RunDirError, match="holds a search run, not a train run"):
        RunDir(path, "train").__enter__()


def test_a_start_that_fails_before_its_first_step_leaves_nothing(tmp_path):
    path = tmp_path / "new" / "run"
    with pytest.raises(KeyError), RunDir(path, "train") as run:
        run.check({"a": 1})
        raise KeyError("data error")
    assert not (tmp_path / "new").exists()
    # In an existing run directory: the lock file it made goes, the rest stays.
    _start(tmp_path / "old", {"a": 1})
    (tmp_path / "old" / rundir.LOCK_FILE).unlink()
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    with pytest.raises(KeyError), RunDir(tmp_path / "old", "search") as run:
        raise KeyError("data error")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before
    # After begin, a failure keeps the record of the start.
    with pytest.raises(KeyError), RunDir(path, "train") as run:
        run.check({"a": 1})
        run.begin("x\n")
        raise KeyError("later error")
    assert json.loads((path / rundir.RUN_FILE).read_text())["starts"][0]["start"] == 1


def test_first_format_training_records_are_read(tmp_path):
    settings = {"genotype": {"normal": []}, "train": {"epochs": 2}}
    (tmp_path / "run.json").write_text(json.dumps({"format": "il_tf.train_run/v1", **settings}))
    assert rundir.read_settings(tmp_path, "train") == settings
    with RunDir(tmp_path, "train") as run:
        with pytest.raises(RunDirError, match="train.epochs 2 -> 3"):
            run.check({**settings, "train": {"epochs": 3}})


def test_a_start_removes_what_killed_writes_left(tmp_path):
    _start(tmp_path, {"a": 1})
    leftovers = [
        tmp_path / ".genotype.json.il_tf-0a1b2c3d.tmp",
        tmp_path / "genotypes" / ".epoch_001.json.il_tf-00000000.tmp",
        tmp_path / "checkpoints" / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001",
    ]
    kept = [tmp_path / "checkpoints" / "ckpt-6.index", tmp_path / ".keep.tmp"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    _start(tmp_path, {"a": 1})
    assert not any(p.exists() for p in leftovers)
    assert not (tmp_path / "checkpoints" / "ckpt-7_temp").exists()
    assert all(p.exists() for p in kept)


def test_tensorflow_io_errors_become_one_line(tmp_path):
    import tensorflow as tf

    message = (
        "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/"
        "device:CPU:0}} /w/checkpoints/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001"
        ".tempstate349; No space left on device [Op:SaveV2]"
    )
    with (
        pytest.raises(RunDirError) as e,
        rundir.io_errors("/w/checkpoints", "write the checkpoint to"),
    ):
        raise tf.errors.ResourceExhaustedError(None, None, message)
    assert str(e.value) == "cannot write the checkpoint to /w/checkpoints: No space left on device"
    # Other errors pass through unchanged.
    with pytest.raises(KeyError), rundir.io_errors(tmp_path):
        raise KeyError("not an I/O error")
