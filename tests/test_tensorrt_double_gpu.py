"""The whole tensorrt target on a GPU, with MLMark's TensorRT test double standing in for TensorRT.

The double (tests/tensorrt_double) is built for TensorRT 10.3's headers, and for 8.6's and 8.2's where a
release's own path is tested (implicit INT8 from a calibration table, the bindings API), and the native
library is linked against it, in build/tensorrt_double/ (MLMARK_TRT_DOUBLE_COVERAGE=1: with gcov). Its engines
run a real kernel of a known duration that writes outputs computed from the input (outputs.py), so these
tests check the data path exactly and the timing against the kernel's duration. Nothing here is a TensorRT
result, and the target labels every result so.

    MLMARK_GPU_TESTS=1 MLMARK_CUDA_ARCHS=90 python -m pytest tests/test_tensorrt_double_gpu.py -q

Needs an NVIDIA GPU with CUDA, cmake, nvcc, the TensorRT headers in third_party/trt/, onnx and onnxruntime.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest

from core.errors import ModelError, RunError, UnsupportedTask
from targets.base import LoadRequest
from targets.native import library as native_library
from targets.native.loop import EngineWorkload, LoopSettings, NativeLoop, SpinWorkload
from targets.native.selftest import ACCURACY_REL
from targets.tensorrt import target as trt_target
from targets.tensorrt.target import ALLOW_TEST_DOUBLE_ENV, TEST_DOUBLE_NOTE, TensorRTTarget
from tests.conftest import REPO, find_nvcc, run_cli, write_tiny_classifier
from tests.tensorrt_double import build as dbuild
from tests.tensorrt_double.outputs import expected_outputs, output_values, seed_of

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (shutil.which("cmake") and find_nvcc()), reason="needs cmake and nvcc"),
    pytest.mark.skipif(not all(dbuild.have_headers(r) for r in dbuild.RELEASES),
                       reason="needs the TensorRT headers in third_party/trt/ (not in the repository)"),
]

COVERAGE = os.environ.get("MLMARK_TRT_DOUBLE_COVERAGE") == "1"
US = 1e-6


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def builds() -> Callable[[str], dbuild.DoubleBuild]:
    """The double and a native library linked against it, per release, built once per session."""
    done: Dict[str, dbuild.DoubleBuild] = {}

    def get(release: str) -> dbuild.DoubleBuild:
        if release not in done:
            done[release] = dbuild.build_double(release, coverage=COVERAGE)
        return done[release]

    return get


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: Any) -> Path:
    """One models folder for the session: the workloads' synthetic models are generated once."""
    return tmp_path_factory.mktemp("models")


@dataclass
class Env:
    """A test's TensorRT double: which build, its folders, and how to load through the target."""

    built: dbuild.DoubleBuild
    tmp: Path
    monkeypatch: Any

    @property
    def engines(self) -> Path:
        return self.tmp / "engines"

    def count(self, what: str) -> int:
        """A counter of the double in this process (builders, contexts, contexts_alive, ...)."""
        lib = ctypes.CDLL(str(self.built.double))
        lib.mlmark_tensorrt_test_double_count.restype = ctypes.c_int
        return int(lib.mlmark_tensorrt_test_double_count(what.encode()))

    def kernel_us(self, us: float) -> None:
        """The kernel duration the next builds record (read by the double in the build child)."""
        self.monkeypatch.setenv("MLMARK_TRT_DOUBLE_KERNEL_US", str(us))

    def load(self, model: Path, precision: str = "fp32", batch: int = 2, concurrency: int = 1,
             workload: str = "mobilenet", **options: Any) -> Any:
        return TensorRTTarget().load(LoadRequest(model_path=model, workload=workload, hardware="gpu",
                                                 precision=precision, batch=batch, concurrency=concurrency,
                                                 options=options))

    def cli_env(self) -> Dict[str, str]:
        return {k: os.environ[k] for k in ("MLMARK_NATIVE_LIB", ALLOW_TEST_DOUBLE_ENV, "MLMARK_ENGINES",
                                           "MLMARK_MODELS", "MLMARK_TRT_DOUBLE_KERNEL_US") if k in os.environ}


def _use(built: dbuild.DoubleBuild, tmp_path: Path, monkeypatch: Any, models: Path) -> Env:
    monkeypatch.setenv("MLMARK_NATIVE_LIB", str(built.native))
    monkeypatch.setenv(ALLOW_TEST_DOUBLE_ENV, "1")
    monkeypatch.setenv("MLMARK_ENGINES", str(tmp_path / "engines"))
    monkeypatch.setenv("MLMARK_MODELS", str(models))
    monkeypatch.setenv("MLMARK_TRT_DOUBLE_KERNEL_US", "100")
    for knob in ("MLMARK_TRT_DOUBLE_FALLBACKS", "MLMARK_TRT_DOUBLE_MYELIN", "MLMARK_TRT_DOUBLE_CAPTURE",
                 "MLMARK_TRT_DOUBLE_BUILD_FAIL", "MLMARK_TRT_DOUBLE_CONTEXT_MB"):
        monkeypatch.delenv(knob, raising=False)
    # load_library() keeps the first library it loads per process: this test's must be the one it gives.
    monkeypatch.setattr(native_library, "_DEFAULT", None)
    monkeypatch.setattr(trt_target, "_REBUILT", set())
    return Env(built, tmp_path, monkeypatch)


@pytest.fixture
def env(builds: Callable[[str], dbuild.DoubleBuild], tmp_path: Path, monkeypatch: Any, shared_models: Path) -> Env:
    """TensorRT 10.3's double: named I/O tensors, a shared optimization profile, Q/DQ INT8, progress monitor."""
    return _use(builds("10.3"), tmp_path, monkeypatch, shared_models)


@pytest.fixture(params=["8.2", "8.6", "10.3"])
def any_release(request: Any, builds: Callable[[str], dbuild.DoubleBuild], tmp_path: Path, monkeypatch: Any,
                shared_models: Path) -> Env:
    return _use(builds(request.param), tmp_path, monkeypatch, shared_models)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_classifier(tmp_path / "tiny.onnx", classes=1001, hw=64)


@pytest.fixture
def tiny224(tmp_path: Path) -> Path:
    """The tiny classifier at mobilenet's input size: what a config's mobilenet task accepts as its model."""
    return write_tiny_classifier(tmp_path / "tiny224.onnx", classes=1001)


def _input(shape: Any, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _check_outputs(session: Any, slot: int = 0, seed: int = 0) -> None:
    """One inference through the target returns exactly what the double's kernel computes from the input."""
    spec = session.input_specs()[0]
    x = _input(spec.shape, seed)
    got = session.run(slot, session.stage({spec.name: x}))
    want = expected_outputs(x, [np.asarray(g).shape for g in got])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), w)


# -- build in a child, cache, staleness ---------------------------------------------------------------

_PARENT_PROBE = r"""
import ctypes, json, sys
from pathlib import Path
from targets.base import LoadRequest
from targets.tensorrt import target as T

def primary_context_active():
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    dev, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) == 0
    return bool(active.value)

double = ctypes.CDLL(sys.argv[2])
count = lambda what: double.mlmark_tensorrt_test_double_count(what.encode())
seen = {"at_build": []}
real = T.build_in_child
def watched(request, label, work):
    seen["at_build"].append({"context": primary_context_active(), "builders": count("builders")})
    return real(request, label, work)
T.build_in_child = watched
target = T.TensorRTTarget()
target.capabilities()  # what the harness asks of every task before running any
seen["context_after_validation"] = primary_context_active()
session = target.load(LoadRequest(Path(sys.argv[1]), "mobilenet", "gpu", "fp16", 2, 3))
seen.update(builders=count("builders"), contexts=count("contexts"), alive=count("contexts_alive"),
            status=session.info["engine"]["status"], context_after_load=primary_context_active())
session.close()
seen["alive_after_close"] = count("contexts_alive")
print("PROBE " + json.dumps(seen))
"""


def test_build_runs_in_a_child_and_the_parent_holds_no_context_or_builder_before_it(env: Env, tiny: Path) -> None:
    # A fresh process: the parent's CUDA state before the build is the point, which an earlier test would spoil.
    full = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _PARENT_PROBE, str(tiny), str(env.built.double)], cwd=str(REPO),
                          env=full, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("PROBE "))[6:])
    assert seen["context_after_validation"] is False  # device and TensorRT queries create no context
    assert seen["at_build"] == [{"context": False, "builders": 0}]  # one build, started from a clean parent
    assert seen["builders"] == 0  # every builder lived in the child
    assert seen["contexts"] == 3 and seen["alive"] == 3  # one per stream, none made and thrown away
    assert seen["status"].startswith("built: ") and seen["context_after_load"] is True
    assert seen["alive_after_close"] == 0


def test_engine_is_built_cached_and_labelled_as_the_double(env: Env, tiny: Path) -> None:
    session = env.load(tiny, "fp16")
    info = session.info
    assert info["engine"]["status"] == "built: it is not built yet"
    assert info["tensorrt_test_double"] is True and "test double" in info["tensorrt"]
    assert session.invalid_reason == TEST_DOUBLE_NOTE
    assert info["engine"]["precision_check"]["passed"] is True
    assert info["engine"]["precision_check"]["method"] == "layers"
    assert info["engine"]["layer_precisions"] == {"fp16": 2}
    assert info["loop"]["memory"] == "device"  # the default, as trtexec's
    path = Path(info["engine"]["path"])
    assert "test-double" in path.name and path.with_name(path.name + ".json").is_file()
    _check_outputs(session)
    session.close()
    stamp = path.stat().st_mtime_ns
    started = time.monotonic()
    again = env.load(tiny, "fp16")
    took = time.monotonic() - started
    assert again.info["engine"]["status"] == "cached" and path.stat().st_mtime_ns == stamp
    assert took < 1.0, took
    again.close()


def test_stale_engines_are_rebuilt_saying_why(env: Env, tiny: Path) -> None:
    session = env.load(tiny)
    path = Path(session.info["engine"]["path"])
    session.close()
    sidecar = path.with_name(path.name + ".json")
    meta = json.loads(sidecar.read_text())
    meta["tensorrt_version"] = "10.2.0-test-double"
    sidecar.write_text(json.dumps(meta))
    rebuilt = env.load(tiny)
    assert rebuilt.info["engine"]["status"].startswith("built: built by TensorRT 10.2.0-test-double; this is")
    rebuilt.close()
    with open(str(path), "r+b") as f:  # truncated behind the cache's back
        f.truncate(100)
    again = env.load(tiny)
    assert "the engine file has 100 bytes, its sidecar says" in again.info["engine"]["status"]
    again.close()
    forced = env.load(tiny, rebuild=True)
    assert forced.info["engine"]["status"] == "built: a rebuild was asked for (params.rebuild)"
    forced.close()


def test_the_loop_refuses_engines_it_cannot_deserialize(env: Env, tmp_path: Path, builds: Any) -> None:
    library = native_library.load_library()
    settings = LoopSettings(concurrency=1, device=0)
    short = tmp_path / "short.engine"
    short.write_bytes(b"x" * 10)
    with pytest.raises(ModelError, match="has 10 bytes: it is truncated"):
        NativeLoop(settings, EngineWorkload(short), library)
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"y" * 4096)
    with pytest.raises(ModelError, match="cannot load the engine .*not an engine of the TensorRT test double"):
        NativeLoop(settings, EngineWorkload(garbage), library)
    status, _ = library.trt_inspect_engine(0, tmp_path / "absent.engine")
    assert status == native_library.ERR_MODEL and "does not exist" in library.last_error(status, "inspect")


def test_an_engine_of_another_release_is_refused_by_the_runtime(env: Env, tiny: Path, builds: Any,
                                                                 monkeypatch: Any, tmp_path: Path) -> None:
    session = env.load(tiny)
    engine = Path(session.info["engine"]["path"])
    session.close()
    other = builds("8.6")
    library = native_library.load_library(other.native)
    with pytest.raises(ModelError, match="another TensorRT release"):
        NativeLoop(LoopSettings(device=0), EngineWorkload(engine), library)


# -- precision ------------------------------------------------------------------------------------------


def test_a_precision_fallback_is_detected_and_rebuilt(env: Env, tiny: Path, caplog: Any) -> None:
    counter = env.tmp / "fallbacks"
    counter.write_text("1\n")
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_FALLBACKS", str(counter))
    session = env.load(tiny, "fp16")
    meta = json.loads(Path(session.info["engine"]["path"] + ".json").read_text())
    assert meta["build_attempts"] == 2 and meta["precision_check"]["passed"] is True
    assert counter.read_text().strip() == "0"
    assert any("build 1 of 3 did not hold fp16" in r.getMessage() for r in caplog.records)
    session.close()


def test_a_fallback_that_persists_fails_and_caches_nothing(env: Env, tiny: Path) -> None:
    counter = env.tmp / "fallbacks"
    counter.write_text("5\n")
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_FALLBACKS", str(counter))
    with pytest.raises(RunError, match="asked for fp16, but 2 build.s. of TensorRT fell back"):
        env.load(tiny, "fp16", precision_retries=1)
    assert not list(env.engines.glob("*.engine"))


def test_when_the_inspector_cannot_tell_the_engine_size_decides(env: Env, tiny: Path) -> None:
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_MYELIN", "1")  # one Myelin layer, as TensorRT 8.6+ may show
    wide = write_tiny_classifier(env.tmp / "wide.onnx", classes=20000, hw=32)
    session = env.load(wide, "fp16")
    decision = session.info["engine"]["precision_check"]
    assert decision["method"] == "engine size" and decision["passed"] is True
    assert len(list(env.engines.glob("*-fp32-*.engine"))) == 1  # the fp32 reference was built for it
    session.close()


def _qdq_beside(model: Path) -> Path:
    import onnx

    from core.fileio import sha256_file
    from precision import qdq
    from precision.table import CalibrationTable, activation_tensors

    table = CalibrationTable(scales={n: 0.05 for n in activation_tensors(model)})
    proto = qdq.build_qdq(model, table, {qdq.META_SOURCE_SHA: sha256_file(model), qdq.META_SOURCE_FILE: model.name})
    onnx.save(proto, str(qdq.qdq_path(model)))
    return qdq.qdq_path(model)


def test_int8_from_a_qdq_model(env: Env, tiny: Path) -> None:
    _qdq_beside(tiny)
    session = env.load(tiny, "int8")
    engine = session.info["engine"]
    assert engine["calibration"]["kind"] == "qdq" and engine["precision_check"]["passed"] is True
    assert engine["layer_precisions"].get("mixed", 0) + engine["layer_precisions"].get("int8", 0) == 2
    _check_outputs(session)
    session.close()


@pytest.mark.parametrize("release", ["8.6", "8.2"])
def test_int8_from_a_calibration_table_headed_for_the_release(release: str, builds: Any, tmp_path: Path,
                                                               monkeypatch: Any, shared_models: Path,
                                                               tiny: Path) -> None:
    from precision import table as tables

    e = _use(builds(release), tmp_path, monkeypatch, shared_models)
    monkeypatch.setattr(tables, "TABLE_DIR", tmp_path)
    scales = {n: 0.05 for n in tables.activation_tensors(tiny)}
    # MLMark's tables are headed for 8.2.1; the target serves a copy headed for the running release.
    tables.table_path("mobilenet").write_text(tables.CalibrationTable(scales=scales).to_text())
    session = e.load(tiny, "int8", concurrency=2)
    engine = session.info["engine"]
    assert engine["calibration"]["kind"] == "table" and engine["precision_check"]["passed"] is True
    assert engine["layer_precisions"] == {"int8": 2}
    _check_outputs(session, slot=1)
    session.close()


# -- every release's running path -------------------------------------------------------------------


def test_each_release_runs_engines_at_concurrency_two_with_graphs(any_release: Env, tiny: Path) -> None:
    # 8.2: bindings and enqueueV2, the batch fixed in the network; 8.6: named tensors, one profile shared by the
    # contexts (set explicitly for the second); 10.3: every context starts on profile 0.
    session = any_release.load(tiny, "fp16", batch=3, concurrency=2, cuda_graph=True)
    assert session.info["loop"]["cuda_graph"] is True
    for slot in (0, 1):
        _check_outputs(session, slot=slot, seed=slot)
    timing = session.timed_run(50, 5)
    assert len(timing.latencies_s) == 50
    session.close()


# -- memory, transfers, graphs, the gate ------------------------------------------------------------------


@pytest.mark.parametrize("memory, transfers, force", [("device", True, False), ("device", False, False),
                                                      ("zero-copy", True, True), ("auto", True, False)])
def test_every_memory_mode_gets_the_data_through(env: Env, tiny: Path, memory: str, transfers: bool,
                                                 force: bool) -> None:
    session = env.load(tiny, memory=memory, transfers=transfers, force_zero_copy=force)
    used = session.info["loop"]
    assert used["memory"] == ("zero-copy" if memory == "zero-copy" else "device")  # auto: device on a discrete GPU
    assert used["transfers"] == (transfers and memory != "zero-copy")
    _check_outputs(session)
    timing = session.timed_run(100, 10)
    assert timing.info["loop"]["memory"] == used["memory"]
    session.close()


def test_hardware_other_than_the_gpu_is_refused(env: Env, tiny: Path) -> None:
    target = TensorRTTarget()
    for hardware, words in (("dla", "DLA cores are not supported"), ("cpu", "TensorRT runs on NVIDIA GPUs only")):
        with pytest.raises(UnsupportedTask, match="hardware {} is not supported .*{}".format(hardware, words)):
            target.load(LoadRequest(model_path=tiny, workload="mobilenet", hardware=hardware, precision="fp32",
                                    batch=1, concurrency=1))
    assert target.capabilities().precisions == {"gpu": ("fp32", "fp16", "int8")}  # what an H200 runs fast
    assert target.unsupported_hint("gpu") == ""


def test_zero_copy_on_a_discrete_gpu_is_refused_unless_forced(env: Env, tiny: Path) -> None:
    with pytest.raises(UnsupportedTask, match="zero-copy memory is refused"):
        env.load(tiny, memory="zero-copy")


@pytest.mark.parametrize("graph, gate", [(False, False), (True, False), (False, True), (True, True)])
def test_graphs_and_the_launch_gate(env: Env, tiny: Path, graph: bool, gate: bool) -> None:
    session = env.load(tiny, concurrency=2, cuda_graph=graph, launch_gate=gate, sync="spin")
    assert session.info["loop"]["cuda_graph"] is graph and session.info["loop"]["launch_gate"] is gate
    _check_outputs(session, slot=1)
    timing = session.timed_run(100, 10)
    assert (np.asarray(timing.gpu_s) > 90 * US).all()  # the 100 us kernel ran inside every timed interval
    session.close()


def test_a_graph_capture_the_engine_refuses_falls_back_with_a_note(env: Env, tiny: Path, caplog: Any) -> None:
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_CAPTURE", "refuse")
    session = env.load(tiny, concurrency=2, cuda_graph=True)
    assert session.info["loop"]["cuda_graph"] is False
    assert "CUDA-graph capture failed" in session.info["cuda_graph_note"]
    assert any("CUDA-graph capture failed on stream 0" in r.getMessage() for r in caplog.records)
    _check_outputs(session, slot=1)
    session.close()


# -- timing ---------------------------------------------------------------------------------------------


def _fixed_cost_s(library: Any) -> float:
    """The event timing's fixed cost, as the self-test measures it: a 0 us spin kernel behind the launch gate."""
    settings = LoopSettings(iterations=400, warmup=50, sync="spin", launch_gate=True, transfers=False, memory="device")
    with NativeLoop(settings, SpinWorkload(0), library) as loop:
        return float(np.median(loop.run().gpu_s))


def test_gpu_time_is_the_kernels_duration_within_the_self_tests_limit(env: Env, tiny: Path) -> None:
    env.kernel_us(1000)
    session = env.load(tiny, launch_gate=True, transfers=False, sync="spin")
    session.stage({"input": _input(session.input_specs()[0].shape)})
    timing = session.timed_run(300, 30)
    fixed = _fixed_cost_s(native_library.load_library())
    error = (float(np.median(timing.gpu_s)) - fixed - 1000 * US) / (1000 * US)
    assert abs(error) <= ACCURACY_REL, (error, fixed)
    # End to end, 300 inferences of 1 ms one after another.
    assert 0.3 <= timing.wall_s <= 0.3 * (1 + 0.1), timing.wall_s
    session.close()


def test_concurrency_one_two_four_runs_contexts_at_once(env: Env, tiny: Path) -> None:
    env.kernel_us(2000)
    rates = {}
    for c in (1, 2, 4):
        before = env.count("contexts")
        session = env.load(tiny, concurrency=c, transfers=False)
        assert env.count("contexts") - before == c  # one execution context per stream, no throwaway one
        timing = session.timed_run(100 * c, 2 * c)
        rates[c] = 100 * c / timing.wall_s
        session.close()
    assert rates[2] >= 1.8 * rates[1] and rates[4] >= 3.5 * rates[1], rates


def test_ssdmobilenet_concurrency_is_real(env: Env, tmp_path: Path) -> None:
    from harness import results as res
    from harness.config import load_configs
    from harness.runner import prepare, run_tasks

    env.kernel_us(20000)  # 20 ms: the host's post-processing is small beside it
    tasks = [{"target": "tensorrt", "workload": "ssdmobilenet",
              "params": {"mode": "throughput", "hardware": "gpu", "precision": "fp16", "batch": 1, "concurrency": c,
                         "iterations": 40, "warmup": 0.1}} for c in (1, 2, 4)]
    cfg = tmp_path / "ssd.json"
    cfg.write_text(json.dumps(tasks))
    record = res.RunRecord(started=res.now(), config_files=[str(cfg)], system={})
    out = tmp_path / "r.json"
    run_tasks(prepare(load_configs([cfg])), record, out)
    t1, t2, t4 = res.load(out).tasks
    assert t2.score >= 1.7 * t1.score and t4.score >= 3.0 * t1.score, (t1.score, t2.score, t4.score)
    assert "one harness thread each" in t4.target_info["concurrency"]
    assert all(t.valid is False and TEST_DOUBLE_NOTE in t.notes for t in (t1, t2, t4))


# -- what the user sees -----------------------------------------------------------------------------------


def test_cli_run_is_labelled_and_not_valid(env: Env, tiny224: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "tensorrt", "workload": "mobilenet", "params": {
        "mode": "throughput", "hardware": "gpu", "precision": "fp16", "batch": 2, "concurrency": 2,
        "iterations": 1100, "warmup": 0.1, "model": str(tiny224), "cuda_graph": True}}]))
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"), env=env.cli_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next((tmp_path / "R").glob("*.json")).read_text())
    task = result["tasks"][0]
    assert task["valid"] is False and TEST_DOUBLE_NOTE in task["notes"]
    assert "test double" in task["versions"]["tensorrt"] and task["target_info"]["tensorrt_test_double"] is True
    assert TEST_DOUBLE_NOTE in proc.stdout + proc.stderr  # the score table's notes say it too


def test_cli_refuses_the_double_without_the_tests_permission(env: Env, tiny224: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "tensorrt", "workload": "mobilenet", "params": {
        "mode": "throughput", "hardware": "gpu", "precision": "fp32", "model": str(tiny224)}}]))
    plain = dict(env.cli_env())
    plain[ALLOW_TEST_DOUBLE_ENV] = ""
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"), env=plain)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "linked against MLMark's TensorRT test double" in lines[0], proc.stderr
    assert not (tmp_path / "R").exists()


def test_every_element_type_comes_back(env: Env, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    types = [("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16), ("i32", TensorProto.INT32),
             ("i8", TensorProto.INT8), ("u8", TensorProto.UINT8), ("b", TensorProto.BOOL), ("i64", TensorProto.INT64)]
    nodes = [helper.make_node("Cast", ["input"], [name], to=t, name="cast_" + name) for name, t in types]
    graph = helper.make_graph(nodes, "types", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info(name, t, ["batch", 4]) for name, t in types])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = tmp_path / "types.onnx"
    onnx.save(model, str(path))
    session = env.load(path, batch=2)
    x = _input((2, 4))
    got = dict(zip(session.output_names(), session.run(0, session.stage({"input": x}))))
    seed = seed_of(x)
    for k, (name, _) in enumerate(types):
        v = output_values(seed, 8, k).reshape(2, 4)
        want = {"f32": v, "f16": v.astype(np.float16), "i32": (v * np.float32(4000)).astype(np.int32),
                "i8": (v * np.float32(250)).astype(np.int8), "i64": (v * np.float32(4000)).astype(np.int64),
                "u8": (v > -0.25).astype(np.uint8), "b": v > -0.25}[name]
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    session.close()


# -- failures reach the user in one line --------------------------------------------------------------------


def test_a_parser_error_names_the_node(env: Env, tmp_path: Path) -> None:
    bad = write_tiny_classifier(tmp_path / "bad.onnx", classes=10, hw=32, bad_op=True)
    with pytest.raises(ModelError, match=r"ONNX parser rejected .*node 5 \(NoSuchOp 'NoSuchOp_5'\): No importer"):
        env.load(bad)


def test_a_build_out_of_memory_says_what_to_lower(env: Env, tiny: Path) -> None:
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_BUILD_FAIL", "oom")
    with pytest.raises(RunError, match="ran out of memory .*give a smaller workspace .now 1024 MiB. or batch"):
        env.load(tiny)
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_BUILD_FAIL", "error")
    with pytest.raises(RunError, match="TensorRT could not build an engine from tiny.onnx: .*Error Code 10"):
        env.load(tiny)
    env.monkeypatch.delenv("MLMARK_TRT_DOUBLE_BUILD_FAIL")
    with pytest.raises(RunError, match="the build workspace of 1048576 MiB exceeds .* give a smaller workspace"):
        env.load(tiny, workspace_mb=1 << 20)


def test_contexts_that_do_not_fit_are_refused_before_allocating(env: Env, tiny: Path) -> None:
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_CONTEXT_MB", str(1 << 24))  # 16 TiB of activations per context
    with pytest.raises(UnsupportedTask, match="out of GPU memory: execution context 1 .* lower the concurrency"):
        env.load(tiny)


def test_a_context_tensorrt_cannot_create_is_one_line(env: Env, tiny: Path) -> None:
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_CONTEXT_FAIL", "oom")  # read in this process, where contexts are made
    with pytest.raises(UnsupportedTask, match="out of GPU memory creating execution context 1 of .*lower the"):
        env.load(tiny)
    env.monkeypatch.setenv("MLMARK_TRT_DOUBLE_CONTEXT_FAIL", "error")
    with pytest.raises(RunError, match="TensorRT could not create execution context 1 of .*Error Code 9"):
        env.load(tiny)


def _model_with_batch(tmp_path: Path, batch: Any, hw: Any = 32) -> Path:
    import onnx

    path = write_tiny_classifier(tmp_path / "m{}-{}.onnx".format(batch, hw), classes=10, hw=32)
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, value in ((dims[0], batch), (dims[2], hw)):
        if isinstance(value, int):
            d.dim_value = value
        else:
            d.dim_param = value
    onnx.save(model, str(path))
    return path


def test_batches_the_model_cannot_take_are_refused(env: Env, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTask, match="has a fixed batch of 1 .* export the ONNX with a dynamic batch"):
        env.load(_model_with_batch(tmp_path, 1), batch=2)
    with pytest.raises(UnsupportedTask, match="dynamic dimension 2 besides the batch"):
        env.load(_model_with_batch(tmp_path, "batch", "height"))
    fixed = env.load(_model_with_batch(tmp_path, 2), batch=2)  # a fixed batch that is the task's runs as is
    _check_outputs(fixed)
    fixed.close()


def test_the_builder_refuses_bad_requests_in_one_line(env: Env, tiny: Path, tmp_path: Path) -> None:
    from targets.native.library import TrtBuildConfigStruct

    library = native_library.load_library()
    table = tmp_path / "table.cache"

    def build(**fields: Any) -> str:
        config = TrtBuildConfigStruct()
        values = dict(device=0, onnx_path=str(tiny), engine_path=str(tmp_path / "e.engine"), precision=0, batch=1,
                      workspace_mb=64, detailed_profiling=1)
        values.update(fields)
        for name, value in values.items():
            setattr(config, name, os.fsencode(value) if isinstance(value, str) else value)
        status, _ = library.trt_build_engine(config)
        return library.last_error(status, "build") if status else ""

    assert "precision must be fp32, fp16 or int8" in build(precision=7)
    assert "batch must be within 1..4096" in build(batch=0)
    assert "workspace_mb must be within" in build(workspace_mb=0)
    assert "onnx_path must be given" in build(onnx_path="")
    assert "a calibration table is for int8 builds only" in build(calibration_table=str(table))
    assert "engine_path must be given" in build(engine_path="")
    assert "does not exist" in build(onnx_path=str(tmp_path / "absent.onnx"))
    assert "cannot open the calibration table" in build(precision=2, calibration_table=str(tmp_path / "absent.cache"))
    assert "cannot create the engine" in build(engine_path=str(tmp_path / "no" / "dir" / "e.engine"))
    assert "needs a calibration table" in build(precision=2)
    table.write_text("not a table\n")
    assert "is not a TensorRT calibration table" in build(precision=2, calibration_table=str(table))
    table.write_text("TRT-100300-EntropyCalibration2\nother_tensor: 3c010204\n")
    assert "none of them in tiny.onnx: it was made for another model" in build(precision=2,
                                                                                  calibration_table=str(table))
    table.write_text("TRT-100300-EntropyCalibration2\ninput: 3c010204\n" + "".join(
        "t{}: 3c010204\n".format(i) for i in range(5)))
    # 10.3 has no implicit INT8 (calibrators deprecated in 10.1): the Q/DQ model is the way.
    assert "has no implicit INT8" in build(precision=2, calibration_table=str(table))
    qdq = _qdq_beside(tiny)
    assert build(precision=2, onnx_path=str(qdq), calibration_table=str(table)) == ""  # Q/DQ wins, with a warning
    garbage = tmp_path / "timing.cache"
    garbage.write_text("not a timing cache")
    assert build(timing_cache=str(garbage)) == ""  # a foreign timing cache: a warning and a new one
    folder = tmp_path / "cache-is-a-folder"
    folder.mkdir()
    assert build(timing_cache=str(folder)) == ""  # cannot be saved: a warning, the engine stands


def test_without_a_table_headed_for_the_release_an_implicit_int8_build_fails(builds: Any, tmp_path: Path,
                                                                            monkeypatch: Any, shared_models: Path,
                                                                            tiny: Path) -> None:
    # Why the target serves a re-headed copy of MLMark's tables: TensorRT skips a cache headed for another
    # release and calibrates from the calibrator's batches, of which it has none.
    from precision.table import CalibrationTable, activation_tensors
    from targets.native.library import TrtBuildConfigStruct

    _use(builds("8.6"), tmp_path, monkeypatch, shared_models)
    library = native_library.load_library()
    table = tmp_path / "table.cache"
    table.write_text(CalibrationTable(scales={n: 0.05 for n in activation_tensors(tiny)}).to_text())  # TRT-8201
    config = TrtBuildConfigStruct()
    for name, value in dict(device=0, onnx_path=os.fsencode(str(tiny)), engine_path=os.fsencode(str(tmp_path / "e")),
                            calibration_table=os.fsencode(str(table)), precision=2, batch=1, workspace_mb=64,
                            detailed_profiling=1).items():
        setattr(config, name, value)
    status, _ = library.trt_build_engine(config)
    assert status == native_library.ERR_TENSORRT
    assert "Calibration failure occurred with no scaling factors detected" in library.last_error(status, "build")


def test_selftest_with_the_double_fails_the_output_checks_and_passes_the_others(env: Env, tmp_path: Path) -> None:
    # The double's outputs are a hash of the input, no model's: the self-test must say FAIL for every output
    # comparison (which shows those checks can fail) and PASS for what the double does honestly.
    env.kernel_us(1000)
    # No trtexec here (the double's engines are no trtexec's): that check is SKIP, and tested on the CPU against
    # the stand-in trtexec (tests/test_tensorrt_selftest.py).
    report = tmp_path / "selftest.json"
    cli_env = dict(env.cli_env(), PATH=os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")
    proc = run_cli("selftest", "--tensorrt", "--workloads", "small,mobilenet", "--json", str(report), env=cli_env,
                   timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["environment"]["tensorrt_test_double"] is True
    lines = data["lines"]
    by = {(l["model"], l["precision"], l["check"]): l["verdict"] for l in lines}
    for model in ("small", "mobilenet"):
        for precision in ("fp32", "fp16"):
            assert by[(model, precision, "engine")] == "PASS"
            assert by[(model, precision, "outputs vs onnxruntime (cosine)")] == "FAIL"
            assert by[(model, precision, "layer precisions as asked")] == "PASS"
            assert by[(model, precision, "GPU time vs trtexec")] == "SKIP"
            assert by[(model, precision, "second load hits the cache")] == "PASS"
    assert by[("small", "int8", "engine")] == "PASS"  # its own Q/DQ model
    assert by[("small", "int8", "top-1 agrees with onnxruntime fp32")] == "FAIL"
    assert by[("mobilenet", "int8", "engine")] == "SKIP"  # no calibration data made for it
    assert "Result: " in proc.stdout and "FAIL" in proc.stdout
