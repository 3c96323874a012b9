"""The native library without a GPU: CMake build (C++14), ABI check, build on first use, staleness, and
clear errors where CUDA cannot run. CI runs these; they need cmake and nvcc, no GPU and no driver."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

import numpy as np
import pytest

from core.errors import ConfigError, MLMarkError, ModelError, TargetUnavailable, UnsupportedTask
from targets.native import library as native
from targets.native import selftest
from targets.native import tensorrt as trt
from targets.native.library import DeviceInfo
from targets.native.loop import EngineWorkload, LoopResult, LoopSettings, NativeLoop, SpinWorkload, run_loop
from tests.conftest import find_nvcc

REPO = Path(__file__).resolve().parent.parent




needs_toolchain = pytest.mark.skipif(not (shutil.which("cmake") and find_nvcc()), reason="needs cmake and nvcc")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


class _Capture(logging.Handler):
    """Collects the messages of one logger, whatever pytest's own capture level is."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _capture_native_log() -> "_Capture":
    handler = _Capture()
    logger = logging.getLogger("mlmark.native")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


def _release_native_log(handler: "_Capture") -> None:
    logger = logging.getLogger("mlmark.native")
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


class Built(NamedTuple):
    build_dir: Path
    library: Path
    messages: List[str]


@pytest.fixture(scope="session")
def built(tmp_path_factory: Any) -> Built:
    """The library built on first use, with the default architectures, into a private folder."""
    if not (shutil.which("cmake") and find_nvcc()):
        pytest.skip("needs cmake and nvcc")
    build_dir = tmp_path_factory.mktemp("native") / "build"
    handler = _capture_native_log()
    try:
        library = native.ensure_library(build_dir=build_dir, cmake_args=["-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"])
    finally:
        _release_native_log(handler)
    return Built(build_dir, library, handler.messages)


def _copy_sources(dst: Path) -> Path:
    shutil.copytree(str(native.SOURCE_DIR), str(dst), ignore=shutil.ignore_patterns("README.md"))
    return dst


# --- build -------------------------------------------------------------------------------------


def test_cmakelists_asks_for_cxx14_and_cmake_310() -> None:
    text = (native.SOURCE_DIR / "CMakeLists.txt").read_text()
    assert "cmake_minimum_required(VERSION 3.10)" in text
    assert "set(CMAKE_CXX_STANDARD 14)" in text
    assert "set(CMAKE_CXX_EXTENSIONS OFF)" in text
    # CMAKE_CUDA_ARCHITECTURES is CMake 3.18+: the project must not rely on it.
    assert "CMAKE_CUDA_ARCHITECTURES" not in text


@needs_toolchain
def test_builds_with_std_cxx14(built: Built) -> None:
    commands = json.loads((built.build_dir / "compile_commands.json").read_text())
    cpp = [c for c in commands if c["file"].endswith(".cpp")]
    cu = [c for c in commands if c["file"].endswith(".cu")]
    assert cpp and cu
    for entry in cpp + cu:
        assert "-std=c++14" in entry["command"], entry["file"]
        assert "gnu++" not in entry["command"]
    assert built.library.is_file()


@needs_toolchain
def test_default_architectures_come_from_this_nvcc(built: Built) -> None:
    commands = json.loads((built.build_dir / "compile_commands.json").read_text())
    cu = next(c for c in commands if c["file"].endswith(".cu"))
    archs = set(re.findall(r"code=sm_(\d+)", cu["command"]))
    assert archs, cu["command"]
    listed = subprocess.run([find_nvcc(), "--list-gpu-arch"], capture_output=True, text=True)
    if listed.returncode == 0:
        supported = set(re.findall(r"compute_(\d+)", listed.stdout))
        assert archs <= supported  # nothing this toolkit cannot build (CUDA 13 has no sm_53/sm_72)
    info = native.load_library(built.library).build_info
    assert "cuda_archs=" in info and "+ptx" in info


@needs_toolchain
def test_only_the_c_abi_is_exported(built: Built) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm")
    out = subprocess.run([nm, "-D", "--defined-only", str(built.library)], capture_output=True, text=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    ours = {n for n in names if n.startswith("mlmark_")}
    assert {"mlmark_abi_version", "mlmark_loop_create", "mlmark_loop_run", "mlmark_last_error"} <= ours
    # The static CUDA runtime stays private: no clash with another framework's libcudart in the process.
    assert not [n for n in names if n.startswith("cuda")]


# --- build on first use and staleness -----------------------------------------------------------


@needs_toolchain
def test_first_use_builds_with_a_progress_message(built: Built) -> None:
    assert any("building the native library" in m for m in built.messages), built.messages
    assert any("built the native library" in m for m in built.messages)


@needs_toolchain
def test_current_library_is_not_rebuilt(built: Built) -> None:
    before = built.library.stat().st_mtime
    handler = _capture_native_log()
    try:
        assert native.ensure_library(build_dir=built.build_dir) == built.library
    finally:
        _release_native_log(handler)
    assert not any("building" in m for m in handler.messages)
    assert built.library.stat().st_mtime == before
    assert native.staleness(built.library) is None


@needs_toolchain
def test_embedded_hash_is_the_python_hash(built: Built) -> None:
    assert native.embedded_source_hash(built.library) == native.source_hash()


def test_missing_library_is_stale(tmp_path: Path) -> None:
    assert native.staleness(tmp_path / native.LIBRARY_NAME) == "it is not built yet"


@needs_toolchain
def test_stale_library_is_rebuilt(tmp_path: Path) -> None:
    src = _copy_sources(tmp_path / "src")
    (src / "src" / ".editor.swp").write_text("ignored by both hashes")
    build = tmp_path / "build"
    args = ["-DMLMARK_CUDA_ARCHS=75"]  # one architecture: three builds stay quick
    lib = native.ensure_library(build_dir=build, source_dir=src, cmake_args=args)
    assert native.staleness(lib, src) is None
    assert native.embedded_source_hash(lib) == native.source_hash(src)

    # A source newer than the library (same content): rebuilt, or at least re-stamped.
    future = time.time() + 5
    os.utime(str(src / "src" / "log.cpp"), (future, future))
    assert "newer" in (native.staleness(lib, src) or "")
    handler = _capture_native_log()
    try:
        native.ensure_library(build_dir=build, source_dir=src, cmake_args=args)
    finally:
        _release_native_log(handler)
    assert any("building the native library" in m for m in handler.messages)
    assert native.staleness(lib, src) is None

    # Other content with an old time stamp (a checkout can do that): caught by the hash.
    old_hash = native.source_hash(src)
    target = src / "src" / "log.cpp"
    target.write_text(target.read_text() + "\n// changed\n")
    past = lib.stat().st_mtime - 100
    os.utime(str(target), (past, past))
    assert "source hash" in (native.staleness(lib, src) or "")
    native.ensure_library(build_dir=build, source_dir=src, cmake_args=args)
    assert native.source_hash(src) != old_hash
    assert native.embedded_source_hash(lib) == native.source_hash(src)
    assert native.staleness(lib, src) is None

    # A broken source: one clear line naming the error and the log.
    target.write_text(target.read_text() + "\nthis is not C++;\n")
    with pytest.raises(TargetUnavailable) as err:
        native.ensure_library(build_dir=build, source_dir=src, cmake_args=args)
    message = str(err.value)
    assert "\n" not in message
    assert "building the native library failed" in message and "build.log" in message


def test_missing_cmake_is_a_clear_error(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.raises(TargetUnavailable, match="cmake was not found"):
        native.build_library(tmp_path / "build")


def test_missing_sources_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetUnavailable, match="sources are missing"):
        native.build_library(tmp_path / "build", source_dir=tmp_path / "nowhere")


def test_native_lib_env_must_exist(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLMARK_NATIVE_LIB", str(tmp_path / "absent.so"))
    with pytest.raises(TargetUnavailable, match="does not exist"):
        native.ensure_library()


# --- ABI --------------------------------------------------------------------------------------------


@needs_toolchain
def test_abi_version_and_identity(built: Built) -> None:
    lib = native.load_library(built.library)
    assert lib.abi_version == native.EXPECTED_ABI_VERSION == 2
    assert lib.source_hash == native.embedded_source_hash(built.library)
    assert "cuda_runtime=" in lib.build_info
    assert "tensorrt=" in lib.build_info


def test_python_and_header_agree_on_the_abi_version() -> None:
    header = (native.SOURCE_DIR / "include" / "mlmark" / "mlmark_c.h").read_text()
    version = re.search(r"#define MLMARK_ABI_VERSION (\d+)", header)
    assert version and int(version.group(1)) == native.EXPECTED_ABI_VERSION


# --- a library built without TensorRT -------------------------------------------------------------


def _without_tensorrt(built: Built) -> native.NativeLibrary:
    lib = native.load_library(built.library)
    if lib.trt_info().built_with_tensorrt:
        pytest.skip("this machine has TensorRT, so the default build includes it")
    return lib


@needs_toolchain
def test_library_without_tensorrt_says_so(built: Built) -> None:
    lib = _without_tensorrt(built)
    assert "tensorrt=none" in lib.build_info
    assert native.tensorrt_marker(built.library) == ("none", "")
    assert native.tensorrt_staleness(built.library) is None
    with pytest.raises(TargetUnavailable) as err:
        trt.tensorrt_info(lib)
    assert str(err.value) == trt.TENSORRT_MISSING
    assert "\n" not in str(err.value)


@needs_toolchain
def test_engine_build_without_tensorrt_is_target_unavailable(built: Built, tmp_path: Path) -> None:
    lib = _without_tensorrt(built)
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"not checked before the library is asked")
    spec = trt.EngineBuildSpec(onnx_path=onnx_path, engine_path=tmp_path / "model.engine", precision="fp16", batch=1)
    with pytest.raises(TargetUnavailable, match="TensorRT was not found when cpp_environment was built"):
        trt.build_engine(lib, spec)
    assert not (tmp_path / "model.engine").exists()
    with pytest.raises(TargetUnavailable, match="TensorRT was not found"):
        trt.inspect_engine(lib, tmp_path / "model.engine")


@needs_toolchain
def test_c_functions_without_tensorrt_refuse_cleanly(built: Built, tmp_path: Path) -> None:
    lib = _without_tensorrt(built)
    config = native.TrtBuildConfigStruct()
    config.onnx_path = b"/nonexistent.onnx"
    config.engine_path = str(tmp_path / "x.engine").encode()
    config.batch = 1
    config.workspace_mb = 16
    status, _result = lib.trt_build_engine(config)
    assert status == native.ERR_UNSUPPORTED
    assert "built without TensorRT" in lib.last_error(status, "build")
    status, text = lib.trt_inspect_engine(0, tmp_path / "x.engine")
    assert status == native.ERR_UNSUPPORTED and text == ""
    # A caller with another struct layout is refused, not trusted.
    info = native.TrtInfoStruct()
    info.struct_size = 8
    status = lib._trt_get_info(0, ctypes.byref(info))
    assert status == native.ERR_INVALID_ARGUMENT
    assert "struct_size is 8" in lib.last_error(status, "info")


@needs_toolchain
def test_new_loop_functions_refuse_null_handles(built: Built) -> None:
    lib = native.load_library(built.library)
    count = ctypes.c_int32(-1)
    status = lib._loop_binding_count(None, ctypes.byref(count))
    assert status == native.ERR_INVALID_ARGUMENT and "loop must not be NULL" in lib.last_error(status, "count")
    status = lib._loop_infer(None, 0, None, 0)
    assert status == native.ERR_INVALID_ARGUMENT
    data = np.zeros(4, dtype=np.uint8)
    status = lib._loop_set_input(None, 0, 0, ctypes.c_void_p(data.ctypes.data), 4)
    assert status == native.ERR_INVALID_ARGUMENT


@needs_toolchain
def test_engine_loop_without_gpu_or_tensorrt_is_one_line(built: Built, tmp_path: Path) -> None:
    lib = native.load_library(built.library)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 128)
    # No GPU: TargetUnavailable; a GPU but no TensorRT in the build: UnsupportedTask; both: the file is no
    # engine, ModelError. Each as one line and no crash.
    try:
        lib.device_count()
        gpu = True
    except TargetUnavailable:
        gpu = False
    expected = TargetUnavailable if not gpu else (ModelError if lib.trt_info().built_with_tensorrt else UnsupportedTask)
    with pytest.raises(MLMarkError) as err:
        NativeLoop(LoopSettings(iterations=5), EngineWorkload(engine), lib)
    assert type(err.value) is expected, (gpu, str(err.value))
    assert "\n" not in str(err.value)


def _fake_library(tmp_path: Path, source: str) -> Path:
    c_file = tmp_path / "fake.c"
    c_file.write_text(source)
    so = tmp_path / "libfake.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(c_file)], check=True)
    return so


@needs_cc
def test_mismatched_abi_version_is_refused(tmp_path: Path) -> None:
    so = _fake_library(tmp_path, "int mlmark_abi_version(void) { return 999; }\n")
    with pytest.raises(TargetUnavailable) as err:
        native.NativeLibrary(so)
    assert "ABI version 999" in str(err.value) and "expects {}".format(native.EXPECTED_ABI_VERSION) in str(err.value)


@needs_cc
def test_library_missing_functions_is_refused(tmp_path: Path) -> None:
    so = _fake_library(tmp_path, "int mlmark_abi_version(void) {{ return {}; }}\n".format(
        native.EXPECTED_ABI_VERSION))
    with pytest.raises(TargetUnavailable, match="lacks mlmark_source_hash"):
        native.NativeLibrary(so)


def test_not_a_library_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "libmlmark_native.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(TargetUnavailable, match="cannot load the native library"):
        native.NativeLibrary(bogus)


@needs_toolchain
def test_struct_size_mismatch_is_refused_and_logged(built: Built) -> None:
    lib = native.load_library(built.library)
    handler = _capture_native_log()
    try:
        lib.sync_log_level()
        config = native.LoopConfigStruct()
        config.struct_size = 12  # as a caller built against another layout would send
        handle = ctypes.c_void_p()
        status = lib._loop_create(ctypes.byref(config), ctypes.byref(handle))
        with pytest.raises(ConfigError, match="struct_size is 12"):
            lib.check(status, "mlmark_loop_create")
    finally:
        _release_native_log(handler)
        lib.sync_log_level()
    assert handle.value is None
    # The library's own log line reached Python's logging through the callback.
    assert any("returning status 1" in m for m in handler.messages), handler.messages


_HEADER = native.SOURCE_DIR / "include" / "mlmark" / "mlmark_c.h"
_CTYPES_STRUCTS = {
    "mlmark_device_info": native.DeviceInfoStruct, "mlmark_loop_config": native.LoopConfigStruct,
    "mlmark_binding_info": native.BindingInfoStruct, "mlmark_trt_info": native.TrtInfoStruct,
    "mlmark_trt_build_config": native.TrtBuildConfigStruct, "mlmark_trt_build_result": native.TrtBuildResultStruct,
    "mlmark_run_info": native.RunInfoStruct,
}


def _header_fields() -> Dict[str, List[str]]:
    """Each struct's field names in the order mlmark_c.h declares them."""
    text = re.sub(r"/\*.*?\*/", "", _HEADER.read_text(), flags=re.DOTALL)
    structs = {}
    for name, body, alias in re.findall(r"typedef struct (\w+) \{(.*?)\} (\w+);", text, re.DOTALL):
        assert name == alias
        structs[name] = [re.search(r"(\w+)\s*(\[[^\]]*\])?\s*$", decl).group(1)
                         for decl in body.split(";") if decl.strip()]
    return structs


def test_ctypes_fields_are_the_headers_in_order() -> None:
    # Names and order, which the offset check (tests/test_tensorrt_native.py) cannot see where a field
    # fills padding or two fields swap places with the same types.
    header = _header_fields()
    assert set(_CTYPES_STRUCTS) <= set(header)
    for c_name, cls in _CTYPES_STRUCTS.items():
        assert [f for f, _type in cls._fields_] == header[c_name], c_name
        assert ctypes.sizeof(cls) % 8 == 0, c_name  # trailing padding is spelled out as reserved fields
    # launch_gate came last (ABI 2 was not released yet), followed only by explicit padding.
    for c_name, cls in (("mlmark_loop_config", native.LoopConfigStruct), ("mlmark_run_info", native.RunInfoStruct)):
        names = header[c_name]
        assert names[-2] == "launch_gate" and names[-1].startswith("reserved"), names
        assert cls.launch_gate.offset + 8 == ctypes.sizeof(cls), c_name


# --- no GPU, no driver ---------------------------------------------------------------------------

_PROBE = """
import sys
from core.errors import MLMarkError
from targets.native import LoopSettings, SpinWorkload, load_library, run_loop
try:
    lib = load_library()
    lib.device_count()
    run_loop(LoopSettings(iterations=10), SpinWorkload(1000), lib)
    print("ran")
except MLMarkError as exc:
    print(type(exc).__name__ + "|" + str(exc))
"""


@needs_toolchain
def test_no_visible_gpu_is_one_clear_line(built: Built) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", MLMARK_NATIVE_LIB=str(built.library), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # no crash of the Python process
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    kind, message = lines[0].split("|", 1)
    assert kind == "TargetUnavailable"
    assert "no CUDA GPU is visible" in message or "driver" in message


@needs_toolchain
def test_no_driver_here_raises_target_unavailable(built: Built) -> None:
    lib = native.load_library(built.library)
    try:
        lib.device_count()
    except TargetUnavailable as exc:
        assert "\n" not in str(exc)
        with pytest.raises(TargetUnavailable):
            run_loop(LoopSettings(iterations=5), SpinWorkload(1000), lib)
        return
    pytest.skip("a GPU is visible here")


@needs_toolchain
def test_selftest_without_gpu_exits_2_with_one_line(built: Built) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", MLMARK_NATIVE_LIB=str(built.library), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "targets.native.selftest", "--quick"], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("selftest: error: ")


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    ({"concurrency": 0}, "concurrency"), ({"concurrency": 5000}, "concurrency"), ({"iterations": 0}, "iterations"),
    ({"warmup": -1}, "warmup"), ({"sync": "poll"}, "sync"), ({"memory": "unified"}, "memory"),
    ({"zero_copy_alloc": "pinned"}, "zero_copy_alloc"), ({"device": -1}, "device"),
    ({"launch_gate": 1}, "launch_gate"),
])
def test_bad_settings_are_config_errors(kwargs: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        LoopSettings(**kwargs).validate()


def test_bad_workload_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SpinWorkload(-1).validate()
    with pytest.raises(ConfigError):
        SpinWorkload(1000, input_bytes=-5).validate()


# --- the self-test's arithmetic and table, on synthetic timings ---------------------------------


class _FakeLibrary:
    path = Path("/fake/libmlmark_native.so")
    abi_version = native.EXPECTED_ABI_VERSION
    source_hash = "0" * 64
    build_info = "cuda_runtime=13.0 cuda_archs=90"

    def device_info(self, device: int = 0) -> DeviceInfo:
        return DeviceInfo(index=device, name="Fake GPU", compute_capability=(9, 0), integrated=False,
                          multiprocessors=132, can_map_host_memory=True, managed_memory=True,
                          concurrent_managed_access=True, driver_version="13.0", runtime_version="13.0",
                          total_memory=80 * 2**30, free_memory=79 * 2**30)


class _FakeLoop:
    """Times as a healthy GPU gives them: kernel + 6 us fixed cost, 5 us host overhead, streams overlap."""

    def __init__(self, settings: LoopSettings, workload: SpinWorkload, library: Any = None) -> None:
        self.settings, self.workload = settings, workload

    def __enter__(self) -> "_FakeLoop":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def set_spin_ns(self, duration_ns: int) -> None:
        self.workload = SpinWorkload(duration_ns, self.workload.input_bytes, self.workload.output_bytes)

    def run(self, iterations: Any = None, warmup: Any = None) -> LoopResult:
        n = self.settings.iterations if iterations is None else iterations
        rng = np.random.default_rng(n)
        gpu = self.workload.duration_ns * 1e-9 + 6e-6 + rng.uniform(0, 0.3e-6, n)
        e2e = gpu + 5e-6 + rng.uniform(0, 0.5e-6, n)
        enqueue = 3e-6 + rng.uniform(0, 0.5e-6, n)
        wall = float(e2e.sum()) / self.settings.concurrency
        return LoopResult(e2e_s=e2e, gpu_s=gpu, enqueue_s=enqueue, wall_s=wall, settings=self.settings,
                          input_bytes=self.workload.input_bytes, output_bytes=self.workload.output_bytes,
                          integrated=False)


def test_selftest_report_on_synthetic_timings(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(selftest, "NativeLoop", _FakeLoop)
    report = selftest.measure(library=_FakeLibrary(), quick=False)  # type: ignore[arg-type]
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    assert abs(report["fixed_cost_us"]["plain"] - 6.15) < 0.2
    assert abs(report["slope"]["plain"]["slope"] - 1.0) < 1e-3
    names = [c["name"] for c in report["checks"]]
    assert "host overhead, blocking" in names and "host overhead, spin" in names
    assert "throughput 4 streams / 1 stream" in names
    assert any(n.startswith("graph vs plain") for n in names)
    assert "gated vs plain 50 us median" in names and report["judged_accuracy_mode"] == "gated"
    assert set(report["fixed_cost_us"]) == set(report["launch_jitter_us"]) == {"plain", "gated", "graph"}
    table = selftest.format_report(report)
    assert "Result: {0} of {0} checks passed".format(len(names)) in table
    assert "FAIL" not in table
    json.dumps(report)  # the report is plain JSON
    assert selftest.exit_status(report) == 0


def test_selftest_report_flags_a_failure(monkeypatch: Any) -> None:
    class SlowHost(_FakeLoop):
        def run(self, iterations: Any = None, warmup: Any = None) -> LoopResult:
            r = super().run(iterations, warmup)
            r.e2e_s = r.e2e_s + 20e-6  # 25 us of host overhead
            return r

    monkeypatch.setattr(selftest, "NativeLoop", SlowHost)
    report = selftest.measure(library=_FakeLibrary(), quick=False)  # type: ignore[arg-type]
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert failed == ["host overhead, blocking", "host overhead, spin"]
    assert "[FAIL] host overhead, blocking" in selftest.format_report(report)
    assert selftest.exit_status(report) == 1


def test_selftest_judges_accuracy_on_gated_launches(monkeypatch: Any) -> None:
    class HostTail(_FakeLoop):
        """Plain launches carry the host's launch jitter: 10 % of them 3 us late; gated and graph ones do not."""

        def run(self, iterations: Any = None, warmup: Any = None) -> LoopResult:
            r = super().run(iterations, warmup)
            if not self.settings.launch_gate and not self.settings.cuda_graph:
                r.gpu_s = r.gpu_s + np.where(np.arange(r.gpu_s.size) % 10 == 0, 3e-6, 0.0)
            return r

    monkeypatch.setattr(selftest, "NativeLoop", HostTail)
    report = selftest.measure(library=_FakeLibrary(), quick=False)  # type: ignore[arg-type]
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    plain_50 = next(r for r in report["accuracy"]["plain"] if r["requested_us"] == 50)
    assert plain_50["corrected"]["p95_us"] - 50 > 2.0  # shown, not judged
    assert report["launch_jitter_us"]["plain"] > 2.0 > report["launch_jitter_us"]["gated"]
    table = selftest.format_report(report)
    assert "plain holds the host's launch call (and its jitter) between its events" in table
    assert "[PASS] gated vs plain 50 us median" in table


def test_selftest_help_runs() -> None:
    with pytest.raises(SystemExit) as exc:
        selftest.run_selftest(["--help"])
    assert exc.value.code == 0
