"""TensorFlow's start-up lines that say nothing to a user, dropped; everything else kept.

TensorFlow's C++ runtime writes to file descriptor 2 while it loads and lists its
devices. On a machine without a GPU it reports, at error level, that CUDA could not
be initialized, which reads like a failure although nothing is wrong. The tools, and the
packages of il_tf that need TensorFlow (``il_tf.learning``, ``il_tf.training``, ...),
import it through :func:`import_tensorflow`, which captures that phase's native output
and re-emits every line except the known harmless ones. The modules that need no
TensorFlow (genotypes, drawings, the NAS-Bench-201 table, the cluster launcher) do not
load it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: Substrings of native start-up lines that carry no information for a user.
HARMLESS = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "TF-TRT Warning",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "cuda_executor.cc",
)


def is_harmless(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's uninformative start-up lines."""
    return any(pattern in line for pattern in HARMLESS)


@contextlib.contextmanager
def harmless_lines_dropped() -> Iterator[None]:
    """Captures native writes to stderr inside; re-emits all but the harmless lines."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_harmless(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow(min_log_level: str | None = "2"):
    """Imports TensorFlow and lists its devices with the harmless start-up lines dropped.

    ``min_log_level``: the default of ``TF_CPP_MIN_LOG_LEVEL`` (the tools' "2" shows
    errors only); None leaves TensorFlow's own default (the library's import).
    """
    if "tensorflow" in sys.modules:  # loaded (and its lines printed) already
        return sys.modules["tensorflow"]
    if min_log_level is not None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", min_log_level)
    with harmless_lines_dropped():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def drop_stderr_from_now() -> None:
    """Sends everything written to file descriptor 2 from now on to /dev/null.

    For a process that has printed its last line: when a worker of a cluster is lost,
    TensorFlow's runtime goes on logging the aborted collectives and connections (gRPC
    errors) until the process ends, after the one line that says what happened.
    """
    sys.stderr.flush()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(devnull, 2)
    os.close(devnull)
