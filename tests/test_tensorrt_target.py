"""The tensorrt target where TensorRT is absent (as in CI): options, refusals through the CLI, and the
harness's branch for targets that time their own loop.

Nothing here runs TensorRT. The refusal tests run the real command line against a real native library
built without TensorRT, or against none at all. The harness-branch tests use a session whose "own loop"
is plain Python, standing for any target with Session.timed_run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from core.errors import ConfigError
from core.fileio import sha256_file
from core.specs import TensorSpec
from harness.config import Params, Task, load_configs, parse_task
from harness.runner import PreparedTask, measure, native_warmup, run_tasks
from targets import get_target, target_names
from targets.base import NativeTiming, Session
from targets.tensorrt.engine_cache import EngineKey
from targets.tensorrt.target import ParsedModel, TensorRTOptions, TensorRTTarget, precision_inputs
from tests.conftest import REPO, run_cli

NANO_CONFIG = REPO / "config" / "trt-nano-mobilenet-fp16.json"


# --- registration and options --------------------------------------------------------------------


def test_registered_and_importable_without_tensorrt() -> None:
    assert "tensorrt" in target_names()
    target = get_target("tensorrt")
    assert isinstance(target, TensorRTTarget)
    assert set(target.option_names) == {"cuda_graph", "launch_gate", "sync", "transfers", "memory",
                                        "force_zero_copy", "workspace_mb", "precision_retries", "size_check", "rebuild"}
    assert TensorRTOptions().transfers is True and TensorRTOptions().precision_retries == 2
    assert TensorRTOptions().size_check == "fallback"


def test_valid_options_pass() -> None:
    TensorRTTarget().validate_options({"cuda_graph": True, "sync": "spin", "transfers": False, "memory": "zero-copy",
                                       "force_zero_copy": True, "workspace_mb": 256, "precision_retries": 0,
                                       "rebuild": True}, "c.json: task 1")
    TensorRTTarget().validate_options({"launch_gate": True, "sync": "sleep"}, "c.json: task 1")


@pytest.mark.parametrize("options, words", [
    ({"cuda_graph": "yes"}, "c.json: task 1: params.cuda_graph must be true or false, got 'yes'"),
    ({"transfers": 1}, "params.transfers must be true or false, got 1"),
    ({"rebuild": None}, "params.rebuild must be true or false"),
    ({"sync": "busy"}, "unknown params.sync 'busy' (allowed: blocking, spin"),
    ({"memory": "unified"}, "unknown params.memory 'unified' (allowed: auto, device, zero-copy)"),
    ({"workspace_mb": 0}, "params.workspace_mb must be an integer from 1 to 1048576, got 0"),
    ({"workspace_mb": 512.0}, "params.workspace_mb must be an integer"),
    ({"precision_retries": -1}, "params.precision_retries must be an integer from 0 to 20, got -1"),
    ({"precision_retries": True}, "params.precision_retries must be an integer"),
    ({"force_zero_copy": True, "memory": "device"}, "params.force_zero_copy needs params.memory zero-copy or auto"),
    ({"launch_gate": "on"}, "params.launch_gate must be true or false, got 'on'"),
])
def test_bad_option_is_one_clear_line(options: Dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        TensorRTTarget().validate_options(options, "c.json: task 1")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unknown_param_lists_the_targets_options() -> None:
    raw = {"target": "tensorrt", "workload": "mobilenet",
           "params": {"mode": "throughput", "hardware": "gpu", "precision": "fp16", "use_graphs": True}}
    with pytest.raises(ConfigError, match=r"unknown field 'params.use_graphs' .* tensorrt's options cuda_graph, "
                                          r"force_zero_copy, launch_gate, memory, precision_retries, rebuild, size_check, "
                                          r"sync, transfers, workspace_mb"):
        parse_task(raw, "c.json: task 1", 0)


def test_refusal_names_the_precision_the_device_cannot_run_fast() -> None:
    """With what the library reports for a Jetson Nano's GPU (no fast INT8), int8 is refused clearly."""
    from targets.native.library import DeviceInfo

    target = TensorRTTarget()
    trt = type("Info", (), {"fast_fp16": True, "fast_int8": False, "version": "8.2.1", "header_version": "8.2.1"})()
    nano = DeviceInfo(index=0, name="NVIDIA Tegra X1", compute_capability=(5, 3), integrated=True,
                      multiprocessors=1, can_map_host_memory=True, managed_memory=True,
                      concurrent_managed_access=False, driver_version="10.2", runtime_version="10.2",
                      total_memory=4 << 30, free_memory=2 << 30)
    target._runtime_cache = (None, trt, nano)
    caps = target.capabilities()
    assert caps.precisions == {"gpu": ("fp32", "fp16")}
    why = caps.refusal("gpu", "int8", 8, 1, "throughput")
    hint = target.unsupported_hint("gpu")
    assert why == "precision 'int8' is not supported on gpu"
    assert hint == (" (NVIDIA Tegra X1 (sm_53) has no fast int8: TensorRT's platformHasFastInt8 is false, so such an "
                    "engine would run no faster than fp32 and its score would mislead)")
    assert "DLA cores are not supported" in target.unsupported_hint("dla")


# --- refusal through the command line ------------------------------------------------------------


def test_cli_refuses_in_one_line_when_the_native_library_is_missing(tmp_path: Path) -> None:
    proc = run_cli("-c", str(NANO_CONFIG), "-r", str(tmp_path / "R"),
                   env={"MLMARK_NATIVE_LIB": str(tmp_path / "absent.so")})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("mlmark: error: target tensorrt: MLMARK_NATIVE_LIB names ")
    assert not (tmp_path / "R").exists()


@pytest.mark.slow
def test_cli_refuses_in_one_line_when_the_library_was_built_without_tensorrt(tmp_path: Path,
                                                                             library_without_tensorrt: Path) -> None:
    assert b"MLMARK_TENSORRT=none|" in library_without_tensorrt.read_bytes()
    proc = run_cli("-c", str(NANO_CONFIG), "-r", str(tmp_path / "R"),
                   env={"MLMARK_NATIVE_LIB": str(library_without_tensorrt), "MLMARK_ENGINES": str(tmp_path / "E")})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("mlmark: error: target tensorrt: ")
    assert "TensorRT" in lines[0] and "TensorRT_ROOT" in lines[0]
    assert not (tmp_path / "R").exists() and not (tmp_path / "E").exists()


# --- the harness's branch for a target's own timed loop -----------------------------------------


class PythonLoopSession(Session):
    """A session whose 'own loop' is plain Python sleeping per inference: any target with timed_run."""

    has_timed_run = True

    def __init__(self, per_inference_s: float = 0.0005) -> None:
        self.per = per_inference_s
        self.info: Dict[str, Any] = {"kind": "python loop for the harness test"}
        self.calls: List[Any] = []
        self.staged: Any = None

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec("input", ("batch", 3, 8, 8), "float32")]

    def output_names(self) -> List[str]:
        return ["logits"]

    def stage(self, inputs: Any) -> Any:
        self.staged = inputs
        return inputs

    def run(self, slot: int, inputs: Any) -> List[np.ndarray]:
        raise AssertionError("the harness must not run a timed loop through run() for this session")

    def timed_run(self, iterations: int, warmup_iterations: int = 0) -> NativeTiming:
        assert self.staged is not None
        self.calls.append((iterations, warmup_iterations, time.perf_counter()))
        t0 = time.perf_counter()
        e2e = []
        for _ in range(iterations):
            s = time.perf_counter()
            time.sleep(self.per)
            e2e.append(time.perf_counter() - s)
        return NativeTiming(latencies_s=np.array(e2e), gpu_s=np.array(e2e) * 0.5, wall_s=time.perf_counter() - t0,
                            info={"loop": {"concurrency": 1, "cuda_graph": False}})


def _prepared(**params: Any) -> PreparedTask:
    from workloads import get_workload

    p = dict(mode="throughput", hardware="gpu", precision="fp16", batch=2, concurrency=1, iterations=50,
             warmup_s=0.1, warmup_iterations=0)
    p.update(params)
    task = Task(target="tensorrt", workload="mobilenet", params=Params(**p), source="c.json: task 1", index=0)
    return PreparedTask(task=task, target=None, workload=get_workload("mobilenet"), model=None)  # type: ignore


def test_native_warmup_runs_chunks_until_both_time_and_count_are_reached() -> None:
    s = PythonLoopSession()
    s.stage({})
    n, seconds = native_warmup(s, count=3, seconds=0.2)
    assert seconds >= 0.2 and n >= 3 and n == sum(c[0] for c in s.calls)
    assert len(s.calls) < 20  # chunks grow to fill the time, not one call per inference
    s2 = PythonLoopSession()
    s2.stage({})
    n2, _ = native_warmup(s2, count=500, seconds=0.0)
    assert n2 >= 500


def test_measure_uses_the_targets_loop_and_keeps_its_raw_times() -> None:
    s = PythonLoopSession()
    m = measure(_prepared(iterations=40, warmup_s=0.05), s)
    timed = s.calls[-1]
    assert timed[0] == 40 and timed[1] == 0
    assert m.iterations == 40 and len(m.latencies_s) == 40 and m.gpu_s is not None and len(m.gpu_s) == 40
    assert m.warmup_iterations >= 1 and m.warmup_s >= 0.05
    assert m.throughput_fps == pytest.approx(40 * 2 / m.wall_s)
    assert m.native_info["loop"]["cuda_graph"] is False and m.timed_by_target


def test_measure_keeps_host_postprocessing_in_the_harness_loop() -> None:
    """For SSD the NMS belongs in the timed region: a session's own loop cannot include it, so run() is used."""
    from workloads import get_workload

    s = PythonLoopSession()
    pt = _prepared()
    pt.workload = get_workload("ssdmobilenet")
    with pytest.raises(AssertionError, match="must not run a timed loop through run"):
        measure(pt, s)


def _run_latency_task(tmp_path: Path, session: Session, iterations: int, warmup_s: float) -> Any:
    """A MobileNet latency task run by the harness on `session` (as the tensorrt target): the results file."""
    from harness import results as res
    from tests.conftest import write_tiny_classifier
    from workloads import get_workload
    from workloads.model_store import resolve_model

    class PlainTarget:
        name = "tensorrt"

        def load(self, request: Any) -> Session:
            return session

        def versions(self) -> Dict[str, str]:
            return {}

    model = resolve_model(get_workload("mobilenet"), str(write_tiny_classifier(tmp_path / "m.onnx")))
    pt = _prepared(mode="latency", batch=1, iterations=iterations, warmup_s=warmup_s)
    pt.target, pt.model = PlainTarget(), model  # type: ignore
    out = tmp_path / "r.json"
    run_tasks([pt], res.RunRecord(started=res.now(), config_files=[], system={}), out)
    return out


def test_result_records_gpu_compute_beside_end_to_end_latency(tmp_path: Path) -> None:
    from harness import results as res

    t = res.load(_run_latency_task(tmp_path, PythonLoopSession(), iterations=30, warmup_s=0.02)).tasks[0]
    assert t.metric == "latency" and t.latency_ms["samples"] == 30
    gpu = t.target_info["gpu_compute_ms"]
    assert gpu["samples"] == 30 and gpu["p95_ms"] < t.latency_ms["p95_ms"]
    assert t.target_info["timed_loop"].startswith("the target's own library")
    assert t.target_info["loop"] == {"concurrency": 1, "cuda_graph": False}


# --- configs ------------------------------------------------------------------------------------


def test_every_config_parses() -> None:
    paths = sorted((REPO / "config").glob("*.json"))
    assert len(paths) > 70
    for path in paths:
        assert load_configs([path]), path


BOARDS = {"nano": ("fp32", "fp16"), "xavier": ("fp32", "fp16", "int8"), "orin": ("fp32", "fp16", "int8")}


def test_tensorrt_configs_cover_each_board_workload_precision_and_mode() -> None:
    for board, precisions in BOARDS.items():
        for workload in ("mobilenet", "resnet50", "ssdmobilenet"):
            for precision in ("fp32", "fp16", "int8"):
                for mode in ("throughput", "latency", "accuracy"):
                    path = REPO / "config" / "trt-{}-{}-{}-{}.json".format(board, workload, precision, mode)
                    assert path.is_file() == (precision in precisions), path
                    if not path.is_file():
                        continue
                    (task,) = load_configs([path])
                    p = task.params
                    assert (task.target, task.workload, p.precision, p.mode, p.hardware) == (
                        "tensorrt", workload, precision, mode, "gpu")
                    if mode == "latency":
                        assert (p.batch, p.concurrency) == (1, 1) and p.iterations >= 1024
                    if mode == "throughput":
                        assert p.iterations >= 1024
    both = load_configs([NANO_CONFIG])
    assert [t.params.mode for t in both] == ["throughput", "latency"]
    raw = json.loads(NANO_CONFIG.read_text())
    assert raw[0]["params"]["workspace_mb"] == 512


# --- int8 calibration data and the real build child without TensorRT ----------------------------


def _trt(implicit_int8: bool, weak_typing: bool = True) -> Any:
    from targets.native.tensorrt import TensorRTInfo

    return TensorRTInfo(version="8.5.2" if implicit_int8 else "11.0.0", header_version="8.5.2",
                        implicit_int8=implicit_int8, inspector=True, fast_fp16=True, fast_int8=True,
                        weak_typing=weak_typing)


def _request(model: Path, precision: str = "int8") -> Any:
    from targets.base import LoadRequest

    return LoadRequest(model_path=model, workload="mobilenet", hardware="gpu", precision=precision, batch=1,
                       concurrency=1)


def test_int8_needs_a_table_for_this_model_or_its_qdq_model(tmp_path: Path) -> None:
    from core.errors import ModelError
    from tests.conftest import write_tiny_classifier

    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    cache = tmp_path / "engines"
    assert precision_inputs(_request(model, "fp16"), _trt(True), cache) == ParsedModel(model)
    # TensorRT < 11: the workload's table, which is missing or made for another model than this tiny one.
    with pytest.raises(ModelError) as err:
        precision_inputs(_request(model), _trt(True), cache)
    assert "CalibrationTable_mobilenet" in str(err.value) and "utility/calibrate.py" in str(err.value)
    assert "\n" not in str(err.value)
    # TensorRT 11: the Q/DQ model beside the model, which was never made.
    with pytest.raises(ModelError) as err:
        precision_inputs(_request(model), _trt(False), cache)
    assert "tiny.qdq.onnx" in str(err.value) and "utility/calibrate.py" in str(err.value)


@pytest.mark.slow
def test_build_child_refuses_in_one_line_with_a_library_without_tensorrt(tmp_path: Path,
                                                                        library_without_tensorrt: Path) -> None:
    from core.errors import TargetUnavailable
    from targets.tensorrt.build_worker import BuildRequest, build_in_child
    from tests.conftest import write_tiny_classifier

    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    request = BuildRequest(onnx_path=str(model), engine_path=str(tmp_path / ".e.tmp"), precision="fp16", batch=1,
                           library=str(library_without_tensorrt))
    with pytest.raises(TargetUnavailable) as err:
        build_in_child(request, "tensorrt mobilenet fp16 batch 1", tmp_path)
    assert str(err.value).startswith("tensorrt mobilenet fp16 batch 1: TensorRT was not found when cpp_environment "
                                     "was built")
    assert not (tmp_path / ".e.tmp").exists()


def test_fp16_on_a_strongly_typed_builder_parses_a_float16_conversion_made_once(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from tests.conftest import write_tiny_classifier

    model = write_tiny_classifier(tmp_path / "tiny.onnx", hw=32)
    cache = tmp_path / "engines"
    parsed = precision_inputs(_request(model, "fp16"), _trt(False, weak_typing=False), cache)
    assert parsed.onnx_path.parent == cache / "onnx" and parsed.onnx_path.name.endswith(".fp16.onnx")
    assert parsed.table is None and parsed.calibration is None
    assert parsed.fp16.source_sha256 == sha256_file(model) and parsed.fp16.sha256 == sha256_file(parsed.onnx_path)
    half = onnx.load(str(parsed.onnx_path))
    assert {t.data_type for t in half.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)} == {
        TensorProto.FLOAT16}
    # Inputs and outputs stay float32: the harness feeds and reads the same arrays as for fp32.
    assert [v.type.tensor_type.elem_type for v in list(half.graph.input) + list(half.graph.output)] == [
        TensorProto.FLOAT] * (len(half.graph.input) + len(half.graph.output))
    x = np.random.RandomState(0).rand(2, 3, 32, 32).astype(np.float32)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(parsed.onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(np.abs(want).max()))
    # Converted once: a second task finds the file; a changed model gets its own conversion.
    stamp = parsed.onnx_path.stat().st_mtime_ns
    again = precision_inputs(_request(model, "fp16"), _trt(False, weak_typing=False), cache)
    assert again == parsed and parsed.onnx_path.stat().st_mtime_ns == stamp
    other = write_tiny_classifier(tmp_path / "tiny.onnx", classes=10, hw=32)
    changed = precision_inputs(_request(other, "fp16"), _trt(False, weak_typing=False), cache)
    assert changed.onnx_path != parsed.onnx_path and changed.fp16.source_sha256 == sha256_file(other)
    # A float16 model is parsed as given.
    given = precision_inputs(_request(parsed.onnx_path, "fp16"), _trt(False, weak_typing=False), cache)
    assert given.onnx_path == parsed.onnx_path and given.fp16.converter.startswith("none")


def test_engine_key_tells_float16_conversions_apart() -> None:
    from targets.tensorrt.engine_cache import stale_reason

    key = EngineKey(workload="mobilenet", model_sha256="ab" * 32, precision="fp16", batch=1, tensorrt_version="11.0.0",
                    tensorrt_header_version="11.0.0", gpu_name="GPU", compute_capability=(8, 7),
                    fp16_model_sha256="cd" * 32)
    assert key.fp32_reference().fp16_model_sha256 is None
    meta = dict(key.to_dict(), schema="mlmark-engine/1", fp16_model_sha256="ef" * 32)
    reason = stale_reason(meta, key, Path("/nonexistent.engine")) or ""
    assert reason.startswith("built from a float16 conversion with SHA-256 efefefefefef")


def test_run_from_several_threads_uses_each_slot_from_its_own_thread_at_once() -> None:
    """ssdmobilenet's concurrency is real: one thread per slot, inferring at the same time, each slot loaded once."""
    import threading

    from targets.tensorrt.target import TensorRTSession

    class Binding:
        def __init__(self, name: str, is_input: bool) -> None:
            self.name, self.is_input, self.shape = name, is_input, (1, 4)

        def numpy_dtype(self) -> Any:
            return np.dtype("float32")

    class SlotLoop:
        """Stands in for NativeLoop, whose infer and per-slot set_inputs may run from one thread per slot."""

        def __init__(self) -> None:
            self.inside: Dict[int, int] = {}
            self.most_inside = 0
            self.loaded: List[Any] = []
            self.guard = threading.Lock()
            self.used = type("Used", (), {"concurrency": 4})()

        def bindings(self) -> List[Any]:
            return [Binding("x", True), Binding("y", False)]

        def set_inputs(self, inputs: Any, slot: Any = None) -> None:
            assert slot is not None  # run() never reloads every slot: that would disturb the others
            self.loaded.append(slot)

        def infer(self, inputs: Any, slot: int) -> Dict[str, Any]:
            assert inputs is None  # the buffers hold the batch already
            with self.guard:
                assert self.inside.get(slot, 0) == 0  # one thread per slot
                self.inside[slot] = 1
                self.most_inside = max(self.most_inside, sum(self.inside.values()))
            time.sleep(0.005)
            with self.guard:
                self.inside[slot] = 0
            return {"y": np.zeros((1, 4), np.float32)}

    loop = SlotLoop()
    session = TensorRTSession(loop, {})
    batch = session.stage({"x": np.ones((1, 4), np.float32)})
    threads = [threading.Thread(target=lambda slot=slot: [session.run(slot, batch) for _ in range(20)])
               for slot in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loop.most_inside > 1  # the slots' inferences overlapped (they were serialized by a lock before)
    assert sorted(loop.loaded) == [0, 1, 2, 3]  # each slot's buffers got the batch once, not per inference


def test_a_session_that_says_it_is_not_valid_makes_an_invalid_result(tmp_path: Path) -> None:
    """A target running on a test double marks its session; the harness then marks every result not valid."""
    from harness import results as res
    from harness.report import format_table

    class DoubleSession(PythonLoopSession):
        invalid_reason = "made with a test double, not the real library"

    out = _run_latency_task(tmp_path, DoubleSession(), iterations=1100, warmup_s=0.01)
    t = res.load(out).tasks[0]
    assert t.iterations == 1100 and t.valid is False  # enough iterations, still not valid
    assert "made with a test double, not the real library" in t.notes
    assert "made with a test double" in format_table(res.load(out).tasks)
