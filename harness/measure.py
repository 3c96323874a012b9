"""The client of `mlmark serve`, and `mlmark measure`: one task measured on another machine.

`mlmark measure --host H --model-onnx FILE [...]` checks the task here as a config's task is
checked, sends the model and the task, waits for the result, writes it to Results/ as a local run
does (with the server's system section) and prints it as JSON. A refusal or a failed measurement is
one line and exit status 2; Ctrl-C cancels the measurement on the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core import __version__
from core.errors import ConfigError, RunError
from core.paths import results_dir

log = logging.getLogger("mlmark.measure")

#: How long one poll waits on the server for the measurement to finish (the server caps it at 60 s).
POLL_WAIT_S = 30.0
CONNECT_TIMEOUT_S = 15.0


def parse_address(text: str, default_port: int) -> Tuple[str, int, bool]:
    """HOST, HOST:PORT, [IPv6]:PORT or http://HOST:PORT -> (host, port, whether the text gave the port);
    ConfigError for anything else."""
    rest = text.strip()
    if rest.startswith("http://"):
        rest = rest[len("http://"):].rstrip("/")
    host, port_text = rest, ""
    if rest.startswith("["):
        close = rest.find("]")
        host, tail = (rest[1:close], rest[close + 1:]) if close > 0 else ("", "")
        if tail.startswith(":"):
            port_text = tail[1:]
        elif tail:
            host = ""
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        port = -1
    if not host or not 1 <= port <= 65535 or any(c in host for c in "/ @?#"):
        raise ConfigError("{!r} is not an address: give HOST or HOST:PORT (e.g. orin.local:{})".format(
            text, default_port))
    return host, port, bool(port_text)


class Unreachable(RunError):
    """The server could not be reached, or the connection to it failed."""


class ServerClient:
    """One `mlmark serve` reached over HTTP: health, submit, wait, cancel; every problem one RunError line."""

    def __init__(self, host: str, port: int, token: Optional[str], session: Any) -> None:
        self.host, self.port = host, port
        self.address = "{}:{}".format("[{}]".format(host) if ":" in host else host, port)
        self.url = "http://" + self.address
        self.session = session
        self.headers = {"Authorization": "Bearer " + token} if token else {}

    async def _call(self, method: str, path: str, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """(status, JSON body, headers) of one request; RunError when the server cannot be reached."""
        import aiohttp

        headers = dict(self.headers)
        headers.update(kwargs.pop("headers", {}))
        try:
            async with self.session.request(method, self.url + path, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT_S),
                                            **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    raise RunError("{}: answered HTTP {} with something that is not mlmark serve's JSON; is this "
                                   "an mlmark server?".format(self.address, response.status))
                return response.status, body, response.headers
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable("cannot reach {} ({}); is mlmark serve running there, and on that port?".format(
                self.address, exc.os_error.strerror or exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unreachable("{}: the connection failed ({})".format(
                self.address, str(exc) or type(exc).__name__)) from None

    def _refused(self, status: int, body: Dict[str, Any], doing: str) -> RunError:
        return RunError("{} refused {} (HTTP {}): {}".format(self.address, doing, status,
                                                             body.get("error", "no reason given")))

    async def health(self) -> Dict[str, Any]:
        """The server's /health; RunError if it refuses (a wrong token, say)."""
        status, body, _ = await self._call("GET", "/health", timeout=60)
        if status != 200:
            raise self._refused(status, body, "the health check")
        if body.get("tool_version") != __version__:
            log.warning("%s runs mlmark %s, this is %s", self.address, body.get("tool_version"), __version__)
        return body

    async def system(self) -> Dict[str, Any]:
        """The server's system section."""
        status, body, _ = await self._call("GET", "/system", timeout=60)
        if status != 200:
            raise self._refused(status, body, "the system section")
        return body

    async def submit(self, task: Dict[str, Any], model: Path, source: str, queue_wait_s: float = 0.0) -> str:
        """Send the task and its model; the measurement's id. A full queue is retried until queue_wait_s has
        passed, as the server's Retry-After says; every other refusal is a RunError at once."""
        import aiohttp

        deadline = time.monotonic() + queue_wait_s
        body = dict(task, source=source)
        while True:
            with open(str(model), "rb") as f:
                form = aiohttp.FormData()
                form.add_field("task", json.dumps(body), content_type="application/json")
                form.add_field("model", f, filename=model.name, content_type="application/octet-stream")
                # Expect: 100-continue: a refusal (token, size, full queue) comes before the model is sent.
                status, answer, headers = await self._call("POST", "/measurements", data=form, expect100=True,
                                                           timeout=None)
            if status == 202 and isinstance(answer.get("id"), str):
                log.info("%s: measurement %s queued at %s%s", self.address, answer["id"], answer.get("position"),
                         " (model sent before: its stored copy is used)" if answer.get("model_reused") else "")
                return str(answer["id"])
            if status == 503:
                retry = _retry_after(headers)
                if time.monotonic() + retry <= deadline:
                    log.info("%s: queue full; retrying in %d s", self.address, retry)
                    await asyncio.sleep(retry)
                    continue
            raise self._refused(status, answer, "the measurement")

    async def wait(self, job_id: str) -> Dict[str, Any]:
        """Poll until the measurement finishes; its answer when done, else RunError with the server's reason."""
        last_state = None
        while True:
            try:
                status, body, _ = await self._call("GET", "/measurements/{}?wait={:g}".format(job_id, POLL_WAIT_S),
                                                   timeout=POLL_WAIT_S + 60)
            except Unreachable as exc:
                raise Unreachable("{}; the measurement may still finish there: GET {}/measurements/{}".format(
                    exc, self.url, job_id)) from None
            if status != 200:
                raise self._refused(status, body, "the measurement's status")
            state = body.get("state")
            if state != last_state and state in ("queued", "running"):
                log.info("%s: measurement %s %s%s", self.address, job_id[:8], state,
                         " (position {})".format(body["position"]) if state == "queued" else "")
            last_state = state
            if state == "done":
                return body
            if state in ("failed", "cancelled"):
                raise RunError("{}: the measurement {}: {}".format(self.address, state,
                                                                    body.get("error", "no reason given")))

    async def cancel(self, job_id: str) -> None:
        """Ask the server to drop or stop the measurement (best effort)."""
        await self._call("DELETE", "/measurements/{}".format(job_id), timeout=10)


def _retry_after(headers: Any) -> int:
    try:
        return max(1, int(headers.get("Retry-After", "5")))
    except ValueError:
        return 5


def session() -> Any:
    """The HTTP client session every client here uses."""
    try:
        import aiohttp
    except ImportError:
        raise RunError("mlmark measure and fleet need aiohttp: pip install -e '.[serve]' (or pip install "
                       "aiohttp)") from None
    return aiohttp.ClientSession()


# -- results ----------------------------------------------------------------------------------------


def task_result(answer: Dict[str, Any], address: str, local_model: Any) -> Any:
    """The TaskResult in a server's answer (RunError when it is not one). Fields this version does not know
    (a newer server's) are named in a warning and left out; a model's weights the server could not tell
    (pretrained, whose record is here) are taken from here when the SHA-256 matches."""
    from harness.results import TaskResult

    raw = answer.get("result")
    if not isinstance(raw, dict):
        raise RunError("{}: the answer holds no task result".format(address))
    known = {f.name for f in fields(TaskResult)}
    unknown = sorted(set(raw) - known)
    if unknown:
        log.warning("%s: the result's fields %s are newer than this mlmark (%s) and are not kept", address,
                    ", ".join(unknown), __version__)
    try:
        result = TaskResult(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:
        raise RunError("{}: the answer is not a task result ({})".format(address, exc)) from None
    if (isinstance(result.model, dict) and result.model.get("sha256") == local_model.sha256
            and result.model.get("weights") == "unknown" and local_model.weights != "unknown"):
        result.model["weights"] = local_model.weights
    return result


def summary(result: Any, raw: Dict[str, Any], address: str, path: Path) -> Dict[str, Any]:
    """What `mlmark measure` prints: the score, latency percentiles, throughput, power where known."""
    lat = result.latency_ms or {}
    p = result.params
    return {
        "server": address, "target": result.target, "workload": result.workload, "mode": p.get("mode"),
        "hardware": p.get("hardware"), "precision": p.get("precision"), "batch": p.get("batch"),
        "concurrency": p.get("concurrency"), "metric": result.metric, "score": result.score, "units": result.units,
        "valid": result.valid, "notes": result.notes,
        "latency_ms": {"p50": lat.get("median_ms"), "p95": lat.get("p95_ms"), "p99": lat.get("p99_ms"),
                       "mean": lat.get("mean_ms"), "samples": lat.get("samples")},
        "throughput_fps": result.throughput_fps,
        "power": (raw.get("result") or {}).get("power"),
        "model_sha256": result.model.get("sha256") if isinstance(result.model, dict) else None,
        "results": str(path),
    }


# -- mlmark measure ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from harness.serve import DEFAULT_PORT, TOKEN_ENV

    parser = argparse.ArgumentParser(prog="mlmark measure", description="Measure an ONNX model on a machine "
                                     "running mlmark serve; print the result as JSON and write it to Results/.")
    parser.add_argument("--host", required=True, help="the server: HOST or HOST:PORT")
    parser.add_argument("--port", type=int, default=None, help="its port (default {})".format(DEFAULT_PORT))
    parser.add_argument("--model-onnx", type=Path, required=True, metavar="FILE", help="the ONNX model to measure")
    parser.add_argument("--workload", default="mobilenet",
                        help="the workload whose inputs the model takes (default mobilenet)")
    parser.add_argument("--target", default="onnxruntime", help="default onnxruntime")
    parser.add_argument("--hardware", default="cpu", help="cpu, gpu or dla (default cpu)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16, bf16 or int8 (default fp32)")
    parser.add_argument("--mode", choices=("latency", "throughput"), default=None,
                        help="default: latency at batch 1, throughput at a larger --batch")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default 1024)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (default 1)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a target option (VALUE as JSON, else as text), e.g. --option size_check=onnx")
    parser.add_argument("--token", default=None,
                        help="the server's token (default: ${}, which keeps it off the process list)".format(
                            TOKEN_ENV))
    parser.add_argument("--queue-wait", type=float, default=0.0, metavar="SECONDS",
                        help="when the server's queue is full, retry for this long (default 0: fail at once)")
    parser.add_argument("-r", "--results-dir", type=Path, default=results_dir(),
                        help="where the result goes (default: Results/)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging and tracebacks")
    return parser


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def task_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The task a measure command line describes, as a config file would write it."""
    params: Dict[str, Any] = {"mode": args.mode or ("latency" if args.batch == 1 else "throughput"),
                              "hardware": args.hardware, "precision": args.precision, "batch": args.batch,
                              "concurrency": args.concurrency}
    if args.iterations is not None:
        params["iterations"] = args.iterations
    if args.warmup is not None:
        params["warmup"] = args.warmup
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("measure: --option {!r}: give KEY=VALUE".format(item))
        params[key.strip()] = _option_value(value)
    return {"target": args.target, "workload": args.workload, "params": params}


def token_from(args_token: Optional[str]) -> Optional[str]:
    """--token, else the environment's."""
    from harness.serve import TOKEN_ENV

    return args_token if args_token is not None else (os.environ.get(TOKEN_ENV) or None)


def local_check(raw: Dict[str, Any], model: Optional[Path], source: str) -> Any:
    """The task checked here as a config's task is, and the model to send: the given file, else the workload's own
    (generated here if need be); for int8, its Q/DQ model made here (the server builds int8 from a Q/DQ model, as
    the board has no calibration of a model sent to it). ConfigError or ModelError in one line."""
    from harness.config import parse_task
    from precision.qdq import resolve_qdq
    from targets import get_target
    from workloads import get_workload
    from workloads.model_store import resolve_model

    params = dict(raw["params"], model=str(model)) if model is not None else raw["params"]
    task = parse_task(dict(raw, params=params), source, 0)
    get_target(task.target).Options.parse(task.params.options, source)
    workload = get_workload(task.workload)
    found = resolve_model(workload, task.params.model)
    if task.params.precision != "int8":
        return found
    qdq = resolve_qdq(found.path, task.workload)
    if qdq.explicit:
        return found
    log.info("%s: int8: sending the Q/DQ model %s, calibrated here for %s", source, qdq.path, found.path.name)
    return resolve_model(workload, str(qdq.path))


def run_measure(argv: Sequence[str]) -> int:
    """`mlmark measure`: one task on a server; prints JSON, writes Results/."""
    from harness import results as res
    from harness.serve import DEFAULT_PORT

    args = _parser().parse_args(list(argv))
    host, port, given = parse_address(args.host, args.port or DEFAULT_PORT)
    if given and args.port is not None:
        raise ConfigError("measure: give the port once: in --host HOST:PORT or in --port")
    raw = task_from_args(args)
    source = "mlmark measure {}".format(args.model_onnx.name)
    model = local_check(raw, args.model_onnx, source)
    out = res.claim_result_path(args.results_dir, name=host)
    record = res.RunRecord(started=res.now(), config_files=[], system={})
    res.save(record, out)
    job: List[str] = []

    async def go() -> Tuple[Dict[str, Any], Any]:
        async with session() as http:
            client = ServerClient(host, port, token_from(args.token), http)
            await client.health()
            job.append(await client.submit(raw, model.path, source, args.queue_wait))
            answer = await client.wait(job[0])
            return answer, client

    started = res.now()
    try:
        answer, client = asyncio.run(go())
    except RunError as exc:
        _record_failure(record, raw, source, str(exc), started, out)
        raise
    except KeyboardInterrupt:
        if job:
            cancel_remote(host, port, token_from(args.token), job[0])
        record.interrupted = True
        res.save(record, out)
        raise
    result = task_result(answer, client.address, model)
    record.system = dict(answer.get("system") or {}, served_by=client.address)
    record.tasks.append(result)
    res.save(record, out)
    print(json.dumps(summary(result, answer, client.address, out), indent=2))
    return 0


def _record_failure(record: Any, raw: Dict[str, Any], source: str, error: str, started: str, out: Path) -> None:
    from harness import results as res

    record.failed.append(dict(source=source, target=raw["target"], workload=raw["workload"], params=raw["params"],
                              error=error, started=started, finished=res.now()))
    res.save(record, out)


def cancel_remote(host: str, port: int, token: Optional[str], job_id: str) -> None:
    """Cancel a measurement after Ctrl-C (in a new event loop: the interrupted one is gone); best effort."""
    async def go() -> None:
        async with session() as http:
            await ServerClient(host, port, token, http).cancel(job_id)

    try:
        asyncio.run(go())
        log.info("cancelled measurement %s on %s:%d", job_id[:8], host, port)
    except (RunError, KeyboardInterrupt) as exc:
        log.warning("could not cancel measurement %s on %s:%d: %s", job_id[:8], host, port, exc)
