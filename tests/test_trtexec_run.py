"""The trtexec target through the command line, with the stand-in trtexec: scores, results and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List

from harness import results as res
from tests.conftest import run_cli


def config(path: Path, binary: Path, model: Path, tasks: List[Dict[str, Any]]) -> Path:
    raw = [{"target": "trtexec", "workload": "mobilenet",
            "params": dict({"hardware": "gpu", "trtexec": str(binary), "model": str(model), "warmup": 0.5}, **t)}
           for t in tasks]
    path.write_text(json.dumps(raw))
    return path


def cli_env(trtexec_env: Path, **extra: str) -> Dict[str, str]:
    env = {"MLMARK_ENGINES": str(trtexec_env / "engines"), "TRTEXEC_STANDIN_CALLS": str(trtexec_env / "calls.jsonl")}
    env.update(extra)
    return env


def test_throughput_and_latency_scores_are_trtexecs_figures(trtexec_env: Path, standin_trtexec: Callable[..., Path],
                                                            tiny_model: Path) -> None:
    cfg = config(trtexec_env / "c.json", standin_trtexec("8.6.1"), tiny_model, [
        {"mode": "throughput", "precision": "fp16", "batch": 8, "concurrency": 2},
        {"mode": "latency", "precision": "fp32"}])
    out = trtexec_env / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out), env=cli_env(trtexec_env))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next(out.glob("*.json")).read_text())
    throughput, latency = result["tasks"]
    log = Path(throughput["target_info"]["trtexec_log"]).read_text()
    qps = float(re.search(r"\] Throughput: (\S+) qps", log).group(1))  # type: ignore[union-attr]
    assert throughput["metric"] == "throughput" and throughput["score"] == qps * 8
    assert throughput["iterations"] == 1024 and throughput["valid"] is True
    assert throughput["target_info"]["timed_loop"].startswith("trtexec's own warm-up")
    assert throughput["target_info"]["scores_from"]["throughput_fps"].startswith("trtexec 'Throughput: ")
    assert throughput["target_info"]["trtexec_summary"]["tensorrt"] == "8.6.1"
    assert throughput["target_info"]["engine"]["layer_count"] == 6 and throughput["versions"]["tensorrt"] == "8.6.1"
    log = Path(latency["target_info"]["trtexec_log"]).read_text()
    p95 = float(re.search(r"\] Latency: .*percentile\(95%\) = (\S+) ms", log).group(1))  # type: ignore[union-attr]
    assert latency["metric"] == "latency" and latency["score"] == p95 and latency["latency_ms"]["p95_ms"] == p95
    assert latency["params"]["batch"] == 1 and latency["latency_ms"]["std_ms"] is None
    assert "trtexec" in proc.stdout and "throughput" in proc.stdout and "latency" in proc.stdout


def test_a_failed_build_is_one_line_and_exit_2(trtexec_env: Path, standin_trtexec: Callable[..., Path],
                                               tiny_model: Path) -> None:
    cfg = config(trtexec_env / "c.json", standin_trtexec("10.3.0"), tiny_model,
                 [{"mode": "throughput", "precision": "fp16", "batch": 8}])
    proc = run_cli("-c", str(cfg), "-r", str(trtexec_env / "R"),
                   env=cli_env(trtexec_env, TRTEXEC_STANDIN_FAIL="build"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlmark: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "failed (trtexec exit status 1" in errors[0] and "Engine set up failed; log: " in errors[0]
    assert Path(errors[0].rsplit("; log: ", 1)[1]).is_file()


def test_missing_binary_is_refused_before_anything_runs(trtexec_env: Path, tiny_model: Path) -> None:
    cfg = config(trtexec_env / "c.json", trtexec_env / "no" / "trtexec", tiny_model,
                 [{"mode": "throughput", "precision": "fp32"}])
    proc = run_cli("-c", str(cfg), "-r", str(trtexec_env / "R"), env=cli_env(trtexec_env))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "params.trtexec {} does not exist".format(trtexec_env / "no" / "trtexec") in lines[0]
    assert "give its path as the task's params.trtexec, or put its folder on PATH" in lines[0]
    assert not (trtexec_env / "R").exists()


def test_an_unreadable_log_is_one_line_and_never_a_score(trtexec_env: Path, standin_trtexec: Callable[..., Path],
                                                         tiny_model: Path) -> None:
    binary = standin_trtexec("11.0.0")
    cfg = config(trtexec_env / "c.json", binary, tiny_model, [{"mode": "throughput", "precision": "fp32"}])
    first = run_cli("-c", str(cfg), "-r", str(trtexec_env / "R1"), env=cli_env(trtexec_env))
    assert first.returncode == 0, first.stderr
    proc = run_cli("-c", str(cfg), "-r", str(trtexec_env / "R2"),
                   env=cli_env(trtexec_env, TRTEXEC_STANDIN_FAIL="garble"))
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("mlmark: error:")]
    assert len(error) == 1 and "(TensorRT 11.0.0, summary format 11): line " in error[0]
    assert "not understood" in error[0] and "average = " in error[0]
    (path,) = (trtexec_env / "R2").glob("*.json")  # no score, not even 0: the task is recorded as failed
    record = res.load(path)
    assert record.tasks == [] and len(record.failed) == 1 and "not understood" in record.failed[0]["error"]
