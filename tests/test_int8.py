"""INT8 calibration and Q/DQ models: the project's models on generated images, the CLI, the int8 task, bad input.

The calibrations of mobilenet and resnet50 use minmax to keep this file fast (ONNX Runtime's entropy
search costs about a second per tensor); the entropy path is checked on a small ReLU network, and
bench/int8.py measures it on the full models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from core.errors import DatasetError, ModelError  # noqa: E402
from core.fileio import sha256_file  # noqa: E402
from harness import results as res  # noqa: E402
from precision import qdq as qdqmod  # noqa: E402
from precision.table import activation_tensors, check_table_for_model, read_sidecar, read_table  # noqa: E402
from tests.conftest import REPO, run_cli, write_tiny_classifier  # noqa: E402
from tests.test_datasets import make_imagenet, write_jpeg  # noqa: E402
from workloads import get_workload  # noqa: E402
from workloads.calibrate import CalibrationResult, calibrate, cosine, load_images  # noqa: E402

N_IMAGES = 8


def image_folder(folder: Path, n: int, start: int = 0) -> Path:
    """n random-texture JPEGs of assorted sizes (the preprocessing crops and resizes each)."""
    for i in range(start, start + n):
        write_jpeg(folder / "img_{:03d}.jpg".format(i), 64 + 9 * (i % 5), 48 + 7 * (i % 4), seed=100 + i)
    return folder


class Calibrated:
    """A project model generated once, with its minmax calibration on the shared images."""

    def __init__(self, root: Path, workload: str, images: Path) -> None:
        self.workload = get_workload(workload)
        self.model = root / "{}.onnx".format(workload)
        onnx.save(self.workload.build_synthetic(seed=0), str(self.model))
        self.images = images
        self.result: CalibrationResult = calibrate(workload, images=images, count=N_IMAGES, model=self.model,
                                                   method="minmax", table_out=root / ("CalibrationTable_" + workload),
                                                   check_images=2)


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory: Any) -> Iterator[Dict[str, Calibrated]]:
    root = tmp_path_factory.mktemp("int8")
    images = image_folder(root / "images", N_IMAGES)
    yield {w: Calibrated(root, w, images) for w in ("mobilenet", "resnet50")}


@pytest.mark.parametrize("workload", ["mobilenet", "resnet50"])
def test_qdq_scales_are_the_tables_and_weights_are_per_channel_int8(calibrated: Dict[str, Calibrated],
                                                                    workload: str) -> None:
    from onnx import TensorProto, numpy_helper

    c = calibrated[workload]
    r = c.result
    assert r.qdq_path == c.model.with_name(workload + ".qdq.onnx")
    table = read_table(r.table_path)
    assert table.scales == r.table.scales and table.algorithm == "MinMaxCalibration"
    assert list(table.scales) == activation_tensors(c.model)  # every activation, input first, graph order
    q = onnx.load(str(r.qdq_path))
    scales = qdqmod.qdq_scales(q)
    for name, s in scales.items():  # bit for bit
        assert np.float32(s).tobytes() == np.float32(table.scales[name]).tobytes(), name
    # Q/DQ sits on the activation input of every Conv and Gemm, and nowhere else
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: t for t in q.graph.initializer}
    layers = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(layers) == (28 if workload == "mobilenet" else 54)
    for node in layers:
        x, w = producers[node.input[0]], producers[node.input[1]]
        assert x.op_type == "DequantizeLinear" and producers[x.input[0]].op_type == "QuantizeLinear"
        assert w.op_type == "DequantizeLinear"
        weights = numpy_helper.to_array(inits[w.input[0]])
        w_scale = numpy_helper.to_array(inits[w.input[1]])
        w_zero = numpy_helper.to_array(inits[w.input[2]])
        channels = weights.shape[0] if node.op_type == "Conv" else weights.shape[1 - _trans_b(node)]
        assert weights.dtype == np.int8 and np.abs(weights.astype(np.int32)).max() <= 127
        assert w_scale.shape == (channels,) and not w_zero.any()
        if len(node.input) > 2:  # the bias stays float (TensorRT 8 takes int8 DequantizeLinear only)
            assert node.input[2] in inits and inits[node.input[2]].data_type == TensorProto.FLOAT
    quantized = {producers[producers[n.input[0]].input[0]].input[0] for n in layers}  # DQ <- Q <- activation
    assert set(scales) == quantized  # one QuantizeLinear per quantized activation, and no other
    for node in q.graph.node:  # the outputs of Conv and Gemm stay float
        if node.op_type == "QuantizeLinear" and node.input[0] in producers:
            assert producers[node.input[0]].op_type not in ("Conv", "Gemm", "MatMul")
    assert [(o.domain, o.version) for o in q.opset_import] == [("", 13)]
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta[qdqmod.META_SOURCE_SHA] == sha256_file(c.model)
    assert meta[qdqmod.META_TABLE_SHA] == sha256_file(r.table_path)
    assert meta["weights"] == "synthetic"  # the source model's own metadata is kept


def test_onnxruntime_forms_no_int8_kernels_from_the_tensorrt_placement(calibrated: Dict[str, Calibrated],
                                                                       tmp_path: Path) -> None:
    # What the onnxruntime target's results and README say: Q/DQ on operator inputs only gives the CPU
    # provider nothing to fuse into QLinearConv and the like, so it runs dequantize + float kernels.
    # If a later ONNX Runtime fuses them, this fails and those words must change.
    import onnx

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(calibrated["mobilenet"].result.qdq_path), opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "DequantizeLinear" in ops
    assert not ops & {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm"}, ops


def _trans_b(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "transB"), 0)


@pytest.mark.parametrize("workload", ["mobilenet", "resnet50"])
def test_qdq_model_agrees_with_fp32_on_the_calibration_images(calibrated: Dict[str, Calibrated],
                                                              workload: str) -> None:
    c = calibrated[workload]
    imgs = load_images(c.workload, c.images, N_IMAGES)
    x = c.workload.preprocess.normalize(imgs.pixels, "float32", "NCHW")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    fp32 = ort.InferenceSession(str(c.model), opts, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(c.result.qdq_path), opts, providers=["CPUExecutionProvider"])
    a = fp32.run(None, {"input": x})[0]
    b = int8.run(None, {"input": x})[0]
    # as the int8 task runs it: ONNX Runtime's optimized graph
    cos = [cosine(a[i], b[i]) for i in range(len(x))]
    assert min(cos) >= 0.99, cos
    assert not np.array_equal(a, b)  # it did run quantized
    assert c.result.agreement["images"] == 2 and c.result.agreement["cosine_min"] >= 0.99


def test_table_of_one_model_is_refused_for_the_other(calibrated: Dict[str, Calibrated]) -> None:
    m, r = calibrated["mobilenet"], calibrated["resnet50"]
    check_table_for_model(m.result.table_path, m.model, "mobilenet")
    with pytest.raises(ModelError) as exc:
        check_table_for_model(m.result.table_path, r.model, "resnet50")
    msg = str(exc.value)
    assert "made for model mobilenet.onnx" in msg and "utility/calibrate.py --workload resnet50" in msg


def test_record_says_what_the_table_was_made_from(calibrated: Dict[str, Calibrated]) -> None:
    c = calibrated["resnet50"]
    side = read_sidecar(c.result.table_path) or {}
    assert side["model"]["sha256"] == sha256_file(c.model) and side["model"]["weights"] == "synthetic"
    images = side["images"]
    assert (images["source"], images["requested"], images["used"], images["skipped"]) == ("folder", 8, 8, 0)
    assert (images["first"], images["last"]) == ("img_000.jpg", "img_007.jpg")
    assert len(images["files_sha256"]) == 64 and "mlperf-resnet50-224" in images["preprocess"]
    assert side["method"]["name"] == "minmax" and side["onnxruntime"] == ort.__version__ and side["created"]
    assert side["table"]["sha256"] == sha256_file(c.result.table_path)
    assert side["qdq"]["sha256"] == sha256_file(c.result.qdq_path)


# ------------------------------------------------------------------------ entropy, on a small ReLU network


def test_entropy_keeps_relu_ranges_and_the_qdq_model_close(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    images = image_folder(tmp_path / "images", 16)
    ent = calibrate("mobilenet", images=images, count=16, model=model, table_out=tmp_path / "E")
    mm = calibrate("mobilenet", images=images, count=16, model=model, method="minmax", table_out=tmp_path / "M",
                   qdq_out=tmp_path / "mm.qdq.onnx")
    assert ent.table.algorithm == "EntropyCalibration2" and read_sidecar(tmp_path / "E")["method"]["options"] == {
        "symmetric": True, "num_bins": 2048, "num_quantized_bins": 255}
    # After the ReLU most values are 0: without flattening that spike the KL search clips at its
    # smallest candidate, an eighth of the range.
    assert ent.table.scales["r"] > 0.3 * mm.table.scales["r"]
    assert all(ent.table.scales[n] <= mm.table.scales[n] * (1 + 1e-6) for n in ent.table.scales)
    assert ent.agreement["cosine_min"] >= 0.99


# ------------------------------------------------------------------------ the command line and the int8 task


def calibrate_cli(*args: str, env: Any = None) -> Any:
    import os

    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "utility" / "calibrate.py")] + list(args), cwd=str(REPO),
                          capture_output=True, text=True, timeout=300, env=full)


def int8_task(model: Path, **params: Any) -> Dict[str, Any]:
    p = {"mode": "throughput", "hardware": "cpu", "precision": "int8", "batch": 2, "iterations": 5, "warmup": 0,
         "model": str(model)}
    p.update(params)
    return {"target": "onnxruntime", "workload": "mobilenet", "params": p}


def run_config(tmp_path: Path, tasks: Any, name: str) -> Any:
    cfg = tmp_path / "{}.json".format(name)
    cfg.write_text(json.dumps(tasks))
    out = tmp_path / name
    proc = run_cli("-c", str(cfg), "-r", str(out))
    files = sorted(out.glob("*.json")) if out.exists() else []
    return proc, (res.load(files[0]) if files else None)


def test_cli_calibrates_and_the_int8_task_runs_the_qdq_model(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    table = tmp_path / "CalibrationTable_mobilenet"
    proc = calibrate_cli("--workload", "mobilenet", "--images", str(image_folder(tmp_path / "images", 6)),
                         "--count", "6", "--model", str(model), "--method", "minmax", "--table", str(table))
    assert proc.returncode == 0, proc.stderr
    assert "table: {} (TRT-8201-MinMaxCalibration)".format(table) in proc.stdout
    assert "Q/DQ model: {}".format(tmp_path / "tiny.qdq.onnx") in proc.stdout and "cosine min" in proc.stdout
    run, rec = run_config(tmp_path, [int8_task(model), int8_task(model, precision="fp32")], "R")
    assert run.returncode == 0, run.stderr
    t8, t32 = rec.tasks
    info = t8.target_info["int8"]
    assert info["qdq_model"] == str(tmp_path / "tiny.qdq.onnx") and not info["explicit"]
    assert info["table_sha256"] == sha256_file(table) and info["source_sha256"] == sha256_file(model)
    assert info["calibration_table"] == table.name and info["method"] == "minmax"
    assert t8.params["precision"] == "int8" and t8.model["sha256"] == sha256_file(model)
    assert "int8" not in t32.target_info
    # the model changes: its Q/DQ model is stale and the int8 task refuses before timing anything
    write_tiny_classifier(model, classes=1000)
    run, _ = run_config(tmp_path, [int8_task(model)], "R2")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "the model changed since calibration" in lines[-1] and "python utility/calibrate.py --workload mobilenet" \
        in lines[-1]


def test_int8_task_without_a_qdq_model_is_refused_naming_the_tool(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    run, rec = run_config(tmp_path, [int8_task(model)], "R")
    assert run.returncode == 2 and rec is None
    last = run.stderr.strip().splitlines()[-1]
    assert "tiny.qdq.onnx, which does not exist" in last and "python utility/calibrate.py --workload mobilenet" in last


def test_no_images_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    empty = tmp_path / "datasets"
    empty.mkdir()
    proc = calibrate_cli("--workload", "mobilenet", "--model", str(model), "--table", str(tmp_path / "T"),
                         env={"MLMARK_DATASETS": str(empty)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("calibrate: error: no calibration images:") and "--images DIR" in line
    assert "random data is worthless" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets", "tiny.onnx"]


def test_bad_image_folders(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError) as exc:
        calibrate("mobilenet", images=tmp_path / "none", count=4, model=model, table_out=tmp_path / "T")
    assert "no image files" in str(exc.value)
    with pytest.raises(DatasetError) as exc:
        calibrate("mobilenet", images=image_folder(tmp_path / "few", 3), count=4, model=model,
                  table_out=tmp_path / "T")
    assert "3 image files, fewer than the 4 requested: give --count 3" in str(exc.value)
    assert not (tmp_path / "T").exists() and not (tmp_path / "tiny.qdq.onnx").exists()


def test_unreadable_images_are_skipped_and_counted_then_refused(tmp_path: Path) -> None:
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    folder = image_folder(tmp_path / "images", 20)
    (folder / "img_005.jpg").write_bytes(b"not a jpeg")
    ok = calibrate("mobilenet", images=folder, count=20, model=model, method="minmax", table_out=tmp_path / "T")
    assert (ok.record["images"]["used"], ok.record["images"]["skipped"]) == (19, 1)  # 1 of 20 is allowed
    with pytest.raises(DatasetError) as exc:
        calibrate("mobilenet", images=folder, count=10, model=model, method="minmax", table_out=tmp_path / "T2")
    assert "1 of the 10 calibration images are unreadable (first: img_005.jpg" in str(exc.value)
    assert not (tmp_path / "T2").exists()


def test_model_without_a_batch_dimension_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    m = onnx.load(str(model))
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("input", TensorProto.FLOAT, [3, 224, 224]))
    onnx.save(m, str(model))
    with pytest.raises(ModelError) as exc:
        calibrate("mobilenet", images=image_folder(tmp_path / "images", 2), count=2, model=model,
                  table_out=tmp_path / "T")
    assert "has shape [3, 224, 224], without a batch dimension" in str(exc.value)


def test_dataset_images_in_the_harness_order(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLMARK_DATASETS", str(tmp_path / "datasets"))
    base = make_imagenet(tmp_path / "datasets", per_class=6)
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    r = calibrate("mobilenet", count=7, model=model, method="minmax", table_out=tmp_path / "T")
    images = r.record["images"]
    assert images["source"] == "dataset" and images["identity"]["sha256"] == sha256_file(
        base / "annotations" / "validation.txt")
    # MLMark's subset: first 5 names of each class, sorted; the first 7 of those
    assert (images["first"], images["last"], images["used"]) == (
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000008.JPEG", 7)
    with pytest.raises(DatasetError) as exc:
        calibrate("mobilenet", count=16, model=model, method="minmax", table_out=tmp_path / "T")
    assert "holds 15 images, fewer than the 16 requested" in str(exc.value)
    shutil.rmtree(str(base / "images"))
    with pytest.raises(DatasetError) as exc:
        calibrate("mobilenet", count=7, model=model, table_out=tmp_path / "T")
    assert str(exc.value).startswith("no calibration images:")


def test_pooled_threshold_search_equals_the_calibrators_own(calibrated: Dict[str, Calibrated], monkeypatch: Any) -> None:
    from workloads import calibrate as cal

    c = calibrated["mobilenet"]
    imgs = load_images(c.workload, c.images, 4)
    batches = [c.workload.preprocess.normalize(imgs.pixels, "float32", "NCHW")]
    monkeypatch.setattr(cal, "_cores", lambda: 1)  # one process: onnxruntime's compute_data as is
    alone = cal.collect_ranges(c.model, batches, "input", "entropy", bins=300)
    monkeypatch.setattr(cal, "_cores", lambda: 2)
    pooled = cal.collect_ranges(c.model, batches, "input", "entropy", bins=300)
    assert len(alone) >= 58 and pooled == alone


def test_quantized_or_fixed_batch_models(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    images = image_folder(tmp_path / "images", 5)
    done = calibrate("mobilenet", images=images, count=5, model=model, method="minmax", table_out=tmp_path / "T")
    with pytest.raises(ModelError) as exc:
        calibrate("mobilenet", images=images, count=5, model=done.qdq_path, table_out=tmp_path / "T2")
    assert "already quantized" in str(exc.value)
    m = onnx.load(str(model))
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 224, 224]))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 1001]))
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    fixed = calibrate("mobilenet", images=images, count=5, model=tmp_path / "fixed.onnx", method="minmax",
                      table_out=tmp_path / "T3")
    assert fixed.record["images"]["used"] == 4 and fixed.agreement["images"] == 4  # two batches of 2; one left out


def test_int8_accuracy_task_scores_the_qdq_model(tmp_path: Path, monkeypatch: Any) -> None:
    datasets = tmp_path / "datasets"
    monkeypatch.setenv("MLMARK_DATASETS", str(datasets))
    make_imagenet(datasets, per_class=2)
    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    calibrate("mobilenet", count=6, model=model, method="minmax", table_out=tmp_path / "T")
    cfg = tmp_path / "acc.json"
    cfg.write_text(json.dumps([int8_task(model, mode="accuracy", iterations=1, batch=4)]))
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"), env={"MLMARK_DATASETS": str(datasets)})
    assert proc.returncode == 0, proc.stderr
    (t,) = res.load(sorted((tmp_path / "R").glob("*.json"))[0]).tasks
    assert t.metric == "top1" and t.target_info["accuracy"]["images"] == 6
    assert t.target_info["int8"]["qdq_model"] == str(tmp_path / "tiny.qdq.onnx")
