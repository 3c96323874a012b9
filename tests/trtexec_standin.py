#!/usr/bin/env python3
"""A stand-in for TensorRT's trtexec, for the tests only: no TensorRT, no GPU, made-up timings.

It prints what the chosen release's trtexec prints, line for line where the trtexec target reads
it, after that release's samples/common/sampleReporting.cpp, sampleOptions.cpp, sampleEngines.cpp,
sampleDevice and trtexec.cpp (NVIDIA/TensorRT, release/8.2 ... release/11.1), written here
independently of targets/trtexec/ so that the parser is tested against the formats, not against
itself. It takes only the flags that release takes (an unknown one fails as trtexec fails), honours
those the target uses, and writes the files it is asked for: the engine (a JSON header and padding,
smaller for fp16 and int8), the layer information JSON (IEngineInspector's format), the per-layer
profile JSON and the timing cache.

Settings, from the environment:
  TRTEXEC_STANDIN_RELEASE   the release to imitate, e.g. 8.2.1, 8.4.3, 8.5.2, 8.6.1, 10.3.0, 11.0.0
                            (or --standin-release=X as the first argument)
  TRTEXEC_STANDIN_GPU       device name (default "NVIDIA Orin"); TRTEXEC_STANDIN_CC compute capability (8.7)
  TRTEXEC_STANDIN_FAIL      build | kill-build | run | kill-run | garble | nogpu
  TRTEXEC_STANDIN_FALLBACK  the first N fp16/int8 builds fall back to fp32 kernels (TensorRT issue 3160)
  TRTEXEC_STANDIN_WIDE      the first N fp16/int8 builds report every layer in the precision asked but keep
                            fp32-sized weights: an engine only the size rule of the precision check catches
  TRTEXEC_STANDIN_STATE     a file counting builds across calls (needed by FALLBACK and WIDE)
  TRTEXEC_STANDIN_CALLS     a file to which each call's arguments are appended, one JSON list per line
  TRTEXEC_STANDIN_GPU_MS    GPU compute time of one image in fp32, in ms (default 0.05)

Never used outside tests/.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# -- the release ---------------------------------------------------------------------------------------


def _release() -> Tuple[int, int, int]:
    text = os.environ.get("TRTEXEC_STANDIN_RELEASE", "10.3.0")
    if len(sys.argv) > 1 and sys.argv[1].startswith("--standin-release="):
        text = sys.argv.pop(1).split("=", 1)[1]
    parts = [int(p) for p in text.split(".")[:3]] + [0, 0]
    return parts[0], parts[1], parts[2]


REL = _release()


def at_least(major: int, minor: int = 0) -> bool:
    return REL[:2] >= (major, minor)


def version_number() -> int:
    """NV_TENSORRT_VERSION: major*1000+minor*100+patch in 8.x, major*10000+minor*100+patch from 10."""
    if at_least(10):
        return REL[0] * 10000 + REL[1] * 100 + REL[2]
    return REL[0] * 1000 + REL[1] * 100 + REL[2]


# Flags each release takes (sampleOptions.cpp, getAndDelOption calls), limited to those a test can meet.
COMMON = {"onnx", "saveEngine", "loadEngine", "device", "useDLACore", "allowGPUFallback", "iterations", "duration",
          "warmUp", "avgRuns", "percentile", "exportProfile", "exportLayerInfo", "exportTimes", "profilingVerbosity",
          "timingCacheFile", "shapes", "minShapes", "optShapes", "maxShapes", "verbose", "dumpProfile",
          "separateProfileRun", "useSpinWait", "noDataTransfers", "useCudaGraph", "streams"}


def known_flags() -> set:
    flags = set(COMMON)
    if not at_least(11):
        flags |= {"fp16", "int8", "calib", "best"}
    if not at_least(10):
        flags |= {"workspace", "explicitBatch", "buildOnly"}
    if at_least(8, 4):
        flags |= {"memPoolSize"}
    if at_least(8, 6):
        flags |= {"skipInference", "infStreams"}
    if at_least(10):
        flags |= {"stronglyTyped"}
    if at_least(11):
        flags |= {"noSpinWait", "noCudaGraph", "includeDataTransfers"}
    return flags


# -- printing as the sample logger does ----------------------------------------------------------------


def _stamp() -> str:
    return time.strftime("[%m/%d/%Y-%H:%M:%S]")


def say(severity: str, text: str = "") -> None:
    sys.stdout.write("{} [{}] {}\n".format(_stamp(), severity, text))


def info(text: str = "") -> None:
    say("I", text)


def warn(text: str) -> None:
    say("W", text)


def error(text: str) -> None:
    say("E", text)


def g(x: float) -> str:
    """A float as std::ostream prints it by default (6 significant digits, %g)."""
    return "%g" % x


CMDLINE = " ".join(["trtexec"] + sys.argv[1:])


def passed() -> int:
    sys.stdout.write("&&&& PASSED TensorRT.trtexec [TensorRT v{}] # {}\n".format(version_number(), CMDLINE))
    return 0


def failed() -> int:
    sys.stdout.write("&&&& FAILED TensorRT.trtexec [TensorRT v{}] # {}\n".format(version_number(), CMDLINE))
    return 1


def killed() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# -- arguments -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Tuple[Dict[str, str], List[str]]:
    args: Dict[str, str] = {}
    unknown: List[str] = []
    flags = known_flags()
    for a in argv:
        if not a.startswith("--"):
            unknown.append(a)
            continue
        name, _, value = a[2:].partition("=")
        if name not in flags:
            unknown.append(a)
        args[name] = value
    return args, unknown


def setup_failure_of_build() -> int:
    error("[TRT] 4: [network.cpp::validate::3100] Error Code 4: Internal Error (Network has dynamic or shape inputs, "
          "but no optimization profile has been defined.)")
    error("Engine could not be created from network")
    error("Building engine failed")
    error("Failed to create engine from model or file.")
    error("Engine set up failed")
    return failed()


# -- the engine file -----------------------------------------------------------------------------------

ENGINE_BYTES = {"fp32": 40000, "fp16": 20000, "int8": 11000}


def write_engine(path: str, header: Dict[str, object]) -> int:
    data = json.dumps(header).encode() + b"\n"
    size = ENGINE_BYTES["fp32" if header.get("wide") else str(header["precision"])]
    data += b"\0" * max(0, size - len(data))
    Path(path).write_bytes(data)
    return len(data)


def read_engine(path: str) -> Optional[Dict[str, object]]:
    try:
        first = Path(path).read_bytes().split(b"\n", 1)[0]
        header = json.loads(first.decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("standin_engine") == 1 else None


def layers(precision: str, detailed: bool) -> object:
    """IEngineInspector's JSON: layers with their tensors' formats (detailed), or their names only."""
    fmt = {"fp32": "Row major linear FP32", "fp16": "Channel major FP16 format where channel % 2 == 0",
           "int8": "Four wide channel vectorized row major Int8 format"}[precision]
    first = "Row major linear FP32"
    names = ["conv1", "conv2", "conv3", "pool", "fc"]
    if not detailed:
        return {"Layers": names, "Bindings": ["input", "output"]}
    out = [{"Name": "input reformat", "LayerType": "Reformat",
            "Inputs": [{"Name": "input", "Format/Datatype": first}],
            "Outputs": [{"Name": "input_r", "Format/Datatype": fmt}]}]
    for name in names:
        kind, param = (("CaskConvolution", "Convolution") if name.startswith("conv") else
                       ("CaskPooling", "Pooling") if name == "pool" else ("CaskGemmMatrixMultiply", "MatrixMultiply"))
        out.append({"Name": name, "LayerType": kind, "ParameterType": param,
                    "Inputs": [{"Name": name + "_in", "Format/Datatype": fmt}],
                    "Outputs": [{"Name": name + "_out", "Format/Datatype": fmt}]})
    return {"Layers": out, "Bindings": ["input", "output"]}


def next_build() -> int:
    state = os.environ.get("TRTEXEC_STANDIN_STATE")
    if not state:
        return 1
    path = Path(state)
    n = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


# -- timings as trtexec computes them (sampleReporting.cpp) -------------------------------------------


def percentile(sorted_values: List[float], p: float) -> float:
    n = len(sorted_values)
    exclude = int((1 - p / 100) * n)
    return sorted_values[max(n - 1 - exclude, 0)]


def median(sorted_values: List[float]) -> float:
    n = len(sorted_values)
    m = n // 2
    return sorted_values[m] if n % 2 else (sorted_values[m - 1] + sorted_values[m]) / 2


def perf(values: List[float], percentiles: List[float]) -> Tuple[str, float, float]:
    """The summary's "min = ... ms" text, the median and the coefficient of variance (%)."""
    s = sorted(values)
    mean = sum(s) / len(s)
    text = "min = {} ms, max = {} ms, mean = {} ms, median = {} ms".format(g(s[0]), g(s[-1]), g(mean), g(median(s)))
    for p in percentiles:
        text += ", percentile({}%) = {} ms".format(g(p), g(percentile(s, p)))
    var = sum((v - mean) ** 2 for v in s) / len(s)
    cv = math.sqrt(var) / mean * 100 if mean else float("inf")
    return text, median(s), cv


def percentiles_of(args: Dict[str, str]) -> List[float]:
    given = args.get("percentile")
    if not at_least(8, 5):
        if given is None:
            return [99.0]
        head = ""
        for ch in given:  # std::stof reads the leading number and ignores the rest
            if ch.isdigit() or ch in ".-+eE":
                head += ch
            else:
                break
        return [float(head)]
    if given is None:
        return [90.0, 95.0, 99.0]
    return [float(p) for p in given.split(",")]


def run_inference(args: Dict[str, str], engine: Dict[str, object]) -> None:
    batch = int(engine["batch"])
    precision = str(engine["precision"])
    iterations = int(args.get("iterations", 10))
    duration = float(args.get("duration", 3))
    warmup_ms = float(args.get("warmUp", 200))
    streams = int(args.get("infStreams", args.get("streams", 1)) or 1)
    if at_least(11):
        transfers = "includeDataTransfers" in args
        graph = "noCudaGraph" not in args
    else:
        transfers = "noDataTransfers" not in args
        graph = "useCudaGraph" in args
    per_image = float(os.environ.get("TRTEXEC_STANDIN_GPU_MS", "0.05"))
    gpu_ms = per_image * batch * {"fp32": 1.0, "fp16": 0.55, "int8": 0.35}[precision]
    rng = random.Random(iterations * 7919 + batch)
    queries = iterations * streams
    if duration > 0:
        queries = max(queries, int(duration * 1000 / gpu_ms) * streams)
    compute = [gpu_ms * (1 + 0.02 * rng.random()) for _ in range(queries)]
    h2d = [(0.01 * batch * (1 + 0.1 * rng.random())) if transfers else 0.0 for _ in range(queries)]
    d2h = [(0.002 * (1 + 0.1 * rng.random())) if transfers else 0.0 for _ in range(queries)]
    enqueue = [(0.004 if graph else 0.03) * (1 + 0.1 * rng.random()) for _ in range(queries)]
    latency = [a + b + c for a, b, c in zip(h2d, compute, d2h)]
    wall_ms = sum(latency) / streams * 1.01
    warmups = max(1, int(warmup_ms / gpu_ms)) if warmup_ms > 0 else 0
    pcts = percentiles_of(args)

    info("Starting inference")
    if os.environ.get("TRTEXEC_STANDIN_FAIL") == "kill-run":
        killed()
    if os.environ.get("TRTEXEC_STANDIN_FAIL") == "run":
        error("[TRT] 1: [executionContext.cpp::enqueueV3::2666] Error Code 1: Cuda Runtime (an illegal memory access "
              "was encountered)")
        error("Error occurred during inference")
        sys.exit(failed())
    info("Warmup completed {} queries over {} ms".format(warmups, g(warmup_ms)))
    info("Timing trace has {} queries over {} s".format(queries, g(wall_ms / 1000)))
    info()
    info("=== Trace details ===")
    avg = int(args.get("avgRuns", 10))
    info("Trace averages of {} runs:".format(avg))
    limit = 200 * avg
    idx = 0
    count = 0
    sums = [0.0, 0.0, 0.0]
    while idx < queries:
        if at_least(10) and queries > 2 * limit and idx == limit:
            info("... Omitting {} lines".format(queries - 2 * limit))
            idx = queries - limit
            count = 0
            sums = [0.0, 0.0, 0.0]
        sums[0] += compute[idx]
        sums[1] += latency[idx]
        sums[2] += enqueue[idx]
        idx += 1
        count += 1
        if count == avg:
            if at_least(8, 4):
                info("Average on {} runs - GPU latency: {} ms - Host latency: {} ms (enqueue {} ms)".format(
                    avg, g(sums[0] / avg), g(sums[1] / avg), g(sums[2] / avg)))
            else:
                info("Average on {} runs - GPU latency: {} ms - Host latency: {} ms (end to end {} ms, enqueue {} "
                     "ms)".format(avg, g(sums[0] / avg), g(sums[1] / avg), g(2 * sums[1] / avg), g(sums[2] / avg)))
            count = 0
            sums = [0.0, 0.0, 0.0]
    info()
    info("=== Performance summary ===")
    throughput = queries / wall_ms * 1000  # explicit batch: trtexec counts queries, not images
    info("Throughput: {} qps".format(g(throughput)))
    lat_text, _, _ = perf(latency, pcts)
    if os.environ.get("TRTEXEC_STANDIN_FAIL") == "garble":
        lat_text = lat_text.replace("mean =", "average =")
    info("Latency: " + lat_text)
    if not at_least(8, 4):
        info("End-to-End Host Latency: " + perf([2 * v for v in latency], pcts)[0])
    enq_text, enq_median, _ = perf(enqueue, pcts)
    info("Enqueue Time: " + enq_text)
    h2d_text, h2d_median, _ = perf(h2d, pcts)
    info("H2D Latency: " + h2d_text)
    gpu_text, gpu_median, gpu_cv = perf(compute, pcts)
    info("GPU Compute Time: " + gpu_text)
    d2h_text, d2h_median, _ = perf(d2h, pcts)
    info("D2H Latency: " + d2h_text)
    info("Total Host Walltime: {} s".format(g(wall_ms / 1000)))
    info("Total GPU Compute Time: {} s".format(g(sum(compute) / 1000)))
    if enq_median > 0.8 * gpu_median:
        warn("* Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized.")
        warn("  If you are using --noCudaGraph, removing it may increase throughput." if at_least(11) else
             "  If not already in use, --useCudaGraph (utilize CUDA graphs where possible) may increase the "
             "throughput.")
    for name, m in (("host-to-device transfers for the inputs", h2d_median),
                    ("device-to-host transfers for the outputs", d2h_median)):
        if m >= gpu_median:
            warn("* Throughput may be bound by {} rather than GPU Compute and the GPU may be under-utilized.".format(
                name))
            warn("  Consider removing --includeDataTransfers to disable data transfers and potentially increase "
                 "throughput." if at_least(11) else "  Add --noDataTransfers flag to disable data transfers.")
    if at_least(8, 4) and gpu_cv > (2.5 if at_least(11) else 1.0):
        warn("* GPU compute time is unstable, with coefficient of variance = {}%.".format(g(gpu_cv)))
        warn("  If not already in use, locking GPU clock frequency may improve the stability." if at_least(11) else
             "  If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the "
             "stability.")
    if at_least(8, 6) and streams > 1:
        warn("* Multiple inference streams are used. Latencies may not be accurate since inferences may run in "
             "  parallel. Please use \"Throughput\" as the performance metric instead.")
    info("Explanations of the performance metrics are printed in the verbose logs.")
    info()
    if "exportProfile" in args:
        layer_names = ["conv1", "conv2", "conv3", "pool", "fc"]
        share = [0.3, 0.3, 0.25, 0.05, 0.1]
        entries = [{"count": iterations}]
        for name, part in zip(layer_names, share):
            total = part * sum(compute[:iterations])
            entry = {"name": name, "timeMs": total, "averageMs": total / iterations}
            if at_least(8, 4):
                entry["medianMs"] = total / iterations
            entry["percentage"] = part * 100
            entries.append(entry)
        Path(args["exportProfile"]).write_text(json.dumps(entries))


# -- main ----------------------------------------------------------------------------------------------


def main() -> int:
    calls = os.environ.get("TRTEXEC_STANDIN_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\n")
    sys.stdout.write("&&&& RUNNING TensorRT.trtexec [TensorRT v{}] # {}\n".format(version_number(), CMDLINE))
    args, unknown = parse_args(sys.argv[1:])
    if unknown:
        for a in unknown:
            name, _, value = a.partition("=")
            error("Unknown option: {} {}".format(name, value))
        sys.stdout.write("=== Model Options ===\n  --onnx=<file> ...\n")  # the help text, unprefixed
        return failed()
    if "onnx" not in args and "loadEngine" not in args:
        sys.stdout.write("=== Model Options ===\n  --onnx=<file> ...\n")
        error("Model missing or format not recognized")
        return failed()
    info("=== Model Options ===")
    info("Format: " + ("ONNX" if "onnx" in args else "*"))
    info("Model: " + args.get("onnx", ""))
    info("=== Build Options ===")
    info("Precision: FP32" + ("+FP16" if "fp16" in args else "") + ("+INT8" if "int8" in args else ""))
    info()

    gpu = os.environ.get("TRTEXEC_STANDIN_GPU", "NVIDIA Orin")
    cc = os.environ.get("TRTEXEC_STANDIN_CC", "8.7")
    if at_least(10):
        info("=== Device Information ===")
        if os.environ.get("TRTEXEC_STANDIN_FAIL") == "nogpu":
            info("Cannot find any available devices (GPUs)!")
            return 1
        info("Available Devices: ")
        info('  Device 0: "{}" UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555'.format(gpu))
        info("Selected Device: " + gpu)
        info("Selected Device ID: 0")
        info("Selected Device UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555")
    else:
        if os.environ.get("TRTEXEC_STANDIN_FAIL") == "nogpu":
            sys.stderr.write("Cuda failure: no CUDA-capable device is detected\n")
            sys.stderr.flush()
            os.abort()
        info("=== Device Information ===")
        info("Selected Device: " + gpu)
    info("Compute Capability: " + cc)
    info("SMs: 16")
    if not at_least(8, 6):
        info("Compute Clock Rate: 1.3 GHz")
    info("Device Global Memory: 30593 MiB")
    info("Shared Memory per SM: 164 KiB")
    info("Memory Bus Width: 256 bits (ECC disabled)")
    if at_least(8, 6):
        info("Application Compute Clock Rate: 1.3 GHz")
        info("Application Memory Clock Rate: 1.3 GHz")
        info()
        info("Note: The application clock rates do not reflect the actual clock rates that the GPU is currently "
             "running at.")
    else:
        info("Memory Clock Rate: 1.3 GHz")
    info()
    info("TensorRT version: {}.{}.{}".format(*REL))
    if at_least(8, 6):
        info("Loading standard plugins")
    info("[TRT] [MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 30, GPU 5000 (MiB)")

    if "loadEngine" in args:
        path = args["loadEngine"]
        if not os.path.isfile(path):
            error("Error opening engine file: " + path)
            error("Failed to create engine from model or file.")
            error("Engine set up failed")
            return failed()
        engine = read_engine(path)
        if engine is None or engine.get("release") != "{}.{}.{}".format(*REL):
            error("[TRT] 1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization (Serialization "
                  "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            error("Engine deserialization failed")
            error("Engine set up failed")
            return failed()
        if at_least(10):
            info("Loaded engine with size: {} MiB".format(g(os.path.getsize(path) / 2 ** 20)))
            info("Engine deserialized in 0.0123 sec.")
        elif at_least(8, 4):
            info("Engine loaded in 0.0201 sec.")
            info("Engine deserialized in 0.0123 sec.")
        else:
            info("Engine loaded in 0.0201 sec.")
    else:
        onnx = args["onnx"]
        if not os.path.isfile(onnx):
            error("[TRT] ModelImporter.cpp:726: Failed to parse ONNX model from file: " + onnx)
            error("Failed to parse onnx file")
            error("Parsing model failed")
            error("Failed to create engine from model or file.")
            error("Engine set up failed")
            return failed()
        fail = os.environ.get("TRTEXEC_STANDIN_FAIL")
        info("[TRT] ----------------------------------------------------------------")
        info("[TRT] Input filename:   " + onnx)
        if fail == "kill-build":
            killed()
        if fail == "build":
            return setup_failure_of_build()
        if at_least(11) or "stronglyTyped" in args:
            precision = "fp16" if onnx.endswith(".fp16.onnx") else "int8" if onnx.endswith(".qdq.onnx") else "fp32"
            if at_least(10) and not at_least(11) and ("fp16" in args or "int8" in args):
                warn("Invalid usage, setting fp16 mode is not allowed if graph is strongly typed. Disabling "
                     "BuilderFlag::kFP16.")
        else:
            precision = "int8" if "int8" in args else "fp16" if "fp16" in args else "fp32"
        if "int8" in args and not at_least(11) and "calib" not in args and not onnx.endswith(".qdq.onnx"):
            warn("[TRT] Calibrator is not being used. Users must provide dynamic range for all tensors that are not "
                 "Int32 or Bool.")
        if "calib" in args and not os.path.isfile(args["calib"]):
            error("[TRT] Calibration cache file not found: " + args["calib"])
        batch = 1
        if "shapes" in args:
            spec = args["shapes"].split(",")[0]
            dims = spec.rsplit(":", 1)[1]
            batch = int(dims.split("x")[0])
        else:
            warn("Dynamic dimensions required for input: input, but no shapes were provided. Automatically overriding "
                 "shape to: 1x3x224x224")
        built, wide = precision, False
        if precision in ("fp16", "int8"):
            n = next_build()
            if n <= int(os.environ.get("TRTEXEC_STANDIN_FALLBACK", "0")):
                built = "fp32"  # fp16 and int8 are permissions: this build chose fp32 kernels everywhere
            wide = n <= int(os.environ.get("TRTEXEC_STANDIN_WIDE", "0"))
        if "timingCacheFile" in args:
            cache = Path(args["timingCacheFile"])
            if cache.is_file():
                info("[TRT] Loaded {} bytes of timing cache from {}".format(cache.stat().st_size, cache))
            cache.write_bytes(b"timing cache of the stand-in")
        header = {"standin_engine": 1, "release": "{}.{}.{}".format(*REL), "precision": built, "batch": batch,
                  "gpu": gpu, "dla": args.get("useDLACore"), "wide": wide}
        size = write_engine(args["saveEngine"], header) if "saveEngine" in args else ENGINE_BYTES[built]
        if at_least(10):
            info("Engine built in 1.234 sec.")
            info("Created engine with size: {} MiB".format(g(size / 2 ** 20)))
        else:
            info("[TRT] Engine generation completed in 1.2 seconds.")
            info("Engine built in 1.234 sec.")
        engine = header
        if "exportLayerInfo" in args:
            detailed = args.get("profilingVerbosity") == "detailed"
            Path(args["exportLayerInfo"]).write_text(json.dumps(layers(built, detailed)))
        if "buildOnly" in args or "skipInference" in args:
            if at_least(8, 6):
                info("Skipped inference phase since --skipInference is added.")
            elif at_least(8, 4):
                info("Skipped inference phase since --buildOnly is added.")
            return passed()
    run_inference(args, engine)
    return passed()


if __name__ == "__main__":
    sys.exit(main())
