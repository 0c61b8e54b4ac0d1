"""Shared plumbing of the command-line tools: gin flags, workdirs, clear failures."""

from __future__ import annotations

import contextlib
import datetime
import logging as py_logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import gin
from absl import flags, logging

from il_tf import interrupts, native_logs

# Every tool imports this module first: TensorFlow is loaded here, with its
# uninformative native start-up lines (no CUDA on a CPU machine, ...) dropped.
native_logs.import_tensorflow()

T = TypeVar("T")


def define_gin_flags() -> None:
    """Defines ``--gin_file`` and ``--gin_bindings`` (both repeatable)."""
    flags.DEFINE_multi_string("gin_file", [], "gin config file(s), applied in order.")
    flags.DEFINE_multi_string(
        "gin_bindings", [], "gin bindings applied after the files, e.g. 'SearchConfig.epochs = 1'."
    )


def register_configurables() -> None:
    """Imports every module that defines gin configurables, so configs can name them."""
    import il_tf.data.learners  # noqa: F401
    import il_tf.data.sources  # noqa: F401
    import il_tf.distribute  # noqa: F401
    import il_tf.learning.engine  # noqa: F401
    import il_tf.learning.progressive  # noqa: F401
    import il_tf.learning.search  # noqa: F401
    import il_tf.models.networks  # noqa: F401
    import il_tf.spaces.factories  # noqa: F401
    import il_tf.training.loop  # noqa: F401
    import il_tf.tuning  # noqa: F401


def quiet_tensorflow_logs() -> None:
    """Drops TensorFlow's own INFO lines (one per checkpoint, strategy, saved function).

    The tools print their progress themselves; warnings and errors still show.
    """
    logging.get_absl_logger().addFilter(
        lambda record: record.levelno >= py_logging.WARNING or "/tensorflow/" not in record.pathname
    )
    # TensorFlow's Python logger does not go through absl's: under MultiWorkerMirroredStrategy
    # it reports every traced collective (thousands of lines per search).
    py_logging.getLogger("tensorflow").setLevel(py_logging.WARNING)


def one_line(error: BaseException) -> str:
    """``error``'s message as one line.

    gin appends where a binding failed on lines of their own: the file (or bindings
    string), line and text stay, in parentheses; "In call to configurable ..." goes, as
    the message names the setting already.
    """
    lines = [line.strip() for line in str(error).splitlines()]
    lines = [
        line
        for line in lines
        if line.strip("^ ") and not line.startswith("In call to configurable")
    ]
    if not lines:
        return type(error).__name__
    head, rest = lines[0], lines[1:]
    return f"{head} ({': '.join(rest)})" if rest else head


def _log_file_only() -> bool:
    """Whether absl's log goes to a file (``use_absl_log_file``) and not also to the terminal."""
    stream = getattr(logging.get_absl_handler().python_handler, "stream", sys.stderr)
    if stream in (sys.stderr, sys.__stderr__):
        return False
    try:
        echoed = flags.FLAGS["alsologtostderr"].value or flags.FLAGS["logtostderr"].value
    except (KeyError, flags.UnparsedFlagAccessError):
        return False
    return not echoed


def fail(error: BaseException, last_words: bool = False) -> NoReturn:
    """Prints a one-line error (no traceback) and exits with status 1.

    The terminal shows the line once; absl's log gets it with its traceback only when the
    log goes to a file that the terminal does not echo. ``last_words``:
    nothing written to stderr after the line is shown (TensorFlow's native logs while the
    process ends).
    """
    message = one_line(error)
    if _log_file_only():
        logging.error("%s", message, exc_info=error)
    print(f"error: {message}", file=sys.stderr, flush=True)
    if last_words:
        native_logs.drop_stderr_from_now()
    sys.exit(1)


def stopped(interrupted: interrupts.Interrupted) -> NoReturn:
    """Prints the one line of a run stopped by a signal and exits 128 + its number."""
    # A progress bar or the terminal's "^C" may end the current line.
    start = "\n" if sys.stderr.isatty() else ""
    print(f"{start}{interrupted}", file=sys.stderr, flush=True)
    sys.exit(interrupted.exit_code)


@contextlib.contextmanager
def one_line_errors(
    workdir: object, expected: tuple[type[BaseException], ...] = (ValueError,)
) -> Iterator[None]:
    """Ends the tool with a one-line error on bad input (``expected``) or a lost cluster worker.

    A run stopped by SIGINT/SIGTERM (``interrupts.Interrupted``) ends with its one line and
    exit status 130/143. Any other exception propagates with its traceback: it is a bug,
    not bad input.
    """
    try:
        yield
    except interrupts.Interrupted as e:
        stopped(e)
    except expected as e:
        fail(e)
    except Exception as e:
        from il_tf import distribute  # imports TensorFlow: only once something failed

        lost = distribute.lost_worker_message(e, workdir)
        if lost is None:
            raise
        # The gRPC errors of the aborted collectives would follow the line.
        fail(RuntimeError(lost), last_words=True)


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> str:
    """Parses gin files and bindings; returns the config text (exits on a bad config).

    ``include`` lines may name files relative to the working directory or to the
    project root (``gin_configs/search/common/darts_search.gin``).
    """
    register_configurables()
    gin.add_config_file_search_path(str(PROJECT_ROOT))
    for f in files:
        if not Path(f).is_file():
            fail(ValueError(f"gin file {f!r} does not exist"))
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except (ValueError, KeyError, TypeError, SyntaxError) as e:
        fail(ValueError(f"bad gin config: {e}"))
    return gin.config_str()


def configured(factory: Callable[[], T]) -> T:
    """Calls a gin-configurable factory, turning gin's wrapped errors into clear ones."""
    try:
        return factory()
    except ValueError:
        raise
    except TypeError as e:
        raise ValueError(f"bad gin binding: {e}") from e


def workdir_for(workdir: str | None, gin_files: Sequence[str], kind: str) -> Path:
    """The given workdir, or a new ``runs/<config>-<time>`` one."""
    if workdir:
        return Path(workdir)
    stem = Path(gin_files[-1]).stem if gin_files else kind
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{kind}-{stem}-{stamp}"
