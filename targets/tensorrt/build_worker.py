"""TensorRT engine builds in a child process: `python -m targets.tensorrt.build_worker SPEC REPORT`.

Building an engine takes minutes and, on a 4 GB Jetson Nano, can take more memory than there is:
the kernel's out-of-memory killer then ends the process with SIGKILL, which nothing in it can catch.
Run in a child, that kills only the build: the harness reports it in one line, and since the child
writes to a temporary file that only the parent installs (engine_cache.py), no partial engine is left.

The child logs to its stderr one record per line ("LEVELNO LOGGER MESSAGE"); the parent re-logs
each line under the same logger and level, so the build's progress shows as any other log line, and
on a terminal it also keeps an elapsed-time line up to date. The child writes its outcome to the
REPORT file: the build report, or the error's class and message, which the parent raises again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from core import errors
from core.child import run_child
from core.errors import MLMarkError, RunError
from core.fileio import atomic_write_json
from core.paths import REPO_ROOT

log = logging.getLogger("mlmark.tensorrt.build")

LINE_FORMAT = "%(levelno)d %(name)s %(message)s"
_LINE = re.compile(r"^(\d+) (\S+) (.*)$")
# Exit statuses of the child: 0 built, 3 a user-facing error (in the report), 4 an unexpected one.
EXIT_ERROR = 3
EXIT_CRASH = 4


@dataclass
class BuildRequest:
    """What the child builds (the fields of targets.native.tensorrt.EngineBuildSpec) and with which library."""

    onnx_path: str
    engine_path: str
    precision: str
    batch: int
    device: int = 0
    workspace_mb: int = 1024
    calibration_table: Optional[str] = None
    timing_cache: Optional[str] = None
    library: Optional[str] = None  # the native library the parent loaded
    log_level: int = logging.INFO

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# -- the child --------------------------------------------------------------------------------------


def _build(request: BuildRequest) -> Dict[str, Any]:
    from targets.native.library import load_library

    library = load_library(Path(request.library) if request.library else None, build=False)
    from targets.native.tensorrt import EngineBuildSpec, build_engine

    spec = EngineBuildSpec(
        onnx_path=Path(request.onnx_path), engine_path=Path(request.engine_path), precision=request.precision,
        batch=request.batch, device=request.device, workspace_mb=request.workspace_mb,
        calibration_table=Path(request.calibration_table) if request.calibration_table else None,
        timing_cache=Path(request.timing_cache) if request.timing_cache else None)
    report = build_engine(library, spec)
    return {"build_s": float(report.build_s), "engine_bytes": int(report.engine_bytes), "layers": report.layers,
            "timing_cache_loaded": bool(getattr(report, "timing_cache_loaded", False)),
            "timing_cache_saved": bool(getattr(report, "timing_cache_saved", False))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build one engine as the spec file says; write the outcome to the report file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m targets.tensorrt.build_worker SPEC.json REPORT.json", file=sys.stderr)
        return 2
    spec_path, report_path = Path(args[0]), Path(args[1])
    try:
        request = BuildRequest(**json.loads(spec_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        atomic_write_json(report_path, {"ok": False, "error": "RunError",
                                        "message": "unreadable build spec {}: {}".format(spec_path, exc)})
        return EXIT_ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(request.log_level)
    try:
        report = _build(request)
    except MLMarkError as exc:
        atomic_write_json(report_path, {"ok": False, "error": type(exc).__name__, "message": str(exc)})
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, traceback on stderr
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        atomic_write_json(report_path, {"ok": False, "error": "RunError",
                                        "message": "{}: {}".format(type(exc).__name__, first)})
        return EXIT_CRASH
    atomic_write_json(report_path, dict(report, ok=True))
    return 0


# -- the parent -------------------------------------------------------------------------------------


def _relog(line: str) -> None:
    m = _LINE.match(line)
    if m:
        logging.getLogger(m.group(2)).log(int(m.group(1)), "%s", m.group(3))
    elif line.strip():
        log.info("%s", line)  # a continuation line, or output that bypassed logging


def run_build_process(argv: Sequence[str], report_path: Path, label: str, workspace_mb: int, batch: int,
                      on_start: Optional[Callable[["subprocess.Popen[str]"], None]] = None,
                      env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run a build child to its end, relaying its log; its report, or the one-line error it ended with.

    A child killed by SIGKILL (the out-of-memory killer on a Jetson) becomes a RunError that says so
    and suggests a smaller workspace or batch; an error the child reported is raised as its own class.
    """
    tail: List[str] = []

    def on_line(line: str) -> None:
        _relog(line)
        if line.strip():
            tail.append(line)
            del tail[:-20]

    # Ctrl-C: SIGTERM, which the child turns into a clean stop of the build.
    ended = run_child(argv, label, on_line, cwd=str(REPO_ROOT), env=env, on_start=on_start)
    took, rc = ended.took, ended.returncode
    last = _last_message(tail)
    if rc < 0:
        if -rc == signal.SIGKILL:
            raise RunError("{}: the engine build was killed (SIGKILL) after {}, most likely by the out-of-memory "
                           "killer; no engine was written; try a smaller params.workspace_mb (now {}) or "
                           "params.batch (now {})".format(label, took, workspace_mb, batch))
        raise RunError("{}: the engine build died of {} after {}; no engine was written{}".format(
            label, ended.killed_by, took, "; its last message: " + last if last else ""))
    report = _read_report(report_path)
    if report is not None and report.get("ok") and rc == 0:
        return report
    if report is not None and not report.get("ok"):
        cls = getattr(errors, str(report.get("error")), None)
        if not (isinstance(cls, type) and issubclass(cls, MLMarkError)):
            cls = RunError
        message = " ".join(str(report.get("message") or "").split())
        raise cls("{}: {}".format(label, message))
    raise RunError("{}: the engine build ended with exit status {} after {} and no report{}".format(
        label, rc, took, "; its last message: " + last if last else ""))


def _read_report(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_message(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        m = _LINE.match(line)
        text = (m.group(3) if m else line).strip()
        if text and not text.startswith("Traceback"):
            return text[:300]
    return ""


def child_env() -> Dict[str, str]:
    """The parent's environment with the repository first on PYTHONPATH (the child imports targets.*)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def build_in_child(request: BuildRequest, label: str, work_dir: Path) -> Dict[str, Any]:
    """Build request's engine in `python -m targets.tensorrt.build_worker`; the child's report."""
    spec_path, report_path = work_dir / "build-spec.json", work_dir / "build-report.json"
    atomic_write_json(spec_path, request.to_dict())
    with contextlib.suppress(FileNotFoundError):
        report_path.unlink()
    argv = [sys.executable, "-m", "targets.tensorrt.build_worker", str(spec_path), str(report_path)]
    pids: List[int] = []
    try:
        return run_build_process(argv, report_path, label, request.workspace_mb, request.batch,
                                 on_start=lambda proc: pids.append(proc.pid), env=child_env())
    finally:
        # The library saves the timing cache through <cache>.tmp.<pid> and a rename: a child killed in
        # between leaves that file behind.
        if request.timing_cache and pids:
            with contextlib.suppress(FileNotFoundError):
                Path("{}.tmp.{}".format(request.timing_cache, pids[0])).unlink()


if __name__ == "__main__":
    sys.exit(main())
