"""The pytorch target: same outputs as ONNX Runtime on the same file, batch > 1, modes, and one-line errors.

CPU tests need torch and onnx2torch and skip cleanly without them; GPU tests are marked `gpu`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from core.errors import ConfigError, TargetUnavailable, UnsupportedTask
from core.specs import onnx_io
from harness.config import load_configs
from targets import get_target
from targets.base import LoadRequest
from tests.conftest import run_cli, write_tiny_classifier
from workloads import get_workload

try:
    import torch

    from targets.pytorch.convert import import_onnx2torch

    import_onnx2torch()  # onnx2torch, standing in for torchvision where that does not load
    HAVE_TORCH = True
except Exception:  # ImportError, or TargetUnavailable naming onnx2torch
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch and onnx2torch are not installed "
                                                        "(pip install torch onnx2torch)")


def ort_outputs(path: Path, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def load(path: Path, hardware: str = "cpu", precision: str = "fp32", batch: int = 1, concurrency: int = 1,
         workload: str = "mobilenet", **options: Any) -> Any:
    shapes = get_workload(workload).input_shapes(onnx_io(path)[0], batch)
    return get_target("pytorch").load(LoadRequest(model_path=path, workload=workload, hardware=hardware,
                                                  precision=precision, batch=batch, concurrency=concurrency,
                                                  options=options, input_shapes=shapes))


def shape_chain_model(path: Path) -> Path:
    """Exporter-style shape arithmetic, a Squeeze with an axes input, a Cast, and two outputs listed in the
    opposite order to the nodes that make them: what the converter passes must handle."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
             numpy_helper.from_array(np.array([6], dtype=np.int64), "six"),
             numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "hw_axes"),
             numpy_helper.from_array(rng.standard_normal((6, 1001)).astype(np.float32), "fc")]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[8, 8], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        # boxes-like output: [N, 6, h, w] -> [N, -1, 6] through Shape -> Gather -> Unsqueeze -> Concat
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["t"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "minus1", "six"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["boxes"]),
        # logits: GlobalAveragePool -> Squeeze(axes as an input) -> Cast -> MatMul
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Squeeze", ["g", "hw_axes"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["sf", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1001]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", None, 6])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def biased_conv_model(path: Path) -> Path:
    """Convolutions with a bias (one with TF-style asymmetric pads, which onnx2torch wraps with a Pad), one
    without, and the biased features as a second output: what the bias-kernel swap must handle."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [init("wa", 16, 3, 3, 3), init("ba", 16), init("wb", 32, 16, 3, 3), init("bb", 32), init("wc", 32, 32, 1, 1),
             init("fc", 10, 32), init("fcb", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "wa", "ba"], ["a"], name="a", strides=[2, 2], pads=[0, 0, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a"], ["ar"], name="ar"),
        helper.make_node("Conv", ["ar", "wb", "bb"], ["b"], name="b", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["b"], ["features"], name="br"),
        helper.make_node("Conv", ["features", "wc"], ["c"], name="c", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="g"),
        helper.make_node("Flatten", ["g"], ["f"], name="f"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "biased", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 32, 112, 112])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def workload_model(name: str) -> Path:
    """The workload's generated model."""
    from workloads.model_store import resolve_model

    return resolve_model(get_workload(name)).path


# -- without torch ----------------------------------------------------------------------------------

def test_torch_missing_names_the_package(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import fails as if torch were not installed
    with pytest.raises(TargetUnavailable) as exc:
        get_target("pytorch").check_installed()
    assert "the Python package torch is not installed (pip install torch onnx2torch" in str(exc.value)
    assert "\n" not in str(exc.value)


@needs_torch
def test_onnx2torch_missing_names_the_package(monkeypatch: Any) -> None:
    from targets.pytorch import convert

    monkeypatch.setattr(convert, "_ONNX2TORCH", [])
    for name in [k for k in sys.modules if k == "onnx2torch" or k.startswith("onnx2torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    with pytest.raises(TargetUnavailable, match=r"onnx2torch is not installed \(pip install onnx2torch\)"):
        get_target("pytorch").check_installed()


def test_options_are_validated_before_anything_runs(tmp_path: Path) -> None:
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    base = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "model": str(tiny)}
    cases = [({"exec_mode": "jit"}, "unknown params.exec_mode 'jit' (allowed: eager, cuda-graph, compile)"),
             ({"channels_last": "yes"}, "params.channels_last must be true or false"),
             ({"transfers": "sometimes"}, "unknown params.transfers 'sometimes' (allowed: excluded, included)"),
             ({"compile_mode": "fast"}, "unknown params.compile_mode 'fast'"),
             ({"threads": 0}, "params.threads must be an integer from 1 to 1024")]
    for options, expected in cases:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps([{"target": "pytorch", "workload": "mobilenet", "params": dict(base, **options)}]))
        (task,) = load_configs([cfg])  # the option names are known to the parser
        with pytest.raises(ConfigError) as exc:
            get_target("pytorch").validate_options(task.params.options, task.source)
        assert expected in str(exc.value) and "c.json: task 1" in str(exc.value)


# -- with torch, on the CPU -------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("batch, concurrency", [(1, 1), (5, 2)])
def test_same_outputs_as_onnxruntime(tmp_path: Path, batch: int, concurrency: int) -> None:
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    session = load(tiny, batch=batch, concurrency=concurrency)
    feed = {"input": np.random.default_rng(3).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    staged = session.stage(feed)
    for slot in range(concurrency):
        (out,) = session.to_host(session.run(slot, staged))
        assert out.shape == (batch, 1001) and out.dtype == np.float32
        assert rel_err(out, ort_outputs(tiny, feed)[0]) < 1e-5
    info = session.info
    assert info["exec_mode"] == "eager" and info["device"] == "cpu" and info["precision"] == "float32"
    assert info["converter"].startswith("onnx2torch ") and info["slots"] == concurrency
    assert session.output_names() == ["logits"] and session.input_specs()[0].shape == ("batch", 3, 224, 224)
    session.close()


@needs_torch
@pytest.mark.parametrize("batch", [1, 3])
def test_shape_arithmetic_is_folded_and_outputs_keep_onnx_order(tmp_path: Path, batch: int) -> None:
    path = shape_chain_model(tmp_path / "chain.onnx")
    session = load(path, batch=batch, channels_last=True)
    assert session.output_names() == ["logits", "boxes"]
    feed = {"input": np.random.default_rng(4).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    got = session.to_host(session.run(0, session.stage(feed)))
    want = ort_outputs(path, feed)
    assert [g.shape for g in got] == [w.shape for w in want] == [(batch, 1001), (batch, 28 * 28, 6)]
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-5
    info = session.info
    assert info["shape_nodes_folded"] >= 3  # Shape, Gather, Concat
    assert info["static_reshapes"] == 1 and info["host_shape_operands"] >= 1 and info["channels_last"] is True


@needs_torch
def test_host_shape_operands_stay_on_the_host(tmp_path: Path) -> None:
    from targets.pytorch.convert import convert_onnx, move

    converted = convert_onnx(shape_chain_model(tmp_path / "chain.onnx"), {"input": [2, 3, 224, 224]})
    module, _ = move(converted, torch.device("cpu"), torch.float16, channels_last=False)
    names = dict(module.named_buffers())
    assert converted.host_buffers and all(names[b].dtype == torch.int64 for b in converted.host_buffers)
    assert converted.info["onnx_ops"]["Reshape"] == 1 and "Shape" not in converted.info["onnx_ops"]


@needs_torch
def test_biased_convolutions_are_sized_and_left_alone_off_cuda(tmp_path: Path) -> None:
    from targets.pytorch.convert import BIAS_KERNEL_MIN_ELEMENTS, convert_onnx, move

    path = biased_conv_model(tmp_path / "biased.onnx")
    converted = convert_onnx(path, {"input": [8, 3, 224, 224]})
    # The padded conv is the Conv2d inside onnx2torch's Sequential(pad, conv); the unbiased one is not listed.
    assert converted.conv_outputs == {"a.1": 8 * 16 * 112 * 112, "b": 8 * 32 * 112 * 112}
    assert min(converted.conv_outputs.values()) >= BIAS_KERNEL_MIN_ELEMENTS  # both would move to the kernel on CUDA
    module, _ = move(converted, torch.device("cpu"), torch.float32, channels_last=True, bias_kernel=True)
    # Both convolutions keep conv2d's own bias (inlined as torch.conv2d calls): no channels-last bias kernel.
    calls = [n for n in module.graph.nodes if n.op == "call_function"]
    assert sum(1 for n in calls if n.target is torch.conv2d and n.args[2] is not None) == 2
    assert not any(n.target is torch.batch_norm_elemt for n in calls)
    assert "conv_bias_kernel" not in converted.info  # the kernel is CUDA's: nothing changes on the CPU
    feed = {"input": np.random.default_rng(8).standard_normal((8, 3, 224, 224)).astype(np.float32)}
    with torch.inference_mode():
        got = [t.numpy() for t in module(torch.from_numpy(feed["input"]).contiguous(memory_format=torch.channels_last))]
    for g, w in zip(got, ort_outputs(path, feed)):
        assert rel_err(g, w) < 1e-5
    small = convert_onnx(path, {"input": [1, 3, 224, 224]})
    assert all(n < BIAS_KERNEL_MIN_ELEMENTS for n in small.conv_outputs.values())  # batch 1 keeps conv2d's bias


@needs_torch
def test_unsupported_op_is_named(tmp_path: Path) -> None:
    from targets.pytorch.convert import ConversionError

    bad = write_tiny_classifier(tmp_path / "bad.onnx", bad_op=True)
    with pytest.raises(ConversionError) as exc:
        load(bad)
    msg = str(exc.value)
    assert "ONNX op NoSuchOp (domain no.such.domain, opset 1) is not supported by onnx2torch" in msg
    assert "run this model with another target" in msg and "\n" not in msg


@needs_torch
def test_unsupported_op_through_the_cli_is_one_line(tmp_path: Path) -> None:
    bad = write_tiny_classifier(tmp_path / "bad.onnx", bad_op=True)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "pytorch", "workload": "mobilenet",
                                "params": {"mode": "throughput", "hardware": "cpu", "precision": "fp32",
                                           "iterations": 5, "model": str(bad)}}]))
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"), "-q")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "c.json: task 1: target pytorch failed while loading the model:" in line and "NoSuchOp" in line


@needs_torch
def test_gpu_and_precision_refusals_are_one_line(tmp_path: Path) -> None:
    from harness.runner import prepare

    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    caps = get_target("pytorch").capabilities()
    asks = []
    if "gpu" not in caps.precisions:
        asks.append(("gpu", "fp32", "hardware 'gpu' is not supported"))
    if "bf16" not in caps.precisions["cpu"]:
        asks.append(("cpu", "bf16", "precision 'bf16' is not supported on cpu (fp16 and bf16 on the CPU need "
                                    "native support"))
    asks.append(("cpu", "int8", "precision 'int8' is not supported on cpu"))
    for hardware, precision, expected in asks:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps([{"target": "pytorch", "workload": "mobilenet",
                                    "params": {"mode": "throughput", "hardware": hardware, "precision": precision,
                                               "model": str(tiny)}}]))
        with pytest.raises(UnsupportedTask) as exc:
            prepare(load_configs([cfg]))
        msg = str(exc.value)
        assert expected in msg and "\n" not in msg and "it supports cpu: fp32" in msg
        if hardware == "gpu":
            assert "CPU-only build" in msg or "sees no GPU" in msg


@needs_torch
def test_gpu_modes_on_cpu_are_refused(tmp_path: Path) -> None:
    from targets.pytorch.target import SetupError

    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    with pytest.raises(SetupError, match="exec_mode cuda-graph needs hardware gpu"):
        load(tiny, exec_mode="cuda-graph")
    with pytest.raises(SetupError, match="params.transfers applies to hardware gpu only"):
        load(tiny, transfers="included")


@needs_torch
def test_compile_failure_falls_back_only_when_allowed(tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    from targets.pytorch.target import SetupError

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("backend exploded\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    with pytest.raises(SetupError) as exc:
        load(tiny, exec_mode="compile")
    assert str(exc.value) == ("torch.compile failed: backend exploded; set params.allow_fallback to true to run "
                              "eager instead")
    caplog.set_level("WARNING")
    session = load(tiny, exec_mode="compile", allow_fallback=True)
    assert session.info["exec_mode"] == "eager" and session.info["exec_mode_requested"] == "compile"
    assert session.info["fallback"] == "compile -> eager: torch.compile failed: backend exploded"
    assert "running eager instead, because params.allow_fallback is true" in caplog.text
    feed = {"input": np.ones((1, 3, 224, 224), np.float32) * 0.5}
    assert session.to_host(session.run(0, session.stage(feed)))[0].shape == (1, 1001)


@needs_torch
@pytest.mark.slow
def test_compile_on_cpu(tmp_path: Path) -> None:
    if not (shutil.which("g++") or shutil.which("c++") or os.environ.get("CXX")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler (g++), and there is none here")
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    session = load(tiny, batch=2, exec_mode="compile")
    feed = {"input": np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)}
    out = session.to_host(session.run(0, session.stage(feed)))[0]
    assert rel_err(out, ort_outputs(tiny, feed)[0]) < 1e-5 and session.info["exec_mode"] == "compile"


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("workload", ["mobilenet", "resnet50", "ssdmobilenet"])
def test_every_workload_at_batch_2(workload: str, models_dir: Path) -> None:
    path = workload_model(workload)
    session = load(path, batch=2, workload=workload)
    from workloads import get_workload

    feed = get_workload(workload).make_inputs(session.input_specs(), 2)
    got = session.to_host(session.run(0, session.stage(feed)))
    want = ort_outputs(path, feed)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-4


@needs_torch
def test_cli_run_records_what_ran(tmp_path: Path) -> None:
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    params = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "iterations": 8, "warmup": 0.0,
              "model": str(tiny)}
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "onnxruntime", "workload": "mobilenet", "params": params},
                               {"target": "pytorch", "workload": "mobilenet", "params": dict(params, batch=3)}]))
    out = tmp_path / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out), "--compare")
    assert proc.returncode == 0, proc.stderr
    from harness import results as res

    (path,) = out.glob("*.json")
    rec = res.load(path)
    pt = rec.tasks[1]
    assert pt.target == "pytorch" and pt.params["batch"] == 3 and pt.target_info["exec_mode"] == "eager"
    assert pt.versions["torch"] and pt.versions["onnx2torch"]
    assert "pytorch" in proc.stdout and "Speed-up" in proc.stdout


# -- on an NVIDIA GPU (MLMARK_GPU_TESTS=1) ----------------------------------------------------------

def _gpu_feed(batch: int) -> Dict[str, np.ndarray]:
    return {"input": np.random.default_rng(6).standard_normal((batch, 3, 224, 224)).astype(np.float32)}


@pytest.mark.gpu
@needs_torch
@pytest.mark.parametrize("mode, precision, channels_last, concurrency, transfers", [
    ("eager", "fp32", False, 1, "excluded"),
    ("eager", "fp16", True, 2, "excluded"),
    ("cuda-graph", "fp16", True, 1, "excluded"),
    ("cuda-graph", "fp16", False, 3, "excluded"),
    ("cuda-graph", "fp32", False, 2, "included"),
    ("eager", "fp16", False, 1, "included"),
    ("compile", "fp16", True, 1, "excluded"),
])
def test_gpu_modes_match_onnxruntime(tmp_path: Path, mode: str, precision: str, channels_last: bool,
                                     concurrency: int, transfers: str) -> None:
    path = shape_chain_model(tmp_path / "chain.onnx")
    session = load(path, hardware="gpu", precision=precision, batch=4, concurrency=concurrency, exec_mode=mode,
                   channels_last=channels_last, transfers=transfers)
    feed = _gpu_feed(4)
    want = ort_outputs(path, feed)
    staged = session.stage(feed)
    tol = 1e-2 if precision == "fp16" else 5e-3  # fp32 convolutions run TF32 by torch's default
    for slot in range(concurrency):
        outputs = session.run(slot, staged)
        # run() returns only when the work is done: nothing is left on the slot's stream.
        assert session._streams[slot].query()
        for g, w in zip(session.to_host(outputs), want):
            assert g.shape == w.shape and rel_err(g, w) < tol
    info = session.info
    assert info["exec_mode"] == mode and info["device"].startswith("cuda") and info["device_name"]
    assert info["cuda_graphs"] == (concurrency if mode == "cuda-graph" else 0)
    assert info["transfers"].startswith(transfers)
    assert ("one per slot" in info["streams"]) == (concurrency > 1)


@pytest.mark.gpu
@needs_torch
@pytest.mark.parametrize("precision", ["fp16", "fp32", "bf16"])
def test_gpu_bias_kernel_is_bit_identical(tmp_path: Path, monkeypatch: Any, precision: str) -> None:
    from targets.pytorch.convert import convert_onnx, move

    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("this GPU has no bf16")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # one convolution algorithm for both runs
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    path = biased_conv_model(tmp_path / "biased.onnx")
    x = torch.randn(8, 3, 224, 224).to("cuda", dtype).contiguous(memory_format=torch.channels_last)
    outs = []
    for kernel in (False, True):
        converted = convert_onnx(path, {"input": [8, 3, 224, 224]})
        module, _ = move(converted, torch.device("cuda"), dtype, channels_last=True, bias_kernel=kernel)
        assert converted.info.get("conv_bias_kernel") == ("2 of 2 biased convolutions" if kernel else None)
        with torch.inference_mode():
            outs.append(module(x))
    for plain, swapped in zip(*outs):
        assert swapped.is_contiguous(memory_format=torch.channels_last) or swapped.dim() != 4
        assert torch.equal(plain, swapped)  # the same sum, rounded once, in the same order
    want = ort_outputs(path, {"input": x.float().cpu().numpy()})
    for g, w in zip(outs[1], want):
        assert rel_err(g.float().cpu().numpy(), w) < (5e-3 if precision == "fp32" else 3e-2)


@pytest.mark.gpu
@needs_torch
def test_gpu_bf16_where_supported(tmp_path: Path) -> None:
    caps = get_target("pytorch").capabilities()
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    if "bf16" not in caps.precisions["gpu"]:
        pytest.skip("this GPU has no bf16")
    session = load(tiny, hardware="gpu", precision="bf16", batch=2, exec_mode="cuda-graph")
    feed = _gpu_feed(2)
    assert rel_err(session.to_host(session.run(0, session.stage(feed)))[0], ort_outputs(tiny, feed)[0]) < 3e-2


@pytest.mark.gpu
@needs_torch
@pytest.mark.parametrize("workload", ["mobilenet", "resnet50", "ssdmobilenet"])
def test_gpu_workloads_batch_8_cuda_graph(workload: str, models_dir: Path) -> None:
    path = workload_model(workload)
    from workloads import get_workload

    session = load(path, hardware="gpu", precision="fp16", batch=8, workload=workload, exec_mode="cuda-graph",
                   channels_last=True)
    feed = get_workload(workload).make_inputs(session.input_specs(), 8)
    got = session.to_host(session.run(0, session.stage(feed)))
    want = ort_outputs(path, feed)
    for g, w in zip(got, want):
        assert g.shape == w.shape and rel_err(g, w) < 2e-2
    assert session.info["cuda_graphs"] == 1
    # at batch 8 the first convolutions' outputs are large enough for the channels-last bias kernel
    assert not session.info["conv_bias_kernel"].startswith("0 of")


@pytest.mark.gpu
@needs_torch
def test_gpu_cli_streams_graphs_and_transfers(tmp_path: Path) -> None:
    path = shape_chain_model(tmp_path / "chain.onnx")
    base = {"mode": "throughput", "hardware": "gpu", "precision": "fp16", "batch": 8, "iterations": 64,
            "warmup": 0.2, "model": str(path)}
    variants = [{"exec_mode": "cuda-graph", "concurrency": 2}, {"exec_mode": "eager", "concurrency": 3},
                {"exec_mode": "cuda-graph", "transfers": "included"}, {"exec_mode": "eager", "concurrency": 2,
                                                                      "transfers": "included"},
                {"exec_mode": "cuda-graph", "mode": "latency"}]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "pytorch", "workload": "mobilenet", "params": dict(base, **v)}
                               for v in variants]))
    out = tmp_path / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out), "--compare")
    assert proc.returncode == 0, proc.stderr
    from harness import results as res

    (result_file,) = out.glob("*.json")
    tasks = res.load(result_file).tasks
    assert [t.target_info["exec_mode"] for t in tasks] == ["cuda-graph", "eager", "cuda-graph", "eager", "cuda-graph"]
    assert tasks[0].target_info["cuda_graphs"] == 2 and tasks[1].target_info["streams"].startswith("3 CUDA streams")
    assert tasks[2].target_info["transfers"].startswith("included")
    assert all(t.throughput_fps and t.throughput_fps > 0 for t in tasks) and "Speed-up" in proc.stdout


@needs_torch
@pytest.mark.slow
def test_inlined_modules_compute_exactly_what_the_modules_do(models_dir: Path) -> None:
    """Convolutions, ReLU6 and TF-SAME pads as function calls (eager mode's Python cost), outputs bit for bit the same."""
    import copy

    import torch

    from targets.pytorch import convert as cv

    path = workload_model("mobilenet")
    converted = cv.convert_onnx(path, {"input": [2, 3, 224, 224]})
    modules = copy.deepcopy(converted.module).eval()
    gm, _ = cv.move(converted, torch.device("cpu"), torch.float32, False)
    assert converted.info["inlined_modules"] == 55  # 28 convolutions (5 behind a pad), 27 ReLU6
    assert [n.op for n in gm.graph.nodes].count("call_module") == 2  # the average pool and the flatten stay
    in_place = [n for n in gm.graph.nodes if n.target is torch.nn.functional.hardtanh and n.args[3]]
    assert len(in_place) == 27  # each ReLU6 overwrites its convolution's fresh output, as ReLU6(inplace=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(gm(x)[0], modules(x)[0])
