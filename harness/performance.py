"""Scores from measurements: MLMark's metric definitions, in one place."""

from __future__ import annotations

from typing import Any, Dict

from harness.config import MIN_VALID_ITERATIONS, Params
from harness.results import TaskResult


def performance_result(base: Dict[str, Any], params: Params, m: Any) -> TaskResult:
    """Throughput (fps = iterations x batch / wall time) or latency (p95 ms) from a Measurement."""
    stats = m.latency_stats()
    notes = []
    if not m.valid:
        notes.append("fewer than {} timed iterations".format(MIN_VALID_ITERATIONS))
    if params.mode == "throughput":
        metric, score, units = "throughput", m.throughput_fps, "fps"
    else:
        metric, score, units = "latency", stats.p95_ms, "ms"
    return TaskResult(metric=metric, score=score, units=units, valid=m.valid, notes=notes,
                      throughput_fps=m.throughput_fps, latency_ms=stats.to_dict(), wall_s=m.wall_s,
                      iterations=m.iterations,
                      warmup={"iterations": m.warmup_iterations, "seconds": round(m.warmup_s, 3)}, **base)
