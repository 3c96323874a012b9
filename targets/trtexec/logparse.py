"""trtexec's log as data: version, device, build time, engine size and the performance summary.

trtexec prints through its sample logger, which starts each line with "[MM/DD/YYYY-HH:MM:SS] [S] "
(S: I info, W warning, E error, V verbose, F fatal) and, for TensorRT's own messages, "[TRT] " after
it; its test reporter prints "&&&& RUNNING|PASSED|FAILED TensorRT.trtexec [TensorRT vN] # command"
unprefixed. Each release's summary is read in that release's format (releases.py): a line inside the
performance summary that the format does not have is an error naming the release and the line, so a
changed format is noticed instead of misread. Outside the summary only the lines this target needs
are read; the rest (options, TensorRT's messages, the help text) pass.

Hand-written because no library reads trtexec logs: NVIDIA's own trtexec log tooling
(tools/experimental/trt-engine-explorer) reads the JSON exports, not the log, and ships with none
of the releases this target drives.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from core.errors import RunError
from targets.trtexec.releases import Release, decode_version_number

_PREFIX = re.compile(r"^\[(\d\d)/(\d\d)/(\d{4})-(\d\d):(\d\d):(\d\d)\] \[([IWEVF])\] ?(.*)$")
# A C++ ostream float with default formatting: 12.3456, 1e-05, inf, -nan.
_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)"
_RUNNING = re.compile(r"^&&&& (RUNNING|PASSED|FAILED|WAIVED) (\S+) \[TensorRT v(\d+)\] # (.*)$")
_FIXED = re.compile(r"^min = ({n}) ms, max = ({n}) ms, mean = ({n}) ms, median = ({n}) ms".format(n=_NUM))
_PERCENTILE = re.compile(r", percentile\(({n})%\) = ({n}) ms".format(n=_NUM))

SUMMARY_START = "=== Performance summary ==="
SUMMARY_END = "Explanations of the performance metrics are printed in the verbose logs."

#: Summary lines with statistics: their label and the name this target records them under.
METRIC_LINES = (
    ("Latency", "latency"),
    ("End-to-End Host Latency", "end_to_end"),
    ("Enqueue Time", "enqueue"),
    ("H2D Latency", "h2d"),
    ("GPU Compute Time", "gpu_compute"),
    ("D2H Latency", "d2h"),
)


class LogFormatError(RunError):
    """A trtexec log this target cannot read: names the release and the first line not understood."""


def _float(text: str) -> float:
    return float(text)


@dataclass
class Statistic:
    """One summary line's figures, in ms: min, max, mean, median and each printed percentile."""

    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    percentiles_ms: Dict[float, float] = field(default_factory=dict)  # 95.0 -> ms

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready (percentiles keyed "95"; non-finite values as None)."""
        return {"min_ms": _finite(self.min_ms), "max_ms": _finite(self.max_ms), "mean_ms": _finite(self.mean_ms),
                "median_ms": _finite(self.median_ms),
                "percentiles_ms": {"{:g}".format(p): _finite(v) for p, v in sorted(self.percentiles_ms.items())}}


def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class TrtexecLog:
    """What one trtexec run printed, as far as this target reads it."""

    path: Optional[Path] = None
    release: Optional[Release] = None
    command: Optional[str] = None  # as the &&&& RUNNING line echoes it
    outcome: Optional[str] = None  # PASSED, FAILED (the &&&& line), None when it never got there
    device: Optional[str] = None
    compute_capability: Optional[Tuple[int, int]] = None
    build_s: Optional[float] = None  # "Engine built in X sec."
    load_s: Optional[float] = None  # "Engine loaded in" (8.x) or "Engine deserialized in" (8.4+)
    engine_mib: Optional[float] = None  # "Created/Loaded engine with size: X MiB" (10.0+)
    warmup_queries: Optional[int] = None
    warmup_ms: Optional[float] = None
    timed_queries: Optional[int] = None
    timed_s: Optional[float] = None
    throughput_qps: Optional[float] = None
    statistics: Dict[str, Statistic] = field(default_factory=dict)  # "latency", "gpu_compute", ...
    total_host_walltime_s: Optional[float] = None
    total_gpu_compute_s: Optional[float] = None
    warnings: List[str] = field(default_factory=list)  # trtexec's own, continuation lines joined
    tensorrt_warnings: List[str] = field(default_factory=list)  # "[W] [TRT] ..." messages of TensorRT itself
    errors: List[str] = field(default_factory=list)  # every [E] and [F] message, TensorRT's included
    has_summary: bool = False

    @property
    def version(self) -> Optional[str]:
        return self.release.text if self.release else None

    def build_dict(self) -> Dict[str, Any]:
        """The build's figures, for the engine's sidecar."""
        return {"tensorrt": self.version, "device": self.device,
                "compute_capability": "{}.{}".format(*self.compute_capability) if self.compute_capability else None,
                "build_s": self.build_s, "engine_mib": self.engine_mib, "warnings": list(self.warnings),
                "tensorrt_warnings": len(self.tensorrt_warnings)}

    def summary_dict(self) -> Dict[str, Any]:
        """The performance summary as trtexec printed it, for the task's result."""
        out: Dict[str, Any] = {
            "tensorrt": self.version, "format": self.release.format if self.release else None,
            "device": self.device,
            "compute_capability": "{}.{}".format(*self.compute_capability) if self.compute_capability else None,
            "engine_load_s": self.load_s,
            "warmup": {"queries": self.warmup_queries, "ms": self.warmup_ms},
            "timing": {"queries": self.timed_queries, "seconds": self.timed_s},
            "throughput_qps": _finite(self.throughput_qps),
        }
        for _, name in METRIC_LINES:
            if name in self.statistics:
                out[name + "_ms"] = self.statistics[name].to_dict()
        out["total_host_walltime_s"] = _finite(self.total_host_walltime_s)
        out["total_gpu_compute_s"] = _finite(self.total_gpu_compute_s)
        out["warnings"] = list(self.warnings)
        out["tensorrt_warnings"] = len(self.tensorrt_warnings)
        return out

    def last_errors(self, n: int = 3) -> List[str]:
        """The last n error messages (TensorRT's first, trtexec's "Engine set up failed" last)."""
        return self.errors[-n:]


@dataclass
class _Line:
    number: int
    severity: Optional[str]  # I, W, E, V, F; None for an unprefixed line
    text: str  # without the prefix
    raw: str


def _lines(text: str) -> Iterator[_Line]:
    for number, raw in enumerate(text.splitlines(), 1):
        m = _PREFIX.match(raw)
        if m:
            yield _Line(number, m.group(7), m.group(8).rstrip(), raw)
        else:
            yield _Line(number, None, raw.rstrip(), raw)


def detect_release(text: str) -> Optional[Release]:
    """The release a log was printed by: its "TensorRT version:" line, else the &&&& RUNNING line."""
    running = None
    for line in _lines(text):
        if line.severity == "I" and line.text.startswith("TensorRT version: "):
            return Release.of(line.text[len("TensorRT version: "):])
        m = _RUNNING.match(line.text) if line.severity is None else None
        if m and running is None:
            running = Release(decode_version_number(int(m.group(3))))
    return running


class _Parser:
    def __init__(self, text: str, release: Release, path: Optional[Path]) -> None:
        self.text = text
        self.log = TrtexecLog(path=path, release=release)
        self.release = release
        self.in_summary = False
        self.in_trace = False
        self.summary_seen: List[str] = []

    def fail(self, line: _Line, why: str = "not understood") -> None:
        where = " {}".format(self.log.path) if self.log.path else ""
        shown = line.raw if len(line.raw) <= 200 else line.raw[:200] + "..."
        raise LogFormatError("trtexec log{} (TensorRT {}, summary format {}): line {} {}: {!r}".format(
            where, self.release.text, self.release.format, line.number, why, shown))

    def run(self) -> TrtexecLog:
        for line in _lines(self.text):
            if line.severity is None:
                self.unprefixed(line)
            elif line.severity in ("E", "F"):
                self.log.errors.append(line.text)
            elif line.severity == "W":
                self.warning(line)
            elif line.severity == "I":
                self.info(line)
        if self.in_summary:
            raise LogFormatError("trtexec log{} (TensorRT {}, summary format {}): the performance summary does not "
                                 "end (no {!r} line)".format(" " + str(self.log.path) if self.log.path else "",
                                                             self.release.text, self.release.format, SUMMARY_END))
        return self.log

    def unprefixed(self, line: _Line) -> None:
        m = _RUNNING.match(line.text)
        if m:
            if m.group(1) == "RUNNING":
                self.log.command = m.group(4)
            else:
                self.log.outcome = m.group(1)

    def warning(self, line: _Line) -> None:
        text = line.text
        if text.startswith("[TRT] "):
            self.log.tensorrt_warnings.append(text[len("[TRT] "):])
        elif text.startswith("  ") and self.log.warnings and self.log.warnings[-1].startswith("* "):
            self.log.warnings[-1] += " " + text.strip()  # the advice line under a summary warning
        else:
            self.log.warnings.append(text)

    def info(self, line: _Line) -> None:
        text = line.text
        if text.startswith("[TRT] "):
            return
        if self.in_summary:
            self.summary_line(line)
            return
        if text == SUMMARY_START:
            self.in_summary, self.in_trace, self.log.has_summary = True, False, True
            return
        if text.startswith("==="):
            self.in_trace = text == "=== Trace details ==="
            return
        if self.in_trace and self.trace_line(line):
            return
        if self.device_line(text):
            return
        self.general_line(line)

    def device_line(self, text: str) -> bool:
        if text.startswith("Selected Device: "):
            self.log.device = text[len("Selected Device: "):]
            return True
        m = re.match(r"^Compute Capability: (\d+)\.(\d+)$", text)
        if m:
            self.log.compute_capability = (int(m.group(1)), int(m.group(2)))
            return True
        return False

    def general_line(self, line: _Line) -> None:
        text = line.text
        m = re.match(r"^Engine (built|loaded|deserialized) in ({}) sec\.$".format(_NUM), text)
        if m:
            if m.group(1) == "built":
                self.log.build_s = _float(m.group(2))
            else:
                self.log.load_s = _float(m.group(2))
            return
        m = re.match(r"^(Created|Loaded) engine with size: ({}) MiB$".format(_NUM), text)
        if m:
            self.log.engine_mib = _float(m.group(2))
            return
        if text.startswith("Warmup completed "):
            m = re.match(r"^Warmup completed (\d+) queries over ({}) ms$".format(_NUM), text)
            if not m:
                self.fail(line)
            self.log.warmup_queries, self.log.warmup_ms = int(m.group(1)), _float(m.group(2))
            return
        if text.startswith("Timing trace has "):
            m = re.match(r"^Timing trace has (\d+) queries over ({}) s$".format(_NUM), text)
            if not m:
                self.fail(line)
            self.log.timed_queries, self.log.timed_s = int(m.group(1)), _float(m.group(2))

    def trace_line(self, line: _Line) -> bool:
        """"Average on N runs - ..." lines of === Trace details === (read only to check their form)."""
        text = line.text
        if text.startswith("Trace averages of ") or re.match(r"^\.\.\. Omitting \d+ lines$", text):
            return True
        if not text.startswith("Average on "):
            self.in_trace = False
            return False
        if self.release.end_to_end_line:
            pattern = (r"^Average on \d+ runs - GPU latency: {n} ms - Host latency: {n} ms \(end to end {n} ms, "
                       r"enqueue {n} ms\)$")
        else:
            pattern = r"^Average on \d+ runs - GPU latency: {n} ms - Host latency: {n} ms \(enqueue {n} ms\)$"
        if not re.match(pattern.format(n=_NUM), text):
            self.fail(line)
        return True

    def summary_line(self, line: _Line) -> None:
        text = line.text
        if text == SUMMARY_END:
            self.in_summary = False
            self.check_summary_complete(line)
            return
        if text == "":
            return
        label, sep, rest = text.partition(": ")
        if not sep:
            self.fail(line)
        if label in self.summary_seen:
            self.fail(line, "repeats a summary line")
        if label == "Throughput":
            m = re.match(r"^({}) qps$".format(_NUM), rest)
            if not m:
                self.fail(line)
            self.log.throughput_qps = _float(m.group(1))
        elif label in ("Total Host Walltime", "Total GPU Compute Time"):
            m = re.match(r"^({}) s$".format(_NUM), rest)
            if not m:
                self.fail(line)
            if label == "Total Host Walltime":
                self.log.total_host_walltime_s = _float(m.group(1))
            else:
                self.log.total_gpu_compute_s = _float(m.group(1))
        elif label in dict(METRIC_LINES) and (label != "End-to-End Host Latency" or self.release.end_to_end_line):
            self.log.statistics[dict(METRIC_LINES)[label]] = self.statistic(line, rest)
        else:
            self.fail(line)
        self.summary_seen.append(label)

    def statistic(self, line: _Line, rest: str) -> Statistic:
        m = _FIXED.match(rest)
        if not m:
            self.fail(line)
        tail = rest[m.end():]
        percentiles: Dict[float, float] = {}
        pos = 0
        for p in _PERCENTILE.finditer(tail):
            if p.start() != pos:
                self.fail(line)
            percentiles[_float(p.group(1))] = _float(p.group(2))
            pos = p.end()
        if pos != len(tail):
            self.fail(line)
        if not self.release.percentile_list and len(percentiles) != 1:
            self.fail(line, "has {} percentiles where TensorRT {} prints one".format(len(percentiles),
                                                                                    self.release.text))
        return Statistic(_float(m.group(1)), _float(m.group(2)), _float(m.group(3)), _float(m.group(4)), percentiles)

    def check_summary_complete(self, line: _Line) -> None:
        want = ["Throughput"] + [label for label, _ in METRIC_LINES
                                 if label != "End-to-End Host Latency" or self.release.end_to_end_line]
        want += ["Total Host Walltime", "Total GPU Compute Time"]
        missing = [label for label in want if label not in self.summary_seen]
        if missing:
            self.fail(line, "ends the performance summary without its {} line(s)".format(", ".join(missing)))


def parse_log(text: str, release: Optional[Release] = None, path: Optional[Path] = None) -> TrtexecLog:
    """Read a trtexec log printed by `release` (by default the release the log names).

    Raises LogFormatError (one line) for a summary line the release's format does not have, or when
    the log names no release and none is given.
    """
    found = detect_release(text)
    if release is None:
        release = found
    if release is None:
        where = " {}".format(path) if path else ""
        raise LogFormatError("trtexec log{}: no 'TensorRT version:' or '&&&& RUNNING' line names the TensorRT "
                             "release".format(where))
    if found is not None and found.version[:2] != release.version[:2]:
        where = " {}".format(path) if path else ""
        raise LogFormatError("trtexec log{} is from TensorRT {}, not {} as expected".format(
            where, found.text, release.text))
    return _Parser(text, found or release, path).run()


def read_log(path: Path, release: Optional[Release] = None) -> TrtexecLog:
    """parse_log() of a log file."""
    return parse_log(Path(path).read_text(encoding="utf-8", errors="replace"), release, Path(path))
