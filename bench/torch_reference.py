"""The pytorch target against independent hand-written PyTorch models of the same architectures, on a GPU.

bench/torch_overhead.py compares the target with a hand loop over the *same converted module*, so it
cannot see a conversion that is slower than PyTorch can be. This bench times the target (through the
harness's own timed loop) against models written by hand, in the same run, taking turns every
inference of a round (the order flipping each round), for each workload, batch and mode:

- resnet50: torchvision's ResNet-50 (BN unfolded, as everyone runs it).
- mobilenet: a plain MobileNet v1 module (Conv-BN-ReLU6 blocks), BN unfolded and folded into the
  convolutions, each with TF's SAME padding (the workload's function: 0 before and 1 after on an even
  input at stride 2) and with PyTorch's usual symmetric padding of 1 (a slightly different function,
  shown for orientation only: the goal is measured against the same function).
- ssd-backbone: the same MobileNet v1 base at 300x300 (SSD-MobileNet's feature extractor), the target
  running an ONNX file of that backbone made with the workload's own generator code.

Goal (issue): target fps >= 0.98x the best hand-written form of the same function, at batch 1, 32 and
256, fp32 and fp16 (channels-last), eager and CUDA graph. --profile adds torch.profiler's kernel
table (eager, CUDA time) of the target and of the best reference for one configuration.

    python bench/torch_reference.py [--workloads mobilenet resnet50 ssd-backbone] [--batches 1 32 256]
                                    [--modes ...] [--profile mobilenet 256 "eager fp16 cl"] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from bench.torch_overhead import interleaved, module_loop, pooled  # noqa: E402
from core.fileio import atomic_write_json  # noqa: E402
from harness.results import now  # noqa: E402
from harness.runner import timed_loop  # noqa: E402
from system.info import system_info  # noqa: E402
from targets import get_target  # noqa: E402
from targets.base import LoadRequest  # noqa: E402
from workloads import get_workload  # noqa: E402
from workloads.model_store import resolve_model  # noqa: E402
from workloads.models.graph import tf_same_pads  # noqa: E402
from workloads.models.mobilenet_v1 import CONV_DEFS  # noqa: E402

# name -> (exec_mode, precision, channels_last)
MODES = {
    "eager fp32": ("eager", "fp32", False),
    "graph fp32": ("cuda-graph", "fp32", False),
    "eager fp16 cl": ("eager", "fp16", True),
    "graph fp16 cl": ("cuda-graph", "fp16", True),
}
GOAL = 0.98
SSD_BACKBONE_HW = 300


# -- hand-written models ------------------------------------------------------------------------------


def hand_mobilenet(torch: Any, hw: int, same: bool, bn: bool, backbone_only: bool) -> Any:
    """MobileNet v1 1.0 as a plain nn.Sequential of Conv-(BN)-ReLU6 blocks, written the way one writes it by hand.

    same: TF's SAME padding (a ZeroPad2d before a stride-2 3x3 convolution on an even input, as the
    workload's model computes); else padding 1 everywhere. bn: BatchNorm2d after each convolution, else
    the convolution carries a bias (BN folded).
    """
    nn = torch.nn
    layers: List[Any] = []
    size = hw

    def block(cin: int, cout: int, k: int, stride: int, groups: int) -> None:
        nonlocal size
        if same and k == 3:
            before, after = tf_same_pads(size, k, stride)
            if before == after:
                pad: Any = before
            else:
                layers.append(nn.ZeroPad2d((before, after, before, after)))
                pad = 0
        else:
            pad = (k - 1) // 2
        layers.append(nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(cout, eps=1e-3))
        layers.append(nn.ReLU6(inplace=True))
        size = -(-size // stride)

    stride, depth = CONV_DEFS[0]
    block(3, depth, 3, stride, 1)
    cin = depth
    for stride, depth in CONV_DEFS[1:]:
        block(cin, cin, 3, stride, cin)  # depthwise
        block(cin, depth, 1, 1, 1)  # pointwise
        cin = depth
    if not backbone_only:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, 1001, 1), nn.Flatten()]
    model = nn.Sequential(*layers)
    for m in model.modules():  # random weights and statistics: speed only, but never zeros
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def ssd_backbone_onnx(folder: Path) -> Path:
    """MobileNet v1's base at 300x300, as the ssdmobilenet generator builds it, with its last feature map as output."""
    import onnx

    from workloads.models.graph import GraphBuilder
    from workloads.models.mobilenet_v1 import BN_EPSILON, mobilenet_v1_base

    b = GraphBuilder("ssd_backbone_bench", 0, BN_EPSILON)
    x = b.input("input", 3, SSD_BACKBONE_HW, SSD_BACKBONE_HW)
    out = mobilenet_v1_base(b, x)["Conv2d_13_pointwise"]
    c, h, w = b.shapes[out]
    model = b.finish("ssd_backbone", [(out, ["batch", c, h, w])], {"weights": "synthetic"})
    path = folder / "ssd_backbone.onnx"
    onnx.save(model, str(path))
    return path


def references(torch: Any, workload: str, batch: int) -> Dict[str, Callable[[], Any]]:
    """name -> builder of an independent hand-written model of the workload's architecture."""
    if workload == "resnet50":
        import torchvision

        return {"torchvision resnet50": lambda: torchvision.models.resnet50()}
    hw, backbone = (SSD_BACKBONE_HW, True) if workload == "ssd-backbone" else (224, False)
    return {"hand TF-same, BN": lambda: hand_mobilenet(torch, hw, True, True, backbone),
            "hand TF-same, BN folded": lambda: hand_mobilenet(torch, hw, True, False, backbone),
            "hand pad 1 (other function), BN": lambda: hand_mobilenet(torch, hw, False, True, backbone),
            "hand pad 1 (other function), BN folded": lambda: hand_mobilenet(torch, hw, False, False, backbone)}


def same_function(name: str) -> bool:
    """References that compute the workload's function (the goal is measured against these)."""
    return "other function" not in name


def prepared(torch: Any, build: Callable[[], Any], precision: str, channels_last: bool, batch: int,
             hw: int) -> Tuple[Any, Any]:
    model = build().eval().cuda()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, hw, hw, device="cuda")
    if precision == "fp16":
        model, x = model.half(), x.half()
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return model, x


# -- the target -------------------------------------------------------------------------------------


def target_session(workload: str, batch: int, mode: str, backbone: Optional[Path]) -> Tuple[Any, Any]:
    exec_mode, precision, channels_last = MODES[mode]
    if workload == "ssd-backbone":
        assert backbone is not None
        path, name = backbone, "ssdmobilenet"
        shapes = {"input": (batch, 3, SSD_BACKBONE_HW, SSD_BACKBONE_HW)}
    else:
        w = get_workload(workload)
        model = resolve_model(w)
        path, name = model.path, workload
        shapes = w.input_shapes(model.inputs, batch)
    session = get_target("pytorch").load(LoadRequest(
        model_path=path, workload=name, hardware="gpu", precision=precision, batch=batch, concurrency=1,
        options={"exec_mode": exec_mode, "channels_last": channels_last}, input_shapes=shapes))
    import numpy as np

    feed = {n: np.random.default_rng(0).standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    return session, session.stage(feed)


def candidate(torch: Any, workload: str, batch: int, mode: str, backbone: Optional[Path]) -> Tuple[Any, Any]:
    """The target's own conversion with TF-SAME pads folded into the convolutions (convert.fold_same_pads)."""
    from targets.pytorch.convert import convert_onnx, fold_same_pads, move

    _, precision, channels_last = MODES[mode]
    hw = SSD_BACKBONE_HW if workload == "ssd-backbone" else 224
    path = backbone if workload == "ssd-backbone" else resolve_model(get_workload(workload)).path
    converted = convert_onnx(path, {"input": [batch, 3, hw, hw]})
    fold_same_pads(converted)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model, _ = move(converted, torch.device("cuda"), dtype, channels_last, bias_kernel=True)
    x = torch.randn(batch, 3, hw, hw, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


CANDIDATE = "candidate: pads folded"


def rounds_for(batch: int, base: int) -> int:
    return base if batch == 1 else max(20, base * 8 // batch)


def bench_one(torch: Any, workload: str, batch: int, mode: str, base_rounds: int,
              backbone: Optional[Path], with_candidate: bool = False) -> Dict[str, Any]:
    exec_mode, precision, channels_last = MODES[mode]
    hw = SSD_BACKBONE_HW if workload == "ssd-backbone" else 224
    session, staged = target_session(workload, batch, mode, backbone)
    loops: Dict[str, Callable[[int], Any]] = {"target": lambda n: timed_loop(session, staged, n, 1)}
    for name, build in references(torch, workload, batch).items():
        model, x = prepared(torch, build, precision, channels_last, batch, hw)
        loops[name] = module_loop(torch, model, x, graph=exec_mode == "cuda-graph")
    if with_candidate:
        model, x = candidate(torch, workload, batch, mode, backbone)
        loops[CANDIDATE] = module_loop(torch, model, x, graph=exec_mode == "cuda-graph")
    runs = interleaved(loops, 1, rounds_for(batch, base_rounds))
    fps = {name: pooled(run, batch)["fps"] for name, run in runs.items()}
    same = {k: v for k, v in fps.items() if k not in ("target", CANDIDATE) and same_function(k)}
    best = max(same, key=lambda k: same[k])
    row = {"workload": workload, "batch": batch, "mode": mode, "target_fps": fps["target"], "best": best,
           "best_fps": same[best], "ratio": fps["target"] / same[best], "fps": fps,
           "p50_ms": {k: pooled(r, batch)["p50_ms"] for k, r in runs.items()},
           "target_info": {k: v for k, v in session.info.items() if k != "onnx_ops"}}
    row["met"] = row["ratio"] >= GOAL
    session.close()
    del loops, runs
    gc.collect()
    torch.cuda.empty_cache()
    return row


def profile(torch: Any, workload: str, batch: int, mode: str, backbone: Optional[Path],
            iterations: int = 20, with_candidate: bool = False) -> Dict[str, List[Dict[str, Any]]]:
    """Top kernels by CUDA time over `iterations` eager inferences: the target and each same-function reference."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    _, precision, channels_last = MODES[mode]
    hw = SSD_BACKBONE_HW if workload == "ssd-backbone" else 224
    eager_mode = mode.replace("graph", "eager")
    session, staged = target_session(workload, batch, eager_mode, backbone)
    runners: Dict[str, Callable[[], Any]] = {"target": lambda: session.run(0, staged)}
    for name, build in references(torch, workload, batch).items():
        if same_function(name):
            model, x = prepared(torch, build, precision, channels_last, batch, hw)
            runners[name] = (lambda m, xx: (lambda: m(xx)))(model, x)
    if with_candidate:
        model, x = candidate(torch, workload, batch, eager_mode, backbone)
        runners[CANDIDATE] = (lambda m, xx: (lambda: m(xx)))(model, x)
    tables = {}
    for name, run in runners.items():
        with torch.inference_mode():
            for _ in range(3):
                run()
            torch.cuda.synchronize()
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(iterations):
                    run()
                torch.cuda.synchronize()
        rows = []
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if t:
                rows.append({"kernel": e.key[:110], "calls": e.count // iterations,
                             "ms_per_inference": t / 1000.0 / iterations})
        rows.sort(key=lambda r: -r["ms_per_inference"])
        tables[name] = rows
    session.close()
    return tables


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["mobilenet", "resnet50", "ssd-backbone"],
                    choices=["mobilenet", "resnet50", "ssd-backbone"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--rounds", type=int, default=300, help="turns of each loop at batch 1 (batch B: N*8/B, min 20)")
    ap.add_argument("--profile", nargs=3, metavar=("WORKLOAD", "BATCH", "MODE"), action="append", default=[],
                    help="also print the kernel table of one configuration (repeatable)")
    ap.add_argument("--candidate", action="store_true",
                    help="also time the target's conversion with TF-SAME pads folded into the convolutions")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/torch_reference.py: needs a CUDA GPU (torch {} sees none)".format(torch.__version__),
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlmark-bench-") as tmp:
        backbone = ssd_backbone_onnx(Path(tmp)) if "ssd-backbone" in args.workloads or any(
            p[0] == "ssd-backbone" for p in args.profile) else None
        profiles = {}
        for workload, batch, mode in args.profile:
            profiles["{} b{} {}".format(workload, batch, mode)] = profile(torch, workload, int(batch), mode, backbone,
                                                                         with_candidate=args.candidate)
        rows = []
        for workload in args.workloads:
            for batch in args.batches:
                for mode in args.modes:
                    rows.append(bench_one(torch, workload, batch, mode, args.rounds, backbone, args.candidate))
                    r = rows[-1]
                    print("{workload} b{batch} {mode}: target {target_fps:.1f}, best {best} {best_fps:.1f} "
                          "({ratio:.3f})".format(**r), file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name()
    for key, tables in profiles.items():
        print("\nkernels, {} (eager, ms per inference, top 12):".format(key))
        for name, table in tables.items():
            total = sum(r["ms_per_inference"] for r in table)
            print("  {} (all kernels {:.3f} ms)".format(name, total))
            for r in table[:12]:
                print("    {ms_per_inference:8.3f}  x{calls:<4} {kernel}".format(**r))
    print("\npytorch target vs independent hand-written models, {}, torch {}; goal target/best >= {}".format(
        gpu, torch.__version__, GOAL))
    print("{:<13} {:>5} {:<14} {:>11} {:>11} {:>7}  {:<28} {}".format(
        "workload", "batch", "mode", "target fps", "best fps", "ratio", "best hand-written (same function)", "goal"))
    for r in rows:
        print("{workload:<13} {batch:>5} {mode:<14} {target_fps:>11.1f} {best_fps:>11.1f} {ratio:>7.3f}  {best:<28} "
              "{goal}".format(goal="met" if r["met"] else "NOT met", **r))
    others = [(r, k, v) for r in rows for k, v in r["fps"].items() if k != "target" and (
        not same_function(k) or k == CANDIDATE)]
    if others:
        print("\nfor orientation: symmetric padding (another function at stride 2), and any candidate, fps:")
        for r, k, v in others:
            print("  {workload} b{batch} {mode}: {k} {v:.1f} ({x:.3f}x the target)".format(
                k=k, v=v, x=v / r["target_fps"], **r))
    out = args.out or REPO / "Results" / "bench-torch-reference-{}.json".format(time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "torch_reference", "date": now(), "gpu": gpu, "torch": torch.__version__,
                            "system": system_info(), "rows": rows, "profiles": profiles})
    print("\nwritten: {}".format(out))
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
