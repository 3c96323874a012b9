"""Latency statistics: the one percentile function every target's timings go through."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """q-th percentile (0-100) of ascending values, linear interpolation between closest ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("percentile must be within 0..100")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    frac = pos - lo
    return float(sorted_values[lo]) * (1.0 - frac) + float(sorted_values[hi]) * frac


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-inference times, in milliseconds."""

    samples: int
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def summarize(latencies_s: Sequence[float]) -> LatencyStats:
    """Summarize per-inference times given in seconds."""
    values = sorted(float(v) * 1e3 for v in latencies_s)
    n = len(values)
    if n == 0:
        raise ValueError("no latency samples")
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return LatencyStats(
        samples=n,
        min_ms=values[0],
        mean_ms=mean,
        median_ms=percentile(values, 50),
        p90_ms=percentile(values, 90),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=values[-1],
        std_ms=math.sqrt(var),
    )
