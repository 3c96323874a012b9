"""The MLMark score table, printed the way MLMark prints it, with markers for what a score is worth."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

from harness.measures import Measure, shown
from harness.results import TaskResult

COLUMNS = ("Target", "Workload", "H/W", "Prec", "Batch", "Conc.", "Metric", "Score", "Units")
SYNTHETIC_MARK = "*"
INVALID_MARK = "!"


def sig3(value: float) -> str:
    """A number with three significant figures and no exponent (1234.5 -> '1230', 0.01234 -> '0.0123')."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0.00"
    digits = 3 - int(math.floor(math.log10(abs(value)))) - 1
    rounded = round(value, digits)
    # Rounding can carry into a new digit (999.6 -> 1000): recompute the decimals for the result.
    digits = 3 - int(math.floor(math.log10(abs(rounded)))) - 1 if rounded else digits
    return "{:.{}f}".format(rounded, max(digits, 0))


def _measures(results: Sequence[TaskResult]) -> Tuple[Measure, ...]:
    return shown("score_table", lambda m: any(m.value(r) is not None for r in results))


def score_rows(results: Sequence[TaskResult]) -> List[List[str]]:
    """Rows of the score table; a result with several metrics (Top-1 and Top-5) gives several rows."""
    measures = _measures(results)
    rows = []
    for r in results:
        p = r.params
        marks = (SYNTHETIC_MARK if r.synthetic else "") + ("" if r.valid else INVALID_MARK)
        metrics = [(r.metric, r.score)] + sorted(r.extra_scores.items())
        for n, (metric, score) in enumerate(metrics):
            extra = [sig3(m.value(r)) if n == 0 else "" for m in measures]
            rows.append([r.target, r.workload, p.get("hardware", ""), p.get("precision", ""), str(p.get("batch", "")),
                         str(p.get("concurrency", "")), metric, sig3(score) + marks, r.units] + extra)
    return rows


def format_table(results: Sequence[TaskResult]) -> str:
    """The score table with its footnotes."""
    rows = score_rows(results)
    measures = _measures(results)
    columns = COLUMNS + tuple(m.header for m in measures)
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    right = {"Batch", "Conc.", "Score"} | {m.header for m in measures}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if columns[i] in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(columns), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    notes = []
    if any(r.synthetic for r in results):
        notes.append("{} synthetic weights: valid for speed only; accuracy on them is meaningless".format(
            SYNTHETIC_MARK))
    powered = [r for r in results if r.fps_per_watt and r.power]
    if powered:
        sources = sorted({"{} ({})".format(r.power.get("source"), r.power.get("total")) for r in powered})
        notes.append("fps/W = images per joule, mJ/inf = energy per image, over the timed loop; measured by {}: "
                     "see each result's power.measures for what that includes".format(", ".join(sources)))
    if any(not r.valid for r in results):
        notes.append("{} not a valid MLMark score: {}".format(
            INVALID_MARK, "; ".join(sorted({n for r in results if not r.valid for n in r.notes}))))
    return "\n".join(lines + ([""] + notes if notes else []))
