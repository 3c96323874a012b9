"""End to end through the CLI: scores, results files, bad input as one line, results kept on failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from harness import results as res
from harness.report import format_table, sig3
from tests.conftest import REPO, run_cli, write_tiny_classifier


def task(model: Path, **params: Any) -> dict:
    p = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "batch": 1, "concurrency": 1,
         "iterations": 20, "warmup": 0.05, "model": str(model)}
    p.update(params)
    return {"target": "onnxruntime", "workload": "mobilenet", "params": {k: v for k, v in p.items() if v is not None}}


def config(tmp_path: Path, tasks: List[dict], name: str = "c.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def only_result(results_dir: Path) -> res.RunRecord:
    files = sorted(results_dir.glob("*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".csv").is_file()
    return res.load(files[0])


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_classifier(tmp_path / "tiny.onnx")


def test_throughput_latency_batch_concurrency(tmp_path: Path, tiny: Path) -> None:
    cfg = config(tmp_path, [task(tiny), task(tiny, mode="latency", batch=4),
                            task(tiny, batch=4, concurrency=2, iterations=30, threads=2)])
    out = tmp_path / "Results"
    proc = run_cli("-c", str(cfg), "-r", str(out))
    assert proc.returncode == 0, proc.stderr
    rec = only_result(out)
    assert [t.metric for t in rec.tasks] == ["throughput", "latency", "throughput"]
    t1, t2, t3 = rec.tasks
    # The score is derived from the raw timings exactly as documented.
    assert t1.score == pytest.approx(t1.iterations * 1 / t1.wall_s)
    assert t2.score == pytest.approx(t2.latency_ms["p95_ms"]) and t2.units == "ms"
    assert t2.params["batch"] == 1 and t2.params["concurrency"] == 1  # latency forced
    assert "latency mode runs batch 1 and concurrency 1" in proc.stderr
    assert t3.latency_ms["samples"] == 30 and t3.score == pytest.approx(30 * 4 / t3.wall_s)
    assert t3.target_info["thread_split"].startswith("2 session(s) x 1 intra-op thread(s) of 2")
    for t in rec.tasks:
        assert not t.valid and "fewer than 1024 timed iterations" in t.notes
        assert t.model["sha256"] and t.model["weights"] == "unknown"
        lat = t.latency_ms
        assert lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert rec.system["cores"] and rec.system["packages"]["onnxruntime"]
    assert "Target" in proc.stdout and "fps" in proc.stdout and "not a valid MLMark score" in proc.stdout


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text('[{"target": "onnxruntime", "workload": "mobilenet", "params": {"mode": "fast", "hardware": "cpu", "precision": "fp32"}}]')
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.json: task 1" in lines[0] and "params.mode" in lines[0]
    assert "Traceback" not in proc.stderr
    verbose = run_cli("-v", "-c", str(cfg), "-r", str(tmp_path / "R"))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert not (tmp_path / "R").exists()  # nothing ran, nothing written


def test_unsupported_combination_lists_what_target_supports(tmp_path: Path, tiny: Path) -> None:
    cfg = config(tmp_path, [task(tiny), task(tiny, precision="fp16")])
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    assert "task 2: target onnxruntime cannot run this task: precision 'fp16' is not supported on cpu" in proc.stderr
    assert "it supports cpu: fp32" in proc.stderr
    assert not (tmp_path / "R").exists()  # refused before task 1 ran


def test_gpu_refused_without_onnxruntime_gpu(tmp_path: Path, tiny: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    proc = run_cli("-c", str(config(tmp_path, [task(tiny, hardware="gpu")])), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    assert "hardware 'gpu' is not supported (hardware gpu needs the onnxruntime-gpu package" in proc.stderr


def test_target_not_installed_names_the_package(tmp_path: Path, tiny: Path) -> None:
    # A package on PYTHONPATH that fails to import stands for a missing onnxruntime.
    fake = tmp_path / "fake"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = run_cli("-c", str(config(tmp_path, [task(tiny)])), "-r", str(tmp_path / "R"),
                   env={"PYTHONPATH": str(fake)})
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("(pip install onnxruntime; onnxruntime-gpu for hardware gpu)")


def test_skip_unavailable_leaves_out_what_this_machine_cannot_run(tmp_path: Path, tiny: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    cfg = config(tmp_path, [task(tiny, hardware="gpu"), task(tiny)])
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"), "--skip-unavailable")
    assert proc.returncode == 0, proc.stderr
    assert "c.json: task 1: skipped: target onnxruntime cannot run it here: hardware 'gpu' is not supported" in (
        proc.stderr)
    record = only_result(tmp_path / "R")
    assert [t.source for t in record.tasks] == ["{}: task 2".format(cfg)]
    # A target that is not installed: every task left out is an error, not an empty table.
    fake = tmp_path / "fake"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R2"), "--skip-unavailable", env={"PYTHONPATH": str(fake)})
    assert proc.returncode == 2
    assert "skipped: " in proc.stderr and "pip install onnxruntime" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mlmark: error: none of the 2 task(s) can run on this machine (see the warnings above)")
    assert not (tmp_path / "R2").exists() or not list((tmp_path / "R2").glob("*.json"))


def test_bad_target_option(tmp_path: Path, tiny: Path) -> None:
    proc = run_cli("-c", str(config(tmp_path, [task(tiny, threads=0)])), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2 and "params.threads must be an integer from 1 to 1024, got 0" in proc.stderr


def test_model_that_does_not_fit_the_workload(tmp_path: Path) -> None:
    wrong = write_tiny_classifier(tmp_path / "wrong.onnx", classes=10)
    proc = run_cli("-c", str(config(tmp_path, [task(wrong)])), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    assert "mobilenet expects output 0 of shape [batch, 1001 or 1000]" in proc.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    proc = run_cli("-c", str(config(tmp_path, [task(garbage)])), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2 and "garbage.onnx: not" in proc.stderr and "Traceback" not in proc.stderr


def test_failure_in_later_task_keeps_earlier_results(tmp_path: Path, tiny: Path) -> None:
    broken = write_tiny_classifier(tmp_path / "broken.onnx", bad_op=True)
    cfg = config(tmp_path, [task(tiny), task(tiny, mode="latency"), task(broken)])
    out = tmp_path / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("mlmark: error: ") and "task 3: target onnxruntime failed while loading the model" in err
    rec = only_result(out)
    assert [t.metric for t in rec.tasks] == ["throughput", "latency"]
    assert not list(out.glob(".*.tmp"))  # no half-written file


def test_ctrl_c_stops_cleanly_and_keeps_finished_tasks(tmp_path: Path, tiny: Path) -> None:
    cfg = config(tmp_path, [task(tiny), task(tiny, iterations=10_000_000)])
    out = tmp_path / "R"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, str(REPO / "harness" / "mlmark.py"), "-c", str(cfg), "-r", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(res.load(f).tasks for f in out.glob("*.json") if f.stat().st_size):
        time.sleep(0.1)  # the results file exists from the start; wait until task 1 is in it
    time.sleep(0.5)  # well inside task 2
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    rec = only_result(out)
    assert len(rec.tasks) == 1 and rec.interrupted


def test_sig3() -> None:
    assert [sig3(v) for v in (1234.5, 999.6, 12.345, 0.01234, 1.0, 0.9996)] == [
        "1230", "1000", "12.3", "0.0123", "1.00", "1.00"]


def test_table_marks_synthetic_and_invalid() -> None:
    t = res.TaskResult(source="c.json: task 1", target="onnxruntime", workload="mobilenet",
                       params={"hardware": "cpu", "precision": "fp32", "batch": 1, "concurrency": 1},
                       metric="throughput", score=1234.5, units="fps", valid=False,
                       notes=["fewer than 1024 timed iterations"], model={"weights": "synthetic"})
    table = format_table([t])
    assert "1230*!" in table and "synthetic weights" in table and "fewer than 1024" in table
