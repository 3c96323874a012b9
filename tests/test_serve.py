"""mlmark serve, measure and fleet on loopback: real server processes, the real client, the onnxruntime target.

Each server is `mlmark serve --port 0` in its own process, as a board runs it; the client is the
`mlmark measure` and `mlmark fleet` commands, or their client class where a test needs many at once
or a request the command would refuse before sending. Measurements are short (few iterations, a
tenth of a second of warm-up) so that the whole file runs in about a minute on two cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("aiohttp")

from core.errors import RunError  # noqa: E402
from harness import results as res  # noqa: E402
from harness.measure import ServerClient, session  # noqa: E402
from harness.serve.child import CRASH_TEST_ENV  # noqa: E402
from tests.conftest import REPO, make_standin_trtexec, run_cli, write_tiny_classifier  # noqa: E402

TOKEN = "a-test-token-of-enough-length"
QUICK = ["--iterations", "64", "--warmup", "0.05"]
QUICK_PARAMS = {"mode": "latency", "hardware": "cpu", "precision": "fp32", "iterations": 64, "warmup": 0.05}
NO_TOKEN_ENV = {"MLMARK_SERVE_TOKEN": ""}


class Served:
    """A running `mlmark serve` process."""

    def __init__(self, proc: "subprocess.Popen[str]", url: str, log: Path, store: Path) -> None:
        self.proc, self.url, self.log, self.store = proc, url, log, store
        self.address = url[len("http://"):]
        self.host, self.port = self.address.rsplit(":", 1)

    def get(self, path: str, token: Optional[str] = None, method: str = "GET") -> Tuple[int, Dict[str, Any]]:
        request = urllib.request.Request(self.url + path, method=method)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def health(self, token: Optional[str] = None) -> Dict[str, Any]:
        status, body = self.get("/health", token)
        assert status == 200, body
        return body

    def wait_until(self, what: Any, timeout: float = 60, token: Optional[str] = None) -> Dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            health = self.health(token)
            if what(health):
                return health
            time.sleep(0.05)
        raise AssertionError("the server never reached the state; last health: {}".format(health))


def start_server(folder: Path, *args: str, env: Optional[Dict[str, str]] = None) -> Served:
    """`mlmark serve --port 0 ...` in folder; returns once it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    full = dict(os.environ, MLMARK_MODELS=str(folder / "models"), MLMARK_ENGINES=str(folder / "engines"),
                MLMARK_SERVE_TOKEN="")
    full.pop(CRASH_TEST_ENV, None)
    full.update(env or {})
    log = folder / "server.log"
    store = folder / "store"
    proc = subprocess.Popen([sys.executable, str(REPO / "harness" / "mlmark.py"), "serve", "--port", "0", "--store",
                             str(store)] + list(args), stdout=subprocess.PIPE, stderr=open(str(log), "w"),
                            universal_newlines=True, env=full, cwd=str(folder))
    line: List[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(60)
    if not line or "listening on " not in line[0]:
        proc.kill()
        raise AssertionError("the server did not start: {} {}".format(line, log.read_text()))
    url = line[0].split("listening on ")[1].split()[0]
    return Served(proc, url, log, store)


def stop_server(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0, served.log.read_text()  # a clean stop, also with a measurement running


@pytest.fixture(scope="module")
def folder(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def tiny(folder: Path) -> Path:
    return write_tiny_classifier(folder / "tiny.onnx")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[Served]:
    """Loopback, no token, three places in the queue, uploads up to 1 MB."""
    served = start_server(folder / "open", "--queue-size", "3", "--max-upload-mb", "1", "--store-mb", "2")
    yield served
    stop_server(served)


@pytest.fixture(scope="module")
def token_server(folder: Path) -> Iterator[Served]:
    served = start_server(folder / "token", env={"MLMARK_SERVE_TOKEN": TOKEN})
    yield served
    stop_server(served)


def measure(served: Served, model: Path, *args: str, env: Optional[Dict[str, str]] = None,
            results: Optional[Path] = None) -> Any:
    out = results or served.store.parent / "Results"
    return run_cli("measure", "--host", served.address, "--model-onnx", str(model), "-r", str(out), *args,
                   env=dict(NO_TOKEN_ENV, **(env or {})), cwd=served.store.parent)


def one_line(proc: Any) -> str:
    """The command's one error line (and no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mlmark: error: "), proc.stderr
    return last


def client_call(served: Served, fn: Any, token: Optional[str] = None) -> Any:
    """fn(ServerClient) in a fresh event loop."""
    async def go() -> Any:
        async with session() as http:
            return await fn(ServerClient(served.host, int(served.port), token, http))
    return asyncio.run(go())


def task(**params: Any) -> Dict[str, Any]:
    return {"target": "onnxruntime", "workload": "mobilenet", "params": dict(QUICK_PARAMS, **params)}


# --- the happy path -------------------------------------------------------------------------------------


def test_measure_prints_the_result_and_writes_it_as_a_local_run_does(server: Served, tiny: Path,
                                                                      tmp_path: Path) -> None:
    proc = measure(server, tiny, *QUICK, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["server"] == server.address and printed["metric"] == "latency" and printed["units"] == "ms"
    lat = printed["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["samples"] == 64
    assert printed["throughput_fps"] > 0 and printed["score"] == lat["p95"] and "power" in printed
    (path,) = tmp_path.glob("*.json")
    assert Path(printed["results"]) == path and path.name.endswith("-127_0_0_1.json")
    record = res.load(path)
    (result,) = record.tasks
    assert result.params["mode"] == "latency" and result.iterations == 64 and result.latency_ms["p95_ms"] == lat["p95"]
    assert result.model["sha256"] == printed["model_sha256"] and result.target_info["providers"]
    assert record.system["served_by"] == server.address and record.system["cpu"] and record.system["packages"]
    assert not record.failed and (tmp_path / (path.stem + ".csv")).is_file()
    compared = run_cli("compare", str(path), "--no-files")  # the file is a result file like any other
    assert compared.returncode == 0 and "onnxruntime" in compared.stdout


def test_a_model_sent_again_reuses_its_stored_file(server: Served, tiny: Path, tmp_path: Path) -> None:
    before = server.health()["store"]
    proc = measure(server, tiny, "--mode", "throughput", "--batch", "2", *QUICK, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model sent before: its stored copy is used" in proc.stderr
    after = server.health()["store"]
    assert after["models"] == before["models"] >= 1 and after["bytes"] == before["bytes"]
    assert json.loads(proc.stdout)["batch"] == 2 and json.loads(proc.stdout)["metric"] == "throughput"


# --- security ---------------------------------------------------------------------------------------------


def test_no_token_and_a_wrong_token_are_refused_the_right_one_measures(token_server: Served, tiny: Path) -> None:
    status, body = token_server.get("/health")
    assert status == 401 and "needs a token" in body["error"]
    assert token_server.get("/measurements/x", token="wrong-" + TOKEN)[0] == 401
    line = one_line(measure(token_server, tiny, *QUICK))
    assert "refused the health check (HTTP 401): this server needs a token" in line
    line = one_line(measure(token_server, tiny, *QUICK, "--token", TOKEN + "x"))
    assert line.endswith("refused the health check (HTTP 401): wrong token")
    # The upload itself is refused before its body is sent (Expect: 100-continue), and nothing was queued.
    with pytest.raises(RunError, match="HTTP 401"):
        client_call(token_server, lambda c: c.submit(task(), tiny, "t"), token="wrong")
    assert token_server.health(TOKEN)["store"]["models"] == 0
    ok = measure(token_server, tiny, *QUICK, env={"MLMARK_SERVE_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], "listening on 0.0.0.0 lets other machines in, so it needs a token"),
    (["--host", "192.168.1.20", "--token", "short"], "the token has 5 characters; give at least 16"),
    (["--max-upload-mb", "64", "--store-mb", "32"], "--store-mb (32) must hold at least one upload"),
])
def test_the_server_refuses_to_start_unsafely_in_one_line(args: List[str], words: str) -> None:
    proc = run_cli("serve", *args, env=NO_TOKEN_ENV, timeout=60)
    assert words in one_line(proc)


# --- bad requests: the server answers each in one line and goes on -----------------------------------------


def test_garbage_and_wrong_models_are_refused_before_anything_else(server: Served, tiny: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(50000))
    with pytest.raises(RunError, match=r"refused the measurement \(HTTP 400\): the upload is not an ONNX model"):
        client_call(server, lambda c: c.submit(task(), garbage, "t"))
    detector = write_tiny_classifier(tmp_path / "small.onnx", hw=96)
    with pytest.raises(RunError, match=r"HTTP 400\): the upload: mobilenet expects one input \[batch, 3, 224, 224\]"):
        client_call(server, lambda c: c.submit(task(), detector, "t"))
    import onnx

    broken = onnx.load(str(tiny))
    broken.graph.node[1].input[0] = "no-such-tensor"  # parses, but no node makes this input
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(RunError, match=r"HTTP 400\): the upload is not a valid ONNX model: .*no-such-tensor"):
        client_call(server, lambda c: c.submit(task(), tmp_path / "broken.onnx", "t"))
    assert not list((server.store / ".incoming").iterdir())  # nothing half-received is left


@pytest.mark.parametrize("body, words", [
    (task(precision="fp64"), "t: unknown params.precision \"fp64\""),
    (task(threads=0), "t: params.threads must be an integer from 1 to 1024, got 0"),
    (task(model="/etc/passwd"), "t: params.model would name a file on the server"),
    (dict(task(), target="trtexec", params=dict(QUICK_PARAMS, hardware="gpu", trtexec="/bin/sh")),
     "params.trtexec would name a file on the server"),
    ([1, 2], "part 'task' must be a JSON object"),
])
def test_malformed_tasks_are_refused_in_one_line(server: Served, tiny: Path, body: Any, words: str) -> None:
    async def send(c: ServerClient) -> Any:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("task", json.dumps(body if not isinstance(body, dict) else dict(body, source="t")),
                       content_type="application/json")
        form.add_field("model", tiny.read_bytes(), filename="m.onnx")
        return await c._call("POST", "/measurements", data=form)

    status, answer, _ = client_call(server, send)
    assert status == 400 and words in answer["error"] and "\n" not in answer["error"]


def test_malformed_http_is_answered_and_the_server_goes_on(server: Served) -> None:
    with socket.create_connection((server.host, int(server.port)), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert b" 400 " in s.recv(100).split(b"\r\n")[0]
    request = urllib.request.Request(server.url + "/measurements", data=b"plain text", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 400 and "multipart/form-data" in json.loads(err.value.read())["error"]
    truncated = (b"--b\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" + json.dumps(task()).encode() +
                 b"\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nabc")
    for body, words in ((b"no boundary anywhere", "Could not find starting boundary"), (truncated, "malformed")):
        request = urllib.request.Request(server.url + "/measurements", data=body, method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=b"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 400 and words in json.loads(err.value.read())["error"]
    assert server.get("/no/such/route")[0] == 404 and server.get("/health", method="DELETE")[0] == 405
    assert server.get("/measurements/no-such-id")[0] == 404
    assert server.health()["status"] == "ok"


def test_an_oversized_upload_is_refused_before_and_while_it_is_sent(server: Served, tmp_path: Path) -> None:
    big = write_tiny_classifier(tmp_path / "big.onnx", classes=60000)  # ~2 MB, the server takes 1 MB
    assert big.stat().st_size > 1 << 20
    started = time.monotonic()
    with pytest.raises(RunError, match=r"HTTP 413\): the upload is larger than this server takes "
                                       r"\(--max-upload-mb 1\)"):
        client_call(server, lambda c: c.submit(task(), big, "t"))

    async def chunked(c: ServerClient) -> Any:
        """No Content-Length (chunked): refused by the count of what arrives."""
        async def body() -> Any:
            yield b"--b\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" + json.dumps(task()).encode()
            yield b"\r\n--b\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.onnx\"\r\n\r\n"
            for _ in range(40):
                yield b"\0" * 65536
            yield b"\r\n--b--\r\n"

        try:
            return await c._call("POST", "/measurements", data=body(),
                                 headers={"Content-Type": "multipart/form-data; boundary=b"})
        except RunError as exc:  # the server may close the connection before the client has sent everything
            return exc

    answer = client_call(server, chunked)
    assert isinstance(answer, RunError) or (answer[0] == 413 and "--max-upload-mb 1" in answer[1]["error"])
    assert time.monotonic() - started < 30
    server.wait_until(lambda h: h["queue"]["uploading"] == 0, timeout=10)
    assert not list((server.store / ".incoming").iterdir())


# --- many clients, one measurement at a time -----------------------------------------------------------------


def test_twenty_clients_at_once_are_all_answered_one_measurement_at_a_time(server: Served, tiny: Path) -> None:
    server.wait_until(lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0)
    seen: List[Dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(server.health()["queue"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def one(c: ServerClient, i: int) -> Any:
        try:
            job = await c.submit(task(warmup=0.3), tiny, "client {}".format(i))
        except RunError as exc:
            return exc
        return await c.wait(job)

    async def twenty(c: ServerClient) -> Any:
        return await asyncio.gather(*(one(c, i) for i in range(20)))

    try:
        answers = client_call(server, twenty)
    finally:
        stop.set()
        watcher.join()
    done = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, RunError)]
    assert len(done) + len(refused) == 20 and done and refused
    assert all("refused the measurement (HTTP 503): the queue is full" in str(r) and "retry in" in str(r)
               for r in refused)
    assert all(a["state"] == "done" and a["result"]["latency_ms"]["samples"] == 64 for a in done)
    # Never more than one measurement running, never more waiting (or uploading) than the bound.
    assert max(q["running"] for q in seen) == 1
    assert max(q["waiting"] + q["uploading"] for q in seen) <= 3
    spans = sorted((a["timing"]["started"], a["timing"]["finished"]) for a in done)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert server.health()["queue"]["finished"]["refused"] >= len(refused)


def test_a_full_queue_is_retried_as_the_server_says_with_queue_wait(server: Served, tiny: Path) -> None:
    server.wait_until(lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0)

    async def fill_then_wait(c: ServerClient) -> Any:
        jobs = [await c.submit(task(warmup=0.2), tiny, "filler") for _ in range(4)]
        late = await c.submit(task(), tiny, "patient", queue_wait_s=120)
        for job in jobs:
            await c.wait(job)
        return await c.wait(late)

    assert client_call(server, fill_then_wait)["state"] == "done"


# --- clients that go away ---------------------------------------------------------------------------------------


def test_a_client_that_disconnects_mid_upload_leaves_nothing_behind(server: Served, tiny: Path) -> None:
    server.wait_until(lambda h: h["queue"]["uploading"] == 0)
    task_part = json.dumps(task()).encode()
    head = (b"--b\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" + task_part +
            b"\r\n--b\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.onnx\"\r\n\r\n")
    with socket.create_connection((server.host, int(server.port)), timeout=10) as s:
        s.sendall(b"POST /measurements HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 900000\r\n\r\n" + head + tiny.read_bytes()[:20000])
        server.wait_until(lambda h: h["queue"]["uploading"] == 1, timeout=10)
    health = server.wait_until(lambda h: h["queue"]["uploading"] == 0, timeout=30)
    assert health["status"] == "ok" and not list((server.store / ".incoming").iterdir())


def _queued_id(stderr: Any, timeout: float = 60) -> str:
    """The measurement id a running `mlmark measure` logs, read from its stderr."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = stderr.readline()
        if " queued at " in line:
            return line.split("measurement ")[1].split()[0]
    raise AssertionError("the client never logged its measurement's id")


def running_client(server: Served, tiny: Path, warmup: float, *args: str) -> Any:
    """`mlmark measure ... args` started in the background: (the process, its measurement's id once running)."""
    server.wait_until(lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0)
    client = subprocess.Popen([sys.executable, str(REPO / "harness" / "mlmark.py"), "measure", "--host",
                               server.address, "--model-onnx", str(tiny), "--iterations", "64", "--warmup",
                               str(warmup), "-r", str(server.store.parent / "Results")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env=dict(os.environ, **NO_TOKEN_ENV))
    job = _queued_id(client.stderr)
    server.wait_until(lambda h: h["queue"]["running"] == 1, timeout=120)
    return client, job


def test_a_client_killed_mid_measurement_does_not_disturb_the_server(server: Served, tiny: Path) -> None:
    client, job = running_client(server, tiny, warmup=2)
    client.kill()
    client.wait(10)
    assert server.health()["status"] == "ok"
    status, body = server.get("/measurements/{}?wait=60".format(job))
    assert status == 200 and body["state"] == "done"  # the measurement ran to its end; its result waits
    assert body["result"]["metric"] == "latency"


def test_ctrl_c_in_the_client_cancels_the_measurement_on_the_server(server: Served, tiny: Path) -> None:
    client, job = running_client(server, tiny, warmup=60)
    started = time.monotonic()
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert "mlmark: interrupted; the measurement was cancelled on the server" in err
    status, body = server.get("/measurements/{}".format(job))
    assert body["state"] == "cancelled" and "while it ran" in body["error"]
    server.wait_until(lambda h: h["queue"]["running"] == 0, timeout=30)
    assert time.monotonic() - started < 30  # the child was stopped, not left to its 60 s of warm-up


# --- measurements that fail -----------------------------------------------------------------------------------


def test_a_crash_in_the_child_is_an_error_for_its_client_and_the_server_goes_on(folder: Path, tiny: Path) -> None:
    crashing = start_server(folder / "crash", env={CRASH_TEST_ENV: "abort"})
    try:
        for _ in range(2):
            line = one_line(measure(crashing, tiny, *QUICK))
            assert "the measurement failed: the measurement process died of SIGABRT after" in line
            assert "the server goes on" in line
        health = crashing.health()
        assert health["status"] == "ok" and health["queue"]["finished"]["failed"] == 2
        assert health["store"]["pinned"] == 0
    finally:
        stop_server(crashing)


def test_targets_that_cannot_run_here_are_errors_not_scores(server: Served, tiny: Path, tmp_path: Path) -> None:
    """tensorrt and trtexec refuse on this machine (no TensorRT, no trtexec): the client gets their reason."""
    line = one_line(measure(server, tiny, "--target", "tensorrt", "--hardware", "gpu", "--precision", "fp16",
                            *QUICK, results=tmp_path))
    assert "the measurement failed: target tensorrt:" in line
    record = res.load(next(tmp_path.glob("*.json")))
    assert not record.tasks and record.failed[0]["error"] in line
    line = one_line(measure(server, tiny, "--target", "trtexec", "--hardware", "gpu", "--precision", "fp16", *QUICK,
                            env={"PATH": "/usr/bin:/bin"}))
    assert "the measurement failed" in line and "trtexec" in line


@pytest.fixture(scope="module")
def trtexec_server(folder: Path) -> Iterator[Served]:
    """A server whose trtexec is the test stand-in (tests/trtexec_standin.py); its first 50 fp16 and int8 builds
    keep fp32-sized weights while every layer reports the precision asked."""
    binary = make_standin_trtexec(folder / "standin-bin", "10.3.0")
    served = start_server(folder / "trtexec", "--precision-builds", "3", env={
        "PATH": "{}{}{}".format(binary.parent, os.pathsep, os.environ.get("PATH", "")),
        "TRTEXEC_STANDIN_STATE": str(folder / "standin-builds"), "TRTEXEC_STANDIN_WIDE": "50",
        "TRTEXEC_STANDIN_CALLS": str(folder / "standin-calls.jsonl")})
    yield served
    stop_server(served)


def test_the_server_checks_engine_size_beside_the_layers_and_gives_no_latency_on_failure(
        trtexec_server: Served, tiny: Path, tmp_path: Path) -> None:
    line = one_line(measure(trtexec_server, tiny, "--target", "trtexec", "--hardware", "gpu", "--precision", "fp16",
                            *QUICK, results=tmp_path))
    assert ("asked for fp16, but 3 build(s) of TensorRT fell back to a wider precision, the last with fp32 engine"
            in line)
    assert "(at least 1.5 required); fp16 in 4 of 4 compute layers" in line
    record = res.load(next(tmp_path.glob("*.json")))
    assert not record.tasks and "fell back" in record.failed[0]["error"]
    # fp32 needs no check: measured (with the stand-in's made-up timings) and the server's settings recorded.
    ok = measure(trtexec_server, tiny, "--target", "trtexec", "--hardware", "gpu", "--precision", "fp32", *QUICK,
                 results=tmp_path)
    assert ok.returncode == 0, ok.stderr
    options = json.loads(Path(json.loads(ok.stdout)["results"]).read_text())["tasks"][0]["target_info"]["options"]
    assert options["size_check"] == "fp32-engine" and options["precision_retries"] == 2


# --- fleet --------------------------------------------------------------------------------------------------


def test_fleet_runs_the_config_on_every_board_into_one_table(server: Served, folder: Path, tiny: Path,
                                                             tmp_path: Path) -> None:
    second = start_server(folder / "second")
    try:
        config = tmp_path / "fleet.json"
        config.write_text(json.dumps([
            {"target": "onnxruntime", "workload": "mobilenet",
             "params": dict(QUICK_PARAMS, mode="throughput", batch=2, model=str(tiny))},
            {"target": "onnxruntime", "workload": "mobilenet", "params": dict(QUICK_PARAMS, model=str(tiny))}]))
        out = tmp_path / "R"
        proc = run_cli("fleet", "-c", str(config), "--hosts", "nano={}".format(server.address),
                       "orin={}".format(second.address), "-r", str(out), env=NO_TOKEN_ENV)
        assert proc.returncode == 0, proc.stderr
        rows = [line for line in proc.stdout.splitlines() if "onnxruntime" in line]
        assert len(rows) == 4 and sum("nano: " in r for r in rows) == 2 and sum("orin: " in r for r in rows) == 2
        assert "Speed-up" in proc.stdout and "(baseline)" in proc.stdout
        for board in ("nano", "orin"):
            (path,) = out.glob("*-{}.json".format(board))
            record = res.load(path)
            assert [t.params["mode"] for t in record.tasks] == ["throughput", "latency"]
            assert record.tasks[0].source == "{}: task 1".format(config) and record.system["board"] == board
        assert list(out.glob("fleet-*.csv"))
        # A board that does not answer stops the fleet before anything runs.
        down = run_cli("fleet", "-c", str(config), "--hosts", "nano={}".format(server.address), "gone=127.0.0.1:9",
                       "-r", str(tmp_path / "R2"), env=NO_TOKEN_ENV)
        line = one_line(down)
        assert "fleet: not every board is ready; nothing was run: gone: cannot reach 127.0.0.1:9" in line
        assert not (tmp_path / "R2").exists() or not list((tmp_path / "R2").glob("*.json"))
    finally:
        stop_server(second)


def test_stopping_the_server_mid_measurement_ends_its_child(folder: Path, tiny: Path) -> None:
    served = start_server(folder / "stopping")
    job = client_call(served, lambda c: c.submit(task(warmup=60), tiny, "long"))
    served.wait_until(lambda h: h["queue"]["running"] == 1)
    deadline = time.time() + 30
    while "child process" not in served.log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    pid = int(served.log.read_text().split("child process ")[1].split()[0])
    assert Path("/proc/{}".format(pid)).exists() and job
    started = time.monotonic()
    stop_server(served)  # exits 0
    assert time.monotonic() - started < 20
    assert not Path("/proc/{}".format(pid)).exists() or "zombie" in Path("/proc/{}/status".format(pid)).read_text()
