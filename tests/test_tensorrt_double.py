"""The TensorRT test double without a GPU: it builds for each release it is written for, exports what the native
library links, links into the native library, and parses, builds, deserializes and inspects models (smoke.cpp),
none of which needs a GPU. The GPU side is tests/test_tensorrt_double_gpu.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from targets.native.tensorrt import normalize_layers
from targets.tensorrt.precision_check import check_layers, check_size
from tests.conftest import find_nvcc, write_tiny_classifier
from tests.tensorrt_double import build as dbuild

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("cmake") and find_nvcc()), reason="needs cmake and nvcc"),
    pytest.mark.skipif(not all(dbuild.have_headers(r) for r in dbuild.RELEASES),
                       reason="needs the TensorRT headers in third_party/trt/ (not in the repository)"),
]

#: What each release's double exports: TensorRT's entry points the native library links, and the marker.
EXPORTS = {"createInferBuilder_INTERNAL", "createInferRuntime_INTERNAL", "createNvOnnxParser_INTERNAL",
           "getInferLibVersion", "getNvOnnxParserVersion", "mlmark_tensorrt_test_double",
           "mlmark_tensorrt_test_double_count"}
EXPORTS_10 = {"getInferLibMajorVersion", "getInferLibMinorVersion", "getInferLibPatchVersion", "getInferLibBuildVersion"}
ARCH = "75"  # one architecture: these tests compile, they never run GPU code


def _build_double_only(release: str, out: Path) -> Path:
    include, onnx = dbuild.headers(release)
    folder = out / "double-{}".format(release)
    env = dict(os.environ, CUDACXX=str(find_nvcc()))
    for cmd in (["cmake", "-S", str(dbuild.HERE), "-B", str(folder), "-DTRT_DOUBLE_INCLUDE={}".format(include),
                 "-DTRT_DOUBLE_ONNX_INCLUDE={}".format(onnx), "-DMLMARK_CUDA_ARCHS={}".format(ARCH),
                 "-DPython3_EXECUTABLE={}".format(sys.executable)],
                ["cmake", "--build", str(folder), "--", "-j{}".format(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        # The double compiles cleanly too: a warning in it is a bug waiting on the GPU machine.
        assert not re.search(r"\bwarning\b", proc.stdout + proc.stderr, re.IGNORECASE) or cmd[1] == "-S", proc.stdout
    return folder


@pytest.fixture(scope="module")
def doubles(tmp_path_factory: Any) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("tensorrt-double")
    return {release: _build_double_only(release, out) for release in dbuild.RELEASES}


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"tiny": write_tiny_classifier(folder / "tiny.onnx", classes=10, hw=32),
            "bad": write_tiny_classifier(folder / "bad.onnx", classes=10, hw=32, bad_op=True),
            "wide": write_tiny_classifier(folder / "wide.onnx", classes=10000, hw=32)}


def _smoke(folder: Path, *args: str, env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[str]":
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([str(folder / "trt_double_smoke")] + [str(a) for a in args], capture_output=True, text=True,
                          env=full, timeout=120)


def _layers(out: str) -> Optional[List[Dict[str, Any]]]:
    m = re.search(r"^JSON (.*?)^END JSON$", out, re.S | re.M)
    assert m, out
    json.loads(m.group(1))  # valid JSON, as the backend's normalize_layers expects
    return normalize_layers(m.group(1))


def _io(out: str) -> List[str]:
    return [line for line in out.splitlines() if line.startswith("IO ")]


def _plan_bytes(out: str) -> int:
    return int(re.search(r"^PLAN (\d+) bytes", out, re.M).group(1))  # type: ignore[union-attr]


def test_each_release_exports_what_the_native_library_links(doubles: Dict[str, Path]) -> None:
    for release, folder in doubles.items():
        lib = folder / "libnvinfer_double-{}.so".format(release)
        out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
        exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
        assert exported == EXPORTS | (EXPORTS_10 if release.startswith("10") else set()), (release, exported)
        soname = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        assert "libnvinfer_double-{}.so".format(release) in soname


@pytest.mark.parametrize("release", sorted(dbuild.RELEASES))
def test_fp32_and_fp16_builds_parse_shapes_and_inspect(doubles: Dict[str, Path], models: Dict[str, Path],
                                                       release: str) -> None:
    for precision, want in (("fp32", "fp32"), ("fp16", "fp16")):
        proc = _smoke(doubles[release], models["tiny"], precision, 4)
        assert proc.returncode == 0 and "SMOKE OK" in proc.stdout, proc.stdout + proc.stderr
        assert "TensorRT test double (not TensorRT)" in proc.stdout  # every log line says what it is
        if release == "8.2":  # the network's input fixed with setDimensions: a static engine
            assert _io(proc.stdout) == ["IO input input 0 [4,3,32,32]", "IO output logits 0 [4,10]"]
        else:  # optimization profile 0 with min = opt = max at the batch
            assert _io(proc.stdout) == ["IO input input 0 [-1,3,32,32] opt [4,3,32,32]", "IO output logits 0 [-1,10]"]
        decision = check_layers(precision if precision != "fp32" else "fp16", _layers(proc.stdout))
        assert decision.counts == {want: 2}, decision
        # A garbage file is refused with TensorRT's kind of message, not taken for an engine.
        assert "Error Code 1: Serialization (the data is not an engine of the TensorRT test double)" in proc.stdout


@pytest.mark.parametrize("release", ["8.2", "8.6"])
def test_implicit_int8_takes_a_table_headed_for_its_release_only(doubles: Dict[str, Path], models: Dict[str, Path],
                                                                tmp_path: Path, release: str) -> None:
    from precision.table import CalibrationTable, trt_version_number

    major, minor = (int(p) for p in release.split("."))
    patch = {"8.2": 3, "8.6": 1}[release]
    table = CalibrationTable(scales={n: 0.05 for n in ("input", "c", "r", "g", "f", "logits")})
    own = tmp_path / "own.cache"
    own.write_text(table.to_text(version=trt_version_number(major, minor, patch)))
    proc = _smoke(doubles[release], models["tiny"], "int8", 2, own)
    assert proc.returncode == 0, proc.stdout
    decision = check_layers("int8", _layers(proc.stdout))
    assert decision.passed and decision.counts == {"int8": 2}, decision
    other = tmp_path / "other.cache"
    other.write_text(table.to_text(version=trt_version_number(7, 1, 0)))
    proc = _smoke(doubles[release], models["tiny"], "int8", 2, other)
    assert proc.returncode == 4  # no engine: TensorRT calibrates from data, which the calibrator has none of
    assert "is not this release's" in proc.stdout and "Calibration failure occurred" in proc.stdout


def test_explicit_int8_from_a_qdq_model(doubles: Dict[str, Path], models: Dict[str, Path], tmp_path: Path) -> None:
    import onnx

    from precision.qdq import build_qdq
    from precision.table import CalibrationTable

    qdq = tmp_path / "tiny.qdq.onnx"
    onnx.save(build_qdq(models["tiny"], CalibrationTable(scales={n: 0.05 for n in ("input", "c", "r", "g", "f")})),
              str(qdq))
    proc = _smoke(doubles["10.3"], qdq, "int8", 2)
    assert proc.returncode == 0, proc.stdout
    decision = check_layers("int8", _layers(proc.stdout))
    assert decision.passed and decision.value == 1.0, decision
    # Q/DQ layers need INT8 enabled, as in TensorRT.
    proc = _smoke(doubles["10.3"], qdq, "fp16", 2)
    assert proc.returncode == 4 and "INT8 is not enabled" in proc.stdout


def test_an_unknown_operator_is_a_parser_error_naming_the_node(doubles: Dict[str, Path], models: Dict[str, Path]) -> None:
    proc = _smoke(doubles["10.3"], models["bad"], "fp32", 1)
    assert proc.returncode == 3
    assert "PARSER ERROR node 5: No importer registered for op: NoSuchOp" in proc.stdout


def test_fallback_knob_builds_fp32_layers_then_stops(doubles: Dict[str, Path], models: Dict[str, Path],
                                                    tmp_path: Path) -> None:
    counter = tmp_path / "fallbacks"
    counter.write_text("1\n")
    env = {"MLMARK_TRT_DOUBLE_FALLBACKS": str(counter)}
    first = _smoke(doubles["10.3"], models["tiny"], "fp16", 1, env=env)
    second = _smoke(doubles["10.3"], models["tiny"], "fp16", 1, env=env)
    assert check_layers("fp16", _layers(first.stdout)).passed is False  # issue 3160's engine: detected
    assert check_layers("fp16", _layers(second.stdout)).passed is True
    assert counter.read_text().strip() == "0" and "issue 3160" in first.stdout


def test_myelin_knob_leaves_only_the_size_rule(doubles: Dict[str, Path], models: Dict[str, Path]) -> None:
    env = {"MLMARK_TRT_DOUBLE_MYELIN": "1"}
    fp32 = _smoke(doubles["10.3"], models["wide"], "fp32", 1, env=env)
    fp16 = _smoke(doubles["10.3"], models["wide"], "fp16", 1, env=env)
    layers = _layers(fp16.stdout)
    assert layers is not None and [l["type"] for l in layers] == ["Myelin"]
    assert check_layers("fp16", layers).passed is None  # the inspector cannot tell
    size = check_size("fp16", _plan_bytes(fp16.stdout), _plan_bytes(fp32.stdout))
    assert size.passed and size.value > 1.8, size  # the weights' padding follows their precision


def test_an_unimplemented_method_stops_the_process_naming_it(doubles: Dict[str, Path]) -> None:
    proc = _smoke(doubles["10.3"], "--unimplemented")
    assert proc.returncode != 0 and "DLA cores" not in proc.stdout
    assert "TensorRT test double: VBuilder::getNbDLACores is not implemented" in proc.stderr


def test_the_native_library_links_against_the_double(tmp_path: Path) -> None:
    # The product's CMake takes the double as both TensorRT libraries; the backend compiles against 10.3's headers.
    old = os.environ.get("MLMARK_CUDA_ARCHS")
    os.environ["MLMARK_CUDA_ARCHS"] = ARCH
    try:
        built = dbuild.build_double("10.3", tmp_path)
    finally:
        if old is None:
            os.environ.pop("MLMARK_CUDA_ARCHS", None)
        else:
            os.environ["MLMARK_CUDA_ARCHS"] = old
    dynamic = subprocess.run(["readelf", "-d", str(built.native)], capture_output=True, text=True, check=True).stdout
    assert "[libnvinfer_double-10.3.so]" in dynamic and str(built.double.parent) in dynamic  # NEEDED and RUNPATH
    assert b"MLMARK_TENSORRT=10.3.0|" in built.native.read_bytes()
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(built.native)], capture_output=True, text=True,
                               check=True).stdout
    assert "createInferBuilder_INTERNAL" in undefined and "mlmark_tensorrt_test_double" not in undefined  # dlsym'd
