"""Preprocessing speed: decode + preprocess images/s on one core and on all cores, then a cached second run.

Generates ImageNet-like JPEGs (500x375, about 110 KB each, as most ILSVRC2012 validation images)
unless --images names a folder of JPEGs, then, in a private cache folder:

1. cold, 1 process: decode + crop/resize into the cache, then normalise every image into the
   model's float32 NCHW input (what an accuracy run feeds); in this process, with the pool
   workers' allocator settings;
2. cold, all cores: the same with the process pool;
3. warm: the cache hit (memory-mapped) + the same normalisation, as a second accuracy run does.

Goal: warm >= 10x faster than cold on all cores. The warm run reads a file just written, so it
comes from the page cache, as a second run soon after the first usually does.

    python bench/preprocess.py [--count 1000] [--images DIR] [--workload mobilenet] [--workers N] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from core.fileio import atomic_write_json
from harness.results import now
from system.info import system_info
from workloads import get_workload
from workloads.preprocess import PreprocessSpec, available_cores, cached_preprocess, tune_allocator

FEED_BATCH = 32


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


def feed_all(cache: Any, spec: PreprocessSpec) -> float:
    """Normalise every cached image into float32 NCHW batches, as the accuracy loop does; seconds."""
    t0 = time.perf_counter()
    n = cache.pixels.shape[0]
    checksum = 0.0
    for a in range(0, n, FEED_BATCH):
        x = spec.normalize(np.asarray(cache.pixels[a:a + FEED_BATCH]), "float32", "NCHW")
        checksum += float(x[0, 0, 0, 0])  # touch the result so nothing is skipped
    return time.perf_counter() - t0


def run(paths: List[Path], spec: PreprocessSpec, workers: int, cache_dir: Path, tag: str) -> Dict[str, Any]:
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
    ap.add_argument("--workload", default="mobilenet", help="whose preprocessing (mobilenet, resnet50, ssdmobilenet)")
    ap.add_argument("--workers", type=int, default=None, help="processes for the parallel run (default: all cores)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    spec = get_workload(args.workload).preprocess
    cores = args.workers or available_cores()
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
        # The 1-process run decodes in this process: give it the pool workers' allocator settings,
        # so that the two cold runs differ only in the number of processes.
        tune_allocator()
        rows = []
        for label, workers, tag in (("cold, 1 process", 1, "serial"), ("cold, {} processes".format(cores), cores,
                                                                         "parallel"), ("warm (cached)", cores,
                                                                                       "parallel")):
            row = run(paths, spec, workers, tmp / "cache", tag)
            row["run"] = label
            rows.append(row)
    finally:
        shutil.rmtree(str(tmp), ignore_errors=True)
    serial, parallel, warm = rows
    speedup = warm["images_per_s"] / parallel["images_per_s"]
    scaling = parallel["images_per_s"] / serial["images_per_s"]
    print("\npreprocessing: {}; {} cores; images: {}".format(spec.describe(), cores, source))
    print("{:<22} {:>7} {:>14} {:>9} {:>9} {:>12}".format("run", "images", "preprocess s", "feed s", "total s",
                                                         "images/s"))
    for r in rows:
        print("{run:<22} {images:>7} {preprocess_s:>14.3f} {feed_s:>9.3f} {total_s:>9.3f} {images_per_s:>12.1f}".format(
            **r))
    print("\nparallel scaling: {:.2f}x on {} cores; cached second run: {:.1f}x faster than cold on all cores "
          "(goal >= 10x: {})".format(scaling, cores, speedup, "met" if speedup >= 10 else "NOT met"))
    out = args.out or Path(__file__).resolve().parent.parent / "Results" / "bench-preprocess-{}.json".format(
        time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "preprocess", "date": now(), "system": system_info(), "workload": args.workload,
                            "preprocess": spec.describe(), "cores": cores, "images": source, "rows": rows,
                            "parallel_scaling": round(scaling, 3), "cached_speedup": round(speedup, 2),
                            "pass": speedup >= 10})
    print("written: {}".format(out))
    return 0 if speedup >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
