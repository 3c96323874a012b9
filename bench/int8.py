"""INT8 against fp32 on the onnxruntime CPU target: throughput, p95 latency and output agreement, in one run.

For each workload (mobilenet and resnet50 by default) the script calibrates a private copy of the
workload's model (utility/calibrate.py's code, entropy by default) on the first N images of the
installed dataset, or, when none is installed, on generated images (and says so); then it times
fp32 and int8 tasks through the harness's own prepare/load/measure (harness/runner.py), so the
numbers are what `mlmark` would report, in alternating rounds (fp32, int8, int8, fp32, ...) so that
drift hits both alike. Agreement is measured on the calibration images: cosine similarity of the
logits and top-1 agreement between the fp32 and int8 sessions of the target (ONNX Runtime's optimized
graph), and of the Q/DQ arithmetic as written; with a dataset, top-1 against the labels too.

Synthetic weights make agreement a check of the pipeline only; with pretrained weights
(utility/get_models.py) it is the real fp32-vs-int8 comparison. The table says which.
Nothing is written into models/ or utility/: the copy, its table and its Q/DQ model live in a
temporary folder.

    python bench/int8.py [--workloads mobilenet resnet50] [--count 100] [--iterations 200] [--rounds 2]
                         [--method entropy] [--batch 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from core.errors import DatasetError, MLMarkError
from core.fileio import atomic_write_json
from core.stats import summarize
from harness.config import parse_task
from harness.results import now
from harness.runner import load, measure, prepare
from system.info import system_info
from workloads import get_workload
from workloads.calibrate import DEFAULT_METHOD, METHODS, agreement, calibrate, load_images, ort_runner
from workloads.model_store import resolve_model

log = logging.getLogger("mlmark.bench")


def generated_images(folder: Path, n: int, seed: int = 0) -> Path:
    """n JPEGs of smooth colour fields with edges and texture, sized like ImageNet photos (no dataset needed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(300, 480)), int(rng.integers(360, 640))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.zeros((h, w, 3), dtype=np.float32)
        for c in range(3):  # a few low-frequency waves per channel: sky, walls, gradients
            for _ in range(3):
                fy, fx = rng.uniform(0.002, 0.02, size=2)
                img[..., c] += rng.uniform(20, 60) * np.sin(fy * y * 6.283 + fx * x * 6.283 + rng.uniform(0, 6.283))
            img[..., c] += rng.uniform(60, 190)
        for _ in range(int(rng.integers(2, 6))):  # solid shapes: object edges
            y0, x0 = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            img[y0:y0 + int(rng.integers(20, h // 2)), x0:x0 + int(rng.integers(20, w // 2))] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, size=img.shape)  # sensor noise and texture
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(str(folder / "gen_{:04d}.jpg".format(i)),
                                                                   quality=90)
    return folder


def dataset_available(workload: Any, count: int) -> bool:
    """True if the workload's dataset is installed with at least count images in the harness's selection."""
    from workloads.datasets import check_dataset

    try:
        return check_dataset(workload, None, count).selected >= count
    except DatasetError:
        return False


def bench_workload(name: str, count: int, iterations: int, rounds: int, method: str, batch: int,
                   work: Path) -> Dict[str, Any]:
    workload = get_workload(name)
    original = resolve_model(workload)
    folder = work / name
    folder.mkdir()
    model = folder / "model.onnx"
    shutil.copyfile(str(original.path), str(model))  # the Q/DQ model goes beside the copy, not into models/
    if dataset_available(workload, count):
        images: Optional[Path] = None
        source = "{}: the first {} images in the harness's order".format(workload.dataset, count)
    else:
        images = generated_images(folder / "images", count)
        source = "generated ({} synthetic JPEGs: no {} dataset installed)".format(count, workload.dataset)
    t0 = time.perf_counter()
    cal = calibrate(name, images=images, count=count, model=model, method=method,
                    table_out=folder / "CalibrationTable_{}".format(name))
    calib_s = time.perf_counter() - t0

    tasks = [parse_task({"target": "onnxruntime", "workload": name, "params": {
        "mode": "throughput", "hardware": "cpu", "precision": p, "batch": batch, "concurrency": 1,
        "iterations": iterations, "warmup": 1.0, "model": str(model)}}, "bench/int8.py: {} {}".format(name, p), i)
        for i, p in enumerate(("fp32", "int8"))]
    prepared = prepare(tasks)
    sessions = [load(pt) for pt in prepared]
    walls = [0.0, 0.0]
    lats: List[List[float]] = [[], []]
    for r in range(rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            m = measure(prepared[k], sessions[k])
            walls[k] += m.wall_s
            lats[k] += m.latencies_s
    n = iterations * rounds

    # Agreement on the calibration images, through the target's sessions (ONNX Runtime's int8 kernels)
    # and through the Q/DQ graph as written.
    imgs = load_images(workload, images, count)
    spec = sessions[0].input_specs()[0]
    x = workload.preprocess.normalize(imgs.pixels, "float32", "NCHW")
    single = [x[i:i + 1] for i in range(x.shape[0])]
    target = agreement(lambda b: sessions[0].run(0, {spec.name: b}), lambda b: sessions[1].run(0, {spec.name: b}),
                       single, True)
    arithmetic = agreement(ort_runner(model, spec.name, optimize=False),
                           ort_runner(cal.qdq_path, spec.name, optimize=False), single, True)
    accuracy = None
    if images is None:  # labels exist: top-1 of both against them, on the same images
        accuracy = _top1_vs_labels(workload, count, imgs.names, sessions, spec.name, single)
    int8_info = sessions[1].info.get("int8", {})
    split = sessions[0].info.get("thread_split")
    for s in sessions:
        s.close()
    fps = [n * batch / w for w in walls]
    p95 = [summarize(v).p95_ms for v in lats]
    return {
        "workload": name, "weights": original.weights, "model": str(original.path), "model_sha256": original.sha256,
        "images": source, "calibration": {"method": method, "seconds": round(calib_s, 1), "tensors": len(cal.table.scales),
                                          "table_sha256": cal.record["table"]["sha256"], "qdq": int8_info},
        "batch": batch, "iterations": n, "rounds": rounds,
        "fp32_fps": fps[0], "int8_fps": fps[1], "speedup": fps[1] / fps[0],
        "fp32_p95_ms": p95[0], "int8_p95_ms": p95[1],
        "agreement_target": target, "agreement_qdq_arithmetic": arithmetic, "top1_vs_labels": accuracy,
        "thread_split": split,
    }


def _top1_vs_labels(workload: Any, count: int, names: List[str], sessions: List[Any], input_name: str,
                    single: List[np.ndarray]) -> Dict[str, float]:
    from workloads.datasets import check_dataset
    from workloads.metrics import TopK

    labels = {s.name: s.label for s in check_dataset(workload, None, count).samples}
    scores = [TopK(), TopK()]
    for name, x in zip(names, single):
        for k in (0, 1):
            scores[k].add(np.asarray(sessions[k].run(0, {input_name: x})[0]), [labels[name]])
    return {"fp32_top1": scores[0].percent()[0], "int8_top1": scores[1].percent()[0], "images": scores[0].count}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["mobilenet", "resnet50"], choices=["mobilenet", "resnet50"])
    ap.add_argument("--count", type=int, default=100, help="calibration images (and agreement images)")
    ap.add_argument("--iterations", type=int, default=200, help="timed iterations per round and precision")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of fp32 and int8")
    ap.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="mlmark-bench-int8-") as tmp:
            for name in args.workloads:
                print("{}: calibrating and measuring...".format(name), file=sys.stderr, flush=True)
                rows.append(bench_workload(name, args.count, args.iterations, args.rounds, args.method, args.batch,
                                           Path(tmp)))
    except MLMarkError as exc:
        print("bench/int8.py: error: {}".format(exc), file=sys.stderr)
        return 2
    print("{:<10} {:<9} {:>5} {:>9} {:>9} {:>7} {:>10} {:>10} {:>9} {:>8} {:>9} {:>8}".format(
        "workload", "weights", "batch", "fp32 fps", "int8 fps", "x", "fp32 p95", "int8 p95", "cos min", "top-1 =",
        "cos Q/DQ", "top-1 ="))
    for r in rows:
        t, a = r["agreement_target"], r["agreement_qdq_arithmetic"]
        print("{:<10} {:<9} {:>5} {:>9.1f} {:>9.1f} {:>7.2f} {:>8.2f}ms {:>8.2f}ms {:>9.4f} {:>7.1f}% {:>9.4f} {:>7.1f}%"
              .format(r["workload"], r["weights"], r["batch"], r["fp32_fps"], r["int8_fps"], r["speedup"],
                      r["fp32_p95_ms"], r["int8_p95_ms"], t["cosine_min"], 100 * t["top1_agreement"],
                      a["cosine_min"], 100 * a["top1_agreement"]))
    print()
    for r in rows:
        print("{}: {} calibration on {}, {} tensors, {:.0f} s; {} timed iterations per precision ({}); "
              "agreement on {} images".format(r["workload"], r["calibration"]["method"], r["images"],
                                              r["calibration"]["tensors"], r["calibration"]["seconds"], r["iterations"],
                                              r["thread_split"], r["agreement_target"]["images"]))
        if r["top1_vs_labels"]:
            acc = r["top1_vs_labels"]
            print("{}: top-1 against the labels on the same {} images: fp32 {:.1f} %, int8 {:.1f} %".format(
                r["workload"], acc["images"], acc["fp32_top1"], acc["int8_top1"]))
        if r["weights"] == "synthetic":
            print("{}: synthetic weights: the agreement proves the int8 pipeline, it is not an accuracy comparison "
                  "(install pretrained weights with utility/get_models.py for that)".format(r["workload"]))
        else:
            print("{}: {} weights: this is the real fp32-vs-int8 comparison".format(r["workload"], r["weights"]))
    print("cos min / top-1 =: the onnxruntime target's int8 session (optimized graph) against fp32; "
          "cos Q/DQ: the Q/DQ graph's own arithmetic (graph optimizations off)")
    out = args.out or Path(__file__).resolve().parent.parent / "Results" / "bench-int8-{}.json".format(
        time.strftime("%Y%m%d-%H%M%S"))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    atomic_write_json(out, {"bench": "int8", "date": now(), "system": system_info(), "args": settings, "rows": rows})
    print("\nwritten: {}".format(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
