"""The trtexec target with a real trtexec, where there is one (a Jetson, or a GPU machine with TensorRT).

Marked gpu (skipped unless MLMARK_GPU_TESTS=1) and skipped where no trtexec is found (params.trtexec's
places: $MLMARK_TRTEXEC, PATH, /usr/src/tensorrt/bin/trtexec). They check that a real log is read in
full, and print the crosscheck's ratios; they do not assert the 2 % claim.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from core.errors import TargetUnavailable
from targets.base import LoadRequest
from targets.trtexec import tool
from targets.trtexec.target import TrtexecTarget
from tests.conftest import run_cli, write_tiny_classifier

pytestmark = pytest.mark.gpu


def _real_trtexec() -> Path:
    try:
        return tool.locate(os.environ.get("MLMARK_TRTEXEC"))
    except TargetUnavailable as exc:
        pytest.skip("no trtexec here: {}".format(exc))
        raise


def test_a_real_trtexec_builds_runs_and_its_log_is_read(tmp_path: Path, monkeypatch: Any) -> None:
    binary = _real_trtexec()
    monkeypatch.setenv("MLMARK_ENGINES", str(tmp_path / "engines"))
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    target = TrtexecTarget()
    opts = {"trtexec": str(binary), "profile": True}
    target.validate_options(opts, "gpu test")
    session = target.load(LoadRequest(model_path=model, workload="mobilenet", hardware="gpu", precision="fp32",
                                      batch=2, concurrency=1, options=opts))
    summary = session.summary_run(1024, 1, 0.5)
    print(json.dumps({"engine": session.info["engine"], "summary": summary.info["trtexec_summary"],
                      "scores_from": summary.info["scores_from"]}, indent=1))
    assert summary.iterations >= 1024 and summary.throughput_fps > 0 and summary.latency_ms["p95_ms"] > 0
    assert session.info["engine"]["layer_count"] and Path(summary.info["trtexec_profile"]["path"]).is_file()

def test_crosscheck_prints_both_timings(tmp_path: Path) -> None:
    binary = _real_trtexec()
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    config = tmp_path / "c.json"
    config.write_text(json.dumps([{"target": "tensorrt", "workload": "mobilenet", "params": {
        "mode": "throughput", "hardware": "gpu", "precision": "fp32", "batch": 2, "iterations": 2048,
        "model": str(model)}}]))
    proc = run_cli("crosscheck", "-c", str(config), "--trtexec", str(binary), "-o", str(tmp_path / "x.json"),
                   env={"MLMARK_ENGINES": str(tmp_path / "engines")})
    if proc.returncode == 2 and "target tensorrt" in proc.stderr:
        pytest.skip("the native library has no TensorRT here: " + proc.stderr.strip())
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "UNVERIFIED" in proc.stdout and json.loads((tmp_path / "x.json").read_text())["tasks"]
