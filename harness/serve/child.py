"""One measurement in a child process: `python -m harness.serve.child REQUEST.json ANSWER.json`.

The server never loads a model itself. A crash in ONNX Runtime, PyTorch, TensorRT or CUDA (an
abort, a segfault, the out-of-memory killer) ends only the child, and becomes an error for the
client whose measurement it was; the server goes on with the next. The child measures exactly as a
local run does (harness.config.parse_task, harness.runner.prepare and run_task, a TaskResult), and
writes its answer atomically: {"result": TaskResult, "system": system section} or {"error": one
line}. A child that leaves no answer died, and how it died is the error.

The parent side uses asyncio's subprocesses, not core.child.run_child (which blocks its thread while
it relays output to a terminal): the server's event loop must go on answering while a measurement
runs. The child leads its own process group, so that stopping it (a cancel, a timeout, the server
stopping) also stops what it started (a TensorRT build worker, trtexec).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from core.child import duration, signal_name
from core.paths import REPO_ROOT
from harness.serve import TOKEN_ENV

log = logging.getLogger("mlmark.serve")

#: How long a stopped child gets to end by itself (SIGTERM) before it is killed (SIGKILL).
GRACE_S = 10.0
#: Set by MLMark's own tests, and by nothing else: the child aborts (SIGABRT) as it starts the measurement, as a
#: crash in a target's native library would. Read by the child, from the server's environment.
CRASH_TEST_ENV = "MLMARK_SERVE_TEST_CRASH"


async def run_in_child(job: Any, timeout_s: float) -> None:
    """Measure job.task in a child process; fills job.result and job.system, or job.error. Ends the child when
    job.cancel is set or timeout_s passes (asyncio cancellation, when the server stops, ends it too)."""
    with tempfile.TemporaryDirectory(prefix="mlmark-serve-") as work:
        folder = Path(work)
        request, answer, logfile = folder / "request.json", folder / "answer.json", folder / "child.log"
        request.write_text(json.dumps({"task": job.task, "source": job.source}), encoding="utf-8")
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)  # what runs a model (a target, trtexec) has no use for the server's secret
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        with open(str(logfile), "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "harness.serve.child", str(request), str(answer), cwd=work, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        log.info("measurement %s: child process %d", job.id[:8], proc.pid)
        started = time.monotonic()
        ended = asyncio.ensure_future(proc.wait())
        cancelled = asyncio.ensure_future(job.cancel.wait())
        try:
            done, _ = await asyncio.wait({ended, cancelled}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if proc.returncode is None:  # cancelled, timed out, or the server is stopping
                await _stop(proc)
            ended.cancel()
        if ended not in done and not job.cancel.is_set():
            job.error = ("the measurement ran longer than the server's limit (--measurement-timeout {}) and was "
                         "stopped".format(duration(timeout_s)))
            return
        if job.cancel.is_set():
            return
        _read_answer(job, answer, logfile, proc.returncode, time.monotonic() - started)


async def _stop(proc: "asyncio.subprocess.Process") -> None:
    """SIGTERM to the child's process group, SIGKILL after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
            return
        except asyncio.TimeoutError:
            continue


def _read_answer(job: Any, answer: Path, logfile: Path, returncode: int, seconds: float) -> None:
    try:
        data = json.loads(answer.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        job.result, job.system = data["result"], data.get("system") or {}
        return
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        job.error = data["error"]
        return
    how = ("died of {}".format(signal_name(-returncode)) if returncode < 0 else
           "exited with status {} and no answer".format(returncode))
    last = _last_line(logfile)
    job.error = "the measurement process {} after {}{}; the server goes on".format(
        how, duration(seconds), " (its last output: {})".format(last) if last else "")


def _last_line(path: Path) -> str:
    try:
        with open(str(path), "rb") as f:
            f.seek(max(0, os.path.getsize(str(path)) - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# -- the child ---------------------------------------------------------------------------------------


def system_section() -> Dict[str, Any]:
    """The server's system section (GET /system, and each result's, taken as its measurement starts): what the
    machine is and how it is set (power mode, clocks, throttling), with the warning a local run would print."""
    from system import state, state_warning
    from system.info import system_info

    info = system_info()
    info["state"] = state()
    warning = state_warning(info["state"])
    if warning:
        info["state"]["warning"] = warning
    return info


def measure(task_raw: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Validate, prepare and run one task as a local run does; the answer to write."""
    from core.errors import MLMarkError
    from harness import results as res
    from harness.config import parse_task
    from harness.runner import open_power, prepare, run_task

    try:
        task = parse_task(task_raw, source, 0)
        prepared = prepare([task])
        if os.environ.get(CRASH_TEST_ENV) == "abort":
            os.abort()
        # As a local run: machine state, then the power sampler and its idle baseline, around this one task.
        record = res.RunRecord(started=res.now(), config_files=[], system=system_section())
        power = open_power(prepared, record)
        try:
            idle_w = ((record.system.get("power") or {}).get("idle") or {}).get("average_w")
            result = run_task(prepared[0], res.now(), power, idle_w)
        finally:
            if power is not None:
                power.source.close()
    except MLMarkError as exc:
        return {"error": str(exc)}
    return {"result": asdict(result), "system": record.system}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The child's entry point: read the request, measure, write the answer."""
    from core.console import setup_logging, sigterm_as_interrupt
    from core.fileio import atomic_write_json

    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    request_path, answer_path = Path(args[0]), Path(args[1])
    setup_logging(0)
    request = json.loads(request_path.read_text(encoding="utf-8"))
    with sigterm_as_interrupt():
        try:
            answer = measure(request["task"], request["source"])
        except KeyboardInterrupt:
            answer = {"error": "the measurement was stopped"}
        except Exception as exc:  # a bug, not a user error: the traceback goes to the child's log
            logging.getLogger("mlmark.serve").exception("the measurement failed")
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            answer = {"error": "internal error while measuring: {}: {}".format(type(exc).__name__, first)}
    atomic_write_json(answer_path, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
