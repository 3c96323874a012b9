"""The pytorch target against a hand-written loop of the same model and mode, on an NVIDIA GPU.

For each workload, batch and mode (eager fp32, eager fp16 channels-last, CUDA graph fp16
channels-last), the target runs through the harness's own timed loop and a hand-written loop runs
the same converted model the way a user would write it (inference mode, .half(), channels-last,
a CUDA graph captured by hand, torch.cuda.synchronize() after each batch). Both get the same
warm-up and the same number of inferences, and they take turns every inference (target hand, hand
target, ...), so that the machine's drift hits both alike; fps, p50 and p95 are over all turns,
and "10 blocks" is the range of the fps ratio over ten consecutive tenths of the run. Eager at
batch 1 is bound by Python and the CPU, whose speed on a shared host can wander by tens of
percent within a second: rounds of tens of inferences each, even alternated, cannot resolve 2 %
there; turns of one inference can. Goal: target/hand fps >= 0.98 and p95 within 2 %. The orientation figures (hand-written,
random weights, PyTorch 2.11 on an H100) are checked as well: ResNet-50 batch 1 fp16 CUDA graph
about 0.92 ms p50, batch 256 fp16 about 14,000 img/s, MobileNet v1 batch 1 fp16 CUDA graph about
0.41 ms p50. --reference adds torchvision's ResNet-50 and the converted one with its conv bias
added the plain way (add_), interleaved, at batch 1 and 256.

    python bench/torch_overhead.py [--workloads resnet50 mobilenet] [--batches 1 256] [--reference] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from core.fileio import atomic_write_json  # noqa: E402
from core.stats import summarize  # noqa: E402
from harness.results import now  # noqa: E402
from harness.runner import load_request, timed_loop  # noqa: E402
from system.info import system_info  # noqa: E402
from targets import get_target  # noqa: E402
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


def module_loop(torch: Any, model: Any, x: Any, graph: bool, device: str = "cuda") -> Any:
    """run(n) -> (latencies, wall): model(x) or a CUDA graph of it, synchronized after each batch."""
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


def hand_written(torch: Any, path: Path, input_name: str, shape: List[int], precision: str, channels_last: bool,
                 graph: bool, device: str = "cuda", bias_kernel: bool = True) -> Any:
    """A loop as a user writes it, over the same converted model; returns run(n) -> (latencies, wall)."""
    converted = convert_onnx(path, {input_name: shape})  # the same ONNX -> torch conversion as the target
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model, _ = move(converted, torch.device(device), dtype, channels_last, bias_kernel=bias_kernel)
    x = torch.randn(shape).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return module_loop(torch, model, x, graph, device)


def interleaved(loops: Dict[str, Callable[[int], Tuple[List[float], float]]], iterations: int,
                rounds: int) -> Dict[str, Dict[str, List[float]]]:
    """Each loop's latencies and per-round wall times, the loops taking turns every `iterations` inferences.

    Every loop gets the same warm-up (a tenth of the rounds, discarded) and the same iterations per
    round, and the order flips every round (A B, B A, ...). With turns of a few inferences, a stall
    of the CPU or a clock change that lasts longer than a turn falls on all loops alike, so the
    pooled numbers compare like with like even where the machine's speed wanders by tens of
    percent from one tenth of a second to the next (as eager batch 1, bound by Python, does).
    """
    names = list(loops)
    out: Dict[str, Dict[str, List[float]]] = {k: {"lat": [], "walls": []} for k in names}
    warm = max(2, rounds // 10)
    gc.collect()
    for r in range(warm + rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            lat, wall = loops[name](iterations)
            if r >= warm:
                out[name]["lat"] += lat
                out[name]["walls"].append(wall)
    return out


def pooled(run: Dict[str, List[float]], batch: int) -> Dict[str, float]:
    """fps (inferences x batch over the summed wall time), p50 and p95 of one loop's pooled latencies."""
    s = summarize(run["lat"])
    return {"fps": len(run["lat"]) * batch / math.fsum(run["walls"]), "p50_ms": s.median_ms, "p95_ms": s.p95_ms}


def block_ratios(a: List[float], b: List[float], blocks: int = 10) -> List[float]:
    """sum(b) / sum(a) over consecutive blocks of rounds: how much the a/b fps ratio moves within the run."""
    n = len(a)
    edges = [n * k // blocks for k in range(blocks + 1)]
    return [math.fsum(b[i:j]) / math.fsum(a[i:j]) for i, j in zip(edges, edges[1:]) if j > i]


def bench_one(torch: Any, workload_name: str, batch: int, mode_name: str, iterations: int, rounds: int,
              hardware: str = "gpu", model_dir: Optional[Path] = None) -> Dict[str, Any]:
    exec_mode, precision, channels_last = MODES[mode_name]
    workload = get_workload(workload_name)
    model = resolve_model(workload, str(model_dir / (workload_name + ".onnx")) if model_dir else None)
    shape = [batch, 3, workload.input_hw[0], workload.input_hw[1]]
    session = get_target("pytorch").load(load_request(workload, model, hardware, precision, batch,
                                                      options={"exec_mode": exec_mode, "channels_last": channels_last}))
    staged = session.stage(workload.make_inputs(session.input_specs(), batch))
    hand = hand_written(torch, model.path, session.input_specs()[0].name, shape, precision, channels_last,
                        graph=exec_mode == "cuda-graph", device="cuda" if hardware == "gpu" else "cpu")
    runs = interleaved({"target": lambda n: timed_loop(session, staged, n, 1), "hand": hand}, iterations, rounds)
    t, h = pooled(runs["target"], batch), pooled(runs["hand"], batch)
    blocks = block_ratios(runs["target"]["walls"], runs["hand"]["walls"])
    row = {"workload": workload_name, "batch": batch, "mode": mode_name, "iterations": iterations * rounds,
           "iterations_per_turn": iterations, "target_fps": t["fps"], "hand_fps": h["fps"],
           "fps_ratio": t["fps"] / h["fps"], "fps_ratio_blocks": [min(blocks), max(blocks)],
           "target_p50_ms": t["p50_ms"], "hand_p50_ms": h["p50_ms"], "target_p95_ms": t["p95_ms"],
           "hand_p95_ms": h["p95_ms"], "p95_diff_pct": 100.0 * (t["p95_ms"] / h["p95_ms"] - 1),
           "target_info": {k: v for k, v in session.info.items() if k != "onnx_ops"}}
    row["pass"] = row["fps_ratio"] >= 0.98 and abs(row["p95_diff_pct"]) <= 2.0
    session.close()
    del session, staged, hand
    gc.collect()
    if hardware == "gpu":
        torch.cuda.empty_cache()
    return row


def resnet_reference(torch: Any, iterations: int, rounds: int, model_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """ResNet-50 fp16 channels-last CUDA graphs by hand, interleaved: torchvision's model (random weights,
    BN unfolded: the kind of loop the orientation figures came from), and the converted ONNX model with
    its conv biases added by the channels-last kernel (as the target runs it) and by conv2d's own add_."""
    try:
        import torchvision
    except Exception:  # absent or built for another torch: the reference is optional
        torchvision = None
    workload = get_workload("resnet50")
    path = resolve_model(workload, str(model_dir / "resnet50.onnx") if model_dir else None).path
    rows = []
    for batch in (1, 256):
        shape = [batch, 3, 224, 224]
        x = torch.randn(shape, device="cuda").half().contiguous(memory_format=torch.channels_last)
        loops = {}
        if torchvision is not None:
            tv = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
            for p in tv.parameters():
                p.requires_grad_(False)
            loops["torchvision resnet50"] = module_loop(torch, tv, x, graph=True)
        # At batch 1 no convolution output reaches BIAS_KERNEL_MIN_ELEMENTS: both variants would be one model.
        variants = [("converted, as the target runs it", True)] + \
            ([("converted, every bias by conv2d's add_", False)] if batch > 1 else [])
        for label, kernel in variants:
            loops[label] = hand_written(torch, path, "input", shape, "fp16", True, graph=True, bias_kernel=kernel)
        runs = interleaved(loops, iterations, rounds_for(rounds, batch))
        for label, run in runs.items():
            rows.append(dict(model=label, batch=batch, **pooled(run, batch)))
        del loops, x
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def rounds_for(rounds: int, batch: int) -> int:
    """Fewer turns at large batches: each inference is long and the GPU sets its pace."""
    return rounds if batch == 1 else max(24, rounds * 8 // batch)


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
    ap.add_argument("--iterations", type=int, default=1, help="inferences per turn of each loop")
    ap.add_argument("--rounds", type=int, default=1500,
                    help="turns of each loop at batch 1 (batch B: max(24, N*8/B)), after a tenth as many for warm-up")
    ap.add_argument("--reference", action="store_true",
                    help="also time ResNet-50 fp16 channels-last CUDA graphs by hand: torchvision's model, and the "
                         "converted one with its conv bias added by the channels-last kernel and by add_")
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
                rows.append(bench_one(torch, workload, batch, mode, args.iterations, rounds_for(args.rounds, batch),
                                      args.hardware, args.model_dir))
                r = rows[-1]
                print("{workload} b{batch} {mode}: target {target_fps:.1f} fps, hand {hand_fps:.1f} fps".format(**r),
                      file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name() if args.hardware == "gpu" else "CPU"
    print("\npytorch target vs hand-written loop, same converted model, {}; torch {}; the two loops take turns "
          "every {} inference(s); numbers over all turns".format(gpu, torch.__version__, args.iterations))
    head = "{:<10} {:>5} {:<14} {:>6} {:>11} {:>11} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8}  {}".format(
        "workload", "batch", "mode", "iters", "target fps", "hand fps", "ratio", "10 blocks", "t p50 ms", "h p50 ms",
        "t p95 ms", "h p95 ms", "p95 diff", "goal (>=0.98, +-2%)")
    print(head)
    for r in rows:
        print("{workload:<10} {batch:>5} {mode:<14} {iterations:>6} {target_fps:>11.1f} {hand_fps:>11.1f} "
              "{fps_ratio:>7.4f} {blocks:>11} {target_p50_ms:>9.3f} {hand_p50_ms:>9.3f} {target_p95_ms:>9.3f} "
              "{hand_p95_ms:>9.3f} {p95_diff_pct:>+7.2f}%  {ok}".format(
                  ok="met" if r["pass"] else "NOT met",
                  blocks="{:.3f}-{:.3f}".format(*r["fps_ratio_blocks"]), **r))
    checks = orientation(rows)
    if checks:
        print("\norientation (issue's hand-written H100 figures; the target must not be slower):")
        for c in checks:
            print("  {workload} b{batch} {mode}: {what} {target:.3f} vs {goal}: {v}".format(
                v="met" if c["met"] else "NOT met", **c))
    reference = resnet_reference(torch, args.iterations, args.rounds, args.model_dir) \
        if args.reference and args.hardware == "gpu" else []
    if reference:
        print("\nreference, ResNet-50 by hand, fp16 channels-last CUDA graph, interleaved:")
    for ref in reference:
        print("  {model:<42} b{batch:<4} {fps:>9.1f} img/s  p50 {p50_ms:.3f} ms  p95 {p95_ms:.3f} ms".format(**ref))
    out = args.out or REPO / "Results" / "bench-torch-overhead-{}.json".format(time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "torch_overhead", "date": now(), "gpu": gpu, "torch": torch.__version__,
                            "system": system_info(), "rows": rows, "orientation": checks,
                            "reference": reference})
    print("\nwritten: {}".format(out))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
