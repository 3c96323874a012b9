"""mlmark serve on a GPU with the pytorch target: what tests/test_serve.py checks on the CPU, on loopback.

Run on a machine with an NVIDIA GPU, torch and onnx2torch:  MLMARK_GPU_TESTS=1 python -m pytest tests/test_serve_gpu.py
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

pytest.importorskip("aiohttp")

from core.errors import RunError  # noqa: E402
from harness import results as res  # noqa: E402
from harness.measure import ServerClient  # noqa: E402
from tests import test_serve as cpu  # noqa: E402  (its server and client helpers)
from tests.conftest import write_tiny_classifier  # noqa: E402

pytestmark = pytest.mark.gpu

GPU = ["--target", "pytorch", "--hardware", "gpu"]
QUICK = ["--iterations", "200", "--warmup", "0.2"]


def gpu_task(**params: Any) -> Dict[str, Any]:
    base = {"mode": "latency", "hardware": "gpu", "precision": "fp32", "iterations": 200, "warmup": 0.2}
    base.update(params)
    return {"target": "pytorch", "workload": "mobilenet", "params": base}


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: Any) -> Iterator[cpu.Served]:
    pytest.importorskip("torch")
    served = cpu.start_server(tmp_path_factory.mktemp("serve-gpu") / "gpu", "--queue-size", "3")
    yield served
    cpu.stop_server(served)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: Any) -> Path:
    return write_tiny_classifier(tmp_path_factory.mktemp("serve-gpu-model") / "tiny.onnx")


@pytest.mark.parametrize("precision, extra", [("fp32", []), ("fp16", ["--option", "exec_mode=cuda-graph"])])
def test_pytorch_on_the_gpu_through_the_server(gpu_server: cpu.Served, tiny: Path, tmp_path: Path, precision: str,
                                               extra: List[str]) -> None:
    proc = cpu.measure(gpu_server, tiny, *GPU, "--precision", precision, *QUICK, *extra, results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["target"] == "pytorch" and printed["hardware"] == "gpu" and printed["precision"] == precision
    lat = printed["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["samples"] == 200 and printed["throughput_fps"] > 0
    record = res.load(Path(printed["results"]))
    (result,) = record.tasks
    assert record.system["gpus"] and record.system["served_by"] == gpu_server.address
    assert "cuda" in json.dumps(result.target_info).lower()
    if extra:
        assert result.target_info.get("exec_mode") == "cuda-graph"


def test_several_gpu_clients_at_once_one_measurement_at_a_time(gpu_server: cpu.Served, tiny: Path) -> None:
    async def one(c: ServerClient, i: int) -> Any:
        try:
            return await c.wait(await c.submit(gpu_task(), tiny, "gpu client {}".format(i)))
        except RunError as exc:
            return exc

    async def many(c: ServerClient) -> Any:
        return await asyncio.gather(*(one(c, i) for i in range(8)))

    answers = cpu.client_call(gpu_server, many)
    done = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, RunError)]
    assert len(done) + len(refused) == 8 and done
    assert all("HTTP 503" in str(r) for r in refused)
    spans = sorted((a["timing"]["started"], a["timing"]["finished"]) for a in done)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_a_gpu_measurement_cancelled_mid_run_leaves_the_gpu_usable(gpu_server: cpu.Served, tiny: Path) -> None:
    client, _ = cpu.running_client(gpu_server, tiny, 60, *GPU)
    time.sleep(3)  # into the warm-up on the GPU
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    gpu_server.wait_until(lambda h: h["queue"]["running"] == 0, timeout=30)
    again = cpu.measure(gpu_server, tiny, *GPU, *QUICK)
    assert again.returncode == 0, again.stderr


def test_a_task_the_target_refuses_is_one_line_from_the_server(gpu_server: cpu.Served, tiny: Path) -> None:
    line = cpu.one_line(cpu.measure(gpu_server, tiny, "--target", "pytorch", "--hardware", "dla", *QUICK))
    assert "the measurement failed" in line and "target pytorch cannot run this task: hardware 'dla'" in line
