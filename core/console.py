"""What every command-line tool of the project does the same way: logging to stderr, and the guard
that turns a user error into one line and an exit status instead of a traceback."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable

from core.errors import MLMarkError

EXIT_ERROR = MLMarkError.exit_status
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """`name: message` lines on stderr: debug with -v, warnings only with -q, else info."""
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def guarded(prog: str, verbose: int, fn: Callable[[], int],
            interrupted: str = "interrupted; nothing half-written was left behind") -> int:
    """fn()'s exit status; an MLMarkError becomes `prog: error: ...` and its exit status (traceback with -v),
    Ctrl-C becomes `prog: <interrupted>` and 130."""
    try:
        return fn()
    except MLMarkError as exc:
        if verbose:
            traceback.print_exc()
        print("{}: error: {}".format(prog, exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("{}: {}".format(prog, interrupted), file=sys.stderr)
        return EXIT_INTERRUPTED
