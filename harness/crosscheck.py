"""`mlmark crosscheck -c CONFIG...`: each tensorrt task's engine timed by the native loop and by trtexec.

For every tensorrt task (throughput or latency) of the configs, the task's engine is loaded by the
tensorrt target and timed by its native loop with the harness's warm-up (runner.measure_native, the
network alone, whatever the workload), then the same engine file is timed by trtexec at the
matching settings. Printed per task: the native loop's median GPU compute time beside trtexec's
"GPU Compute Time" median, the native throughput beside trtexec's (qps x batch), and both ratios.

The claim this checks: at the same settings, the native loop's median GPU time lies within 2 % of
trtexec's GPU Compute median and its throughput within 2 % of trtexec's. It is unverified until
this command has run on a board; the output and the README say so.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from core.errors import ConfigError, RunError
from core.fileio import atomic_write_json, sha256_file
from targets.trtexec import tool
from targets.trtexec.target import TimedRun, model_inputs, shapes_flag, time_engine

log = logging.getLogger("mlmark.crosscheck")

TOLERANCE = 0.02
UNVERIFIED = ("UNVERIFIED: that the native loop's median GPU time and throughput lie within 2 % of trtexec's at the "
              "same settings has not yet been checked on a board; runs of this command are that check")


@dataclass
class Comparison:
    """One task's engine timed both ways."""

    source: str
    label: str
    engine: str
    native_gpu_median_ms: float
    trtexec_gpu_median_ms: float
    native_fps: float
    trtexec_fps: float
    iterations: int
    trtexec_log: str
    settings: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def gpu_ratio(self) -> float:
        """native / trtexec median GPU compute time (1.0: the same)."""
        return self.native_gpu_median_ms / self.trtexec_gpu_median_ms

    @property
    def fps_ratio(self) -> float:
        """native / trtexec throughput."""
        return self.native_fps / self.trtexec_fps

    @property
    def within(self) -> bool:
        """Both ratios within the claimed 2 %."""
        return abs(self.gpu_ratio - 1) <= TOLERANCE and abs(self.fps_ratio - 1) <= TOLERANCE

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.update(gpu_ratio=self.gpu_ratio, fps_ratio=self.fps_ratio, within_2_percent=self.within)
        return d


def matching_settings(loop: Mapping[str, Any]) -> Tuple[Dict[str, bool], List[str]]:
    """trtexec's settings for the native loop's settings as run (LoopSettings.to_dict()), and what differs."""
    notes: List[str] = []
    sync = loop.get("sync", "blocking")
    if sync == "spin":
        spin = True
    elif sync == "sleep":
        spin = False  # trtexec's events without --useSpinWait block in the driver until the GPU's interrupt
    else:
        spin = True
        notes.append("native sync 'blocking' (cudaEventSynchronize) has no trtexec twin; trtexec spins "
                     "(--useSpinWait), the closest")
    if loop.get("launch_gate"):
        notes.append("native launch_gate holds each stream until the whole inference is enqueued; trtexec has no "
                     "such gate, so their GPU times measure different things")
    if loop.get("memory") == "zero-copy":
        notes.append("native zero-copy memory; trtexec uses device memory (managed memory on integrated GPUs "
                     "without data transfers, from 10.0)")
    return {"cuda_graph": bool(loop.get("cuda_graph")), "transfers": bool(loop.get("transfers", True)),
            "spin_wait": spin}, notes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmark crosscheck", description="Time each tensorrt task's engine with the "
                                     "native loop and with trtexec, and print both with their ratio. " + UNVERIFIED)
    parser.add_argument("-c", "--config", nargs="+", required=True, metavar="CONFIG",
                        help="config files; their tensorrt tasks (throughput or latency) are compared")
    parser.add_argument("--trtexec", help="the trtexec binary (default: trtexec on PATH, else "
                        "/usr/src/tensorrt/bin/trtexec)")
    parser.add_argument("-o", "--output", type=Path, help="also write the comparison as JSON here")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging and tracebacks")
    return parser


def compare_task(pt: Any, probe: tool.Probe) -> Comparison:
    """Time one prepared tensorrt task's engine in the native loop, then in trtexec."""
    from core.stats import summarize
    from harness.runner import load, measure_native

    task, p = pt.task, pt.task.params
    session = load(pt)
    with session:
        session.stage(pt.workload.make_inputs(session.input_specs(), p.batch))
        m = measure_native(pt, session)
        engine_info = dict(session.info.get("engine") or {})
        native_trt = session.info.get("tensorrt")
    if not m.gpu_s:
        raise RunError("{}: the native loop recorded no GPU compute times".format(task.source))
    if native_trt != probe.version:
        raise RunError("{}: the engine was built by TensorRT {}, trtexec {} is TensorRT {}: it cannot load it; give "
                       "--trtexec of TensorRT {}".format(task.source, native_trt, probe.path, probe.version,
                                                         native_trt))
    engine = Path(str(engine_info.get("path")))
    if sha256_file(engine) != engine_info.get("sha256"):
        raise RunError("{}: the engine {} changed after the native loop ran (rebuilt by another process?); run "
                       "again".format(task.source, engine))
    flags, notes = matching_settings(m.native_info.get("loop", {}))
    per_stream = -(-p.iterations // p.concurrency)
    settings = TimedRun(iterations=per_stream, warmup_ms=int(math.ceil(p.warmup_s * 1000)), streams=p.concurrency,
                        **flags)
    shapes = shapes_flag(model_inputs(pt.model.path), p.batch, pt.model.path)
    logs = engine.parent / "logs"
    ran, parsed, _ = time_engine(probe, engine, shapes, None, settings, logs, "crosscheck", task.source)
    gpu = parsed.statistics["gpu_compute"].median_ms
    qps = parsed.throughput_qps
    if qps is None or not (qps > 0 and math.isfinite(qps)) or not (gpu > 0 and math.isfinite(gpu)):
        raise RunError("{}: trtexec log {} has no usable throughput or GPU compute median".format(
            task.source, ran.log_path))
    return Comparison(
        source=task.source, label="{} {} {} b{} c{}".format(task.workload, p.mode, p.precision, p.batch,
                                                            p.concurrency),
        engine=str(engine), native_gpu_median_ms=summarize(m.gpu_s).median_ms, trtexec_gpu_median_ms=gpu,
        native_fps=m.throughput_fps, trtexec_fps=qps * p.batch, iterations=p.iterations,
        trtexec_log=str(ran.log_path),
        settings={"native_loop": m.native_info.get("loop", {}), "trtexec": ran.argv[2:]}, notes=notes)


def format_comparisons(rows: Sequence[Comparison], tensorrt: str, device: str) -> str:
    """The table, the notes and the claim's status."""
    head = ("Task", "GPU ms native", "trtexec", "ratio", "fps native", "trtexec", "ratio", "within 2 %")
    body = [(r.source + " " + r.label, "{:.4g}".format(r.native_gpu_median_ms), "{:.4g}".format(
        r.trtexec_gpu_median_ms), "{:.3f}".format(r.gpu_ratio), "{:.4g}".format(r.native_fps),
        "{:.4g}".format(r.trtexec_fps), "{:.3f}".format(r.fps_ratio), "yes" if r.within else "NO") for r in rows]
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    lines = ["Crosscheck: the same engine timed by the tensorrt target's native loop and by trtexec (TensorRT {}, "
             "{}); GPU ms: median GPU compute time per inference; ratio: native / trtexec".format(tensorrt, device),
             ""]
    for row in [head] + body:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                               enumerate(zip(row, widths))))
    for r in rows:
        for note in r.notes:
            lines.append("note: {}: {}".format(r.source, note))
    lines += ["", UNVERIFIED]
    return "\n".join(lines)


def run_crosscheck(argv: Sequence[str]) -> int:
    """`mlmark crosscheck`: 0 when every tensorrt task was compared (whatever the ratios), MLMarkError otherwise."""
    from harness.config import expand_config_args, load_configs
    from harness.runner import prepare

    args = _parser().parse_args(list(argv))
    tasks = [t for t in load_configs(expand_config_args(args.config))
             if t.target == "tensorrt" and t.params.mode in ("throughput", "latency")]
    if not tasks:
        raise ConfigError("crosscheck: the configs have no tensorrt task in throughput or latency mode")
    probe = tool.probe(tool.locate(args.trtexec, "--trtexec"))
    prepared = prepare(tasks)
    rows = []
    for pt in prepared:
        log.info("%s: %s", pt.task.source, pt.task.label)
        rows.append(compare_task(pt, probe))
    print(format_comparisons(rows, probe.version, probe.device))
    if args.output:
        atomic_write_json(args.output, {"tensorrt": probe.version, "device": probe.device,
                                        "trtexec": str(probe.path), "tolerance": TOLERANCE, "verified": False,
                                        "status": UNVERIFIED, "tasks": [r.to_dict() for r in rows]})
        print("\ncomparison written to {}".format(args.output))
    return 0

