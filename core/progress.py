"""Progress on stderr for the long steps (preprocessing, calibration, downloads, engine builds).

Drawn by tqdm, which is pure Python and installs everywhere the tool does. It draws only when
stderr is a terminal, so CI output and log files stay clean; callers log a summary line instead.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator, Optional

from tqdm import tqdm

# Redraw at most five times a second: more costs time in tight loops and shows nothing new.
_INTERVAL_S = 0.2


def progress(label: str, total: Optional[int], unit: str = "images", scale_bytes: bool = False,
             enabled: Optional[bool] = None) -> Any:
    """A bar counting `total` items (bytes, with scale_bytes), with rate and time left; use as a context manager.

    enabled: None draws on a terminal only; False never.
    """
    extra = dict(unit="B", unit_scale=True, unit_divisor=1000) if scale_bytes else dict(unit=" " + unit)
    return tqdm(total=total, desc=label, file=sys.stderr, disable=None if enabled is None else not enabled,
                mininterval=_INTERVAL_S, leave=True, dynamic_ncols=True, **extra)


@contextlib.contextmanager
def elapsed(label: str) -> Iterator[Callable[[Optional[Callable[[], None]]], None]]:
    """`label: 01:23 elapsed` for a step of unknown length (an engine build).

    Yields tick(write=None): call it regularly to redraw; pass `write` to print a log line above the
    line without tearing it (tick(lambda: log.info(...))). Safe to call from several threads.
    """
    bar = tqdm(total=None, desc=label, file=sys.stderr, disable=None, leave=False,
               bar_format="{desc}: {elapsed} elapsed")

    def tick(write: Optional[Callable[[], None]] = None) -> None:
        if write is None:
            bar.refresh()
            return
        with tqdm.external_write_mode(file=sys.stderr):
            write()

    try:
        yield tick
    finally:
        bar.close()
