"""Preprocessing speed: OpenCV against the numpy resampler it replaced, then the preprocessing cache.

Generates ImageNet-like JPEGs (500x375, as most ILSVRC2012 validation images, about 80 KB each)
unless --images names a folder of JPEGs, then, for each workload, in this process with OpenCV on
one thread (cv2.setNumThreads(1)) and the pool workers' allocator settings:

1. geometry stage, cold, 1 process: every image once through read + decode + crop + resize +
   planar RGB rows (what a cache build does per image, less the write), image by image in turn
   (so that other load on the machine slows both alike) by the numpy path
   (Pillow decoding, the numpy resampler below: the implementation that OpenCV replaced, kept here
   for this comparison only) and by the OpenCV path (workloads/preprocess.py). Goal: OpenCV at
   least 2x the numpy path's images/s, counted per CPU second of this process, since the machine
   may be shared (wall-clock images/s are printed too). Decoding alone (Pillow and cv2.imdecode)
   is timed too.
2. the cache: cold, 1 process (decode + crop/resize into the cache, then normalise every image
   into the model's float32 NCHW input, as an accuracy run feeds it); cold, all cores (the
   process pool); warm (the memory-mapped cache hit + the same normalisation, as a second
   accuracy run). Goal: warm at least 10x cold on all cores. The warm run reads a file just
   written, so it comes from the page cache, as a second run soon after the first usually does.
   Also printed, without a goal: the cold build on all cores against the cache hit alone (what the
   cache saves; the normalisation, which both runs do, left out).

    python bench/preprocess.py [--count 1000] [--images DIR] [--workload NAME] [--workers N] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from core.fileio import atomic_write_json
from harness.results import now
from system.info import system_info
from workloads import get_workload, workload_names
from workloads.preprocess import (
    PreprocessSpec,
    available_cores,
    cached_preprocess,
    decode_bgr,
    opencv,
    rgb_planes,
    tune_allocator,
)

FEED_BATCH = 32
GEOMETRY_GOAL = 2.0
CACHE_GOAL = 10.0

# ---------------------------------------------------------------- the numpy path OpenCV replaced (comparison only)
# Separable resampling with per-axis taps. Its area rule for enlarged images is not OpenCV's (up to
# 249 levels apart on some sizes); it is kept for its speed, and tests/test_preprocess.py takes its
# TF 1.x bilinear as the reference that the OpenCV route must match.


def numpy_taps(length: int, out: int, interpolation: str, centers: str, first: int = 0,
               count: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Source indices and weights [count, K] for resampling `length` pixels to `out` (outputs first..first+count)."""
    count = out - first if count is None else count
    o = np.arange(first, first + count, dtype=np.float64)
    scale = length / out
    if interpolation == "area_enlarge":
        i0 = np.minimum(np.floor(o * scale).astype(np.int64), length - 1)
        frac = (o + 1) - (i0 + 1) / scale
        frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
        frac = np.where(i0 >= length - 1, 0.0, frac)
        i1 = np.minimum(i0 + 1, length - 1)
        return np.stack([i0, i1], axis=1), np.stack([1.0 - frac, frac], axis=1).astype(np.float32)
    if interpolation == "area" and scale > 1.0:
        k = int(math.ceil(scale)) + 1
        lo = o * scale
        hi = lo + scale
        j = np.floor(lo).astype(np.int64)[:, None] + np.arange(k)[None, :]
        w = np.clip(np.minimum(j + 1, hi[:, None]) - np.maximum(j, lo[:, None]), 0.0, None)
        j = np.minimum(j, length - 1)
        w /= w.sum(axis=1, keepdims=True)
        return j, w.astype(np.float32)
    if interpolation == "bilinear" and centers == "tf1":
        src = o * scale
    else:  # half-pixel centres
        src = np.maximum((o + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), length - 1)
    frac = np.clip(src - i0, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, length - 1)
    return np.stack([i0, i1], axis=1), np.stack([1.0 - frac, frac], axis=1).astype(np.float32)


def numpy_resample(img: np.ndarray, ty: Tuple[np.ndarray, np.ndarray],
                   tx: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Separable resampling of [H, W, C] with row taps ty and column taps tx; float32 [h, w, C]."""
    iy, wy = ty
    ix, wx = tx
    y0, y1 = int(iy.min()), int(iy.max()) + 1
    x0, x1 = int(ix.min()), int(ix.max()) + 1
    img = img[y0:y1, x0:x1]
    iy = iy - y0
    ix = ix - x0
    rows = img[iy[:, 0]] * wy[:, 0, None, None]
    for k in range(1, iy.shape[1]):
        rows += img[iy[:, k]] * wy[:, k, None, None]
    out = rows[:, ix[:, 0]] * wx[None, :, 0, None]
    for k in range(1, ix.shape[1]):
        out += rows[:, ix[:, k]] * wx[None, :, k, None]
    return out


def numpy_pixels(spec: PreprocessSpec, rgb: np.ndarray) -> np.ndarray:
    """spec's geometry by the numpy resampler: [H, W, 3] uint8 -> [h, w, 3] uint8."""
    in_h, in_w = rgb.shape[:2]
    out_h, out_w = spec.size
    if spec.geometry == "central_crop":
        y0, x0 = int((in_h - in_h * spec.central_fraction) / 2), int((in_w - in_w * spec.central_fraction) / 2)
        win_h, win_w = in_h - 2 * y0, in_w - 2 * x0
        full_h, full_w, first_y, first_x = out_h, out_w, 0, 0
    else:
        y0 = x0 = 0
        win_h, win_w = in_h, in_w
        if spec.geometry == "shorter_side_crop":
            full_h, full_w = (int(spec.shorter_side * in_h / in_w), spec.shorter_side) if in_h > in_w else \
                (spec.shorter_side, int(spec.shorter_side * in_w / in_h))
            first_y, first_x = (full_h - out_h) // 2, (full_w - out_w) // 2
        else:
            full_h, full_w, first_y, first_x = out_h, out_w, 0, 0
    mode = spec.interpolation
    if mode == "area" and (win_h < full_h or win_w < full_w):
        mode = "area_enlarge"
    iy, wy = numpy_taps(win_h, full_h, mode, spec.centers, first=first_y, count=out_h)
    ix, wx = numpy_taps(win_w, full_w, mode, spec.centers, first=first_x, count=out_w)
    out = numpy_resample(rgb, (iy + y0, wy), (ix + x0, wx))
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def numpy_tf1_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """TF 1.x resize_bilinear (align_corners=False) of [H, W, C] uint8 to [h, w, C] uint8, by the numpy resampler."""
    out = numpy_resample(img, numpy_taps(img.shape[0], h, "bilinear", "tf1"),
                         numpy_taps(img.shape[1], w, "bilinear", "tf1"))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pillow_rgb(path: Any) -> np.ndarray:
    """Pillow's decoding as the numpy path did it."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)


# ---------------------------------------------------------------- the benchmark


def make_images(folder: Path, count: int, seed: int = 0) -> List[Path]:
    """count photo-like 500x375 JPEGs: smooth colour fields with texture, about ImageNet's size per file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        # a coarse random grid blown up smoothly, plus noise that gives JPEG something to code
        coarse = Image.fromarray(rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8))
        base = np.asarray(coarse.resize((500, 375), Image.BICUBIC), dtype=np.int16)
        noise = rng.integers(-24, 25, size=base.shape, dtype=np.int16)
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / "bench_{:06d}.JPEG".format(i)
        Image.fromarray(img).save(str(path), quality=90)
        paths.append(path)
    return paths


def images_per_s(paths: List[Path], *pipelines: Any) -> List[Dict[str, Any]]:
    """Images/s of each pipeline over every path once, interleaved image by image, by wall and by CPU time.

    A pipeline is a function of the path, or a tuple of stages (the first takes the path, each next
    one the previous one's result); each stage's CPU ms per image are reported too.
    """
    # Interleaved, so that other load on the machine slows every pipeline alike; CPU time (this
    # process's, OpenCV on one thread) leaves out the time the process waited for a core.
    stages = [p if isinstance(p, tuple) else (p,) for p in pipelines]
    wall = [0.0] * len(stages)
    cpu = [[0.0] * len(s) for s in stages]
    for p in paths:
        for k, steps in enumerate(stages):
            w0 = time.perf_counter()
            value: Any = p
            for j, step in enumerate(steps):
                c0 = time.process_time()
                value = step(value)
                cpu[k][j] += time.process_time() - c0
            wall[k] += time.perf_counter() - w0
    return [{"wall": len(paths) / w, "cpu": len(paths) / sum(c), "stage_cpu_ms": [1e3 * t / len(paths) for t in c]}
            for w, c in zip(wall, cpu)]


def geometry_row(paths: List[Path], spec: PreprocessSpec) -> Dict[str, Any]:
    """Cold images/s of the numpy path and of the OpenCV path, decode + crop + resize + planar RGB rows."""
    numpy_rate, opencv_rate = images_per_s(
        paths, (pillow_rgb, lambda rgb: np.ascontiguousarray(numpy_pixels(spec, rgb).transpose(2, 0, 1))),
        (decode_bgr, lambda bgr: rgb_planes(bgr, spec)))
    return {"numpy_images_per_s": round(numpy_rate["wall"], 1), "opencv_images_per_s": round(opencv_rate["wall"], 1),
            "speedup": round(opencv_rate["wall"] / numpy_rate["wall"], 2),
            "numpy_images_per_cpu_s": round(numpy_rate["cpu"], 1),
            "opencv_images_per_cpu_s": round(opencv_rate["cpu"], 1),
            "speedup_cpu": round(opencv_rate["cpu"] / numpy_rate["cpu"], 2),
            # CPU ms per image: [decode, crop + resize + planar rows]
            "numpy_cpu_ms": [round(t, 3) for t in numpy_rate["stage_cpu_ms"]],
            "opencv_cpu_ms": [round(t, 3) for t in opencv_rate["stage_cpu_ms"]]}


def feed_all(cache: Any, spec: PreprocessSpec) -> float:
    """Normalise every cached image into float32 NCHW batches, as the accuracy loop does; seconds."""
    t0 = time.perf_counter()
    n = cache.pixels.shape[0]
    checksum = 0.0
    for a in range(0, n, FEED_BATCH):
        x = spec.normalize(np.asarray(cache.pixels[a:a + FEED_BATCH]), "float32", "NCHW")
        checksum += float(x[0, 0, 0, 0])  # touch the result so nothing is skipped
    return time.perf_counter() - t0


def cache_run(paths: List[Path], spec: PreprocessSpec, workers: int, cache_dir: Path, tag: str) -> Dict[str, Any]:
    """One pass: cache load-or-build, then feed; timings and rate."""
    t0 = time.perf_counter()
    cache = cached_preprocess(paths, spec, cache_dir, {"bench": tag}, tag, workers=workers,
                              label="preprocess ({} process(es))".format(workers))
    prep = time.perf_counter() - t0
    feed = feed_all(cache, spec)
    total = prep + feed
    return {"hit": cache.hit, "workers": cache.workers if not cache.hit else 0, "images": len(paths),
            "preprocess_s": round(prep, 4), "feed_s": round(feed, 4), "total_s": round(total, 4),
            "images_per_s": round(len(paths) / total, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="images (generated, or the first of --images)")
    ap.add_argument("--images", type=Path, help="a folder of JPEGs to use instead of generated ones")
    ap.add_argument("--workload", action="append", choices=workload_names(),
                    help="whose preprocessing (repeatable; default: every workload)")
    ap.add_argument("--workers", type=int, default=None, help="processes for the parallel run (default: all cores)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    names = args.workload or workload_names()
    cores = args.workers or available_cores()
    cv2 = opencv()
    cv2.setNumThreads(1)  # this process is the "1 process" of both tables: one core
    tune_allocator()  # the pool workers' allocator settings, so the runs differ only in their processes
    tmp = Path(tempfile.mkdtemp(prefix="mlmark-bench-pre-"))
    try:
        if args.images:
            paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))[:args.count]
            source = str(args.images)
        else:
            t0 = time.perf_counter()
            paths = make_images(tmp / "images", args.count)
            source = "generated 500x375 JPEGs (quality 90), {:.0f} KB each on average".format(
                sum(p.stat().st_size for p in paths) / len(paths) / 1024)
            print("generated {} images in {:.1f} s".format(len(paths), time.perf_counter() - t0))
        if not paths:
            print("no JPEG found", file=sys.stderr)
            return 2
        pillow_rate, opencv_rate = images_per_s(paths, pillow_rgb, decode_bgr)
        decode = {"pillow_images_per_s": round(pillow_rate["wall"], 1),
                  "opencv_images_per_s": round(opencv_rate["wall"], 1),
                  "pillow_images_per_cpu_s": round(pillow_rate["cpu"], 1),
                  "opencv_images_per_cpu_s": round(opencv_rate["cpu"], 1)}
        results = []
        for name in names:
            spec = get_workload(name).preprocess
            geometry = geometry_row(paths, spec)
            runs = []
            for label, workers, tag in (("cold, 1 process", 1, "serial"),
                                        ("cold, {} processes".format(cores), cores, "parallel"),
                                        ("warm (cached)", cores, "parallel")):
                row = cache_run(paths, spec, workers, tmp / "cache", "{}-{}".format(name, tag))
                row["run"] = label
                runs.append(row)
            results.append({"workload": name, "preprocess": spec.describe(), "geometry": geometry, "cache": runs,
                            "cached_speedup": round(runs[2]["images_per_s"] / runs[1]["images_per_s"], 2),
                            # what the cache itself saves: the cold build on all cores against the hit
                            # (memory-mapped load and checksum), the normalisation both runs do left out
                            "load_speedup": round(runs[1]["preprocess_s"] / runs[2]["preprocess_s"], 2)})
    finally:
        shutil.rmtree(str(tmp), ignore_errors=True)

    print("\nimages: {}; OpenCV {}; {} cores".format(source, cv2.__version__, cores))
    print("decoding alone, 1 thread, images/s (per CPU second): Pillow {pillow_images_per_s:.1f} "
          "({pillow_images_per_cpu_s:.1f}), cv2.imdecode {opencv_images_per_s:.1f} "
          "({opencv_images_per_cpu_s:.1f})".format(**decode))
    print("\ndecode + crop + resize, cold, 1 process, 1 thread, images/s and in brackets per CPU second\n"
          "(goal: OpenCV >= {:g}x numpy, per CPU second: the machine may be shared)".format(GEOMETRY_GOAL))
    print("{:<14} {:>20} {:>20} {:>18}".format("workload", "numpy", "OpenCV", "speed-up"))
    for r in results:
        g = r["geometry"]
        print("{:<14} {:>8.1f} ({:>8.1f}) {:>8.1f} ({:>8.1f}) {:>6.2f}x ({:>6.2f}x)".format(
            r["workload"], g["numpy_images_per_s"], g["numpy_images_per_cpu_s"], g["opencv_images_per_s"],
            g["opencv_images_per_cpu_s"], g["speedup"], g["speedup_cpu"]))
    print("CPU ms per image, decode + geometry (crop, resize, planar rows):")
    for r in results:
        g = r["geometry"]
        print("{:<14} {:>9.2f} + {:<8.2f} {:>9.2f} + {:<8.2f}".format(r["workload"], *g["numpy_cpu_ms"],
                                                                    *g["opencv_cpu_ms"]))
    print("\npreprocessing cache, images/s including normalisation (goal: warm >= {:g}x cold on all cores)".format(
        CACHE_GOAL))
    print("{:<14} {:>16} {:>18} {:>10} {:>9} {:>12}".format(
        "workload", "cold, 1 process", "cold, {} processes".format(cores), "warm", "warm/cold",
        "build/load"))
    for r in results:
        c = r["cache"]
        print("{:<14} {:>16.1f} {:>18.1f} {:>10.1f} {:>8.1f}x {:>11.1f}x".format(
            r["workload"], c[0]["images_per_s"], c[1]["images_per_s"], c[2]["images_per_s"], r["cached_speedup"],
            r["load_speedup"]))
    print("(build/load: the cold build on all cores against the cache hit, without the normalisation; no goal)")
    passed = all(r["geometry"]["speedup_cpu"] >= GEOMETRY_GOAL and r["cached_speedup"] >= CACHE_GOAL for r in results)
    print("\ngoals: {}".format("met" if passed else "NOT met"))
    out = args.out or Path(__file__).resolve().parent.parent / "Results" / "bench-preprocess-{}.json".format(
        time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "preprocess", "date": now(), "system": system_info(), "opencv": cv2.__version__,
                            "cores": cores, "images": source, "decode": decode, "workloads": results,
                            "goals": {"geometry_speedup": GEOMETRY_GOAL, "cached_speedup": CACHE_GOAL},
                            "pass": passed})
    print("written: {}".format(out))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
