"""Power and machine state in a real run, on a recorded Jetson tree: warning, results, score table, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import results as res
from harness.compare import compare, format_comparison, write_png
from tests.conftest import run_cli, write_tiny_classifier

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sysfs"


def _config(tmp_path: Path) -> Path:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    params = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "batch": 2, "concurrency": 1,
              "iterations": 200, "warmup": 0.5, "model": str(model)}
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([{"target": "onnxruntime", "workload": "mobilenet", "params": params}]))
    return cfg


def _only(results: Path) -> res.RunRecord:
    files = sorted(results.glob("*.json"))
    assert len(files) == 1, files
    return res.load(files[0])


def test_run_on_a_jetson_that_is_not_set_up(tmp_path: Path) -> None:
    out = tmp_path / "R"
    proc = run_cli("-c", str(_config(tmp_path)), "-r", str(out), "--compare",
                   env={"MLMARK_SYSFS_ROOT": str(FIXTURES / "agx-orin"), "MLMARK_POWER": "ina3221"})
    assert proc.returncode == 0, proc.stderr
    # Warned once, before measuring, with the commands to run.
    warnings = [line for line in proc.stderr.splitlines() if "sudo jetson_clocks" in line]
    assert len(warnings) == 1 and "sudo nvpmodel -m 0" in warnings[0] and "MODE_50W" in warnings[0]
    rec = _only(out)
    state = rec.system["state"]
    assert state["jetson"]["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert warnings[0].endswith(state["warning"])
    power = rec.system["power"]
    assert power["source"] == "ina3221" and power["total"] == "sum of rails" and power["rate_hz"] == 20.0
    assert power["idle"]["average_w"] == pytest.approx(4.930, abs=1e-3) and power["idle"]["samples"] >= 40
    t = rec.tasks[0]
    # The fixture's rails do not change, so the average is exact and fps/W is fps divided by it.
    assert t.power["average_w"] == pytest.approx(4.930, abs=1e-3) and t.power["samples"] >= 2
    # Sampled over the timed loop only: not the 0.5 s warm-up before it.
    assert t.wall_s <= t.power["duration_s"] < t.wall_s + 0.2
    assert t.power["rails_w"]["VDDQ_VDD2_1V8AO"] == pytest.approx(0.404, abs=1e-3)
    assert t.fps_per_watt == pytest.approx(t.throughput_fps / t.power["average_w"], rel=1e-4)
    assert t.mj_per_inference == pytest.approx(1e3 * t.power["average_w"] / t.throughput_fps, rel=1e-4)
    assert t.power["net_average_w"] == pytest.approx(0.0, abs=1e-3)
    assert t.system_state["before"]["jetson"]["nvpmodel"]["name"] == "MODE_50W"
    assert t.system_state["after"]["jetson"]["clocks_pinned"] is False
    # Score table and comparison show fps/W and mJ/inference; the CSV has them too.
    assert "fps/W" in proc.stdout and "mJ/inf" in proc.stdout and "ina3221 (sum of rails)" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("#"))
    assert " p95 ms W fps/W mJ/inf " in " ".join(header.split())  # beside the other measures (harness/measures.py)
    for csv_file in out.glob("*.csv"):  # the run's and the comparison's
        assert ",average_w,fps_per_w,mj_per_inference," in csv_file.read_text().splitlines()[0], csv_file


def test_fps_against_watts_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "R"
    proc = run_cli("-c", str(_config(tmp_path)), "-r", str(out),
                   env={"MLMARK_SYSFS_ROOT": str(FIXTURES / "orin-nano"), "MLMARK_POWER": "ina3221"})
    assert proc.returncode == 0, proc.stderr
    assert "sudo jetson_clocks" not in proc.stderr  # MAXN_SUPER, pinned: nothing to warn about
    result = next(out.glob("*.json"))
    png = tmp_path / "fps-w.png"
    proc = run_cli("compare", str(result), "--plot", "fps-w", "--png", str(png), "--csv", str(tmp_path / "c.csv"))
    assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    c = compare([result])
    assert c.rows[0].values["average_w"] == pytest.approx(4.558, abs=1e-3)  # VDD_IN, the input rail
    assert "fps/W" in format_comparison(c)


def test_power_off_and_old_results(tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "R"
    proc = run_cli("-c", str(_config(tmp_path)), "-r", str(out),
                   env={"MLMARK_SYSFS_ROOT": str(FIXTURES / "orin-nano"), "MLMARK_POWER": "off"})
    assert proc.returncode == 0, proc.stderr
    rec = _only(out)
    assert rec.system["power"] == {"source": None, "unavailable": ["MLMARK_POWER=off"]}
    assert rec.tasks[0].power is None and "fps/W" not in proc.stdout
    c = compare([next(out.glob("*.json"))])
    assert c.rows[0].values["fps_per_w"] is None and "fps/W" not in format_comparison(c)
    with pytest.raises(Exception, match="no result has power measured"):
        write_png(c, tmp_path / "x.png", "fps-w")
    # A result file written before power was recorded still loads.
    data = json.loads(next(out.glob("*.json")).read_text())
    for t in data["tasks"]:
        del t["power"], t["system_state"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert res.load(old).tasks[0].fps_per_watt is None
