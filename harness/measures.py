"""The quantities a performance result carries beside its score, and where each one is shown.

This is the one place a new measure is added (energy per inference, say): give it a key (its CSV
column), a table header and how to read it from a TaskResult, and it appears in the results CSV
and the compare CSV, in the `mlmark compare` table (`compare_table`) and as a column of the MLMark
score table (`score_table`). Optional measures (`always` False) are shown only where at least one
result has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple


@dataclass(frozen=True)
class Measure:
    """One quantity of a task result: where it comes from and how it is labelled."""

    key: str  # CSV column, in results and compare CSVs
    header: str  # column header in printed tables
    get: Callable[[Any], Optional[float]]  # TaskResult -> value, None where not known
    compare_table: bool = True  # a column of the printed `mlmark compare` table
    score_table: bool = False  # a column of the MLMark score table
    always: bool = True  # shown even when no result has it

    def value(self, result: Any) -> Optional[float]:
        """The measure of a result, or None (also for a value that is not a number)."""
        try:
            v = self.get(result)
        except (AttributeError, KeyError, TypeError):
            return None
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _latency(name: str) -> Callable[[Any], Optional[float]]:
    return lambda r: (r.latency_ms or {}).get(name)


MEASURES: Tuple[Measure, ...] = (
    Measure("throughput_fps", "fps", lambda r: r.throughput_fps),
    Measure("p95_ms", "p95 ms", _latency("p95_ms")),
    Measure("median_ms", "p50 ms", _latency("median_ms"), compare_table=False),
    # Power over the timed loop (system/power.py), where it was measured.
    Measure("average_w", "W", lambda r: (r.power or {}).get("average_w") if r.fps_per_watt else None,
            always=False),
    Measure("fps_per_w", "fps/W", lambda r: r.fps_per_watt, score_table=True, always=False),
    Measure("mj_per_inference", "mJ/inf", lambda r: r.mj_per_inference, score_table=True, always=False),
)


def shown(where: str, present: Callable[[Measure], bool]) -> Tuple[Measure, ...]:
    """The measures to show: `where` is 'csv', 'compare_table' or 'score_table'; an optional measure only when
    present(measure) says some row has it."""
    return tuple(m for m in MEASURES if (where == "csv" or getattr(m, where)) and (m.always or present(m)))
