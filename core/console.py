"""What every command-line tool of the project does the same way: logging to stderr, and the guard
that turns a user error into one line and an exit status instead of a traceback."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from typing import Any, Callable, Iterator

from core.errors import MLMarkError

EXIT_ERROR = MLMarkError.exit_status
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so that a terminated run stops as cleanly."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated in the main thread (elsewhere: nothing changes)."""
    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption(exc: BaseException) -> Any:
    """(exit status, word) for Ctrl-C or SIGTERM."""
    return (EXIT_TERMINATED, "terminated") if isinstance(exc, Terminated) else (EXIT_INTERRUPTED, "interrupted")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """`name: message` lines on stderr: debug with -v, warnings only with -q, else info."""
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def guarded(prog: str, verbose: int, fn: Callable[[], int],
            interrupted: str = "nothing half-written was left behind") -> int:
    """fn()'s exit status; an MLMarkError becomes `prog: error: ...` and its exit status (traceback with -v),
    Ctrl-C becomes `prog: interrupted; <interrupted>` and 130 (SIGTERM inside sigterm_as_interrupt: 143)."""
    try:
        return fn()
    except MLMarkError as exc:
        if verbose:
            traceback.print_exc()
        print("{}: error: {}".format(prog, exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt as exc:
        status, word = interruption(exc)
        print("{}: {}; {}".format(prog, word, interrupted), file=sys.stderr)
        return status
