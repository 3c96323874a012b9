"""Accuracy mode end to end through the CLI, on tiny generated datasets in the real formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from core.errors import ModelError
from core.fileio import sha256_file
from core.specs import TensorSpec
from harness import results as res
from harness.config import Params, Task
from targets.base import Session
from tests.conftest import REPO, run_cli
from tests.test_datasets import make_coco, make_imagenet, val_name, write_jpeg
from workloads import get_workload
from workloads.model_store import ModelFile

CLASSES = (3, 17, 998)  # red, green and blue images (tests.test_datasets.CLASS_COLORS)


def write_colour_classifier(path: Path, outputs: int = 1001, weights: Optional[str] = None) -> Path:
    """An ONNX 'oracle': mean R, G, B -> the logit of the class of that colour (offset by the background class)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    offset = outputs - 1000
    w = np.zeros((3, outputs), dtype=np.float32)
    for channel, label in enumerate(CLASSES):
        w[channel, label + offset] = 10.0
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["logits"])], "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    if weights:
        helper.set_model_props(model, {"weights": weights})
    onnx.save(model, str(path))
    return path


def write_tiny_ssd(path: Path) -> Path:
    """An ONNX with SSD-MobileNet's interface: input [N,3,300,300] -> boxes [N,1917,4], scores [N,1917,91]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((3, 1917 * 4)) * 0.3).astype(np.float32), "wb"),
             numpy_helper.from_array((rng.standard_normal((3, 1917 * 91)) * 2.0).astype(np.float32), "ws"),
             numpy_helper.from_array(np.array([-1, 1917, 4], dtype=np.int64), "shape_b"),
             numpy_helper.from_array(np.array([-1, 1917, 91], dtype=np.int64), "shape_s")]
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "wb"], ["b"]), helper.make_node("Reshape", ["b", "shape_b"], ["boxes"]),
             helper.make_node("MatMul", ["f", "ws"], ["s"]), helper.make_node("Sigmoid", ["s"], ["p"]),
             helper.make_node("Reshape", ["p", "shape_s"], ["scores"])]
    graph = helper.make_graph(
        nodes, "tiny_ssd", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 300, 300])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 1917, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1917, 91])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def accuracy_task(model: Optional[Path], workload: str = "mobilenet", **params: Any) -> Dict[str, Any]:
    p: Dict[str, Any] = {"mode": "accuracy", "hardware": "cpu", "precision": "fp32", "batch": 4}
    if model is not None:
        p["model"] = str(model)
    p.update(params)
    return {"target": "onnxruntime", "workload": workload, "params": p}


def run(tmp_path: Path, tasks: List[Dict[str, Any]], datasets: Path, name: str = "R") -> Any:
    cfg = tmp_path / "{}.json".format(name)
    cfg.write_text(json.dumps(tasks))
    out = tmp_path / name
    proc = run_cli("-c", str(cfg), "-r", str(out), env={"MLMARK_DATASETS": str(datasets)})
    files = sorted(out.glob("*.json")) if out.exists() else []
    return proc, (res.load(files[0]) if files else None)


@pytest.fixture
def droot(tmp_path: Path) -> Path:
    d = tmp_path / "datasets"
    d.mkdir()
    return d


def test_classification_end_to_end_with_offsets_padding_and_cache(tmp_path: Path, droot: Path) -> None:
    base = make_imagenet(droot, colored=True)
    m1001 = write_colour_classifier(tmp_path / "c1001.onnx", 1001, weights="synthetic")
    m1000 = write_colour_classifier(tmp_path / "c1000.onnx", 1000)
    proc, rec = run(tmp_path, [accuracy_task(m1001), accuracy_task(m1000, batch=1, concurrency=2)], droot)
    assert proc.returncode == 0, proc.stderr
    t1, t2 = rec.tasks
    for t in (t1, t2):
        # the oracle is right on every image: the 1001-class offset and the 1000-class one are both handled
        assert (t.metric, t.score, t.units, t.extra_scores) == ("top1", 100.0, "%", {"top5": 100.0})
        acc = t.target_info["accuracy"]
        assert acc["images"] == 15 and acc["dataset"] == "ILSVRC2012"
        assert acc["identity"]["sha256"] == sha256_file(base / "annotations" / "validation.txt")
        assert acc["selection"] == {"images_per_class": 5, "max_images": None}
        assert not t.valid and "15 images scored, not MLMark's 5000 (5 images per class of ILSVRC2012)" in t.notes
    assert t1.target_info["accuracy"]["label_offset"] == 1 and t2.target_info["accuracy"]["label_offset"] == 0
    assert t1.iterations == 4 and t1.target_info["accuracy"]["batches"] == 4  # 15 images, batch 4: last padded
    assert not t1.target_info["accuracy"]["cache"]["hit"] and t2.target_info["accuracy"]["cache"]["hit"]
    assert "concurrency (2)" in t2.target_info["accuracy"]["slots"]
    # synthetic weights never pretend
    assert t1.model["weights"] == "synthetic" and any("synthetic weights: accuracy near chance" in n for n in t1.notes)
    assert not any("synthetic" in n for n in t2.notes)
    assert "100*!" in proc.stdout and "top5" in proc.stdout
    # a second run hits the cache and gives the same scores
    proc2, rec2 = run(tmp_path, [accuracy_task(m1001, max_images=6)], droot, name="R2")
    assert proc2.returncode == 0, proc2.stderr
    (t3,) = rec2.tasks
    assert t3.target_info["accuracy"]["images"] == 6 and t3.score == 100.0


def test_corrupt_image_skipped_and_counted(tmp_path: Path, droot: Path) -> None:
    base = make_imagenet(droot, colored=True)
    (base / "images" / val_name(2)).write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    model = write_colour_classifier(tmp_path / "c.onnx")
    proc, rec = run(tmp_path, [accuracy_task(model)], droot)
    assert proc.returncode == 0, proc.stderr
    (t,) = rec.tasks
    assert t.target_info["accuracy"]["images"] == 14 and t.target_info["accuracy"]["undecodable_skipped"] == 1
    assert "1 images could not be decoded, skipped" in t.notes and not t.valid and t.score == 100.0
    assert "cannot decode" in proc.stderr and val_name(2) in proc.stderr


def test_dataset_problems_refused_before_any_task_runs(tmp_path: Path, droot: Path) -> None:
    model = write_colour_classifier(tmp_path / "c.onnx")
    first = {"target": "onnxruntime", "workload": "mobilenet",
             "params": {"mode": "throughput", "hardware": "cpu", "precision": "fp32", "iterations": 5,
                        "warmup": 0, "model": str(model)}}
    proc, rec = run(tmp_path, [first, accuracy_task(model)], droot)
    assert proc.returncode == 2 and rec is None  # the throughput task did not run either
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "task 2" in lines[0] and "ILSVRC2012_img_val.tar" in lines[0]
    base = make_imagenet(droot)
    with open(str(base / "annotations" / "validation.txt"), "a") as f:
        f.write("extra.JPEG 1001\n")
    proc, rec = run(tmp_path, [accuracy_task(model)], droot)
    assert proc.returncode == 2 and "out of range 0..999" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_subset_params_validated(tmp_path: Path, droot: Path) -> None:
    make_imagenet(droot)
    model = write_colour_classifier(tmp_path / "c.onnx")
    for params, want in [({"images_per_class": 0}, "params.images_per_class must be a positive integer"),
                         ({"mode": "throughput", "max_images": 5}, "params.max_images applies to mode accuracy"),
                         ({"max_images": "all"}, "params.max_images must be a positive integer")]:
        proc, _ = run(tmp_path, [accuracy_task(model, **params)], droot)
        assert proc.returncode == 2 and want in proc.stderr, proc.stderr
    proc, _ = run(tmp_path, [accuracy_task(None, "ssdmobilenet", images_per_class=5)], droot)
    assert proc.returncode == 2 and "images_per_class applies to the ImageNet workloads only" in proc.stderr


def test_ssd_end_to_end_gives_coco_map(tmp_path: Path, droot: Path) -> None:
    base, data = make_coco(droot, n_images=3)
    model = write_tiny_ssd(tmp_path / "ssd.onnx")
    proc, rec = run(tmp_path, [accuracy_task(model, "ssdmobilenet", batch=2)], droot)
    assert proc.returncode == 0, proc.stderr
    (t,) = rec.tasks
    acc = t.target_info["accuracy"]
    assert t.metric == "mAP" and t.units == "%" and "mAP@.5" in t.extra_scores
    assert 0.0 <= t.score <= 100.0 and t.score <= t.extra_scores["mAP@.5"]
    assert acc["images"] == 3 and acc["detections"] > 0 and acc["size_mismatches"] == 0
    assert acc["identity"]["sha256"] == sha256_file(base / "annotations" / "instances_val2017.json")
    assert acc["postprocess"].startswith("host") and t.postprocess.startswith("host")
    assert not t.valid and "3 images scored, not MLMark's 5000 (all images of COCO val2017)" in t.notes


def test_ssd_images_not_matching_the_annotations_are_flagged(tmp_path: Path, droot: Path) -> None:
    base, data = make_coco(droot, n_images=2)
    write_jpeg(base / "images" / data["images"][1]["file_name"], 33, 44, seed=5)  # not the annotated size
    model = write_tiny_ssd(tmp_path / "ssd.onnx")
    proc, rec = run(tmp_path, [accuracy_task(model, "ssdmobilenet", batch=1)], droot)
    assert proc.returncode == 0, proc.stderr
    (t,) = rec.tasks
    assert t.target_info["accuracy"]["size_mismatches"] == 1 and not t.valid
    assert "1 images differ in size from the annotation file: not the annotated images" in t.notes


@pytest.mark.skipif(not (REPO / "workloads" / "models" / "ssd_mobilenet_v1.py").is_file(),
                    reason="the synthetic SSD-MobileNet generator is not there yet")
def test_ssd_synthetic_model_says_so(tmp_path: Path, droot: Path, models_dir: Path) -> None:
    make_coco(droot, n_images=2)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps([accuracy_task(None, "ssdmobilenet", batch=1)]))
    proc = run_cli("-c", str(cfg), "-r", str(tmp_path / "R"),
                   env={"MLMARK_DATASETS": str(droot), "MLMARK_MODELS": str(models_dir)})
    assert proc.returncode == 0, proc.stderr
    (t,) = res.load(sorted((tmp_path / "R").glob("*.json"))[0]).tasks
    assert t.model["weights"] == "synthetic" and "synthetic weights: mAP near 0 is expected" in t.notes


# ---------------------------------------------------------------- a model whose outputs do not fit


class WrongWidthSession(Session):
    """Declares a classifier input and returns outputs of the wrong width."""

    info: Dict[str, Any] = {}

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec("input", ("N", 3, 224, 224), "float32")]

    def output_names(self) -> List[str]:
        return ["logits"]

    def run(self, slot: int, inputs: Any) -> List[np.ndarray]:
        return [np.zeros((inputs["input"].shape[0], 10), dtype=np.float32)]


def test_output_shape_mismatch_is_one_line(tmp_path: Path, droot: Path, monkeypatch: Any) -> None:
    from harness.accuracy import run_accuracy
    from harness.runner import PreparedTask

    make_imagenet(droot)
    monkeypatch.setenv("MLMARK_DATASETS", str(droot))
    params = Params(mode="accuracy", hardware="cpu", precision="fp32", batch=2, concurrency=1, iterations=1)
    task = Task(target="onnxruntime", workload="mobilenet", params=params, source="c.json: task 1", index=0)
    model = ModelFile(path=tmp_path / "m.onnx", sha256="0", weights="unknown", source="task",
                      inputs=[TensorSpec("input", ("N", 3, 224, 224), "float32")],
                      outputs=[TensorSpec("logits", ("N", 1001), "float32")])
    pt = PreparedTask(task=task, target=None, workload=get_workload("mobilenet"), model=model)  # type: ignore
    with pytest.raises(ModelError) as exc:
        run_accuracy(pt, WrongWidthSession(), {})
    msg = str(exc.value)
    assert "\n" not in msg and "c.json: task 1" in msg and "expects an output [2, 1001 or 1000]" in msg
    assert "('logits', [2, 10])" in msg
