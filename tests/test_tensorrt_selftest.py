"""`mlmark selftest --tensorrt` without TensorRT or a GPU: its refusal, its judgements (which must be able to fail),
trtexec's output as it is read, and the small model with its Q/DQ version. Running it on engines is
tests/test_tensorrt_double_gpu.py's part (with the TensorRT test double) and a board's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

from harness import trt_selftest as st
from tests.conftest import run_cli


def test_trtexec_is_the_trtexec_targets_and_its_gpu_median_is_read(trtexec_env: Path, standin_trtexec: Any,
                                                                   tiny_model: Path) -> None:
    from targets.base import LoadRequest
    from targets.trtexec.target import TrtexecTarget

    binary = standin_trtexec("10.3.0")
    target = TrtexecTarget()
    target.validate_options({"trtexec": str(binary)}, "t")
    session = target.load(LoadRequest(model_path=tiny_model, workload="mobilenet", hardware="gpu", precision="fp32",
                                      batch=1, concurrency=1, options={"trtexec": str(binary)}))
    engine = Path(session.info["engine"]["path"])
    probe = st.trtexec_probe(str(binary))
    assert probe is not None and probe.path == binary
    median = st.trtexec_gpu_median_ms(probe, engine, 10, "t")
    logs = sorted((engine.parent / "logs").glob("*.selftest-*.log"))
    printed = re.search(r"\] GPU Compute Time: .* median = (\S+) ms", logs[-1].read_text())
    assert printed is not None and median == pytest.approx(float(printed.group(1)))
    with pytest.raises(st.MLMarkError, match="--trtexec"):
        st.trtexec_probe(str(trtexec_env / "absent"))
    with pytest.raises(st.MLMarkError):  # an engine trtexec cannot load: one line, never a time
        st.trtexec_gpu_median_ms(probe, trtexec_env / "no.engine", 10, "t")


def _images(n: int, seed: int = 0) -> List[List[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((1, 10)).astype(np.float32)] for _ in range(n)]


def test_output_judgement_passes_close_outputs_and_fails_others() -> None:
    ort = _images(8)
    close = [[o[0] + 1e-3 * np.float32(np.abs(o[0]).max())] for o in ort]
    assert st.judge_outputs("fp32", "classification", close, ort).verdict == st.PASS
    noisy = [[o[0] + 0.2 * np.random.default_rng(3).standard_normal(o[0].shape).astype(np.float32)] for o in ort]
    fp16 = st.judge_outputs("fp16", "classification", noisy, ort)
    assert fp16.verdict == st.FAIL and fp16.limit == ">= 0.99"
    assert st.judge_outputs("fp32", "classification", _images(8, seed=5), ort).verdict == st.FAIL
    # int8 classification: top-1 agreement, not cosine.
    int8 = st.judge_outputs("int8", "classification", noisy, ort)
    assert int8.check.startswith("top-1") and int8.value.endswith("%")
    swapped = [[-o[0]] for o in ort]
    assert st.judge_outputs("int8", "classification", swapped, ort).verdict == st.FAIL
    assert st.judge_outputs("int8", "detection", close, ort).verdict == st.PASS


def test_small_model_and_its_qdq_version_agree_in_top1_on_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    from precision.qdq import is_qdq_model

    model = st.small_model(tmp_path)
    assert st.small_model(tmp_path).stat().st_mtime_ns == model.stat().st_mtime_ns  # written once
    rng = np.random.default_rng(11)
    images = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(st.IMAGES)]
    qdq = st.small_qdq_model(model, images)
    import onnx

    assert is_qdq_model(onnx.load(str(qdq)))
    fp32 = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
    a = [[fp32.run(None, {"input": x})[0]] for x in images]
    b = [[int8.run(None, {"input": x})[0]] for x in images]
    # The self-test's int8 threshold is one the quantized small model meets on the CPU.
    assert st.judge_outputs("int8", "classification", b, a).verdict == st.PASS


def test_report_table_and_json() -> None:
    report = st.Report()
    report.environment = {"device": "GPU", "tensorrt": "10.3.0", "tensorrt_headers": "10.3.0", "trtexec": None}
    report.add(st.Line("small", "fp16", "outputs vs onnxruntime (cosine)", st.PASS, "0.99990", ">= 0.99"))
    report.add(st.Line("small", "fp16", "GPU time vs trtexec", st.SKIP, detail="trtexec not found"))
    report.add(st.Line("small", "fp16", "second load hits the cache", st.FAIL, "1.50 s", "cached, < 1 s"))
    text = st.format_report(report)
    assert "trtexec   not found" in text and "Result: 1 passed, 1 failed, 1 skipped" in text
    row = next(l for l in text.splitlines() if "second load" in l)
    assert "FAIL" in row and "1.50 s" in row and "cached, < 1 s" in row
    data = report.to_dict()
    assert data["passed"] is False and data["counts"] == {"PASS": 1, "FAIL": 1, "SKIP": 1}
    json.dumps(data)


@pytest.mark.slow
def test_cli_refuses_in_one_line_without_tensorrt(tmp_path: Path, library_without_tensorrt: Any) -> None:
    proc = run_cli("selftest", "--tensorrt", "--json", str(tmp_path / "r.json"),
                   env={"MLMARK_NATIVE_LIB": str(library_without_tensorrt), "MLMARK_ENGINES": str(tmp_path / "E")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlmark: error: target tensorrt: ")
    assert "TensorRT was not found" in lines[0] and "TensorRT_ROOT" in lines[0]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "E").exists()


def test_unknown_model_or_precision_is_refused() -> None:
    with pytest.raises(st.MLMarkError, match="unknown model nosuch"):
        st._list("small,nosuch", [], ["small", "mobilenet"], "model")
    assert st._list(None, ["fp32"], ["fp32"], "precision") == ["fp32"]


class _OrtSession:
    """Stands in for a TensorRT session: runs the model with ONNX Runtime, as a correct engine would compute it."""

    def __init__(self, model: Path, engine: Path, status: str, gpu_ms: float) -> None:
        import onnxruntime as ort

        from core.specs import TensorSpec

        self.ort = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        inp = self.ort.get_inputs()[0]
        self.specs = [TensorSpec(inp.name, (1,) + tuple(inp.shape[1:]), "float32")]
        self.gpu_ms = gpu_ms
        self.staged: Any = None
        self.closed = False
        self.info = {"engine": {"path": str(engine), "status": status,
                                "precision_check": {"passed": True, "method": "layers", "detail": "fp16 in 2 of 2"}}}

    def input_specs(self) -> Any:
        return self.specs

    def output_names(self) -> List[str]:
        return [o.name for o in self.ort.get_outputs()]

    def stage(self, inputs: Any) -> Any:
        self.staged = inputs
        return inputs

    def run(self, slot: int, inputs: Any) -> Any:
        return self.ort.run(None, inputs)

    def timed_run(self, iterations: int, warmup: int = 0) -> Any:
        from targets.base import NativeTiming

        assert self.staged is not None
        return NativeTiming(latencies_s=[0.001] * iterations, gpu_s=[self.gpu_ms / 1e3] * iterations, wall_s=0.1)

    def close(self) -> None:
        self.closed = True


class _FakeTarget:
    def __init__(self, engine: Path, gpu_ms: float) -> None:
        self.engine, self.gpu_ms, self.requests = engine, gpu_ms, []

    def load(self, request: Any) -> _OrtSession:
        self.requests.append(request)
        status = "built: it is not built yet" if len(self.requests) == 1 else "cached"
        return _OrtSession(Path(request.model_path), self.engine, status, self.gpu_ms)


def test_check_engine_passes_a_correct_engine_and_fails_a_slow_one(tmp_path: Path, monkeypatch: Any) -> None:
    model = st.small_model(tmp_path)
    engine = tmp_path / "small.engine"
    engine.write_bytes(b"engine")
    fake = object()  # a probed trtexec, whose GPU compute median on this engine is 0.6396 ms
    timed: List[Any] = []
    monkeypatch.setattr(st, "trtexec_gpu_median_ms", lambda probe, path, n, label: timed.append((probe, path)) or 0.6396)
    rng = np.random.default_rng(0)
    subject = st.Subject("small", model, "mobilenet", "classification",
                         lambda specs: {"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)})
    report = st.Report()
    target = _FakeTarget(engine, gpu_ms=0.64)
    st.check_engine(target, subject, "fp32", report, fake, {"workspace_mb": 64}, 20)
    verdicts = {l.check: l.verdict for l in report.lines}
    assert verdicts == {"engine": "PASS", "outputs vs onnxruntime (cosine)": "PASS", "layer precisions as asked": "PASS",
                        "GPU time vs trtexec": "PASS", "second load hits the cache": "PASS"}, report.lines
    assert [r.batch for r in target.requests] == [1, 1] and target.requests[0].options == {"workspace_mb": 64}
    assert timed[0] == (fake, engine)
    slow = st.Report()
    st.check_engine(_FakeTarget(engine, gpu_ms=0.70), subject, "fp32", slow, fake, {}, 20)
    line = next(l for l in slow.lines if l.check == "GPU time vs trtexec")
    assert line.verdict == "FAIL" and line.value == "+9.44 %"
    no_trtexec = st.Report()
    st.check_engine(_FakeTarget(engine, gpu_ms=0.64), subject, "fp32", no_trtexec, None, {}, 20)
    assert next(l for l in no_trtexec.lines if l.check == "GPU time vs trtexec").verdict == "SKIP"


def test_check_engine_reports_a_failed_load_and_skips_int8_without_calibration_data(tmp_path: Path) -> None:
    from core.errors import ModelError, RunError

    class Failing:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def load(self, request: Any) -> Any:
            raise self.exc

    subject = st.Subject("mobilenet", tmp_path / "m.onnx", "mobilenet", "classification", lambda specs: {})
    report = st.Report()
    st.check_engine(Failing(ModelError("no Q/DQ model: make it with python utility/calibrate.py")), subject, "int8",
                    report, None, {}, 10)
    st.check_engine(Failing(RunError("the engine build was killed")), subject, "fp16", report, None, {}, 10)
    assert [(l.precision, l.check, l.verdict) for l in report.lines] == [("int8", "engine", "SKIP"),
                                                                        ("fp16", "engine", "FAIL")]
