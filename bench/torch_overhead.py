"""The pytorch target against a hand-written loop of the same model and mode, on an NVIDIA GPU.

For each workload, batch and mode (eager fp32, eager fp16 channels-last, CUDA graph fp16
channels-last), the target runs through the harness's own timed loop and a hand-written loop runs
the same converted model the way a user would write it (inference mode, .half(), channels-last,
a CUDA graph captured by hand, torch.cuda.synchronize() after each batch). Rounds alternate
(target, hand, hand, target, ...) so drift in clocks hits both alike. Goal: target/hand fps >= 0.98
and p95 within 2 %. The orientation figures (hand-written, random weights, PyTorch 2.11 on an H100)
are checked as well: ResNet-50 batch 1 fp16 CUDA graph about 0.92 ms p50, batch 256 fp16 about
14,000 img/s, MobileNet v1 batch 1 fp16 CUDA graph about 0.41 ms p50.

    python bench/torch_overhead.py [--workloads resnet50 mobilenet] [--batches 1 256] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from harness.fileio import atomic_write_json  # noqa: E402
from harness.results import now  # noqa: E402
from harness.runner import timed_loop  # noqa: E402
from harness.stats import summarize  # noqa: E402
from harness.sysinfo import system_info  # noqa: E402
from targets import get_target  # noqa: E402
from targets.base import LoadRequest  # noqa: E402
from targets.pytorch.convert import convert_onnx, move  # noqa: E402
from workloads import get_workload  # noqa: E402
from workloads.model_store import resolve_model  # noqa: E402

# name -> (exec_mode, precision, channels_last)
MODES = {
    "eager fp32": ("eager", "fp32", False),
    "eager fp16 cl": ("eager", "fp16", True),
    "graph fp16 cl": ("cuda-graph", "fp16", True),
}
# (workload, batch, mode) -> (what, value, comparison): orientation figures from the issue
ORIENTATION = {
    ("resnet50", 1, "graph fp16 cl"): ("p50 ms", 0.92, "<="),
    ("resnet50", 256, "eager fp16 cl"): ("fps", 14000.0, ">="),
    ("resnet50", 256, "graph fp16 cl"): ("fps", 14000.0, ">="),
    ("mobilenet", 1, "graph fp16 cl"): ("p50 ms", 0.41, "<="),
}


def hand_written(torch: Any, path: Path, input_name: str, shape: List[int], precision: str, channels_last: bool,
                 graph: bool, device: str = "cuda") -> Any:
    """A loop as a user writes it, over the same converted model; returns run(n) -> (latencies, wall)."""
    converted = convert_onnx(path, {input_name: shape})  # the same ONNX -> torch conversion as the target
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model, _ = move(converted, torch.device(device), dtype, channels_last)
    x = torch.randn(shape).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = None
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            model(x)
        step = g.replay

    def run(n: int) -> Tuple[List[float], float]:
        clock, sync = time.perf_counter, (torch.cuda.synchronize if device == "cuda" else lambda: None)
        lat = [0.0] * n
        with torch.inference_mode():
            start = clock()
            for i in range(n):
                t0 = clock()
                if step is not None:
                    step()
                else:
                    model(x)
                sync()
                lat[i] = clock() - t0
            wall = clock() - start
        return lat, wall

    return run


def bench_one(torch: Any, workload_name: str, batch: int, mode_name: str, iterations: int, rounds: int,
              hardware: str = "gpu", model_dir: Optional[Path] = None) -> Dict[str, Any]:
    exec_mode, precision, channels_last = MODES[mode_name]
    workload = get_workload(workload_name)
    model = resolve_model(workload, str(model_dir / (workload_name + ".onnx")) if model_dir else None)
    shape = [batch, 3, workload.input_hw[0], workload.input_hw[1]]
    session = get_target("pytorch").load(LoadRequest(
        model_path=model.path, workload=workload_name, hardware=hardware, precision=precision, batch=batch,
        concurrency=1, options={"exec_mode": exec_mode, "channels_last": channels_last}))
    staged = session.stage(workload.make_inputs(session.input_specs(), batch))
    hand = hand_written(torch, model.path, session.input_specs()[0].name, shape, precision, channels_last,
                        graph=exec_mode == "cuda-graph", device="cuda" if hardware == "gpu" else "cpu")
    warm = max(10, iterations // 5)
    timed_loop(session, staged, warm, 1)
    hand(warm)
    t_lat: List[float] = []
    h_lat: List[float] = []
    t_wall = h_wall = 0.0
    for r in range(rounds):
        for who in (("t", "h") if r % 2 == 0 else ("h", "t")):
            if who == "t":
                lat, wall = timed_loop(session, staged, iterations, 1)
                t_lat += lat
                t_wall += wall
            else:
                lat, wall = hand(iterations)
                h_lat += lat
                h_wall += wall
    n = iterations * rounds
    t_fps, h_fps = n * batch / t_wall, n * batch / h_wall
    ts, hs = summarize(t_lat), summarize(h_lat)
    row = {"workload": workload_name, "batch": batch, "mode": mode_name, "iterations": n,
           "target_fps": t_fps, "hand_fps": h_fps, "fps_ratio": t_fps / h_fps,
           "target_p50_ms": ts.median_ms, "hand_p50_ms": hs.median_ms,
           "target_p95_ms": ts.p95_ms, "hand_p95_ms": hs.p95_ms, "p95_diff_pct": 100.0 * (ts.p95_ms / hs.p95_ms - 1),
           "target_info": {k: v for k, v in session.info.items() if k != "onnx_ops"}}
    row["pass"] = row["fps_ratio"] >= 0.98 and abs(row["p95_diff_pct"]) <= 2.0
    session.close()
    del session, staged, hand
    gc.collect()
    if hardware == "gpu":
        torch.cuda.empty_cache()
    return row


def torchvision_reference(torch: Any, iterations: int) -> List[Dict[str, Any]]:
    """torchvision's ResNet-50 (random weights, BN unfolded) by hand, fp16 channels-last CUDA graph: the
    kind of loop the orientation figures came from, measured on this machine in this run."""
    try:
        import torchvision
    except Exception:  # absent or built for another torch: the reference is optional
        return []
    rows = []
    for batch in (1, 256):
        model = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.requires_grad_(False)
        x = torch.randn(batch, 3, 224, 224, device="cuda").half().contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            model(x)
        n = iterations if batch == 1 else max(20, iterations * 8 // batch)
        for _ in range(max(10, n // 5)):
            g.replay()
        torch.cuda.synchronize()
        lat = []
        start = time.perf_counter()
        for _ in range(n * 2):
            t0 = time.perf_counter()
            g.replay()
            torch.cuda.synchronize()
            lat.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        s = summarize(lat)
        rows.append({"model": "torchvision resnet50", "batch": batch, "fps": n * 2 * batch / wall,
                     "p50_ms": s.median_ms, "p95_ms": s.p95_ms})
        del g, model, x
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def orientation(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The target's own numbers against the issue's hand-written H100 figures."""
    checks = []
    for r in rows:
        key = (r["workload"], r["batch"], r["mode"])
        if key not in ORIENTATION:
            continue
        what, ref, op = ORIENTATION[key]
        value = r["target_p50_ms"] if what == "p50 ms" else r["target_fps"]
        ok = value <= ref * 1.0 if op == "<=" else value >= ref
        checks.append({"workload": key[0], "batch": key[1], "mode": key[2], "what": what, "target": value,
                       "reference": ref, "goal": "{} {}".format(op, ref), "met": ok})
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["resnet50", "mobilenet"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--iterations", type=int, default=200, help="iterations per round and loop at batch 1")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds (more, shorter rounds average drift)")
    ap.add_argument("--torchvision", action="store_true",
                    help="also time torchvision's ResNet-50 by hand (fp16 channels-last CUDA graph) for reference")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--model-dir", type=Path, default=None, help="use DIR/<workload>.onnx instead of the workload's model")
    ap.add_argument("--hardware", choices=("gpu", "cpu"), default="gpu",
                    help="cpu: a smoke test of this script (eager fp32 only); the goal is about the GPU")
    args = ap.parse_args()
    import torch

    if args.hardware == "cpu":
        args.modes = ["eager fp32"]
    elif not torch.cuda.is_available():
        print("bench/torch_overhead.py: needs a CUDA GPU (torch {} sees none)".format(torch.__version__),
              file=sys.stderr)
        return 2
    rows = []
    for workload in args.workloads:
        for batch in args.batches:
            for mode in args.modes:
                # Fewer iterations at large batches: each one is long and steady.
                iters = args.iterations if batch == 1 else max(20, args.iterations * 8 // batch)
                rounds = args.rounds if batch == 1 else max(4, args.rounds - 4)
                rows.append(bench_one(torch, workload, batch, mode, iters, rounds, args.hardware, args.model_dir))
                r = rows[-1]
                print("{workload} b{batch} {mode}: target {target_fps:.1f} fps, hand {hand_fps:.1f} fps".format(**r),
                      file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name() if args.hardware == "gpu" else "CPU"
    print("\npytorch target vs hand-written loop, same converted model, {}; torch {}".format(gpu, torch.__version__))
    head = "{:<10} {:>5} {:<14} {:>6} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}  {}".format(
        "workload", "batch", "mode", "iters", "target fps", "hand fps", "ratio", "t p50 ms", "h p50 ms", "t p95 ms",
        "h p95 ms", "p95 diff", "goal (>=0.98, +-2%)")
    print(head)
    for r in rows:
        print("{workload:<10} {batch:>5} {mode:<14} {iterations:>6} {target_fps:>11.1f} {hand_fps:>11.1f} "
              "{fps_ratio:>7.4f} {target_p50_ms:>9.3f} {hand_p50_ms:>9.3f} {target_p95_ms:>9.3f} {hand_p95_ms:>9.3f} "
              "{p95_diff_pct:>+7.2f}%  {ok}".format(ok="met" if r["pass"] else "NOT met", **r))
    checks = orientation(rows)
    if checks:
        print("\norientation (issue's hand-written H100 figures; the target must not be slower):")
        for c in checks:
            print("  {workload} b{batch} {mode}: {what} {target:.3f} vs {goal}: {v}".format(
                v="met" if c["met"] else "NOT met", **c))
    reference = torchvision_reference(torch, args.iterations) if args.torchvision and args.hardware == "gpu" else []
    for ref in reference:
        print("  reference, hand-written {model} fp16 channels-last CUDA graph b{batch}: {fps:.1f} img/s, "
              "p50 {p50_ms:.3f} ms, p95 {p95_ms:.3f} ms".format(**ref))
    out = args.out or REPO / "Results" / "bench-torch-overhead-{}.json".format(time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "torch_overhead", "date": now(), "gpu": gpu, "torch": torch.__version__,
                            "system": system_info(), "rows": rows, "orientation": checks,
                            "torchvision_reference": reference})
    print("\nwritten: {}".format(out))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
