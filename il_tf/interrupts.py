"""Stopping a run cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM.

A tool runs its work inside :func:`handled`. The first SIGINT or SIGTERM only records the
request; the run's loop calls :func:`stop_if_requested` at every step boundary, which
writes a checkpoint there and raises :class:`Interrupted` (every worker of a cluster at
the same step); the tool prints the exception's one line and exits with
:attr:`Interrupted.exit_code` (130 for SIGINT, 143 for SIGTERM, as a shell reports a
process killed by the signal). Run again, the same command resumes from that checkpoint.

A second signal exits at once, even while a step runs in TensorFlow's native code: a
thread watches the signals (``signal.set_wakeup_fd``), because Python runs signal
handlers only between bytecodes of the main thread, which may be inside one step for
minutes. The last checkpoint stays intact: a checkpoint is published by renaming it into
place, and what a cut-off write leaves is removed by the next start
(``il_tf.rundir.remove_partial_files``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
AGAIN_MESSAGE = (
    "interrupted again: stopped at once; the last checkpoint is intact; "
    "run the same command to resume from it"
)


class Interrupted(BaseException):  # noqa: N818  (like KeyboardInterrupt, not an error)
    """A run stopped on a signal at a step boundary, after writing a checkpoint there.

    A ``BaseException``, as ``KeyboardInterrupt`` is: code that handles errors must not
    swallow a request to stop.
    """

    def __init__(self, signum: int, position: int, unit: str = "iteration"):
        self.signum = signum
        self.position = position
        self.unit = unit
        super().__init__(
            f"interrupted at {unit} {position}; checkpoint written; run the same command to resume"
        )

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class _Watcher:
    """Counts SIGINT/SIGTERM as they arrive (a thread reading Python's signal wake-up fd)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._thread = threading.Thread(target=self._watch, name="il_tf-interrupts", daemon=True)

    def _watch(self) -> None:
        while True:
            try:
                data = self._read.recv(64)
            except OSError:
                return
            if not data:  # closed: the handlers were removed
                return
            for signum in data:  # one byte per signal, its number
                if signum not in SIGNALS:
                    continue
                if self.signum is None:
                    self.signum = signum
                    continue
                # The second signal: the user does not want to wait for the step to end.
                # os.write and os._exit: no lock the main thread may hold is needed.
                with contextlib.suppress(OSError):
                    os.write(2, f"\n{AGAIN_MESSAGE}\n".encode())
                os._exit(128 + signum)

    def start(self) -> int:
        self._thread.start()
        return self._write.fileno()

    def close(self) -> None:
        self._write.close()  # the thread reads the end of the stream and returns
        self._thread.join(timeout=5)
        self._read.close()


_watcher: _Watcher | None = None


def _note(signum: int, frame: Any) -> None:
    """The Python-level handler: the watcher thread has seen the signal already."""


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM request a stop at the next step boundary (see module doc).

    Installs nothing outside the main thread or when already installed (nested use).
    """
    global _watcher
    if _watcher is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    watcher = _Watcher()
    previous_fd = signal.set_wakeup_fd(watcher.start(), warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _note) for signum in SIGNALS}
    _watcher = watcher
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        _watcher = None
        watcher.close()


def take_back() -> None:
    """Installs the handlers again after native code replaced them (inside :func:`handled`).

    ``MultiWorkerMirroredStrategy``'s runtime installs its own SIGTERM handler (its
    preemption notifier), which swallows the signal: call this after creating one.
    """
    if _watcher is not None and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _note)


def requested() -> int | None:
    """The signal that asked this process to stop (None: none, or not inside :func:`handled`)."""
    return None if _watcher is None else _watcher.signum


# strategy -> the compiled agreement of a multi-worker strategy (None for one process).
_agreements: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def agreed(strategy: Any) -> int | None:
    """The signal on which every worker of ``strategy`` stops now (None: go on).

    In one process this is :func:`requested`. In a cluster every worker must call it at
    the same step boundaries (it is one collective operation): a worker stops when any
    worker was asked to, with its own signal, else SIGTERM when a peer got one, else
    SIGINT. Outside :func:`handled` it returns None on every worker, without a collective.
    """
    if _watcher is None:
        return None
    own = requested()
    if strategy not in _agreements:
        _agreements[strategy] = _agreement(strategy)
    agreement = _agreements[strategy]
    if agreement is None:
        return own
    import tensorflow as tf

    flags = [float(own == s) for s in SIGNALS]
    counts = agreement(tf.constant(flags, tf.float32)).numpy()
    if own is not None:
        return own
    if counts[SIGNALS.index(signal.SIGTERM)] > 0:
        return signal.SIGTERM
    if counts[SIGNALS.index(signal.SIGINT)] > 0:
        return signal.SIGINT
    return None


def _agreement(strategy: Any) -> Callable[[Any], Any] | None:
    """A function summing a small vector over every worker (None in one process)."""
    import tensorflow as tf

    from il_tf import distribute

    if distribute.input_context(strategy).num_input_pipelines == 1:
        return None

    @tf.function
    def total(flags):
        per_replica = strategy.run(tf.identity, args=(flags,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return total


def stop_if_requested(
    strategy: Any, save: Callable[[], None], position: int, unit: str = "iteration"
) -> None:
    """At a step boundary: when a stop was requested (on any worker), ``save()`` and raise
    :class:`Interrupted` naming ``position``; otherwise return at once."""
    signum = agreed(strategy)
    if signum is None:
        return
    save()
    from il_tf import distribute

    # No worker exits while another still writes its share of the checkpoint.
    distribute.sync_workers(strategy)
    raise Interrupted(signum, position, unit)
