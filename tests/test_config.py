"""Config parsing and validation: MLMark 1.0 files parse unchanged; every bad input is one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from harness.config import MAX_BATCH, MAX_CONCURRENCY, MAX_ITERATIONS, expand_config_args, load_configs
from tests.conftest import write_tiny_classifier


def write(tmp_path: Path, obj: Any, name: str = "c.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def task(**params: Any) -> dict:
    base = {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "batch": 1, "concurrency": 1,
            "iterations": 1024}
    base.update(params)
    return {"target": "onnxruntime", "workload": "mobilenet", "params": {k: v for k, v in base.items()
                                                                         if v is not None}}


def error(tmp_path: Path, obj: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load_configs([write(tmp_path, obj)])
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_mlmark_1_0_file_parses_unchanged(tmp_path: Path) -> None:
    # The exact shape of MLMark 1.0's config files, 4-space indented, `batch` key.
    text = ('[\n    {\n        "target": "onnxruntime",\n        "workload": "resnet50",\n        "params": {\n'
            '            "hardware": "cpu",\n            "precision": "fp32",\n            "batch": 1,\n'
            '            "concurrency": 1,\n            "mode": "throughput",\n            "iterations": 1024\n'
            '        }\n    }\n]')
    (t,) = load_configs([write(tmp_path, text)])
    assert (t.target, t.workload, t.params.mode, t.params.batch, t.params.iterations) == (
        "onnxruntime", "resnet50", "throughput", 1, 1024)
    assert t.params.warmup_s == 1.0


def test_batch_size_alias_and_disagreement(tmp_path: Path) -> None:
    t = task(batch=None, batch_size=8)
    (parsed,) = load_configs([write(tmp_path, [t])])
    assert parsed.params.batch == 8
    msg = error(tmp_path, [task(batch=4, batch_size=8)])
    assert "params.batch (4) and params.batch_size (8) disagree" in msg


def test_latency_forces_batch_1_concurrency_1(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level("INFO")
    (t,) = load_configs([write(tmp_path, [task(mode="latency", batch=8, concurrency=4)])])
    assert (t.params.batch, t.params.concurrency) == (1, 1)
    assert "latency mode runs batch 1 and concurrency 1" in caplog.text


def test_several_files_and_globs(tmp_path: Path) -> None:
    write(tmp_path, [task()], "a.json")
    write(tmp_path, [task(), task(mode="latency")], "b.json")
    paths = expand_config_args([str(tmp_path / "*.json")])
    tasks = load_configs(paths)
    assert [t.source.split(": ")[1] for t in tasks] == ["task 1", "task 1", "task 2"]
    assert [t.index for t in tasks] == [0, 1, 2]
    with pytest.raises(ConfigError, match="no config file matches"):
        expand_config_args([str(tmp_path / "nothing*.json")])


def test_warmup_and_target_options(tmp_path: Path) -> None:
    (t,) = load_configs([write(tmp_path, [task(warmup=2.5, warmup_iterations=10, threads=2)])])
    assert t.params.warmup_s == 2.5 and t.params.warmup_iterations == 10 and t.params.options == {"threads": 2}


@pytest.mark.parametrize("obj, expected", [
    ("[{", "malformed JSON at line 1"),
    ({"target": "onnxruntime"}, "must be a JSON list of tasks"),
    ([], "holds no task"),
    (["x"], "a task must be a JSON object"),
    ([{"workload": "mobilenet", "params": {}}], "missing field 'target'"),
    ([{"target": "onnxruntime", "params": {}}], "missing field 'workload'"),
    ([{"target": "onnxruntime", "workload": "mobilenet"}], "missing field 'params'"),
    ([{"target": "onnxruntime", "workload": "mobilenet", "params": []}], "'params' must be a JSON object"),
    ([dict(task(), extra=1)], "unknown field 'extra'"),
    ([dict(task(), target="nosuch")], "unknown target 'nosuch' (allowed: onnxruntime"),
    ([dict(task(), target="tensorflow")], "MLMark 1.0 target this project does not provide"),
    ([dict(task(), target="openvino_ubuntu")], "target 'openvino_ubuntu' is an MLMark 1.0 target"),
    ([dict(task(), workload="inception")], "unknown workload 'inception' (allowed: mobilenet, resnet50, ssdmobilenet)"),
    ([task(mode="fast")], 'unknown params.mode "fast" (allowed: throughput, latency, accuracy)'),
    ([task(hardware="tpu")], 'unknown params.hardware "tpu" (allowed: cpu, gpu, dla)'),
    ([task(precision="fp8")], 'unknown params.precision "fp8" (allowed: fp32, fp16, bf16, int8)'),
    ([task(mode=None)], "missing field 'params.mode'"),
    ([task(batch=0)], "params.batch must be a positive integer no larger than {}, got 0".format(MAX_BATCH)),
    ([task(batch=-3)], "params.batch must be a positive integer"),
    ([task(batch=1.5)], "params.batch must be a positive integer"),
    ([task(batch="8")], 'got "8"'),
    ([task(batch=True)], "params.batch must be a positive integer"),
    ([task(batch=MAX_BATCH + 1)], "no larger than {}".format(MAX_BATCH)),
    ([task(batch=None, batch_size=0)], "params.batch_size must be a positive integer"),
    ([task(concurrency=0)], "params.concurrency must be a positive integer no larger than {}".format(MAX_CONCURRENCY)),
    ([task(concurrency=10 ** 6)], "params.concurrency must be a positive integer"),
    ([task(iterations=0)], "params.iterations must be a positive integer no larger than {}".format(MAX_ITERATIONS)),
    ([task(iterations=10 ** 12)], "params.iterations must be a positive integer"),
    ([task(warmup=-1)], "params.warmup (seconds) must be a number from 0 to 3600"),
    ([task(warmup_iterations=-1)], "params.warmup_iterations must be an integer from 0"),
    ([task(speed=3)], "unknown field 'params.speed'"),
    ([task(model="does/not/exist.onnx")], "params.model: file not found: does/not/exist.onnx"),
])
def test_bad_input_one_clear_line(tmp_path: Path, obj: Any, expected: str) -> None:
    msg = error(tmp_path, obj)
    assert expected in msg
    assert str(tmp_path / "c.json") in msg  # every message names the file


def test_model_must_be_onnx(tmp_path: Path) -> None:
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    assert "is not an ONNX file" in error(tmp_path, [task(model=str(txt))])
    onnx_file = write_tiny_classifier(tmp_path / "tiny.onnx")
    (t,) = load_configs([write(tmp_path, [task(model=str(onnx_file))])])
    assert t.params.model == str(onnx_file.resolve())


def test_model_relative_to_config_folder(tmp_path: Path, monkeypatch: Any) -> None:
    sub = tmp_path / "cfg"
    sub.mkdir()
    write_tiny_classifier(sub / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    (t,) = load_configs([write(sub, [task(model="tiny.onnx")])])
    assert Path(t.params.model) == (sub / "tiny.onnx").resolve()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_configs([tmp_path / "absent.json"])


@pytest.mark.parametrize("params", [
    {"mode": "throughput", "warmup": 0.25, "warmup_iterations": 3, "threads": 2, "batch": None, "batch_size": 4},
    {"mode": "latency", "batch": 8, "concurrency": 2},  # run as batch 1, concurrency 1, and sent so
    {"mode": "accuracy", "max_images": 10, "model": "MODEL"},
])
def test_params_written_as_a_config_parse_back_to_themselves(tmp_path: Path, params: Any) -> None:
    """Params.to_config is how mlmark fleet sends a task to a server: it must parse to the same params."""
    from harness.config import parse_task

    model = str(write_tiny_classifier(tmp_path / "tiny.onnx"))
    raw = task(**{k: model if v == "MODEL" else v for k, v in params.items()})
    parsed = parse_task(raw, "c.json: task 1", 0)
    again = parse_task(dict(raw, params=parsed.params.to_config()), "c.json: task 1", 0)
    assert again.params == parsed.params and again.params.to_config() == parsed.params.to_config()
