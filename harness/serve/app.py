"""`mlmark serve`: the measurement server's routes, its security and its command line (aiohttp).

    GET    /health                 status, queue and store; the tool's version and limits
    GET    /system                 the system section of results (this machine, as a local run records it)
    POST   /measurements           multipart: part "task" (JSON {target, workload, params[, source]}), then part
                                   "model" (the ONNX file); 202 with the job's id and place in the queue
    GET    /measurements/{id}      the job: queued, running, done (result and system) or failed (error);
                                   ?wait=S waits up to S seconds (at most 60) for it to finish
    DELETE /measurements/{id}      cancel: a waiting job leaves the queue, a running one's child is stopped

Every answer is JSON; every refusal is {"error": one line} with its HTTP status: 400 a malformed
request, task or model; 401 a missing or wrong token; 404 no such job; 413 an upload over
--max-upload-mb; 503 the queue is full (with Retry-After). With a token (required for any address
but loopback), every route needs `Authorization: Bearer TOKEN`, compared in constant time.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from core import __version__
from core.errors import ConfigError, MLMarkError, ModelError
from core.paths import models_dir
from harness.serve import DEFAULT_PORT, TOKEN_ENV

log = logging.getLogger("mlmark.serve")

MIN_TOKEN_CHARS = 16
#: onnx.checker checks a model in memory, where protobuf stops at 2 GB.
MAX_UPLOAD_MB = 2000
MAX_TASK_BYTES = 64 * 1024
MAX_SOURCE_CHARS = 200
MAX_WAIT_S = 60.0
CHUNK = 1 << 20
#: Task params that name files or programs on the server: a client names neither.
SERVER_PATHS = {"model": "the model is the upload", "trtexec": "the server runs the trtexec it finds (PATH, then "
                "/usr/src/tensorrt/bin/trtexec)"}
#: Targets whose engines the server checks by the engine-size rule beside the layer rule, as the issue's
#: latency server does (targets/tensorrt/precision_check.py).
SIZE_CHECKED_TARGETS = ("tensorrt", "trtexec")
GENERATE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings (its command line)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: Optional[str] = None
    max_upload_mb: int = 512
    queue_bound: int = 8
    store: Path = Path("models") / "uploads"
    store_mb: int = 4096
    measurement_timeout_s: float = 7200.0
    precision_builds: int = 20

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb << 20


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach the address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_security(host: str, token: Optional[str]) -> None:
    """ConfigError unless a non-loopback address has a token, and a given token is long enough to guess at."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError("serve: the token has {} characters; give at least {} (make one with {})".format(
            len(token), MIN_TOKEN_CHARS, GENERATE_TOKEN))
    if token is None and not is_loopback(host):
        raise ConfigError("serve: listening on {} lets other machines in, so it needs a token: set {} (or "
                          "--token) to a secret of at least {} characters, e.g. from {}".format(
                              host, TOKEN_ENV, MIN_TOKEN_CHARS, GENERATE_TOKEN))


def _aiohttp() -> Any:
    try:
        import aiohttp.web
    except ImportError:
        raise MLMarkError("mlmark serve, measure and fleet need aiohttp: pip install -e '.[serve]' (or pip install "
                          "aiohttp)") from None
    return aiohttp.web


# -- the application -----------------------------------------------------------------------------------


class Server:
    """The routes, over one upload store and one queue."""

    def __init__(self, config: ServeConfig, store: Any) -> None:
        from harness.serve.child import run_in_child
        from harness.serve.queue import JobQueue

        self.config = config
        self.store = store
        self.queue = JobQueue(config.queue_bound, lambda job: run_in_child(job, config.measurement_timeout_s),
                              on_finished=lambda job: store.unpin(job.model_sha256))
        self._validating = asyncio.Semaphore(1)  # one model in memory at a time (a Nano has 4 GB)
        self._token = config.token.encode("utf-8") if config.token else None

    def app(self) -> Any:
        web = _aiohttp()
        app = web.Application(middlewares=[self._errors_and_auth()], client_max_size=MAX_TASK_BYTES)
        app.router.add_get("/health", self.health)
        app.router.add_get("/system", self.system)
        app.router.add_post("/measurements", self.submit, expect_handler=self._expect)
        app.router.add_get("/measurements/{id}", self.get)
        app.router.add_delete("/measurements/{id}", self.cancel)
        return app

    # -- security and errors ------------------------------------------------------------------------

    def _auth_refusal(self, request: Any) -> Optional[Any]:
        """A 401 answer unless the request carries the token (or none is required)."""
        if self._token is None:
            return None
        given = request.headers.get("Authorization", "")
        if not given:
            return _error(401, "this server needs a token: send the header 'Authorization: Bearer TOKEN' (mlmark "
                               "measure --token, or {})".format(TOKEN_ENV), {"WWW-Authenticate": "Bearer"})
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8"), self._token):
            return _error(401, "wrong token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def _errors_and_auth(self) -> Any:
        web = _aiohttp()

        @web.middleware
        async def middleware(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            refused = self._auth_refusal(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except web.HTTPException as exc:  # aiohttp's own refusals (no such route, wrong method): JSON too
                if exc.status < 400:
                    raise
                return _error(exc.status, exc.reason or "refused", {k: v for k, v in exc.headers.items()
                                                                    if k in ("Allow",)})
            except asyncio.CancelledError:
                raise
            except Exception:  # a fault of the server's own code: this request fails, the server goes on
                log.exception("%s %s: internal error", request.method, request.path)
                return _error(500, "internal error of mlmark serve (its log says more)")

        return middleware

    async def _expect(self, request: Any) -> Optional[Any]:
        """Before an upload is sent (Expect: 100-continue): refuse a wrong token, an oversized upload or a full
        queue now, so that the client does not send megabytes to be refused."""
        refused = self._auth_refusal(request) or self._size_refusal(request)
        if refused is None and request.headers.get("Expect", "").lower() != "100-continue":
            refused = _error(417, "unknown Expect: {}".format(request.headers.get("Expect", "")[:60]))
        if refused is None:
            retry_after = self.queue.refusal()
            if retry_after is not None:
                refused = self._full(retry_after)
        if refused is not None:
            refused.force_close()  # the body was never sent: this connection cannot carry another request
            return refused
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body has not started (as aiohttp's own expect handler does)
        return None

    def _size_refusal(self, request: Any) -> Optional[Any]:
        length = request.content_length
        if length is not None and length > self.config.max_upload_bytes + MAX_TASK_BYTES:
            return self._too_large()
        return None

    def _too_large(self) -> Any:
        return _error(413, "the upload is larger than this server takes (--max-upload-mb {})".format(
            self.config.max_upload_mb))

    def _full(self, retry_after: int) -> Any:
        return _error(503, "the queue is full ({} waiting, the server's --queue-size); retry in {} s".format(
            self.config.queue_bound, retry_after), {"Retry-After": str(retry_after)}, retry_after_s=retry_after)

    # -- routes -------------------------------------------------------------------------------------

    async def health(self, request: Any) -> Any:
        return _json(200, {"status": "ok", "tool_version": __version__, "queue": self.queue.status(),
                           "store": self.store.status(),
                           "limits": {"max_upload_mb": self.config.max_upload_mb,
                                      "queue_size": self.config.queue_bound,
                                      "measurement_timeout_s": self.config.measurement_timeout_s,
                                      "precision_builds": self.config.precision_builds}})

    async def system(self, request: Any) -> Any:
        from harness.serve.child import system_section

        return _json(200, await asyncio.get_event_loop().run_in_executor(None, system_section))

    async def get(self, request: Any) -> Any:
        job = self.queue.get(request.match_info["id"])
        if job is None:
            return _error(404, "no measurement {} here (finished ones are kept for a while, then dropped)".format(
                request.match_info["id"][:40]))
        try:
            wait = min(MAX_WAIT_S, max(0.0, float(request.query.get("wait", "0"))))
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        if wait > 0 and not job.done.is_set():
            try:
                await asyncio.wait_for(job.done.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return _json(200, job.to_dict(self.queue.position(job)))

    async def cancel(self, request: Any) -> Any:
        job = self.queue.get(request.match_info["id"])
        if job is None:
            return _error(404, "no measurement {} here".format(request.match_info["id"][:40]))
        self.queue.cancel(job)
        return _json(200, job.to_dict(self.queue.position(job)))

    async def submit(self, request: Any) -> Any:
        answer = await self._submit(request)
        if answer.status != 202:
            answer.force_close()  # the rest of a refused body is not read: the connection is not reused
        return answer

    async def _submit(self, request: Any) -> Any:
        from harness.serve.queue import Job, QueueFull

        refused = self._size_refusal(request)
        if refused is not None:
            return refused
        try:
            reservation = self.queue.reserve()
        except QueueFull as full:
            return self._full(full.retry_after)
        box: List[Any] = []  # the upload being received, discarded unless kept
        try:
            received = await self._receive(request, box)
            if not isinstance(received, tuple):
                return received  # a refusal
            task, source, sha256 = received
            upload = box.pop()
            try:
                async with self._validating:
                    await asyncio.get_event_loop().run_in_executor(None, _check, upload.path, task["workload"])
            except MLMarkError as exc:
                upload.discard()
                return _error(400, str(exc))
            stored = self.store.add(upload, sha256)
            task["params"]["model"] = str(stored.path)
            job = Job(task=task, source=source, model_sha256=sha256)
            position = self.queue.submit(reservation, job)
            log.info("measurement %s: queued at %d (%s %s, model %s%s)", job.id[:8], position, task["target"],
                     task["workload"], sha256[:12], ", sent before" if stored.reused else "")
            body = job.to_dict(position)
            body["model_reused"] = stored.reused
            return _json(202, body, {"Location": "/measurements/{}".format(job.id)})
        finally:
            reservation.release()  # no-op once submitted
            for upload in box:
                upload.discard()

    async def _receive(self, request: Any, box: List[Any]) -> Any:
        """(task, source, SHA-256) of a request's parts, the model streamed into an upload put in box; or the
        refusal to answer. Whatever the client's bytes are, the answer is one line."""
        from aiohttp.http_exceptions import HttpProcessingError

        from harness.serve.store import TooLarge

        try:
            try:
                reader = await request.multipart()
            except (AssertionError, ValueError, KeyError) as exc:  # aiohttp asserts on a non-multipart type
                return _error(400, "send a multipart/form-data body: part 'task' (JSON), then part 'model' (the "
                                   "ONNX file) ({})".format(str(exc)[:80] or "not multipart"))
            part = await reader.next()
            if part is None or part.name != "task":
                return _error(400, "the first part must be 'task' (JSON {target, workload, params}), then 'model'")
            text = await _read_small(part, MAX_TASK_BYTES)
            if text is None:
                return _error(400, "part 'task' is larger than {} KB".format(MAX_TASK_BYTES // 1024))
            try:
                task, source = self._task(text)
            except MLMarkError as exc:
                return _error(400, str(exc))
            part = await reader.next()
            if part is None or part.name != "model":
                return _error(400, "the second part must be 'model' (the ONNX file)")
            upload = self.store.new_upload()
            box.append(upload)
            while True:
                chunk = await part.read_chunk(CHUNK)
                if not chunk:
                    break
                upload.write(chunk)
            if await reader.next() is not None:
                return _error(400, "unexpected part after 'model'")
            return task, source, upload.finish()
        except TooLarge:
            return self._too_large()
        except ConnectionError as exc:  # the client went away: nobody reads the answer
            log.info("an upload ended early: the client went away (%s)", exc)
            return _error(400, "the upload ended early")
        except OSError as exc:
            log.warning("cannot store an upload: %s", exc)
            return _error(507, "the server cannot store the upload ({})".format(exc.strerror or exc))
        except (HttpProcessingError, ValueError, RuntimeError, AssertionError) as exc:
            return _error(400, "malformed multipart body ({}: {})".format(type(exc).__name__, str(exc)[:100]))

    def _task(self, text: bytes) -> Any:
        """The task of a request, checked as a config's task is (parse_task), before its model is read."""
        from harness.config import parse_task

        try:
            raw = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError("part 'task' is not JSON ({})".format(str(exc)[:100])) from None
        if not isinstance(raw, dict):
            raise ConfigError("part 'task' must be a JSON object {target, workload, params[, source]}")
        source = raw.pop("source", None)
        if source is None:
            source = "mlmark serve"
        if not isinstance(source, str) or not source.isprintable() or len(source) > MAX_SOURCE_CHARS:
            raise ConfigError("field 'source' must be a line of at most {} printable characters".format(
                MAX_SOURCE_CHARS))
        params = raw.get("params")
        if isinstance(params, dict):
            for key, why in SERVER_PATHS.items():
                if key in params:
                    raise ConfigError("{}: params.{} would name a file on the server, which a client may not: "
                                      "{}".format(source, key, why))
            if raw.get("target") in SIZE_CHECKED_TARGETS:
                params.setdefault("size_check", "fp32-engine")
                params.setdefault("precision_retries", self.config.precision_builds - 1)
        task = parse_task(raw, source, 0)
        from targets import get_target

        get_target(task.target).Options.parse(task.params.options, source)  # the values, as prepare() checks them
        return raw, source


def _check(path: Path, workload: str) -> None:
    from harness.serve.store import check_onnx

    try:
        check_onnx(path, workload)
    except ModelError:
        raise
    except Exception as exc:  # anything else the parser raises: the file is still not a model
        raise ModelError("the upload is not a usable ONNX model ({}: {})".format(type(exc).__name__,
                                                                                 str(exc)[:120])) from None


async def _read_small(part: Any, limit: int) -> Optional[bytes]:
    data = b""
    while True:
        chunk = await part.read_chunk(8192)
        if not chunk:
            return data
        data += chunk
        if len(data) > limit:
            return None


def _json(status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> Any:
    web = _aiohttp()
    # NaN is written as results files write it (json's default): a statistic that is NaN must not make a finished
    # measurement impossible to collect.
    return web.json_response(body, status=status, headers=headers, dumps=lambda obj: json.dumps(obj, default=str))


def _error(status: int, message: str, headers: Optional[Dict[str, str]] = None, **extra: Any) -> Any:
    body: Dict[str, Any] = {"error": message}
    body.update(extra)
    return _json(status, body, headers)


# -- running it ----------------------------------------------------------------------------------------


async def serve(config: ServeConfig, ready: Callable[[str], None] = print) -> None:
    """Run the server until SIGINT or SIGTERM; ready(url) once it listens."""
    from harness.serve.store import UploadStore

    web = _aiohttp()
    with UploadStore(config.store, config.store_mb << 20, config.max_upload_bytes).opened() as store:
        server = Server(config, store)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        worker = asyncio.ensure_future(server.queue.work())
        stop = asyncio.Event()
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, config.host, config.port)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError("serve: cannot listen on {}:{} ({})".format(
                    config.host, config.port, exc.strerror or exc)) from None
            host, port = runner.addresses[0][:2]  # with the port the system chose for --port 0
            ready("http://{}:{}".format("[{}]".format(host) if ":" in host else host, port))
            await stop.wait()
            log.info("stopping: the running measurement, if any, is ended")
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    d = ServeConfig()
    parser = argparse.ArgumentParser(prog="mlmark serve", description="Serve measurements on this machine over "
                                     "HTTP: clients (mlmark measure, mlmark fleet) send an ONNX model and a task, "
                                     "it is measured here, one at a time, and the result is returned.")
    parser.add_argument("--host", default=d.host, help="address to listen on (default 127.0.0.1: this machine only; "
                        "any other needs a token)")
    parser.add_argument("--port", type=int, default=d.port, help="port (default {}; 0: any free port)".format(
        d.port))
    parser.add_argument("--token", default=None, help="the secret clients send as 'Authorization: Bearer TOKEN' "
                        "(default: ${}, which keeps it off the process list)".format(TOKEN_ENV))
    parser.add_argument("--max-upload-mb", type=int, default=d.max_upload_mb,
                        help="largest model accepted (default {} MB, at most {})".format(d.max_upload_mb,
                                                                                       MAX_UPLOAD_MB))
    parser.add_argument("--queue-size", type=int, default=d.queue_bound,
                        help="measurements that may wait behind the running one (default {})".format(d.queue_bound))
    parser.add_argument("--store", type=Path, default=None,
                        help="folder of uploaded models (default: the models folder's uploads/)")
    parser.add_argument("--store-mb", type=int, default=d.store_mb,
                        help="size of the store; least recently used models go first (default {} MB)".format(
                            d.store_mb))
    parser.add_argument("--measurement-timeout", type=float, default=d.measurement_timeout_s, metavar="SECONDS",
                        help="stop a measurement that runs longer (default {:g} s: TensorRT builds on a Nano take "
                             "minutes each)".format(d.measurement_timeout_s))
    parser.add_argument("--precision-builds", type=int, default=d.precision_builds,
                        help="tensorrt and trtexec tasks that do not set precision_retries: builds tried until an "
                             "fp16 or int8 engine holds its precision (default {})".format(d.precision_builds))
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging and tracebacks")
    return parser


def config_from_args(argv: Sequence[str]) -> ServeConfig:
    """The server's settings from its command line; ConfigError for an impossible one."""
    args = _parser().parse_args(list(argv))
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    check_security(args.host, token)
    if not 0 <= args.port <= 65535:
        raise ConfigError("serve: --port must be from 0 to 65535, got {}".format(args.port))
    if not 1 <= args.max_upload_mb <= MAX_UPLOAD_MB:
        raise ConfigError("serve: --max-upload-mb must be from 1 to {}, got {}".format(MAX_UPLOAD_MB,
                                                                                      args.max_upload_mb))
    if args.store_mb < args.max_upload_mb:
        raise ConfigError("serve: --store-mb ({}) must hold at least one upload (--max-upload-mb {})".format(
            args.store_mb, args.max_upload_mb))
    if not 1 <= args.queue_size <= 10000:
        raise ConfigError("serve: --queue-size must be from 1 to 10000, got {}".format(args.queue_size))
    if not args.measurement_timeout > 0:
        raise ConfigError("serve: --measurement-timeout must be a positive number of seconds")
    from targets.tensorrt.target import MAX_PRECISION_RETRIES

    if not 1 <= args.precision_builds <= MAX_PRECISION_RETRIES + 1:
        raise ConfigError("serve: --precision-builds must be from 1 to {}, got {}".format(
            MAX_PRECISION_RETRIES + 1, args.precision_builds))
    return ServeConfig(host=args.host, port=args.port, token=token, max_upload_mb=args.max_upload_mb,
                       queue_bound=args.queue_size, store=args.store or models_dir() / "uploads",
                       store_mb=args.store_mb, measurement_timeout_s=args.measurement_timeout,
                       precision_builds=args.precision_builds)


def run_serve(argv: Sequence[str]) -> int:
    """`mlmark serve`: run the server until Ctrl-C or SIGTERM."""
    config = config_from_args(argv)
    _aiohttp()

    def ready(url: str) -> None:
        print("mlmark serve: listening on {} (queue {}, uploads up to {} MB, store {}{})".format(
            url, config.queue_bound, config.max_upload_mb, config.store,
            ", token required" if config.token else ", loopback only, no token"), flush=True)

    asyncio.run(serve(config, ready))
    print("mlmark serve: stopped", file=sys.stderr)
    return 0
