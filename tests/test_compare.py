"""`mlmark compare`: rows across files and devices, speed-ups against the baseline, text, CSV and PNG."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from core.errors import ConfigError
from harness import results as res
from harness.cli import main
from harness.compare import compare, comparison_csv, format_comparison, run_compare
from tests.conftest import run_cli, write_tiny_classifier

H100 = {"host": "gpu-box", "cpu": "Some Xeon", "gpus": [{"name": "NVIDIA H100 80GB HBM3", "driver": "580",
                                                          "memory": "81559 MiB"}], "jetson": None}
XAVIER = {"host": "xavier", "cpu": "ARMv8 Processor rev 0 (v8l)", "gpus": [],
          "jetson": {"model": "NVIDIA Jetson AGX Xavier", "l4t": "R35"}}


def result(target: str, precision: str, fps: float, workload: str = "resnet50", metric: str = "throughput",
           exec_mode: Optional[str] = None, hardware: str = "gpu", batch: int = 1, device: Optional[str] = None,
           iterations: int = 1024) -> res.TaskResult:
    info: Dict[str, Any] = {}
    if exec_mode:
        info["exec_mode"] = exec_mode
    if device:
        info["device_name"] = device
    score = fps if metric == "throughput" else 1000.0 / fps
    return res.TaskResult(
        source="c.json: task 1", target=target, workload=workload,
        params={"mode": "latency" if metric == "latency" else "throughput", "hardware": hardware,
                "precision": precision, "batch": batch, "concurrency": 1, "iterations": iterations},
        metric=metric, score=score if metric != "top1" else 0.5, units="fps", valid=iterations >= 1024,
        model={"weights": "synthetic"}, target_info=info,
        throughput_fps=fps if metric != "top1" else None,
        latency_ms={"median_ms": 1000.0 / fps * 0.95, "p95_ms": 1000.0 / fps * 1.05} if metric != "top1" else None,
        iterations=iterations)


def save(tmp_path: Path, name: str, system: Dict[str, Any], tasks: List[res.TaskResult]) -> Path:
    record = res.RunRecord(started=res.now(), config_files=["c.json"], system=system, tasks=tasks)
    path = tmp_path / name
    res.save(record, path)
    return path


@pytest.fixture
def study(tmp_path: Path) -> List[Path]:
    """The Xavier study's four rows on one device, plus an H100 file and a mobilenet row."""
    xavier = save(tmp_path, "xavier.json", XAVIER, [
        result("pytorch", "fp32", 38, exec_mode="eager"), result("pytorch", "fp16", 69, exec_mode="eager"),
        result("tensorrt", "fp32", 117), result("tensorrt", "fp16", 342)])
    h100 = save(tmp_path, "h100.json", H100, [
        result("pytorch", "fp16", 1090, exec_mode="cuda-graph"),
        result("pytorch", "fp32", 300, workload="mobilenet", exec_mode="eager"),
        result("pytorch", "fp16", 2400, workload="mobilenet", exec_mode="cuda-graph", iterations=100)])
    return [xavier, h100]


def test_default_baseline_is_slowest_fp32_of_each_workload(study: List[Path]) -> None:
    c = compare(study)
    by = {(r.device, r.target, r.precision, r.workload, r.exec_mode): r for r in c.rows}
    base = by[("NVIDIA Jetson AGX Xavier", "pytorch", "fp32", "resnet50", "eager")]
    assert base.is_baseline and base.speedup == pytest.approx(1.0)
    # The study's speed-ups against PyTorch FP32: 69/38, 117/38, 342/38.
    assert by[("NVIDIA Jetson AGX Xavier", "pytorch", "fp16", "resnet50", "eager")].speedup == pytest.approx(69 / 38)
    assert by[("NVIDIA Jetson AGX Xavier", "tensorrt", "fp32", "resnet50", "")].speedup == pytest.approx(117 / 38)
    assert by[("NVIDIA Jetson AGX Xavier", "tensorrt", "fp16", "resnet50", "")].speedup == pytest.approx(342 / 38)
    # Rows from another device compare against the same workload's baseline, labelled by device.
    h100 = by[("NVIDIA H100 80GB HBM3", "pytorch", "fp16", "resnet50", "cuda-graph")]
    assert h100.speedup == pytest.approx(1090 / 38)
    mob = [r for r in c.rows if r.workload == "mobilenet"]
    assert [r.is_baseline for r in mob] == [True, False] and mob[1].speedup == pytest.approx(8.0)
    assert [r.number for r in c.rows] == list(range(1, 8))
    assert [r.workload for r in c.rows] == ["resnet50"] * 5 + ["mobilenet"] * 2


def test_text_table(study: List[Path]) -> None:
    text = format_comparison(compare(study))
    lines = text.splitlines()
    assert lines[0].split() == ["#", "Device", "Target", "Exec", "Workload", "Prec", "Batch", "Conc.", "Mode", "fps",
                                "p95", "ms", "500", "img", "(s)", "Speed-up"]
    assert any("NVIDIA Jetson AGX Xavier" in line and "1.00x (baseline)" in line for line in lines)
    assert any("tensorrt" in line and "342*" in line and "9.00x" in line for line in lines)
    # 500 images at 38 fps take 13.2 s.
    assert any(" 13.2 " in line for line in lines if "pytorch" in line and "38.0" in line)
    assert "time for 500 images at the measured throughput" in text
    assert "synthetic weights" in text and "not a valid MLMark score" in text  # the 100-iteration row


def test_baseline_choices(study: List[Path]) -> None:
    c = compare(study, baseline="target=tensorrt,precision=fp16")
    base = [r for r in c.rows if r.is_baseline]
    assert [(r.target, r.precision) for r in base] == [("tensorrt", "fp16"), ("pytorch", "fp32")]
    assert any("mobilenet: no row matches --baseline" in n for n in c.notes)
    c = compare(study, baseline="3")
    assert c.rows[2].is_baseline and c.rows[2].speedup == 1.0 and c.rows[0].speedup == pytest.approx(38 / 117)
    c = compare(study, baseline="device=h100")  # substring of the device name, any case
    assert [r.exec_mode for r in c.rows if r.is_baseline] == ["cuda-graph", "eager"]
    for bad, expected in (("99", "there are rows 1 to 7"), ("target=nosuch", "matches no row"),
                          ("colour=red", "give a row number or KEY=VALUE")):
        with pytest.raises(ConfigError, match=expected):
            compare(study, baseline=bad)


def test_no_fp32_row_and_accuracy_rows(tmp_path: Path) -> None:
    path = save(tmp_path, "r.json", H100, [result("pytorch", "fp16", 500), result("pytorch", "bf16", 400),
                                           result("pytorch", "fp32", 1, metric="top1")])
    c = compare([path])
    assert [r.precision for r in c.rows] == ["fp16", "bf16"] and c.rows[1].is_baseline
    assert any("no fp32 row" in n for n in c.notes) and any("accuracy" in n for n in c.notes)


def test_latency_rows_and_device_fallbacks(tmp_path: Path) -> None:
    path = save(tmp_path, "r.json", XAVIER, [result("onnxruntime", "fp32", 20, hardware="cpu"),
                                             result("tensorrt", "int8", 900, hardware="dla"),
                                             result("pytorch", "fp32", 30, metric="latency")])
    c = compare([path])
    assert [r.device for r in c.rows] == ["ARMv8 Processor rev 0 (v8l)", "NVIDIA Jetson AGX Xavier DLA",
                                          "NVIDIA Jetson AGX Xavier"]
    assert c.rows[2].mode == "latency" and c.rows[0].is_baseline


def test_csv(study: List[Path]) -> None:
    c = compare(study)
    rows = list(csv.DictReader(io.StringIO(comparison_csv(c))))
    assert len(rows) == 7
    first = rows[0]
    assert first["device"] == "NVIDIA Jetson AGX Xavier" and first["baseline"] == "True"
    assert float(first["time_for_images_s"]) == pytest.approx(500 / 38) and first["images"] == "500"
    assert float(rows[3]["speedup"]) == pytest.approx(9.0)


def test_cli_writes_csv_and_png(study: List[Path], tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("matplotlib")
    out_csv, out_png = tmp_path / "o.csv", tmp_path / "o.png"
    assert main(["compare"] + [str(p) for p in study] + ["--csv", str(out_csv), "--png", str(out_png),
                                                         "--images", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "1000 img (s)" in printed and "csv: {}".format(out_csv) in printed and "chart: {}".format(out_png) in printed
    assert out_csv.read_text().startswith("row,file,device")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000


def test_default_output_files_beside_results(study: List[Path], capsys: Any) -> None:
    assert run_compare([str(p) for p in study]) == 0
    folder = study[0].parent
    assert len(list(folder.glob("compare-*.csv"))) == 1
    printed = capsys.readouterr().out
    charts = list(folder.glob("compare-*.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "chart: not written: the bar chart needs matplotlib (pip install matplotlib)" in printed and not charts
    else:
        assert len(charts) == 1 and "chart: {}".format(charts[0]) in printed
        assert charts[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib(study: List[Path], tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert run_compare([str(p) for p in study] + ["--csv", str(tmp_path / "x.csv")]) == 0
    assert "chart: not written: the bar chart needs matplotlib (pip install matplotlib)" in capsys.readouterr().out
    assert main(["compare", str(study[0]), "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlmark: error: compare: the bar chart needs matplotlib (pip install matplotlib)"]


@pytest.mark.parametrize("content, expected", [
    (None, "result file not found"),
    ("{", "not a result file (malformed JSON"),
    (json.dumps({"tasks": [{"nope": 1}]}), "not an mlmark result file"),
    (json.dumps({"started": "x", "config_files": [], "system": {}, "tasks": []}), "no throughput or latency"),
])
def test_bad_files_one_line(tmp_path: Path, capsys: Any, content: Optional[str], expected: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert main(["compare", str(path), "--no-files"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "bad.json" in err[0]


def test_run_with_compare_flag(tmp_path: Path) -> None:
    tiny = write_tiny_classifier(tmp_path / "tiny.onnx")
    tasks = [{"target": "onnxruntime", "workload": "mobilenet",
              "params": {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "batch": b,
                         "iterations": 10, "warmup": 0.0, "model": str(tiny)}} for b in (1, 4)]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tasks))
    out = tmp_path / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out), "--compare")
    assert proc.returncode == 0, proc.stderr
    assert "Speed-up" in proc.stdout and "1.00x (baseline)" in proc.stdout
    (result_file,) = [p for p in out.glob("*.json")]
    assert result_file.with_name(result_file.stem + "-compare.csv").is_file()
