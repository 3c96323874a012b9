"""`mlmark selftest --tensorrt`: what to run first on a board with TensorRT, before any score.

It builds a small generated model and each workload's model at each precision the board runs fast (Nano:
fp32, fp16; Xavier, Orin: also int8) through the tensorrt target itself (engine cache, build child,
precision check, native loop), runs them, and checks on every engine:

- outputs: the engine's against ONNX Runtime's on the CPU for the same inputs: cosine similarity at least
  0.999 in fp32 and 0.99 in fp16 (the least over the images); in int8 the top-1 class agrees with fp32
  ONNX Runtime for at least 90 % of the images (classification) or the cosine is at least 0.98
  (detection, whose raw outputs are boxes and scores);
- layer precisions: the engine's precision check (inspector, else engine size) holds what was asked;
- timing: the native loop's median GPU time within 2 % of trtexec's GPU compute median on the same
  engine, when trtexec is found (--trtexec, PATH or /usr/src/tensorrt/bin);
- the cache: a second load of the engine hits the engine cache and takes under 1 s.

One table with PASS, FAIL or SKIP per line; a JSON report (--json, else Results/). Exit status 0 when
nothing failed, 1 when something did, 2 when it cannot run (no TensorRT, no GPU, no ONNX Runtime).

    mlmark selftest --tensorrt [--quick] [--workloads mobilenet,...] [--precisions fp16,...] [--json PATH]
                               [--trtexec PATH] [--workspace-mb N] [--verbose]

int8 on the workloads' models needs their calibration data (`python utility/calibrate.py --workload ...`);
without it those lines are skipped and say so. The small model's int8 engine is built from a Q/DQ model
the self-test quantizes itself, from ranges measured on its own inputs. DLA is not checked: the tensorrt
target runs on the GPU only.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from core.errors import MLMarkError, ModelError, TargetUnavailable
from core.fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger("mlmark.selftest")

SCHEMA = "mlmark-tensorrt-selftest/1"
REPO = Path(__file__).resolve().parents[2]
COSINE_MIN = {"fp32": 0.999, "fp16": 0.99}
INT8_TOP1_MIN = 0.9  # share of images whose top-1 class is fp32 ONNX Runtime's
INT8_DETECTION_COSINE_MIN = 0.98  # chosen, not measured on a board: int8 boxes and scores stay close to fp32's
TRTEXEC_TOLERANCE = 0.02
CACHE_HIT_MAX_S = 1.0
IMAGES = 8  # compared one at a time, at batch 1: the engines latency tasks use
TIMED_ITERATIONS = 500
WORKLOADS = ("mobilenet", "resnet50", "ssdmobilenet")
SMALL = "small"
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Line:
    """One row of the table."""

    model: str
    precision: str
    check: str
    verdict: str  # PASS, FAIL or SKIP
    value: str = ""
    limit: str = ""
    detail: str = ""


@dataclass
class Subject:
    """A model the self-test builds: its file, the workload it stands for, and how to feed and judge it."""

    name: str
    path: Path
    workload: str  # the workload whose engine cache entry and kind it uses
    kind: str  # "classification" or "detection"
    inputs: Callable[[Any], Dict[str, np.ndarray]]  # specs -> one batch-1 image per call
    int8_model: Optional[Path] = None  # the small model's own Q/DQ version


@dataclass
class Report:
    """Everything the run found, as the JSON report holds it."""

    lines: List[Line] = field(default_factory=list)
    environment: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add(self, line: Line) -> Line:
        self.lines.append(line)
        log.info("%s %s %s: %s %s", line.model, line.precision, line.check, line.verdict, line.value)
        return line

    def counts(self) -> Dict[str, int]:
        return {v: sum(1 for l in self.lines if l.verdict == v) for v in (PASS, FAIL, SKIP)}

    def to_dict(self) -> Dict[str, Any]:
        return {"schema": SCHEMA, "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "environment": self.environment, "notes": self.notes, "counts": self.counts(),
                "passed": self.counts()[FAIL] == 0, "lines": [asdict(l) for l in self.lines]}


# -- comparisons ------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened."""
    from workloads.calibrate import cosine as _cosine

    return _cosine(a, b)


def judge_outputs(precision: str, kind: str, trt: Sequence[Sequence[np.ndarray]],
                  ort: Sequence[Sequence[np.ndarray]]) -> Line:
    """The outputs line for one engine: per-image outputs of the engine and of ONNX Runtime, in output order."""
    cos = [cosine(np.concatenate([np.asarray(o, np.float64).ravel() for o in t]),
                  np.concatenate([np.asarray(o, np.float64).ravel() for o in r])) for t, r in zip(trt, ort)]
    worst = min(cos) if cos else 0.0
    if precision == "int8" and kind == "classification":
        same = sum(int(np.argmax(t[0]) == np.argmax(r[0])) for t, r in zip(trt, ort))
        share = same / len(trt) if trt else 0.0
        return Line("", precision, "top-1 agrees with onnxruntime fp32", PASS if share >= INT8_TOP1_MIN else FAIL,
                    "{:.0f} %".format(100 * share), ">= {:.0f} %".format(100 * INT8_TOP1_MIN),
                    "{} of {} images; cosine min {:.4f}".format(same, len(trt), worst))
    limit = INT8_DETECTION_COSINE_MIN if precision == "int8" else COSINE_MIN[precision]
    return Line("", precision, "outputs vs onnxruntime (cosine)", PASS if worst >= limit else FAIL,
                "{:.5f}".format(worst), ">= {:g}".format(limit),
                "least over {} images, mean {:.5f}".format(len(cos), float(np.mean(cos)) if cos else 0.0))


# -- trtexec ----------------------------------------------------------------------------------------


def trtexec_probe(given: Optional[str]) -> Optional[Any]:
    """The trtexec to compare with, probed (the trtexec target's search: --trtexec, PATH, JetPack's place); None when
    there is none and none was given (a given one that cannot run is a one-line refusal)."""
    from targets.trtexec import tool

    if given:
        return tool.probe(tool.locate(given, "--trtexec"))
    try:
        return tool.probe(tool.locate(None))
    except TargetUnavailable:
        return None


def trtexec_gpu_median_ms(probe: Any, engine: Path, iterations: int, label: str) -> float:
    """trtexec's GPU compute median on an engine file, in ms, timed as the trtexec target times (its stable
    settings); RunError when trtexec fails, LogFormatError when its log cannot be read."""
    from targets.trtexec.target import TimedRun, time_engine

    settings = TimedRun(iterations=iterations, warmup_ms=500)
    _, parsed, _ = time_engine(probe, engine, None, None, settings, engine.parent / "logs", "selftest", label)
    return float(parsed.statistics["gpu_compute"].median_ms)


# -- models -----------------------------------------------------------------------------------------


def small_model(folder: Path) -> Path:
    """A small classifier with a dynamic batch (convolution, ReLU, pooling, fully connected), written once."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.3).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "mlmark_selftest_small",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    data = model.SerializeToString()
    path = folder / "small.onnx"
    if not path.is_file() or path.read_bytes() != data:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    onnx.checker.check_model(str(path))
    return path


def small_qdq_model(model: Path, images: Sequence[np.ndarray]) -> Path:
    """The small model quantized (Q/DQ) with ranges measured by ONNX Runtime on the self-test's own images."""
    import onnx

    from precision.qdq import build_qdq
    from workloads.calibrate import collect_ranges, make_table

    amax = collect_ranges(model, [np.concatenate(images)], "input", "minmax", None)
    table = make_table(model, amax, "minmax")
    path = model.with_name("small.qdq.onnx")
    data = build_qdq(model, table).SerializeToString()
    if not path.is_file() or path.read_bytes() != data:
        atomic_write_bytes(path, data)
    onnx.load(str(path))
    return path


def subjects(names: Sequence[str], folder: Path) -> List[Subject]:
    """The small model and the workloads' models the self-test builds."""
    from workloads import get_workload
    from workloads.model_store import resolve_model

    out: List[Subject] = []
    for name in names:
        if name == SMALL:
            rng = np.random.default_rng(11)
            out.append(Subject(SMALL, small_model(folder), "mobilenet", "classification",
                               lambda specs, rng=rng: {s.name: rng.standard_normal((1,) + tuple(s.shape[1:]))
                                                       .astype(np.float32) for s in specs}))
            continue
        workload = get_workload(name)
        model = resolve_model(workload)
        rng = np.random.default_rng(13)

        def images(specs: Any, workload: Any = workload, rng: Any = rng) -> Dict[str, np.ndarray]:
            h, w = workload.input_hw
            pixels = rng.integers(0, 256, size=(1, 3, h, w), dtype=np.uint8)
            return {specs[0].name: workload.preprocess.normalize(pixels, "float32", "NCHW")}

        out.append(Subject(name, model.path, name, workload.kind, images))
    return out


# -- one engine ---------------------------------------------------------------------------------------


def _ort_session(model: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def check_engine(target: Any, subject: Subject, precision: str, report: Report, trtexec: Optional[str],
                 options: Dict[str, Any], iterations: int) -> None:
    """Build (or find) one engine and add its lines to the report."""
    from targets.base import LoadRequest

    model = subject.path
    if precision == "int8" and subject.int8_model is not None:
        model = subject.int8_model
    request = LoadRequest(model_path=model, workload=subject.workload, hardware="gpu", precision=precision, batch=1,
                          concurrency=1, options=dict(options))

    def add(line: Line) -> Line:
        line.model, line.precision = subject.name, precision
        return report.add(line)

    started = time.monotonic()
    try:
        session = target.load(request)
    except MLMarkError as exc:
        text = " ".join(str(exc).split())
        if precision == "int8" and isinstance(exc, ModelError) and "calibrate.py" in text:
            add(Line("", "", "engine", SKIP, detail="int8 needs this workload's calibration data: " + text))
        else:
            add(Line("", "", "engine", FAIL, detail=text))
        return
    engine = session.info["engine"]
    add(Line("", "", "engine", PASS, "{:.1f} s".format(time.monotonic() - started), "",
             "{} ({})".format(Path(engine["path"]).name, engine["status"])))
    try:
        # Outputs: the same images through the engine and through ONNX Runtime (fp32 model, CPU).
        ort = _ort_session(subject.path)
        specs = session.input_specs()
        trt_out, ort_out = [], []
        for _ in range(IMAGES):
            feed = subject.inputs(specs)
            trt_out.append([np.asarray(o) for o in session.run(0, session.stage(feed))])
            ort_out.append(ort.run(session.output_names(), feed))
        # With MLMark's TensorRT test double (tests only) the engine computes no model: its outputs are a hash of
        # the input (tests/tensorrt_double/outputs.py), so these lines FAIL there, which its GPU test asserts.
        add(judge_outputs(precision, subject.kind, trt_out, ort_out))

        decision = engine.get("precision_check") or {}
        passed = decision.get("passed")
        verdict = PASS if passed else (FAIL if passed is False else SKIP)
        add(Line("", "", "layer precisions as asked", verdict, str(decision.get("method") or ""),
                 "", str(decision.get("detail") or "no check recorded")))

        if trtexec:
            timing = session.timed_run(iterations, max(10, iterations // 10))
            native_ms = float(np.median(np.asarray(timing.gpu_s))) * 1e3
            try:
                reference = trtexec_gpu_median_ms(trtexec, Path(engine["path"]), iterations,
                                                  "selftest {} {}".format(subject.name, precision))
                diff = (native_ms - reference) / reference if reference > 0 else float("inf")
                add(Line("", "", "GPU time vs trtexec", PASS if abs(diff) <= TRTEXEC_TOLERANCE else FAIL,
                         "{:+.2f} %".format(100 * diff), "+-{:g} %".format(100 * TRTEXEC_TOLERANCE),
                         "native median {:.4f} ms, trtexec GPU compute median {:.4f} ms".format(native_ms, reference)))
            except MLMarkError as exc:
                add(Line("", "", "GPU time vs trtexec", FAIL, detail=str(exc)))
        else:
            add(Line("", "", "GPU time vs trtexec", SKIP,
                     detail="trtexec not found (give --trtexec PATH; JetPack has /usr/src/tensorrt/bin/trtexec)"))
    finally:
        session.close()

    started = time.monotonic()
    try:
        again = target.load(request)
    except MLMarkError as exc:
        add(Line("", "", "second load hits the cache", FAIL, detail=" ".join(str(exc).split())))
        return
    took = time.monotonic() - started
    status = again.info["engine"]["status"]
    again.close()
    hit = status.startswith("cached")
    add(Line("", "", "second load hits the cache", PASS if hit and took < CACHE_HIT_MAX_S else FAIL,
             "{:.2f} s".format(took), "cached, < {:g} s".format(CACHE_HIT_MAX_S), status))


# -- the run --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The TensorRT self-test's command line."""
    parser = argparse.ArgumentParser(prog="mlmark selftest --tensorrt",
                                     description="Check TensorRT on this board through MLMark's tensorrt target.")
    parser.add_argument("--quick", action="store_true", help="the small model only, fewer timed iterations")
    parser.add_argument("--workloads", metavar="LIST",
                        help="comma-separated: small and workloads (default: small,{})".format(",".join(WORKLOADS)))
    parser.add_argument("--precisions", metavar="LIST", help="comma-separated (default: all this GPU runs fast)")
    parser.add_argument("--trtexec", metavar="PATH", help="the trtexec to compare GPU times with")
    parser.add_argument("--workspace-mb", type=int, default=512,
                        help="builder workspace (default 512, which a Jetson Nano also has room for)")
    parser.add_argument("--json", metavar="PATH", help="where the JSON report goes (default Results/)")
    parser.add_argument("--verbose", action="store_true", help="show the target's and library's log")
    return parser


def _list(text: Optional[str], default: Sequence[str], allowed: Sequence[str], what: str) -> List[str]:
    if not text:
        return list(default)
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise MLMarkError("unknown {} {} (allowed: {})".format(what, ", ".join(bad), ", ".join(allowed)))
    return items


def measure(args: argparse.Namespace) -> Report:
    """Run every check the arguments ask for; MLMarkError (exit 2) when the self-test cannot run at all."""
    from core.paths import engines_dir
    from targets.tensorrt.target import TensorRTTarget

    target = TensorRTTarget()
    target.check_installed()  # TargetUnavailable in one line: no library, no TensorRT, no GPU, the test double
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise TargetUnavailable("the output checks need ONNX Runtime: pip install onnxruntime") from None
    library, trt, device = target._runtime()
    supported = list(target.capabilities().precisions["gpu"])
    precisions = _list(args.precisions, supported, supported, "precision (this GPU runs {})".format(
        ", ".join(supported)))
    names = _list(args.workloads, [SMALL] if args.quick else [SMALL] + list(WORKLOADS), [SMALL] + list(WORKLOADS),
                  "model")
    trtexec = trtexec_probe(args.trtexec)
    report = Report()
    report.environment = {
        "device": device.describe(), "tensorrt": target.versions().get("tensorrt"),
        "tensorrt_headers": trt.header_version, "tensorrt_test_double": trt.test_double,
        "native_library": str(library.path), "precisions": precisions, "models": names,
        "trtexec": str(trtexec.path) if trtexec else None, "workspace_mb": args.workspace_mb,
    }
    report.notes.append("DLA: not checked; the tensorrt target runs on the GPU only")
    if trt.test_double:
        report.notes.append("TensorRT test double (tests only): not TensorRT; its outputs are no model's, so the "
                            "output lines fail by design")
    iterations = 50 if args.quick else TIMED_ITERATIONS
    options = {"workspace_mb": args.workspace_mb}
    folder = engines_dir() / "selftest"
    for subject in subjects(names, folder):
        for precision in precisions:
            if subject.name == SMALL and precision == "int8" and subject.int8_model is None:
                imgs = [subject.inputs([_Spec("input", (1, 3, 64, 64))])["input"] for _ in range(IMAGES)]
                subject.int8_model = small_qdq_model(subject.path, imgs)
            check_engine(target, subject, precision, report, trtexec, options, iterations)
    return report


@dataclass(frozen=True)
class _Spec:
    name: str
    shape: Tuple[int, ...]


def format_report(report: Report) -> str:
    """The table a user reads."""
    env = report.environment
    lines = ["MLMark TensorRT self-test",
             "device    {}".format(env.get("device")),
             "TensorRT  {} (headers {})".format(env.get("tensorrt"), env.get("tensorrt_headers")),
             "trtexec   {}".format(env.get("trtexec") or "not found"), ""]
    row = "  {:<13} {:<5} {:<36} {:<5} {:>10}  {:<14} {}"
    lines.append(row.format("model", "prec.", "check", "", "value", "limit", "detail"))
    for l in report.lines:
        lines.append(row.format(l.model, l.precision, l.check, l.verdict, l.value, l.limit, l.detail))
    lines.append("")
    for note in report.notes:
        lines.append("note: " + note)
    c = report.counts()
    lines.append("Result: {} passed, {} failed, {} skipped".format(c[PASS], c[FAIL], c[SKIP]))
    return "\n".join(lines)


def default_report_path() -> Path:
    """Results/tensorrt-selftest-<date>.json."""
    return REPO / "Results" / "tensorrt-selftest-{}.json".format(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `mlmark selftest --tensorrt`: 0 nothing failed, 1 something failed, 2 cannot run."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet = [logging.getLogger(n) for n in ("mlmark.native", "mlmark.tensorrt", "mlmark.tensorrt.build")]
    saved = [q.level for q in quiet]
    if not args.verbose:
        for q in quiet:
            q.setLevel(logging.WARNING)
    try:
        report = measure(args)  # MLMarkError: the command line's guard makes it one line, exit 2
    finally:
        for q, level in zip(quiet, saved):
            q.setLevel(level)
    print(format_report(report))
    path = Path(args.json) if args.json else default_report_path()
    atomic_write_json(path, report.to_dict())
    print("report written to {}".format(path))
    return 0 if report.counts()[FAIL] == 0 else 1


if __name__ == "__main__":
    from core.console import guarded

    sys.exit(guarded("mlmark selftest --tensorrt", 0, main))
