"""The crosscheck without TensorRT: a tensorrt session whose "native loop" is Python, trtexec the stand-in.

What is checked is the plumbing (the same engine file, matching settings, the ratios and what is
printed), not the 2 % claim, which needs a board.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from core.errors import RunError
from core.specs import TensorSpec
from harness.config import Params, Task
from harness.crosscheck import UNVERIFIED, Comparison, compare_task, format_comparisons, matching_settings
from harness.runner import PreparedTask
from targets.base import NativeTiming, Session
from targets.trtexec import tool
from tests.test_trtexec_target import Make, calls, load, printed


class NativeLoopStandIn(Session):
    """A tensorrt session over an engine in the cache whose timed loop is plain Python."""

    has_timed_run = True

    def __init__(self, engine: Dict[str, Any], loop: Dict[str, Any], tensorrt: str = "10.3.0") -> None:
        self.info = {"engine": engine, "tensorrt": tensorrt}
        self.loop = loop
        self.staged: Any = None

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec("input", ("batch", 3, 224, 224), "float32")]

    def output_names(self) -> List[str]:
        return ["logits"]

    def stage(self, inputs: Any) -> Any:
        self.staged = inputs
        return inputs

    def run(self, slot: int, inputs: Any) -> List[Any]:
        raise AssertionError("the crosscheck times the native loop, not run()")

    def timed_run(self, iterations: int, warmup_iterations: int = 0) -> NativeTiming:
        assert self.staged is not None
        t0 = time.perf_counter()
        gpu = np.full(iterations, 0.2e-3)
        return NativeTiming(latencies_s=gpu * 1.1, gpu_s=gpu, wall_s=max(time.perf_counter() - t0, 1e-3),
                            info={"loop": self.loop})


class FakeTensorRT:
    name = "tensorrt"

    def __init__(self, session: Session) -> None:
        self.session = session

    def load(self, request: Any) -> Session:
        return self.session

    def versions(self) -> Dict[str, str]:
        return {}


def prepared(model_path: Path, session: Session, batch: int = 8, concurrency: int = 1) -> PreparedTask:
    from workloads import get_workload
    from workloads.model_store import resolve_model

    params = Params(mode="throughput", hardware="gpu", precision="fp32", batch=batch, concurrency=concurrency,
                    iterations=64, warmup_s=0.05, warmup_iterations=0)
    task = Task(target="tensorrt", workload="mobilenet", params=params, source="c.json: task 1", index=0)
    return PreparedTask(task=task, target=FakeTensorRT(session), workload=get_workload("mobilenet"),  # type: ignore
                        model=resolve_model(get_workload("mobilenet"), str(model_path)))


LOOP = {"concurrency": 1, "sync": "sleep", "cuda_graph": False, "launch_gate": False, "transfers": True,
        "memory": "device"}


def test_settings_mapped_to_trtexec_flags_and_what_differs_said() -> None:
    flags, notes = matching_settings(LOOP)
    assert flags == {"cuda_graph": False, "transfers": True, "spin_wait": False} and notes == []
    flags, notes = matching_settings(dict(LOOP, sync="blocking", launch_gate=True, memory="zero-copy"))
    assert flags["spin_wait"] is True and len(notes) == 3
    assert "no trtexec twin" in notes[0] and "launch_gate" in notes[1] and "zero-copy" in notes[2]


def test_the_same_engine_through_the_native_loop_and_trtexec(trtexec_env: Path, standin_trtexec: Make,
                                                             tiny_model: Path) -> None:
    binary = standin_trtexec("10.3.0")
    _, built = load(binary, tiny_model, precision="fp32", batch=8)  # an engine in the cache, as the tensorrt target's
    engine = {"path": built.info["engine"]["path"], "sha256": built.info["engine"]["sha256"]}
    before = len(calls(trtexec_env, "run"))
    row = compare_task(prepared(tiny_model, NativeLoopStandIn(engine, LOOP)), tool.probe(binary))
    (run,) = calls(trtexec_env, "run")[before:]
    assert "--loadEngine=" + engine["path"] in run and "--iterations=64" in run
    assert "--useCudaGraph" not in run and "--noDataTransfers" not in run and "--useSpinWait" not in run
    assert row.native_gpu_median_ms == pytest.approx(0.2)
    qps = float(printed(row.trtexec_log, r"\] Throughput: (\S+) qps"))
    gpu = float(printed(row.trtexec_log, r"\] GPU Compute Time: .* median = (\S+) ms"))
    assert row.trtexec_fps == pytest.approx(qps * 8) and row.trtexec_gpu_median_ms == gpu
    assert row.gpu_ratio == pytest.approx(0.2 / gpu) and row.fps_ratio == pytest.approx(row.native_fps / (qps * 8))
    assert Path(row.trtexec_log).is_file() and ".crosscheck-" in row.trtexec_log
    text = format_comparisons([row], "10.3.0", "NVIDIA Orin")
    assert "c.json: task 1 mobilenet throughput fp32 b8 c1" in text and text.rstrip().endswith(UNVERIFIED)
    assert "{:.3f}".format(row.gpu_ratio) in text


def test_another_release_or_a_changed_engine_is_refused(trtexec_env: Path, standin_trtexec: Make,
                                                        tiny_model: Path) -> None:
    binary = standin_trtexec("10.3.0")
    _, built = load(binary, tiny_model, precision="fp32", batch=8)
    engine = {"path": built.info["engine"]["path"], "sha256": built.info["engine"]["sha256"]}
    with pytest.raises(RunError, match=r"built by TensorRT 8.6.1, trtexec .* is TensorRT 10.3.0: it cannot load it"):
        compare_task(prepared(tiny_model, NativeLoopStandIn(engine, LOOP, tensorrt="8.6.1")), tool.probe(binary))
    with pytest.raises(RunError, match="changed after the native loop ran"):
        compare_task(prepared(tiny_model, NativeLoopStandIn(dict(engine, sha256="0" * 64), LOOP)), tool.probe(binary))


def test_rows_outside_two_percent_are_marked_and_the_claim_stays_unverified() -> None:
    rows = [Comparison("a.json: task 1", "x", "e", 1.00, 1.01, 1000.0, 995.0, 1024, "l"),
            Comparison("a.json: task 2", "y", "e", 1.00, 1.10, 1000.0, 1000.0, 1024, "l", notes=["differs"])]
    assert rows[0].within and not rows[1].within
    text = format_comparisons(rows, "8.6.1", "Orin")
    body = text.splitlines()
    assert body[3].endswith("yes") and body[4].endswith("NO") and "note: a.json: task 2: differs" in text
    assert "UNVERIFIED" in text and rows[1].to_dict()["within_2_percent"] is False


# --- the command line ------------------------------------------------------------------------------------


def test_cli_crosscheck_refusals_are_one_line(trtexec_env: Path, standin_trtexec: Make) -> None:
    from tests.conftest import REPO, run_cli

    nano = REPO / "config" / "trt-nano-mobilenet-fp16.json"
    env = {"MLMARK_ENGINES": str(trtexec_env / "engines"), "MLMARK_NATIVE_LIB": str(trtexec_env / "absent.so")}
    proc = run_cli("crosscheck", "-c", str(nano), "--trtexec", str(standin_trtexec("8.2.1")), env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("mlmark: error: target tensorrt: MLMARK_NATIVE_LIB names ")
    proc = run_cli("crosscheck", "-c", str(nano), "--trtexec", str(trtexec_env / "none"), env=env)
    assert proc.returncode == 2 and "--trtexec {} does not exist".format(trtexec_env / "none") in proc.stderr
    onnx = REPO / "config" / "default.json"
    proc = run_cli("crosscheck", "-c", str(onnx), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("mlmark: error: crosscheck: the configs have no tensorrt task in throughput or "
                                   "latency mode")
    help_text = run_cli("crosscheck", "--help").stdout
    assert "UNVERIFIED" in help_text
