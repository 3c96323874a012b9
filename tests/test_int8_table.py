"""TensorRT's calibration cache format: exact round trip, MLMark's tables, bad files, and matching a table to a model."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from core.errors import ModelError
from core.fileio import sha256_file
from precision import table as tb
from precision.table import CalibrationTable, parse_table, read_table, write_table
from tests.conftest import write_tiny_classifier

# Names as TensorRT and exporters spell them: spaces, brackets, slashes and colons (TensorFlow's "x:0").
AWKWARD = ["input", "(Unnamed Layer* 222) [Shuffle]_output", "MobilenetV1/Conv2d_0/Relu6", "import/x:0", "a b: c"]


def one_line(exc: Any) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_hex_spelling_is_the_float32_bits_most_significant_first() -> None:
    # float32(6 / 127): the scale of every ReLU6 output in MLMark's own tables
    assert tb.scale_to_hex(float(np.float32(6) / np.float32(127))) == "3d418306"
    assert tb.hex_to_scale("3d418306") * 127 == pytest.approx(6.0, rel=1e-7)
    assert tb.hex_to_scale("3f800000") == 1.0
    # TensorRT drops leading zeros: "0" is zero and "1" the smallest denormal
    assert tb.hex_to_scale("0") == 0.0
    assert tb.hex_to_scale("1") == struct.unpack(">f", b"\x00\x00\x00\x01")[0] > 0


def test_round_trip_is_exact_to_the_bit() -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 0x7F800000, size=400, dtype=np.uint32)  # every finite non-negative float32
    bits[:4] = [0, 1, 0x007FFFFF, 0x7F7FFFFF]  # zero, smallest and largest denormal, largest normal
    values = bits.view(np.float32)
    names = AWKWARD + ["t{}".format(i) for i in range(len(values) - len(AWKWARD))]
    table = CalibrationTable(scales={n: float(v) for n, v in zip(names, values)}, version=100300,
                             algorithm="EntropyCalibration2")
    text = table.to_text()
    back = parse_table(text, "mem")
    assert list(back.scales) == names  # order kept
    assert np.array([back.scales[n] for n in names], dtype=np.float32).view(np.uint32).tolist() == bits.tolist()
    assert (back.version, back.algorithm, back.header) == (100300, "EntropyCalibration2", "TRT-100300-EntropyCalibration2")
    assert back.to_text() == text
    assert text.splitlines()[1] == "input: {:08x}".format(int(bits[0]))


def test_re_header_for_the_running_tensorrt() -> None:
    table = CalibrationTable(scales={"x": 0.5}, algorithm="MinMaxCalibration")
    assert table.header == "TRT-{}-MinMaxCalibration".format(tb.DEFAULT_TRT_VERSION)
    text = table.to_text(version=tb.trt_version_number(8, 6, 1), algorithm="EntropyCalibration2")
    assert text == "TRT-8601-EntropyCalibration2\nx: 3f000000\n"
    assert tb.trt_version_number(6, 0, 1) == 6001 and tb.trt_version_number(10, 3, 0) == 100300
    assert table.dynamic_ranges() == {"x": 63.5}


def test_mlmark_format_tables_parse(tmp_path: Path) -> None:
    # The layout of MLMark's TRT-6001 tables (written here, not copied): TensorFlow names, unnamed
    # TensorRT layers, short hex without leading zeros.
    path = tmp_path / "CalibrationTable_mobilenet"
    path.write_text("TRT-6001-EntropyCalibration2\n"
                    "input: 3c0d35ba\n"
                    "Net/Conv2d_0/Conv2D: 3d019a45\n"
                    "Net/Conv2d_0/Relu6: 3d418306\n"
                    "(Unnamed Layer* 7) [Shuffle]_output: 3ddaff7e\n"
                    "Net/Predictions/Softmax: 3a8e2d38\n"
                    "NMS_1: 1\n")
    table = read_table(path)
    assert (table.version, table.algorithm) == (6001, "EntropyCalibration2")
    assert len(table.scales) == 6
    assert table.dynamic_ranges()["Net/Conv2d_0/Relu6"] == pytest.approx(6.0, rel=1e-7)
    assert table.scales["NMS_1"] > 0 and table.scales["(Unnamed Layer* 7) [Shuffle]_output"] > 0
    # The earliest tables start with a bare version line instead of the TRT- header.
    legacy = parse_table("1\ninput: 3c0d35ba\n", "old")
    assert (legacy.version, legacy.algorithm, legacy.header) == (1, None, "1")


@pytest.mark.parametrize("text,where,what", [
    ("", "", "empty calibration table"),
    ("TRT-8201-EntropyCalibration2\n", "", "no tensor scale"),
    ("TRT-8201-EntropyCalibration2\ninput: 3c0d35ba\nconv: 3d41", "line 3", "truncated"),
    ("TRT-8201-EntropyCalibration2\ninput: 3c0d35ba\nconv", "line 3", "truncated"),
    ("calibration\ninput: 3c0d35ba\n", "line 1", "expected a header"),
    ("TRT-8201-EntropyCalibration2\ninput 3c0d35ba\n", "line 2", "expected '<tensor name>: <float32"),
    ("TRT-8201-EntropyCalibration2\ninput: 3c0d35ba7\n", "line 2", "expected '<tensor name>: <float32"),
    ("TRT-8201-EntropyCalibration2\ninput: zz\n", "line 2", "expected '<tensor name>: <float32"),
    ("TRT-8201-EntropyCalibration2\n: 3c0d35ba\n", "line 2", "expected '<tensor name>"),
    ("TRT-8201-EntropyCalibration2\ninput: bf800000\n", "line 2", "finite float32 >= 0"),
    ("TRT-8201-EntropyCalibration2\ninput: 7fc00000\n", "line 2", "finite float32 >= 0"),
    ("TRT-8201-EntropyCalibration2\na: 1\nb: 2\na: 3\n", "line 4", "listed twice (first on line 2)"),
])
def test_bad_tables_are_one_line_naming_file_and_line(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "CalibrationTable_x"
    path.write_text(text)
    with pytest.raises(ModelError) as exc:
        read_table(path)
    msg = one_line(exc)
    assert msg.startswith(str(path)) and what in msg and where in msg


def test_unreadable_and_missing_tables(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        read_table(tmp_path / "nope")
    assert "calibration table not found" in one_line(exc)
    binary = tmp_path / "bin"
    binary.write_bytes(b"TRT-8201-EntropyCalibration2\n\xff\xfe: 1\n")
    with pytest.raises(ModelError) as exc:
        read_table(binary)
    assert "line 2" in one_line(exc) and "not a text calibration table" in one_line(exc)


# ------------------------------------------------------------------------ against a model


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_classifier(tmp_path / "tiny.onnx")


def _table_for(names: Any) -> CalibrationTable:
    return CalibrationTable(scales={n: 0.01 * (i + 1) for i, n in enumerate(names)})


def test_activation_tensors_are_the_input_and_every_float_node_output(tiny: Path) -> None:
    assert tb.activation_tensors(tiny) == ["input", "c", "r", "g", "f", "logits"]


def test_write_table_is_atomic_and_records_its_origin(tmp_path: Path, tiny: Path) -> None:
    path = tmp_path / "CalibrationTable_mobilenet"
    record = write_table(path, _table_for(tb.activation_tensors(tiny)),
                         {"model": {"file": tiny.name, "sha256": sha256_file(tiny)}, "method": {"name": "minmax"}})
    side = json.loads(tb.sidecar_path(path).read_text())
    assert side == record and side["format"] == tb.SIDECAR_FORMAT and side["created"]
    assert side["table"]["sha256"] == sha256_file(path) and side["table"]["tensors"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["CalibrationTable_mobilenet", "CalibrationTable_mobilenet.json", "tiny.onnx"])  # no temporary left
    assert tb.check_table_for_model(path, tiny) is None
    assert tb.table_status(path, tiny) is None


def test_table_for_another_model_is_refused_with_the_missing_names(tmp_path: Path, tiny: Path) -> None:
    path = tmp_path / "T"
    path.write_text(_table_for(["input", "c", "elsewhere"]).to_text())  # no record: judged on names alone
    with pytest.raises(ModelError) as exc:
        tb.check_table_for_model(path, tiny, "mobilenet")
    msg = one_line(exc)
    assert "4 of its 6 activation tensors have no scale ('r', 'g', 'f', 'logits')" in msg
    assert "python utility/calibrate.py --workload mobilenet" in msg
    many = tmp_path / "M"
    many.write_text(_table_for(["input"]).to_text())
    names = ["input"] + ["n{}".format(i) for i in range(9)]
    model = _chain_model(tmp_path / "chain.onnx", 9)
    assert tb.activation_tensors(model) == names
    with pytest.raises(ModelError) as exc:
        tb.check_table_for_model(many, model)
    assert "9 of its 10 activation tensors have no scale ('n0', 'n1', 'n2', 'n3', 'n4' and 4 more)" in one_line(exc)
    assert "no scale" in (tb.table_status(many, model) or "")


def test_table_whose_record_names_another_model_is_refused(tmp_path: Path, tiny: Path) -> None:
    path = tmp_path / "T"
    write_table(path, _table_for(tb.activation_tensors(tiny)), {"model": {"file": "old.onnx", "sha256": "ab" * 32}})
    with pytest.raises(ModelError) as exc:
        tb.check_table_for_model(path, tiny, "mobilenet")
    msg = one_line(exc)
    assert "made for model old.onnx (sha256 abababababab)" in msg and sha256_file(tiny)[:12] in msg
    assert "python utility/calibrate.py --workload mobilenet --model" in msg
    # an edited table no longer matches its own record
    write_table(path, _table_for(tb.activation_tensors(tiny)), {"model": {"sha256": sha256_file(tiny)}})
    path.write_text(path.read_text().replace("input: 3c", "input: 3d"))
    with pytest.raises(ModelError) as exc:
        tb.check_table_for_model(path, tiny)
    assert "differs from the one its record" in one_line(exc)


def test_stale_table_warning_compares_the_record_only(tmp_path: Path, tiny: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(tb, "TABLE_DIR", tmp_path)
    assert tb.table_path("mobilenet") == tmp_path / "CalibrationTable_mobilenet"
    assert tb.stale_table_warning("mobilenet", tiny) is None  # no table: nothing to say
    write_table(tb.table_path("mobilenet"), _table_for(["x"]), {"model": {"sha256": sha256_file(tiny)}})
    assert tb.stale_table_warning("mobilenet", tiny) is None
    write_table(tb.table_path("mobilenet"), _table_for(["x"]), {"model": {"sha256": "cd" * 32}})
    warning = tb.stale_table_warning("mobilenet", tiny) or ""
    assert "calibration table made for another model (sha256 cdcdcdcdcdcd" in warning
    assert "utility/calibrate.py" in warning
    assert tb.stale_table_warning("mobilenet", tiny, sha256="cd" * 32) is None  # the harness passes the known hash


def _chain_model(path: Path, n: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input" if i == 0 else "n{}".format(i - 1)], ["n{}".format(i)]) for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("n{}".format(n - 1), TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def test_sidecar_that_is_not_json_is_one_line(tmp_path: Path, tiny: Path) -> None:
    path = tmp_path / "T"
    path.write_text(_table_for(tb.activation_tensors(tiny)).to_text())
    tb.sidecar_path(path).write_text("{not json")
    with pytest.raises(ModelError) as exc:
        tb.check_table_for_model(path, tiny)
    assert "unreadable calibration record" in one_line(exc)


def test_record_helpers(tmp_path: Path) -> None:
    assert tb.sidecar_path(tmp_path / "CalibrationTable_resnet50").name == "CalibrationTable_resnet50.json"
    assert tb.read_sidecar(tmp_path / "none") is None
    data: Dict[str, Any] = {"model": {"sha256": "x"}}
    (tmp_path / "T.json").write_text(json.dumps(data))
    assert tb.read_sidecar(tmp_path / "T") == data


def test_harness_warns_once_before_any_int8_task_runs(tmp_path: Path, tiny: Path, monkeypatch: Any,
                                                       caplog: Any) -> None:
    from harness.config import parse_task
    from harness.runner import prepare

    monkeypatch.setattr(tb, "TABLE_DIR", tmp_path)
    # The target's own check (a Q/DQ model made from this table) is not what this test is about.
    monkeypatch.setattr("precision.qdq.resolve_qdq", lambda model, workload: None)
    write_table(tb.table_path("mobilenet"), _table_for(["x"]), {"model": {"sha256": "cd" * 32}})
    raw = {"target": "onnxruntime", "workload": "mobilenet",
           "params": {"mode": "throughput", "hardware": "cpu", "precision": "int8", "batch": 1,
                      "model": str(tiny)}}
    tasks = [parse_task(raw, "cfg.json[{}]".format(i), i) for i in range(2)]
    fp32 = parse_task(dict(raw, params=dict(raw["params"], precision="fp32")), "cfg.json[2]", 2)
    caplog.set_level("WARNING")
    prepare(tasks + [fp32])
    warnings = [r.getMessage() for r in caplog.records if "calibration table made for another model" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("cfg.json[0]: ")


def test_table_for_release_rewrites_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "CalibrationTable_mobilenet"
    path.write_text("TRT-6001-EntropyCalibration2\ninput: 3c010a14\nrelu: 3d418306\n")
    served = tb.table_for_release(path, "8.5.2.2", tmp_path / "served")
    assert served.parent == tmp_path / "served" and served.name.endswith("-trt8502")
    assert served.read_text() == "TRT-8502-EntropyCalibration2\ninput: 3c010a14\nrelu: 3d418306\n"
    assert read_table(served).scales == read_table(path).scales
    assert tb.table_for_release(path, "10.0.1", tmp_path / "served").read_text().startswith(
        "TRT-100001-EntropyCalibration2\n")
    # A table already headed for this release is served as it is.
    assert tb.table_for_release(served, "8.5.2", tmp_path / "other") == served
    with pytest.raises(ModelError):
        tb.table_for_release(path, "unknown", tmp_path / "served")
