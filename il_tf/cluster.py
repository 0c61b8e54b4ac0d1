"""A multi-worker cluster on this machine: N processes, one ``TF_CONFIG`` each.

``LocalCluster(command, workers=2).run()`` starts the same command N times on localhost,
each with the ``TF_CONFIG`` of one worker of an N-worker cluster (gRPC on free ports),
streams every worker's output line by line prefixed with ``[worker i]``, and returns
when all of them have exited. It is how the tests run ``MultiWorkerMirroredStrategy``
with real processes, and how a user tries a multi-worker setup before booking machines
(``tools/local_cluster.py``). Workers see no GPU (``CUDA_VISIBLE_DEVICES=""``) unless
asked: several processes on one GPU would each claim all of its memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TextIO


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now."""
    sockets, ports = [], []
    try:
        # All bound at once, so the kernel hands out distinct ports.
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_configs(addresses: Sequence[str]) -> list[dict]:
    """The ``TF_CONFIG`` of each worker of a cluster of ``addresses`` (host:port, in order).

    Worker 0 is the chief (the one that writes files).
    """
    if not addresses:
        raise ValueError("a cluster needs at least one worker address")
    cluster = {"worker": list(addresses)}
    return [
        {"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(len(addresses))
    ]


class LocalCluster:
    """N worker processes of one command on localhost (see the module docstring).

    Args:
      command: the program and its arguments, the same for every worker.
      workers: N >= 1.
      env: extra environment variables of every worker.
      cwd: the workers' working directory.
      out: where the prefixed output lines go (default: this process's stdout);
        None keeps them only in :attr:`lines`.
      gpus: leave ``CUDA_VISIBLE_DEVICES`` as it is instead of hiding the GPUs.
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        out: TextIO | None = sys.stdout,
        gpus: bool = False,
    ) -> None:
        if not command:
            raise ValueError("LocalCluster needs a command to run in each worker")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.command = list(command)
        self.workers = workers
        self.env = dict(env or {})
        self.cwd = cwd
        self.out = out
        self.gpus = gpus
        #: Every output line of every worker, prefixed, in arrival order.
        self.lines: list[str] = []
        self.processes: list[subprocess.Popen] = []
        #: The index of the worker that failed first (None while none has).
        self.first_failed: int | None = None
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> LocalCluster:
        """Starts the workers (each with its own ``TF_CONFIG``); returns self."""
        if self.processes:
            raise RuntimeError("this LocalCluster was already started")
        ports = free_ports(self.workers)
        configs = tf_configs([f"localhost:{p}" for p in ports])
        for i, config in enumerate(configs):
            env = {**os.environ, **self.env, "TF_CONFIG": json.dumps(config)}
            if not self.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ""
            env.setdefault("PYTHONUNBUFFERED", "1")
            process = subprocess.Popen(
                self.command,
                env=env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,  # a signal to the cluster does not hit the caller
            )
            self.processes.append(process)
            reader = threading.Thread(target=self._pump, args=(i, process), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    def _pump(self, index: int, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            # Progress bars redraw with carriage returns: keep the last state of a line.
            line = f"[worker {index}] {raw.rstrip().split(chr(13))[-1]}"
            with self._lock:
                self.lines.append(line)
                if self.out is not None:
                    print(line, file=self.out, flush=True)

    def wait(self, timeout: float | None = None, grace: float | None = 300.0) -> list[int]:
        """Waits for every worker to exit; returns their exit codes.

        With ``timeout`` (seconds, for the whole cluster), workers still running then are
        killed and ``subprocess.TimeoutExpired`` is raised. Once a worker has failed, the
        others get ``grace`` seconds to stop on their own (they do within seconds to
        minutes when a peer dies mid-run) before they are killed: a worker that fails
        before joining the cluster would leave them waiting for it forever.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failed_at = None
        while None in [p.poll() for p in self.processes]:  # polls every worker
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.kill_all()
                raise subprocess.TimeoutExpired(self.command, timeout)
            if failed_at is None and any(p.returncode for p in self.processes):
                failed_at = now
                self.first_failed = next(i for i, p in enumerate(self.processes) if p.returncode)
            if failed_at is not None and grace is not None and now - failed_at >= grace:
                self._say(f"a worker failed {grace:.0f} s ago; killing the others")
                self.kill_all()
                break
            time.sleep(0.1)
        for reader in self._readers:
            reader.join()
        codes = [p.returncode for p in self.processes]
        if self.first_failed is None and any(codes):
            self.first_failed = next(i for i, code in enumerate(codes) if code)
        return codes

    def _say(self, message: str) -> None:
        with self._lock:
            self.lines.append(f"[cluster] {message}")
            if self.out is not None:
                print(f"[cluster] {message}", file=self.out, flush=True)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` (default SIGKILL, as ``kill -9``) to worker ``index``."""
        self.processes[index].send_signal(sig)

    def signal_all(self, sig: int) -> None:
        """Sends ``sig`` to every worker still running."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    def kill_all(self) -> None:
        """Kills every worker still running (and waits for it)."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()

    def run(self, timeout: float | None = None, grace: float | None = 300.0) -> int:
        """Starts the workers and waits for all (see :meth:`wait`); 0 when all exited with 0.

        Ctrl-C (KeyboardInterrupt) is passed on to the workers as SIGINT, and the wait goes
        on; a second one kills them.

        Otherwise the exit code of the worker that failed first (a worker killed by a
        signal counts as failed, with code 128 + the signal number, as a shell reports it).
        """
        self.start()
        try:
            try:
                codes = self.wait(timeout, grace)
            except KeyboardInterrupt:
                # Ctrl-C reaches only this process (the workers run in sessions of their
                # own): passed on, every worker stops at its next step with a checkpoint
                # (tools/search.py, tools/train.py). A second Ctrl-C kills them.
                self.signal_all(signal.SIGINT)
                codes = self.wait(timeout, grace)
        except BaseException:
            self.kill_all()
            raise
        if self.first_failed is None:
            return 0
        code = codes[self.first_failed]
        return 128 - code if code < 0 else code

    def output(self, index: int) -> str:
        """Worker ``index``'s output so far, without the prefixes."""
        prefix = f"[worker {index}] "
        with self._lock:
            return "\n".join(line[len(prefix) :] for line in self.lines if line.startswith(prefix))
