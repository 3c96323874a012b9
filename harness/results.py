"""Results as data: one JSON file (and a CSV beside it) per invocation, rewritten after each task.

The same dataclasses are used to write, load and compare results.
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from core import __version__
from core.errors import ConfigError, RunError
from core.fileio import atomic_write_json, atomic_write_text
from harness.measures import shown

SCHEMA = "mlmark-result/1"


@dataclass
class TaskResult:
    """One task's outcome: the params as run, the score and everything needed to trust it."""

    source: str
    target: str
    workload: str
    params: Dict[str, Any]
    metric: str  # "throughput", "latency", "top1", "top5", "mAP"...
    score: Optional[float]
    units: str
    valid: bool
    notes: List[str] = field(default_factory=list)
    model: Dict[str, Any] = field(default_factory=dict)
    target_info: Dict[str, Any] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    throughput_fps: Optional[float] = None
    latency_ms: Optional[Dict[str, float]] = None
    wall_s: Optional[float] = None
    iterations: Optional[int] = None
    warmup: Dict[str, Any] = field(default_factory=dict)
    postprocess: Optional[str] = None
    extra_scores: Dict[str, float] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    #: power over the timed loop (system.power.summarize): W per rail, mJ per inference, inferences per joule
    power: Optional[Dict[str, Any]] = None
    #: machine state (system.state) before and after the task: power mode, clocks, temperatures, throttling
    system_state: Dict[str, Any] = field(default_factory=dict)

    @property
    def fps_per_watt(self) -> Optional[float]:
        """Inferences (images) per joule over the timed loop, where power was measured."""
        return (self.power or {}).get("inferences_per_joule")

    @property
    def mj_per_inference(self) -> Optional[float]:
        return (self.power or {}).get("energy_per_inference_mj")

    @property
    def synthetic(self) -> bool:
        return isinstance(self.model, dict) and self.model.get("weights") == "synthetic"


@dataclass
class RunRecord:
    """One invocation of the harness: system info plus every finished task."""

    started: str
    config_files: List[str]
    system: Dict[str, Any]
    tool_version: str = __version__
    schema: str = SCHEMA
    tasks: List[TaskResult] = field(default_factory=list)
    interrupted: bool = False
    #: tasks that failed (never a score): source, target, workload, params, error, started, finished
    failed: List[Dict[str, Any]] = field(default_factory=list)
    #: tasks not run because the run stopped before them (interrupted, or after a failure), by source
    not_run: List[str] = field(default_factory=list)


def now() -> str:
    """Local time, ISO 8601 with seconds."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def claim_result_path(results_dir: Path, name: Optional[str] = None) -> Path:
    """Create Results/<timestamp>-<host>[-N].json for a new invocation, exclusively: two runs started in the same
    second never share a file. ConfigError (one line) when the folder cannot be written, before any task runs.
    name: the machine measured, when it is not this one (a board measured through mlmark serve)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name or socket.gethostname())) or "host"
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = results_dir / "{}-{}{}.json".format(stamp, host, "" if n == 1 else "-{}".format(n))
            try:
                os.close(os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise ConfigError("{}: cannot write results there ({}); give -r a folder you can write to".format(
            results_dir, exc.strerror or type(exc).__name__)) from None
    raise AssertionError("unreachable")


CSV_COLUMNS = ("target", "workload", "hardware", "precision", "batch", "concurrency", "mode", "metric", "score",
               "units", "valid", "weights", "model_sha256")
CSV_TAIL = ("extra_scores", "iterations", "source")


def to_csv(record: RunRecord) -> str:
    """One row per task: the task, its score, then every measure (harness/measures.py) and extra score."""
    measures = shown("csv", lambda m: any(m.value(t) is not None for t in record.tasks))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS + tuple(m.key for m in measures) + CSV_TAIL)
    for t in record.tasks:
        p = t.params
        extra = ";".join("{}={}".format(k, v) for k, v in sorted(t.extra_scores.items()))
        writer.writerow([t.target, t.workload, p.get("hardware"), p.get("precision"), p.get("batch"),
                         p.get("concurrency"), p.get("mode"), t.metric, t.score, t.units, t.valid,
                         t.model.get("weights"), t.model.get("sha256")]
                        + [m.value(t) for m in measures] + [extra, t.iterations, t.source])
    return buf.getvalue()


def save(record: RunRecord, path: Path) -> None:
    """Write the JSON and the CSV beside it, each atomically; RunError (one line) if the disk refuses."""
    try:
        atomic_write_json(path, asdict(record))
        atomic_write_text(path.with_suffix(".csv"), to_csv(record))
    except OSError as exc:
        raise RunError("{}: cannot write the results file ({})".format(path, exc.strerror or exc)) from None


def load(path: Path) -> RunRecord:
    """Read a result file written by save()."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    tasks = [TaskResult(**t) for t in data.pop("tasks", [])]
    return RunRecord(tasks=tasks, **data)
