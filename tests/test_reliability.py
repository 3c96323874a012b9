"""Defects found by using the tool as a hostile user would: each test reproduces one, then guards its fix.

Nothing lost (results files), no wrong score (models that do not fit), no refusal after a measurement,
clean stops on Ctrl-C and SIGTERM, one line instead of a traceback, and nothing silently taken.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

from core.errors import ConfigError
from harness import results as res
from harness.config import expand_config_args, load_configs
from tests.conftest import REPO, run_cli, write_tiny_classifier
from tests.test_run import config


def task(model_file: Optional[Path], **params: Any) -> dict:
    p = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "batch": 1, "concurrency": 1,
         "iterations": 20, "warmup": 0.05, "model": str(model_file) if model_file else None}
    p.update(params)
    return {"target": "onnxruntime", "workload": "mobilenet", "params": {k: v for k, v in p.items() if v is not None}}


def one_error_line(proc: Any) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("mlmark: error: "), proc.stderr
    return lines[-1]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_classifier(tmp_path / "tiny.onnx")


def _start(cfg: Path, out: Path, *extra: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, str(REPO / "harness" / "mlmark.py"), "-c", str(cfg), "-r", str(out)]
                            + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def _wait_for_line(proc: "subprocess.Popen[str]", words: str, timeout: float = 120) -> List[str]:
    """stderr lines up to the first that holds `words` (the process keeps running)."""
    assert proc.stderr is not None
    seen: List[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if words in line:
            return seen
    raise AssertionError("never saw {!r}; stderr: {}".format(words, "".join(seen)))


# --- 1, 2: data lost ---------------------------------------------------------------------------------


def test_results_file_is_claimed_exclusively(tmp_path: Path) -> None:
    a, b = res.claim_result_path(tmp_path), res.claim_result_path(tmp_path)  # the same second
    assert a != b and a.is_file() and b.is_file()


def test_two_runs_started_together_keep_both_results(tmp_path: Path, tiny: Path) -> None:
    cfg, out = config(tmp_path, [task(tiny)]), tmp_path / "R"
    procs = [_start(cfg, out, "-q"), _start(cfg, out, "-q")]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and all(len(res.load(f).tasks) == 1 for f in files)


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_unwritable_results_folder_is_refused_before_any_task(tmp_path: Path, tiny: Path, where: str) -> None:
    blocker = tmp_path / "Results"
    blocker.write_text("a file where the results folder should be")
    out = blocker if where == "file" else blocker / "sub"
    proc = run_cli("-c", str(config(tmp_path, [task(tiny)])), "-r", str(out))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(out) in line and "results" in line
    assert "warm-up" not in proc.stderr and "results:" not in proc.stdout  # nothing was measured or claimed


def test_compare_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    from tests.test_compare import result, save

    path = save(tmp_path, "r.json", {"cpu": "x"}, [result("pytorch", "fp32", 10)])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("compare", str(path), "--csv", str(blocker / "o.csv"), "--png", str(blocker / "o.png"))
    assert proc.returncode == 2 and "o.csv" in one_error_line(proc)


# --- 3, 4: wrong scores, late refusals ---------------------------------------------------------------


@pytest.mark.parametrize("hw, channels, found", [(100, 3, "[batch, 3, 100, 100]"), (5, 7, "[batch, 7, 5, 5]")])
def test_model_whose_input_does_not_fit_is_refused(tmp_path: Path, hw: int, channels: int, found: str) -> None:
    model = write_tiny_classifier(tmp_path / "m.onnx", hw=hw, channels=channels)
    proc = run_cli("-c", str(config(tmp_path, [task(model)])), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "c.json: task 1" in line and "[batch, 3, 224, 224]" in line and found in line
    assert not list((tmp_path / "R").glob("*.json")) if (tmp_path / "R").exists() else True


def test_refusals_that_can_be_known_come_before_task_1(tmp_path: Path, tiny: Path) -> None:
    cfg = config(tmp_path, [task(tiny), task(tiny, precision="int8")])  # no Q/DQ model beside tiny.onnx
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "c.json: task 2" in line and "calibrate.py" in line
    assert "warm-up" not in proc.stderr  # task 1 was never measured


# --- 5, 6, 7: crashes and signals --------------------------------------------------------------------


def test_ctrl_c_with_concurrency_stops_the_slots_cleanly(tmp_path: Path, tiny: Path) -> None:
    cfg, out = config(tmp_path, [task(tiny), task(tiny, iterations=10_000_000, concurrency=2)]), tmp_path / "R"
    proc = _start(cfg, out)
    _wait_for_line(proc, "task 2: warm-up")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "terminate called" not in stderr and "Traceback" not in stderr
    (path,) = out.glob("*.json")
    rec = res.load(path)
    assert rec.interrupted and len(rec.tasks) == 1 and rec.not_run == ["{}: task 2".format(cfg)]


def test_sigterm_is_treated_like_ctrl_c(tmp_path: Path, tiny: Path) -> None:
    cfg, out = config(tmp_path, [task(tiny), task(tiny, iterations=10_000_000)]), tmp_path / "R"
    proc = _start(cfg, out)
    _wait_for_line(proc, "task 2: warm-up")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "terminated" in stderr and "Traceback" not in stderr
    assert "Target" in stdout and "throughput" in stdout  # the table of what finished
    rec = res.load(next(out.glob("*.json")))
    assert rec.interrupted and len(rec.tasks) == 1


def test_a_failed_task_is_recorded_and_the_rest_listed(tmp_path: Path, tiny: Path) -> None:
    broken = write_tiny_classifier(tmp_path / "broken.onnx", bad_op=True)
    cfg, out = config(tmp_path, [task(tiny), task(broken), task(tiny)]), tmp_path / "R"
    proc = run_cli("-c", str(cfg), "-r", str(out))
    assert proc.returncode == 2
    rec = res.load(next(out.glob("*.json")))
    assert len(rec.tasks) == 1
    (failed,) = rec.failed
    assert failed["source"] == "{}: task 2".format(cfg) and "failed while loading the model" in failed["error"]
    assert rec.not_run == ["{}: task 3".format(cfg)]
    assert "task 2" in proc.stdout and "failed" in proc.stdout  # said under the table, never as a score


def test_ctrl_c_in_task_1_says_what_is_true(tmp_path: Path, tiny: Path) -> None:
    cfg, out = config(tmp_path, [task(tiny, iterations=10_000_000)]), tmp_path / "R"
    proc = _start(cfg, out)
    _wait_for_line(proc, "task 1: warm-up")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "finished tasks are kept" not in stderr and "no task had finished" in stderr


# --- 8: tracebacks where one line belongs --------------------------------------------------------------


def test_deeply_nested_json_and_huge_integers(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    huge = tmp_path / "huge.json"
    huge.write_text('[{"target": "onnxruntime", "workload": "mobilenet", "params": {"mode": "throughput", '
                    '"hardware": "cpu", "precision": "fp32", "batch": ' + "9" * 5000 + '}}]')
    for path, words in ((deep, "nested too deeply"), (huge, "params.batch")):
        proc = run_cli("-c", str(path))
        assert proc.returncode == 2 and path.name in one_error_line(proc)
        assert words in proc.stderr and len(proc.stderr) < 600


def test_bad_model_paths_are_one_line(tmp_path: Path) -> None:
    for model, words in (("x" * 5000 + ".onnx", "file not found"), (str(tmp_path), "is a folder")):
        proc = run_cli("-c", str(config(tmp_path, [task(None, model=model)])))
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert words in line and len(line) < 400


def test_models_folder_entry_that_is_a_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "mobilenet").write_text("not a folder")
    proc = run_cli("-c", str(config(tmp_path, [task(None)])), "-r", str(tmp_path / "R"),
                   env={"MLMARK_MODELS": str(models)})
    assert proc.returncode == 2 and "mobilenet" in one_error_line(proc)


@pytest.mark.parametrize("damage", ["params", "model", "fps-string", "fps-negative"])
def test_compare_on_damaged_results_is_one_line_or_skips(tmp_path: Path, damage: str) -> None:
    from tests.test_compare import result, save

    good = result("pytorch", "fp32", 10)
    bad = result("pytorch", "fp16", 20)
    path = save(tmp_path, "r.json", {"cpu": "x"}, [good, bad])
    data = json.loads(path.read_text())
    t = data["tasks"][1]
    if damage == "params":
        t["params"] = None
    elif damage == "model":
        t["model"] = None
    elif damage == "fps-string":
        t["throughput_fps"] = "fast"
    else:
        t["throughput_fps"] = -20.0
    path.write_text(json.dumps(data))
    proc = run_cli("compare", str(path), "--no-files")
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:  # the damaged row is left out and said so, the good one compared
        assert "fp16" not in proc.stdout and "left out" in proc.stdout
    else:
        assert proc.returncode == 2 and "r.json" in one_error_line(proc)


# --- 9-12: silently wrong --------------------------------------------------------------------------


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    text = ('[{"target": "onnxruntime", "workload": "mobilenet", "workload": "resnet50", "params": '
            '{"mode": "throughput", "hardware": "cpu", "precision": "fp32"}}]')
    for body, key in ((text, "workload"),
                      (text.replace('"workload": "resnet50", ', '').replace('"fp32"', '"fp32", "batch": 1, "batch": 2'),
                       "batch")):
        path = tmp_path / "dup.json"
        path.write_text(body)
        with pytest.raises(ConfigError) as err:
            load_configs([path])
        assert "duplicate key '{}'".format(key) in str(err.value) and "dup.json" in str(err.value)


@pytest.mark.parametrize("batch, batch_size", [(1, True), (2, 2.0)])
def test_batch_and_batch_size_must_agree_in_type_too(tmp_path: Path, batch: Any, batch_size: Any) -> None:
    t = task(None, batch=batch, batch_size=batch_size)
    with pytest.raises(ConfigError) as err:
        load_configs([config(tmp_path, [t])])
    assert "disagree" in str(err.value) or "must be a positive integer" in str(err.value)


def test_config_named_with_glob_characters_is_taken_as_it_is(tmp_path: Path) -> None:
    path = config(tmp_path, [task(None)], name="run[1].json")
    assert expand_config_args([str(path)]) == [path]
    assert expand_config_args([str(tmp_path / "run*.json")]) == [path]


@pytest.mark.parametrize("name, shown", [("m" * 1_000_000, "1000000 characters"), ("mobile\x00net", "\\u0000"),
                                         ("mobile\u200bnet", "\\u200b")])
def test_echoed_input_is_cut_and_escaped(tmp_path: Path, name: str, shown: str) -> None:
    t = task(None)
    t["workload"] = name
    with pytest.raises(ConfigError) as err:
        load_configs([config(tmp_path, [t])])
    msg = str(err.value)
    assert shown in msg and len(msg) < 400 and "\x00" not in msg and "\u200b" not in msg
