"""Shared fixtures. GPU tests are marked `gpu` and run only with --gpu or MLMARK_GPU_TESTS=1 (CI has no GPU)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the tests marked gpu (needs an NVIDIA GPU); same as MLMARK_GPU_TESTS=1")


def pytest_collection_modifyitems(config: Any, items: Any) -> None:
    if config.getoption("--gpu") or os.environ.get("MLMARK_GPU_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="GPU test: set MLMARK_GPU_TESTS=1 on a machine with an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: Any) -> Path:
    """A private models folder, so tests never touch the user's models/."""
    d = tmp_path / "models"
    monkeypatch.setenv("MLMARK_MODELS", str(d))
    return d


def write_tiny_classifier(path: Path, classes: int = 1001, hw: int = 224, bad_op: bool = False,
                          channels: int = 3) -> Path:
    """A tiny ONNX classifier with a workload's I/O (input [N,3,hw,hw] -> logits [N,classes]) for fast tests."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, channels, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((8, classes)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
    ]
    if bad_op:  # parses as ONNX but no runtime can load it
        nodes.append(helper.make_node("NoSuchOp", ["logits"], ["unused"], domain="no.such.domain"))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[w, fc])
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid("no.such.domain", 1)] if bad_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def run_cli(*args: str, cwd: Path = REPO, env: Any = None, timeout: float = 300) -> Any:
    """Run `python harness/mlmark.py ARGS` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "harness" / "mlmark.py")] + list(args), cwd=str(cwd),
                          env=full_env, capture_output=True, text=True, timeout=timeout)


# --- the stand-in trtexec (tests/trtexec_standin.py) ---------------------------------------------------


def make_standin_trtexec(folder: Path, release: str) -> Path:
    """An executable `trtexec` in folder that runs the stand-in as the given TensorRT release."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "trtexec"
    script.write_text('#!/bin/sh\nexec "{}" "{}" --standin-release={} "$@"\n'.format(
        sys.executable, REPO / "tests" / "trtexec_standin.py", release))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def trtexec_env(tmp_path: Path, monkeypatch: Any) -> Path:
    """A private engines/ folder, a file recording every stand-in trtexec call, no stand-in failure set."""
    from targets.trtexec import tool

    monkeypatch.setenv("MLMARK_ENGINES", str(tmp_path / "engines"))
    monkeypatch.setenv("TRTEXEC_STANDIN_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("TRTEXEC_STANDIN_STATE", str(tmp_path / "builds"))
    for name in ("FAIL", "FALLBACK", "WIDE", "GPU", "CC", "GPU_MS", "RELEASE"):
        monkeypatch.delenv("TRTEXEC_STANDIN_" + name, raising=False)
    monkeypatch.setattr(tool, "_PROBES", {})
    return tmp_path


@pytest.fixture
def standin_trtexec(trtexec_env: Path) -> Callable[..., Path]:
    """standin_trtexec("8.6.1"): the path of a stand-in trtexec of that release."""
    return lambda release="10.3.0": make_standin_trtexec(trtexec_env / "bin-{}".format(release), release)


@pytest.fixture
def tiny_model(trtexec_env: Path) -> Path:
    """A tiny classifier with mobilenet's inputs and outputs."""
    return write_tiny_classifier(trtexec_env / "tiny.onnx")


def find_nvcc() -> Optional[str]:
    """The CUDA compiler the tests build with: PATH, $CUDA_HOME/bin or /usr/local/cuda/bin (as CMake finds it)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in (os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "nvcc"), "/usr/local/cuda/bin/nvcc"):
        if os.path.isfile(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def library_without_tensorrt(tmp_path_factory: Any) -> Path:
    """The project's native library as built on a machine without TensorRT (this one's, when current)."""
    from targets.native import library as native

    current = native.default_build_dir() / native.LIBRARY_NAME
    if native.staleness(current) is None and b"MLMARK_TENSORRT=none|" in current.read_bytes():
        return current
    if not (shutil.which("cmake") and find_nvcc()):
        pytest.skip("needs cmake and nvcc to build the native library")
    build = tmp_path_factory.mktemp("native-without-tensorrt")
    return native.ensure_library(build_dir=build, cmake_args=["-DMLMARK_WITH_TENSORRT=OFF"])
