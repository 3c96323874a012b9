"""A one-line progress bar with images/s and ETA on stderr, drawn only when stderr is a terminal.

Written here rather than taken from tqdm: it is a few dozen lines, and one dependency fewer matters
on a Jetson where every wheel may have to be built. When stderr is not a terminal (CI, a log file)
nothing is drawn; the caller logs a summary line instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


def _clock() -> float:
    return time.monotonic()


def format_eta(seconds: float) -> str:
    """H:MM:SS, or '--:--' when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    s = int(round(seconds))
    return "{}:{:02d}:{:02d}".format(s // 3600, s % 3600 // 60, s % 60)


class Progress:
    """Counts done of total and redraws `label [#####.....] done/total pct rate unit/s ETA` in place."""

    def __init__(self, label: str, total: int, unit: str = "images", stream: Optional[TextIO] = None,
                 enabled: Optional[bool] = None, interval: float = 0.2, width: int = 24) -> None:
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.interval, self.width = interval, width
        self.done = 0
        self.start = _clock()
        self._last_draw = -1e9
        self._drawn = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was created."""
        return _clock() - self.start

    @property
    def rate(self) -> float:
        """Items per second so far."""
        t = self.elapsed
        return self.done / t if t > 0 else 0.0

    def line(self) -> str:
        """The bar's current text."""
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return "{} [{}{}] {}/{} {:3.0f}% {:.1f} {}/s ETA {}".format(
            self.label, "#" * filled, "." * (self.width - filled), self.done, self.total, 100.0 * frac, rate,
            self.unit, format_eta(eta))

    def update(self, n: int = 1) -> None:
        """Count n more items; redraw at most every `interval` seconds."""
        self.done += n
        if not self.enabled:
            return
        now = _clock()
        if now - self._last_draw >= self.interval or self.done >= self.total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        text = self.line()
        pad = max(0, self._drawn - len(text))  # clear what a longer previous line left
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """Draw the final state and end the line (terminal only)."""
        if self.enabled and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
