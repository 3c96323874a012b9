"""The TensorRT half of the native library, without TensorRT or a GPU: the C ABI's struct layouts and constants
as ctypes sees them, engine inspector output, build-spec and input checks, TensorRT staleness, CMake's
FindTensorRT on a headers-only folder, and the header compile check against the real TensorRT headers kept
(uncommitted) in third_party/trt/. Nothing here runs TensorRT: it cannot be installed where this runs."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

from core.errors import ConfigError, ModelError, RunError, TargetUnavailable, UnsupportedTask
from targets.native import library as native
from targets.native import tensorrt as trt
from targets.native.loop import BindingInfo, EngineWorkload, NativeLoop
from tests.conftest import find_nvcc

REPO = Path(__file__).resolve().parent.parent
HEADER = native.SOURCE_DIR / "include" / "mlmark" / "mlmark_c.h"
CHECK_SCRIPT = native.SOURCE_DIR / "tools" / "check_tensorrt_headers.sh"
THIRD_PARTY = REPO / "third_party" / "trt"

# Each release checked, with its ONNX parser headers (11.x ships NvOnnxParser.h in its own include folder).
# 10.13 and 10.16 take the strongly typed path (weak typing deprecated from 10.12) with the 10.1 parser header.
RELEASES = [("8.2", "onnx-8.2"), ("8.5", "onnx-8.5"), ("8.6", "onnx-8.6"), ("10.3", "onnx-10.1"),
            ("10.13", "onnx-10.1"), ("10.16", "onnx-10.1"), ("11.0", "11.0/include"), ("11.1", "11.1/include")]

STRUCTS = {
    "mlmark_device_info": native.DeviceInfoStruct,
    "mlmark_loop_config": native.LoopConfigStruct,
    "mlmark_run_info": native.RunInfoStruct,
    "mlmark_binding_info": native.BindingInfoStruct,
    "mlmark_trt_info": native.TrtInfoStruct,
    "mlmark_trt_build_config": native.TrtBuildConfigStruct,
    "mlmark_trt_build_result": native.TrtBuildResultStruct,
}


def _defines() -> Dict[str, int]:
    return {name: int(value) for name, value in
            re.findall(r"^#define (MLMARK_[A-Z0-9_]+) (-?\d+)", HEADER.read_text(), re.MULTILINE)}


def _release_dirs(version: str, onnx: str) -> Tuple[Path, Path]:
    return THIRD_PARTY / version / "include", THIRD_PARTY / onnx


def _have_release(version: str, onnx: str) -> bool:
    include, parser = _release_dirs(version, onnx)
    return (include / "NvInfer.h").is_file() and (parser / "NvOnnxParser.h").is_file()


needs_headers = pytest.mark.skipif(not all(_have_release(v, o) for v, o in RELEASES),
                                   reason="needs the TensorRT headers in third_party/trt/ (not in the repository)")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")




# --- the C ABI as ctypes sees it ------------------------------------------------------------------------


@needs_cc
def test_struct_layouts_match_the_header(tmp_path: Path) -> None:
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "mlmark/mlmark_c.h"', "int main(void) {"]
    for c_name, cls in STRUCTS.items():
        lines.append('  printf("%s size %zu\\n", "{0}", sizeof({0}));'.format(c_name))
        for field, _ctype in cls._fields_:
            lines.append('  printf("%s.%s %zu %zu\\n", "{0}", "{1}", offsetof({0}, {1}), sizeof((({0}*)0)->{1}));'
                         .format(c_name, field))
    lines += ["  return 0;", "}"]
    (tmp_path / "layout.c").write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-I", str(native.SOURCE_DIR / "include"),
                    "-o", str(exe), str(tmp_path / "layout.c")], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    seen = 0
    for line in filter(None, out):
        parts = line.split()
        if parts[1] == "size":
            assert ctypes.sizeof(STRUCTS[parts[0]]) == int(parts[2]), line
        else:
            c_name, field = parts[0].split(".")
            descriptor = getattr(STRUCTS[c_name], field)
            assert (descriptor.offset, descriptor.size) == (int(parts[1]), int(parts[2])), line
        seen += 1
    assert seen == len(STRUCTS) + sum(len(cls._fields_) for cls in STRUCTS.values())


def test_constants_match_the_header() -> None:
    d = _defines()
    assert d["MLMARK_ABI_VERSION"] == native.EXPECTED_ABI_VERSION == 2
    assert d["MLMARK_ERR_MODEL"] == native.ERR_MODEL and d["MLMARK_ERR_TENSORRT"] == native.ERR_TENSORRT
    assert d["MLMARK_EXECUTOR_SPIN"] == native.EXECUTOR_SPIN
    assert d["MLMARK_EXECUTOR_TENSORRT"] == native.EXECUTOR_TENSORRT
    assert d["MLMARK_MAX_DIMS"] == native.MAX_DIMS and d["MLMARK_MAX_NAME"] == native.MAX_NAME
    dtypes = {v: k for k, v in d.items() if k.startswith("MLMARK_DTYPE_")}
    assert sorted(dtypes) == sorted(native.DTYPE_NAMES)
    for number, name in native.DTYPE_NAMES.items():
        # MLMARK_DTYPE_FLOAT32 <-> float32, ..._BFLOAT16 <-> bfloat16, ..._FP8 <-> fp8
        assert dtypes[number].replace("MLMARK_DTYPE_", "").lower() == name, (number, name)
    for name, number in trt.PRECISIONS.items():
        assert d["MLMARK_PRECISION_" + name.upper()] == number


def test_library_error_classes_for_the_new_statuses() -> None:
    assert native._ERROR_CLASSES[native.ERR_MODEL] is ModelError
    assert native._ERROR_CLASSES[native.ERR_TENSORRT] is RunError


# --- build errors as the harness sees them -------------------------------------------------------------


class _Status:
    """Answers last_error() as the library does; only the status-to-error mapping is under test."""

    def __init__(self, message: str) -> None:
        self.message = message

    def last_error(self, status: int, where: str) -> str:
        return self.message


@pytest.mark.parametrize("status, cls", [
    (native.ERR_MODEL, ModelError), (native.ERR_INVALID_ARGUMENT, ConfigError), (native.ERR_NO_DEVICE, TargetUnavailable),
    (native.ERR_NO_DRIVER, TargetUnavailable), (native.ERR_UNSUPPORTED, UnsupportedTask),
    (native.ERR_OUT_OF_MEMORY, RunError), (native.ERR_TENSORRT, RunError), (native.ERR_CUDA, RunError),
    (native.ERR_INTERNAL, RunError),
])
def test_build_statuses_map_to_harness_errors(status: int, cls: type) -> None:
    with pytest.raises(cls):
        trt._raise_for(_Status("it failed"), status, "build")  # type: ignore[arg-type]
    trt._raise_for(_Status("fine"), native.OK, "build")  # type: ignore[arg-type]


def test_out_of_memory_suggests_a_smaller_workspace_or_batch() -> None:
    with pytest.raises(RunError) as err:
        trt._raise_for(_Status("CUDA out of memory"), native.ERR_OUT_OF_MEMORY, "build",  # type: ignore[arg-type]
                       "give a smaller workspace (now 1024 MiB) or batch (now 8)")
    assert str(err.value) == "CUDA out of memory; give a smaller workspace (now 1024 MiB) or batch (now 8)"


def _spec(tmp_path: Path, **kwargs: Any) -> trt.EngineBuildSpec:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    fields: Dict[str, Any] = dict(onnx_path=onnx_path, engine_path=tmp_path / "m.engine.tmp", precision="fp16", batch=4)
    fields.update(kwargs)
    return trt.EngineBuildSpec(**fields)


@pytest.mark.parametrize("kwargs, cls, words", [
    ({"precision": "fp64"}, ConfigError, "precision"), ({"batch": 0}, ConfigError, "batch"),
    ({"batch": 2.0}, ConfigError, "batch"), ({"workspace_mb": 0}, ConfigError, "workspace_mb"),
    ({"device": -1}, ConfigError, "device"), ({"onnx_path": Path("/nonexistent/m.onnx")}, ModelError, "does not exist"),
    ({"precision": "int8", "calibration_table": Path("/nonexistent/t.cache")}, ModelError, "calibration table"),
    ({"calibration_table": Path("/nonexistent/t.cache")}, ConfigError, "int8 builds only"),
    ({"engine_path": Path("/nonexistent/dir/m.engine")}, ConfigError, "folder"),
])
def test_bad_build_specs_are_refused_before_the_library(tmp_path: Path, kwargs: Dict[str, Any], cls: type,
                                                        words: str) -> None:
    with pytest.raises(cls, match=words):
        _spec(tmp_path, **kwargs).validate()


def test_a_good_build_spec_passes(tmp_path: Path) -> None:
    table = tmp_path / "t.cache"
    table.write_text("TRT-8201-EntropyCalibration2\n")
    assert _spec(tmp_path, precision="int8", calibration_table=table).validate().batch == 4


def test_engine_workload_checks_its_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        EngineWorkload(tmp_path / "absent.engine").validate()
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        EngineWorkload(empty).validate()


# --- inputs -----------------------------------------------------------------------------------------------


def _loop_with(bindings: List[BindingInfo]) -> NativeLoop:
    """A NativeLoop's input checks without a library: only _bindings is set."""
    loop = NativeLoop.__new__(NativeLoop)
    loop._handle = None
    loop._bindings = bindings
    return loop


_BINDINGS = [BindingInfo("input", (2, 3, 4, 4), "float32", True, 2 * 3 * 4 * 4 * 4),
             BindingInfo("logits", (2, 10), "float16", False, 2 * 10 * 2)]


def test_inputs_are_converted_to_the_engine_dtype() -> None:
    ordered = _loop_with(_BINDINGS)._inputs_in_order({"input": np.ones((2, 3, 4, 4), dtype=np.float64)})
    assert len(ordered) == 1 and ordered[0][0] == 0
    assert ordered[0][1].dtype == np.float32 and ordered[0][1].flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("inputs, words", [
    ({}, "missing"), ({"input": np.ones((2, 3, 4, 4)), "extra": np.ones(1)}, "unknown"),
    ({"input": np.ones((1, 3, 4, 4))}, "shape"), ({"input": np.ones((2, 3, 4, 4), dtype=np.complex64)}, "cannot become"),
])
def test_bad_inputs_are_config_errors(inputs: Dict[str, np.ndarray], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _loop_with(_BINDINGS)._inputs_in_order(inputs)


def test_types_numpy_cannot_hold_are_refused() -> None:
    with pytest.raises(UnsupportedTask, match="bfloat16"):
        BindingInfo("x", (1,), "bfloat16", True, 2).numpy_dtype()
    assert BindingInfo("x", (1,), "float16", True, 2).numpy_dtype() == np.float16


# --- engine inspector output -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, precision", [
    ("Float", "fp32"), ("Half", "fp16"), ("Int8", "int8"), ("Int32", "other"), ("UInt8", "other"), ("Bool", "other"),
    ("Row major linear FP32 format (kLINEAR)", "fp32"), ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Four wide channel vectorized row major Int8 format", "int8"), ("Row major linear BF16 format", "bf16"),
    ("BFloat16", "bf16"), ("FP8", "fp8"), ("", None), (None, None), ("something new", None),
])
def test_format_strings_name_their_precision(fmt: Any, precision: Optional[str]) -> None:
    assert trt.format_precision(fmt) == precision


def _tensor(name: str, fmt: str) -> Dict[str, Any]:
    return {"Name": name, "Location": "Device", "Dimensions": [1, 8, 56, 56], "Format/Datatype": fmt}


def test_detailed_inspector_json_is_normalized() -> None:
    text = json.dumps({"Layers": [
        {"Name": "conv1 + relu1", "LayerType": "CaskConvolution", "Inputs": [_tensor("input", "Half")],
         "Outputs": [_tensor("r", "Half")], "TacticName": "sm80_xmma_fprop"},
        {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
         "Inputs": [_tensor("input", "Row major linear FP32 format")],
         "Outputs": [_tensor("x", "Channel major FP16 format where channel % 2 == 0")]},
        {"Name": "fc", "LayerType": "CaskGemmConvolution", "Inputs": [_tensor("g", "Float")],
         "Outputs": [_tensor("logits", "Float")]},
        {"Name": "conv2", "LayerType": "CaskConvolution", "Inputs": [_tensor("q", "Int8")],
         "Outputs": [_tensor("c2", "Int8")]},
        {"Name": "shape arithmetic", "LayerType": "ElementWise", "Inputs": [_tensor("s", "Int32")],
         "Outputs": [_tensor("t", "Int32")]},
    ], "Bindings": ["input", "logits"]})
    layers = trt.normalize_layers(text)
    assert layers is not None
    assert [(l["name"], l["type"], l["precision"]) for l in layers] == [
        ("conv1 + relu1", "CaskConvolution", "fp16"), ("Reformatting CopyNode for Input Tensor 0", "Reformat", "mixed"),
        ("fc", "CaskGemmConvolution", "fp32"), ("conv2", "CaskConvolution", "int8"),
        ("shape arithmetic", "ElementWise", None)]
    assert layers[1]["input_precisions"] == ["fp32"] and layers[1]["output_precisions"] == ["fp16"]
    assert layers[0]["raw"]["TacticName"] == "sm80_xmma_fprop"
    json.dumps(layers)  # goes into a sidecar as is


def test_layer_names_only_give_no_precision() -> None:
    layers = trt.normalize_layers(json.dumps({"Layers": ["conv1", "fc"], "Bindings": ["input", "logits"]}))
    assert layers is not None and [(l["name"], l["precision"]) for l in layers] == [("conv1", None), ("fc", None)]


def test_empty_or_broken_inspector_output() -> None:
    assert trt.normalize_layers(json.dumps({"Layers": []})) is None
    assert trt.normalize_layers("[]") is None
    with pytest.raises(RunError, match="not JSON"):
        trt.normalize_layers("{not json")


# --- TensorRT staleness -------------------------------------------------------------------------------------

_HEADER_8 = "#define NV_TENSORRT_MAJOR 8 //!< major\n#define NV_TENSORRT_MINOR 5\n#define NV_TENSORRT_PATCH 2\n"
_HEADER_11 = ("#define TRT_MAJOR_ENTERPRISE 11\n#define TRT_MINOR_ENTERPRISE 1\n#define TRT_PATCH_ENTERPRISE 0\n"
              "#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE //!< major\n"
              "#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE\n#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE\n")


def test_header_versions_are_read_through_aliases(tmp_path: Path) -> None:
    (tmp_path / "v8.h").write_text(_HEADER_8)
    (tmp_path / "v11.h").write_text(_HEADER_11)
    (tmp_path / "broken.h").write_text("#define NV_TENSORRT_MAJOR SOMETHING_UNDEFINED\n")
    assert native.header_tensorrt_version(tmp_path / "v8.h") == "8.5.2"
    assert native.header_tensorrt_version(tmp_path / "v11.h") == "11.1.0"
    assert native.header_tensorrt_version(tmp_path / "broken.h") is None
    assert native.header_tensorrt_version(tmp_path / "absent.h") is None


@pytest.mark.skipif(not (THIRD_PARTY / "11.1" / "include" / "NvInferVersion.h").is_file(),
                    reason="needs the TensorRT headers in third_party/trt/")
def test_real_headers_give_their_versions() -> None:
    for version, expected in (("8.2", "8.2.3"), ("8.6", "8.6.1"), ("10.3", "10.3.0"), ("11.0", "11.0.0"),
                              ("11.1", "11.1.0")):
        assert native.header_tensorrt_version(THIRD_PARTY / version / "include" / "NvInferVersion.h") == expected


def _fake_built_library(tmp_path: Path, marker: bytes) -> Path:
    """Bytes laid out as the linker leaves the marker in a built library (not loaded: only scanned)."""
    lib = tmp_path / "libmlmark_native.so"
    lib.write_bytes(b"\x7fELF" + b"\0" * 64 + marker + b"\0" + b"\0" * 64)
    return lib


def test_a_jetpack_upgrade_makes_the_library_stale(tmp_path: Path) -> None:
    header = tmp_path / "NvInferVersion.h"
    header.write_text(_HEADER_8)
    lib = _fake_built_library(tmp_path, b"MLMARK_TENSORRT=8.5.2|" + str(header).encode() + b";")
    assert native.tensorrt_marker(lib) == ("8.5.2", str(header))
    assert native.tensorrt_staleness(lib) is None
    header.write_text(_HEADER_11)
    assert native.tensorrt_staleness(lib) == "it was built against TensorRT 8.5.2 but {} has TensorRT 11.1.0 now".format(
        header)
    header.unlink()
    assert "are gone" in (native.tensorrt_staleness(lib) or "")


def test_libraries_without_tensorrt_or_marker_are_not_tensorrt_stale(tmp_path: Path) -> None:
    assert native.tensorrt_staleness(_fake_built_library(tmp_path, b"MLMARK_TENSORRT=none|;")) is None
    assert native.tensorrt_marker(_fake_built_library(tmp_path, b"nothing here")) is None


# --- CMake's FindTensorRT on a folder with headers only -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cmake") and find_nvcc()), reason="needs cmake and nvcc")
@pytest.mark.skipif(not (_have_release("8.2", "onnx-8.2") and _have_release("11.1", "11.1/include")),
                    reason="needs the TensorRT headers in third_party/trt/")
@pytest.mark.parametrize("version, onnx, expected", [("8.2", "onnx-8.2", "8.2.3"), ("11.1", "11.1/include", "11.1.0")])
def test_find_tensorrt_reads_headers_and_says_the_library_is_missing(tmp_path: Path, version: str, onnx: str,
                                                                     expected: str) -> None:
    # Real headers only, no libnvinfer: the honest result is "headers found, library not found", core only.
    root = tmp_path / "TensorRT"
    (root / "include").mkdir(parents=True)
    include, parser = _release_dirs(version, onnx)
    for header in list(include.glob("*.h")) + [parser / "NvOnnxParser.h"]:
        shutil.copy(str(header), str(root / "include" / header.name))
    env = dict(os.environ, CUDACXX=str(find_nvcc()))
    proc = subprocess.run(["cmake", "-S", str(native.SOURCE_DIR), "-B", str(tmp_path / "build"),
                           "-DMLMARK_CUDA_ARCHS=75", "-DTensorRT_ROOT={}".format(root)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "TensorRT not found" in l)
    assert "TensorRT_INCLUDE_DIR={}".format(root / "include") in line
    assert "TensorRT_LIBRARY=not found" in line and "(headers say {})".format(expected) in line
    assert "MLMARK_TENSORRT_VERSION \"none\"" in (tmp_path / "build" / "generated" / "mlmark_build_info.h").read_text()
    # Asked for explicitly, the same layout is an error, not a silent core-only build.
    proc = subprocess.run(["cmake", str(tmp_path / "build"), "-DMLMARK_WITH_TENSORRT=ON"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "MLMARK_WITH_TENSORRT=ON but TensorRT was not found" in proc.stderr


# --- the header compile check ---------------------------------------------------------------------------------


def test_check_script_needs_its_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(CHECK_SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--trt-include is required" in proc.stderr
    proc = subprocess.run(["bash", str(CHECK_SCRIPT), "--trt-include", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "has no NvInfer.h" in proc.stderr


def test_check_script_fetches_nothing() -> None:
    text = CHECK_SCRIPT.read_text()
    for word in ("curl", "wget", "git ", "pip ", "apt", "http"):
        assert word not in text, word


def _check(version: str, onnx: str, root: Path = native.SOURCE_DIR) -> "subprocess.Popen[str]":
    include, parser = _release_dirs(version, onnx)
    return subprocess.Popen(["bash", str(root / "tools" / "check_tensorrt_headers.sh"), "--std", "c++14", "--object",
                             "--trt-include", str(include), "--onnx-include", str(parser)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@needs_headers
@needs_cxx
def test_backend_compiles_cleanly_against_every_release() -> None:
    running = [(version, _check(version, onnx)) for version, onnx in RELEASES]
    for version, proc in running:
        out, _ = proc.communicate(timeout=600)
        result = [l for l in out.splitlines() if l.startswith("RESULT")]
        assert proc.returncode == 0, out
        assert len(result) == 1 and result[0].endswith("0 errors, 0 warnings (0 deprecation)"), out
        assert "tensorrt={}.".format(version) in result[0]
        # Linked from libnvinfer and libnvonnxparser: their extern "C" entry points only, no C++ symbols.
        needs = next(l for l in out.splitlines() if l.startswith("needs from TensorRT:")).split(":")[1].split()
        assert {"createInferBuilder_INTERNAL", "createInferRuntime_INTERNAL", "createNvOnnxParser_INTERNAL"} <= set(needs)
        assert all("INTERNAL" in n or n.startswith("getInferLib") for n in needs), needs


@pytest.mark.slow
@needs_headers
@needs_cxx
def test_check_catches_a_deprecated_call(tmp_path: Path) -> None:
    # The check must be able to fail: the 8.5 path calling the bindings API that 8.5 deprecates.
    copy = tmp_path / "cpp_environment"
    shutil.copytree(str(native.SOURCE_DIR), str(copy))
    compat = copy / "src" / "tensorrt" / "trt_compat.cpp"
    text = compat.read_text()
    anchor = "  const int32_t n = engine.getNbIOTensors();"
    assert anchor in text
    compat.write_text(text.replace(anchor, anchor + "\n  (void)engine.getNbBindings();"))
    proc = _check("8.5", "onnx-8.5", copy)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "getNbBindings" in out and "deprecated" in out
    assert re.search(r"RESULT tensorrt=8\.5\.\d+ .* [1-9]\d* errors", out), out
