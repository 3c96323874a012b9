"""trtexec target: engines built by trtexec into the tensorrt target's cache, timed and summarized by trtexec.

Load: find the binary and ask it for its TensorRT release and GPU (tool.py); look the engine up in
engines/ under the same key as the tensorrt target (targets/tensorrt/engine_cache.py), so the two
targets share engines; when it is missing or stale, build it with trtexec (--saveEngine,
--exportLayerInfo, --timingCacheFile, --profilingVerbosity=detailed) from the same ONNX and
calibration data the tensorrt target would parse, and check its layer precisions as that target
does (targets/tensorrt/precision_check.py). Run: trtexec --loadEngine with the stable timing flags
(releases.py), its own warm-up and timed loop; its summary is read (logparse.py) and scored as
trtexec printed it (Session.summary_run): trtexec prints statistics, not per-inference times.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from core.errors import MLMarkError, ModelError, RunError, UnsupportedTask
from core.fileio import atomic_write_bytes, sha256_file
from core.specs import TensorSpec, onnx_io
from targets.base import Capabilities, LoadRequest, Session, Target, ToolSummary
from targets.options import TargetOptions, boolean, choice, integer, option, text
from targets.tensorrt.engine_cache import BuildOutcome, CachedEngine, EngineCache, EngineKey
from targets.tensorrt.precision_check import SIZE_CHECKS, build_until_precision_holds, precision_counts, size_reference
from targets.trtexec import tool
from targets.trtexec.logparse import LogFormatError, TrtexecLog, parse_log
from targets.trtexec.releases import DLA_COMPUTE_CAPABILITIES, fast_precisions

log = logging.getLogger("mlmark.trtexec")

MAX_WORKSPACE_MB = 1 << 20
MAX_PRECISION_RETRIES = 20
MAX_AVG_RUNS = 1 << 20

@dataclass(frozen=True)
class TrtexecOptions(TargetOptions):
    """trtexec's task params, with trtexec's stable timing settings as defaults."""

    #: the binary; else trtexec on PATH, else /usr/src/tensorrt/bin/trtexec
    trtexec: Optional[str] = option(None, text("the path of the trtexec binary"))
    cuda_graph: bool = option(True, boolean())  # --useCudaGraph (11: the default; false gives --noCudaGraph)
    #: false: --noDataTransfers (11: the default; true gives --includeDataTransfers)
    transfers: bool = option(False, boolean())
    spin_wait: bool = option(True, boolean())  # --useSpinWait (11: the default; false gives --noSpinWait)
    avg_runs: int = option(10, integer(1, MAX_AVG_RUNS))  # --avgRuns: inferences per line of the log's trace
    #: a separate profiling run writing per-layer times (--exportProfile, --separateProfileRun)
    profile: bool = option(False, boolean())
    workspace_mb: int = option(1024, integer(1, MAX_WORKSPACE_MB))  # builder workspace limit, part of the engine's key
    #: rebuilds when an fp16/int8 build falls back to a wider precision
    precision_retries: int = option(2, integer(0, MAX_PRECISION_RETRIES))
    #: the engine-size rule of the precision check: only where the layers cannot tell, or beside them against the
    #: fp32 engine or the ONNX model (targets/tensorrt/precision_check.py)
    size_check: str = option("fallback", choice(*SIZE_CHECKS))
    rebuild: bool = option(False, boolean())  # rebuild the engine (once per run) even when the cached one is current
    dla_core: int = option(0, integer(0, 15))  # hardware dla: --useDLACore
    #: hardware dla: --allowGPUFallback (layers DLA cannot run go to the GPU)
    gpu_fallback: bool = option(True, boolean())


# Engines already force-rebuilt by this process: params.rebuild rebuilds once per run, not per task.
_REBUILT: Set[str] = set()


def _logs_dir(cache: EngineCache) -> Path:
    """Where trtexec's logs and profiles go: engines/logs/ (targets do not write into Results/)."""
    return cache.directory / "logs"


# -- the model's inputs and --shapes -----------------------------------------------------------------


def model_inputs(onnx_path: Path) -> List[TensorSpec]:
    """The ONNX file's inputs (initializers listed as inputs by old exporters left out)."""
    return onnx_io(onnx_path)[0]


def shapes_flag(specs: Sequence[TensorSpec], batch: int, model: Path) -> Optional[str]:
    """--shapes=name:BxCxHxW,... for the inputs whose batch is symbolic (None when every shape is fixed).

    Like the native builder, only the batch may be symbolic, and a fixed batch must be the task's.
    """
    parts = []
    for s in specs:
        dims = list(s.shape)
        if not dims:
            continue
        for d, value in enumerate(dims[1:], 1):
            if not isinstance(value, int) or value < 0:
                raise ModelError("target trtexec: input '{}' of {} has a symbolic dimension {} besides the batch "
                                 "{}; export the ONNX with fixed non-batch dimensions".format(s.name, model, d, dims))
        if isinstance(dims[0], int) and dims[0] > 0:
            if dims[0] != batch:
                raise ModelError("target trtexec: {} has a fixed batch of {} (input '{}'), the task asks batch {}; "
                                 "use a model with a dynamic batch dimension".format(model, dims[0], s.name, batch))
            continue
        name = "'{}'".format(s.name) if (":" in s.name or "," in s.name) else s.name
        parts.append("{}:{}".format(name, "x".join(str(v) for v in [batch] + dims[1:])))
    return "--shapes=" + ",".join(parts) if parts else None


def _with_batch(specs: Sequence[TensorSpec], batch: int) -> List[TensorSpec]:
    return [TensorSpec(s.name, (batch,) + tuple(s.shape[1:]) if s.shape else tuple(s.shape), s.dtype) for s in specs]


# -- the engine builder ------------------------------------------------------------------------------


class TrtexecBuilder:
    """The cache's builder: trtexec --saveEngine, its layer information checked for the requested precision."""

    def __init__(self, probe: tool.Probe, cache: EngineCache, onnx_path: Path, model_path: Path,
                 table: Optional[Path], calibration_path: Optional[Path], shapes: Optional[str],
                 opts: TrtexecOptions, label: str) -> None:
        self.probe = probe
        self.cache = cache
        self.onnx_path = onnx_path
        self.model_path = model_path
        self.table = table
        self.calibration_path = calibration_path
        self.shapes = shapes
        self.opts = opts
        self.label = label
        self.size_check = str(opts.size_check)

    def size_reference(self, key: EngineKey) -> Any:
        """The size rule's reference for key's engine (precision_check.size_reference)."""
        return size_reference(self.size_check, self.model_path, self.cache, key, lambda: TrtexecBuilder(
            self.probe, self.cache, self.model_path, self.model_path, None, None, self.shapes, self.opts,
            self.label.replace(key.precision, "fp32 (size reference)")))

    def argv(self, key: EngineKey, engine_file: Path, layer_info: Path, timing_cache: Path) -> List[str]:
        """The build's command line."""
        release = self.probe.release
        fast_fp16, _ = fast_precisions(self.probe.compute_capability)
        argv = [str(self.probe.path), "--onnx={}".format(self.onnx_path), "--saveEngine={}".format(engine_file),
                "--exportLayerInfo={}".format(layer_info), "--profilingVerbosity=detailed",
                "--timingCacheFile={}".format(timing_cache), release.skip_inference_flag,
                release.workspace_flag(key.workspace_mb)]
        argv += release.precision_flags(key.precision, fast_fp16, self.table)
        argv += [self.shapes] if self.shapes else []
        if key.dla_core is not None:
            argv += release.dla_flags(key.dla_core, bool(self.opts.gpu_fallback))
        return argv

    def __call__(self, key: EngineKey, engine_file: Path) -> BuildOutcome:
        from targets.native.tensorrt import normalize_layers
        from targets.tensorrt.target import sidecar_layers

        shared_timing_cache = self.cache.timing_cache_path(key)
        builds: List[Tuple[List[str], tool.ToolRun, TrtexecLog, Optional[List[Dict[str, Any]]]]] = []

        def build_once() -> Tuple[Optional[List[Dict[str, Any]]], int]:
            with tempfile.TemporaryDirectory(prefix="mlmark-trtexec-build-") as work:
                layer_info = Path(work) / "layers.json"
                # trtexec writes the timing cache in place: a build killed while writing it would leave the
                # shared one damaged, so it works on a copy that replaces the shared one only after success.
                timing_cache = Path(work) / "timing.cache"
                if shared_timing_cache.is_file():
                    shutil.copyfile(str(shared_timing_cache), str(timing_cache))
                argv = self.argv(key, engine_file, layer_info, timing_cache)
                logfile = tool.log_path(_logs_dir(self.cache), key.file_stem(), "build")
                log.info("%s: building engine %s with trtexec (TensorRT %s); log: %s", self.label,
                         self.cache.engine_path(key).name, self.probe.version, logfile)
                ran = tool.run(argv, logfile, self.label + ": trtexec build")
                parsed = read_run(ran, self.probe, "building the engine for " + self.label)
                if timing_cache.is_file() and timing_cache.stat().st_size > 0:
                    atomic_write_bytes(shared_timing_cache, timing_cache.read_bytes())
                layers = None
                if layer_info.is_file():
                    layers = normalize_layers(layer_info.read_text(encoding="utf-8", errors="replace"))
                else:
                    log.warning("%s: trtexec wrote no layer information (--exportLayerInfo)", self.label)
            if not engine_file.is_file() or engine_file.stat().st_size == 0:
                raise RunError("target trtexec: trtexec reported success building {} but wrote no engine; log: "
                               "{}".format(self.cache.engine_path(key).name, ran.log_path))
            builds.append((argv, ran, parsed, layers))
            return layers, engine_file.stat().st_size

        # A DLA engine holds DLA loadables: its size says nothing of its precision, so only layers decide.
        reference = None if key.dla_core is not None else self.size_reference(key)
        decision, attempts = build_until_precision_holds(key.precision, build_once, reference,
                                                         int(self.opts.precision_retries), self.label, self.size_check)
        argv, ran, parsed, layers = builds[-1]
        return BuildOutcome(
            build_s=float(parsed.build_s if parsed.build_s is not None else ran.seconds),
            layers=sidecar_layers(layers),
            record={
                "model_path": str(self.model_path), "onnx_parsed": str(self.onnx_path),
                "calibration_path": str(self.calibration_path) if self.calibration_path else None,
                "builder": {"tool": "trtexec", "trtexec": str(self.probe.path), "tensorrt": self.probe.version,
                            "workspace_mb": key.workspace_mb, "timing_cache": str(shared_timing_cache),
                            "dla_core": key.dla_core,
                            "gpu_fallback": bool(self.opts.gpu_fallback) if key.dla_core is not None else None,
                            "command": argv, "log": str(ran.log_path)},
                "trtexec_build": parsed.build_dict(),
                "layer_count": len(layers) if layers is not None else None,
                "precision_check": decision.to_dict(), "build_attempts": attempts,
                "build_s_all_attempts": round(sum(float(p.build_s if p.build_s is not None else r.seconds)
                                                  for _, r, p, _ in builds), 3),
            })


def read_run(ran: tool.ToolRun, probe: tool.Probe, doing: str) -> TrtexecLog:
    """The log of a trtexec run that must have passed: RunError (its last error lines and the log's path) when
    it failed or was killed, LogFormatError when its log cannot be read, RunError when it ran on another GPU."""
    parsed: Optional[TrtexecLog]
    try:
        parsed = parse_log(ran.text, probe.release, ran.log_path)
    except LogFormatError:
        if ran.returncode == 0:
            raise
        parsed = None  # a failed run's log may end anywhere: its error lines say more
    failed = tool.failure(ran, doing, parsed)
    if failed is not None:
        raise failed
    assert parsed is not None
    _check_same_gpu(parsed, probe, ran.log_path)
    return parsed


def _check_same_gpu(parsed: TrtexecLog, probe: tool.Probe, path: Path) -> None:
    """The engine's key names the probe's GPU: a run that printed another one must not fill the cache."""
    if parsed.device is not None and parsed.device != probe.device:
        raise RunError("target trtexec: trtexec ran on {} but its probe saw {} (CUDA_VISIBLE_DEVICES changed?); "
                       "log: {}".format(parsed.device, probe.device, path))


# -- a timed run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedRun:
    """The settings of one timed trtexec run."""

    iterations: int
    warmup_ms: int
    streams: int = 1
    cuda_graph: bool = True
    transfers: bool = False
    spin_wait: bool = True
    avg_runs: int = 10
    profile: bool = False


def time_engine(probe: tool.Probe, engine: Path, shapes: Optional[str], dla_core: Optional[int], settings: TimedRun,
                logs: Path, what: str, label: str) -> Tuple[tool.ToolRun, TrtexecLog, Optional[Path]]:
    """trtexec --loadEngine with its release's timing flags: the run, its parsed log (with a performance summary)
    and the per-layer profile's path when asked. RunError when trtexec failed or was killed, LogFormatError
    when its log cannot be read."""
    release = probe.release
    stem = engine.name[:-len(".engine")] if engine.name.endswith(".engine") else engine.name
    logfile = tool.log_path(logs, stem, what)
    profile = logfile.with_name(logfile.name[:-len(".log")] + ".profile.json") if settings.profile else None
    argv = [str(probe.path), "--loadEngine={}".format(engine)]
    argv += [shapes] if shapes else []
    if dla_core is not None:
        argv += release.dla_flags(dla_core, False)
    argv += release.timing_flags(settings.iterations, settings.warmup_ms, settings.streams, settings.cuda_graph,
                                 settings.transfers, settings.spin_wait, settings.avg_runs)
    if profile is not None:
        argv.append("--exportProfile={}".format(profile))
    log.info("%s: timing %d iterations after %d ms of warm-up in trtexec; log: %s", label, settings.iterations,
             settings.warmup_ms, logfile)
    ran = tool.run(argv, logfile, label + ": trtexec run")
    parsed = read_run(ran, probe, "running engine {}".format(engine.name))
    if not parsed.has_summary:
        last = tool.last_lines(ran.text, 1)
        raise LogFormatError("trtexec log {} (TensorRT {}, summary format {}): no performance summary ({!r}); last "
                             "line: {!r}".format(ran.log_path, release.text, release.format,
                                                 "=== Performance summary ===", last[0] if last else ""))
    return ran, parsed, profile


# -- the session -------------------------------------------------------------------------------------


class TrtexecSession(Session):
    """An engine in the cache that trtexec loads, warms up, times and summarizes on each summary_run()."""

    has_summary_run = True

    def __init__(self, probe: tool.Probe, cache: EngineCache, key: EngineKey, builder: TrtexecBuilder,
                 specs: List[TensorSpec], outputs: List[str], shapes: Optional[str], opts: TrtexecOptions,
                 request: LoadRequest, info: Dict[str, Any]) -> None:
        self.probe = probe
        self.cache = cache
        self.key = key
        self.builder = builder
        self._specs = specs
        self._outputs = outputs
        self.shapes = shapes
        self.opts = opts
        self.request = request
        self.info = info

    def input_specs(self) -> List[TensorSpec]:
        return list(self._specs)

    def output_names(self) -> List[str]:
        return list(self._outputs)

    def run(self, slot: int, inputs: Any) -> Sequence[Any]:
        raise UnsupportedTask("target trtexec runs whole timed runs through trtexec (summary_run), not single "
                              "batches; use target tensorrt for accuracy")

    def summary_run(self, iterations: int, warmup_iterations: int, warmup_s: float) -> ToolSummary:
        warmup_ms = int(math.ceil(max(0.0, warmup_s) * 1000))
        label = "trtexec {} {} batch {}".format(self.request.workload, self.request.precision, self.request.batch)
        # trtexec's --iterations counts per stream (each stream runs them all): the task's count is the total.
        per_stream = -(-iterations // self.request.concurrency)
        settings = TimedRun(iterations=per_stream, warmup_ms=warmup_ms, streams=self.request.concurrency,
                            cuda_graph=bool(self.opts.cuda_graph), transfers=bool(self.opts.transfers),
                            spin_wait=bool(self.opts.spin_wait), avg_runs=int(self.opts.avg_runs),
                            profile=bool(self.opts.profile))
        # The engine's lock is held shared while trtexec reads it, so that no build replaces it meanwhile.
        with self.cache.open(self.key, self.builder) as engine:
            ran, parsed, profile = time_engine(self.probe, engine.path, self.shapes, self.key.dla_core, settings,
                                               _logs_dir(self.cache), "run", label)
        return self._summary(parsed, ran, ran.argv, iterations, warmup_iterations, warmup_ms, profile)

    def _summary(self, parsed: TrtexecLog, ran: tool.ToolRun, argv: List[str], iterations: int,
                 warmup_iterations: int, warmup_ms: int, profile: Optional[Path]) -> ToolSummary:
        batch = self.request.batch
        latency = parsed.statistics["latency"]
        gpu = parsed.statistics["gpu_compute"]
        p95 = latency.percentiles_ms.get(95.0)
        qps = parsed.throughput_qps
        where = "trtexec log {}".format(ran.log_path)
        for name, value in (("Throughput", qps), ("Latency percentile(95%)", p95),
                            ("Total Host Walltime", parsed.total_host_walltime_s)):
            # A failed measurement must never become a score (of 0 or of infinity).
            if value is None or not math.isfinite(value) or value <= 0:
                raise RunError("target trtexec: {}: '{}' is {}, not a measurement; no score is given".format(
                    where, name, "missing" if value is None else value))
        assert qps is not None and p95 is not None and parsed.total_host_walltime_s is not None
        timed = parsed.timed_queries if parsed.timed_queries is not None else iterations
        if parsed.warmup_queries is not None and parsed.warmup_queries < warmup_iterations:
            log.warning("%s: trtexec warmed up %d inferences in %d ms, fewer than the %d asked (trtexec's warm-up is "
                        "a time: raise params.warmup)", where, parsed.warmup_queries, warmup_ms, warmup_iterations)
        fps = qps * batch
        transfers = bool(self.opts.transfers)
        scores_from = {
            "throughput_fps": "trtexec 'Throughput: {:g} qps' x batch {} = {:.6g} fps ({} queries of the engine's "
                              "batch over 'Total Host Walltime: {:g} s')".format(qps, batch, fps, timed,
                                                                                parsed.total_host_walltime_s),
            "latency_ms": "trtexec 'Latency: ... percentile(95%) = {:g} ms' over {} queries ({}; trtexec's percentile "
                          "rule: the value below which all but int(5 % of the queries) lie)".format(
                              p95, timed, "H2D + GPU compute + D2H by CUDA events" if transfers else
                              "no data transfers (--noDataTransfers): GPU compute by CUDA events"),
        }
        info: Dict[str, Any] = {
            "timed_loop": "trtexec's own warm-up, timed loop and statistics (Session.summary_run)",
            "trtexec_log": str(ran.log_path), "trtexec_command": argv,
            "trtexec_summary": parsed.summary_dict(), "scores_from": scores_from,
            "gpu_compute_ms": gpu.to_dict(),
        }
        if profile is not None:
            info["trtexec_profile"] = _profile_info(profile)
        latency_ms = {"samples": timed, "min_ms": latency.min_ms, "mean_ms": latency.mean_ms,
                      "median_ms": latency.median_ms, "p90_ms": latency.percentiles_ms.get(90.0), "p95_ms": p95,
                      "p99_ms": latency.percentiles_ms.get(99.0), "max_ms": latency.max_ms, "std_ms": None}
        finite = {k: (v if v is None or math.isfinite(v) else None) for k, v in latency_ms.items()}
        return ToolSummary(iterations=timed, wall_s=float(parsed.total_host_walltime_s), throughput_fps=fps,
                           latency_ms=finite,
                           warmup_iterations=int(parsed.warmup_queries or 0),
                           warmup_s=(parsed.warmup_ms if parsed.warmup_ms is not None else warmup_ms) / 1000.0,
                           info=info)


def _profile_info(path: Path) -> Dict[str, Any]:
    """The per-layer profile's file and its five slowest layers (trtexec's --exportProfile JSON)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"path": str(path), "error": "not readable: {}".format(exc)}
    layers = [d for d in data if isinstance(d, dict) and "name" in d] if isinstance(data, list) else []
    runs = next((d.get("count") for d in data if isinstance(d, dict) and "count" in d), None) if layers else None
    top = sorted(layers, key=lambda d: -float(d.get("averageMs") or 0.0))[:5]
    return {"path": str(path), "runs": runs, "layers": len(layers),
            "slowest": [{"name": d.get("name"), "average_ms": d.get("averageMs"), "percent": d.get("percentage")}
                        for d in top]}


# -- the target --------------------------------------------------------------------------------------


class TrtexecTarget(Target):
    """TensorRT's trtexec: builds into the shared engine cache, times with its own loop and statistics."""

    name = "trtexec"
    install_hint = "TensorRT's trtexec (JetPack installs it in /usr/src/tensorrt/bin; give params.trtexec otherwise)"
    Options = TrtexecOptions

    def __init__(self) -> None:
        # prepare() validates a task's options, then asks for capabilities: those are the binary's of that task.
        self._probe: Optional[tool.Probe] = None

    def check_installed(self) -> None:
        """Nothing to import: the binary is a task's (params.trtexec), found and probed by validate_options."""

    def _probe_for(self, opts: "TrtexecOptions") -> tool.Probe:
        self._probe = tool.probe(tool.locate(opts.trtexec))
        return self._probe

    def capabilities(self) -> Capabilities:
        probe = self._probe or self._probe_for(TrtexecOptions())
        fp16, int8 = fast_precisions(probe.compute_capability)
        gpu = ("fp32",) + (("fp16",) if fp16 else ()) + (("int8",) if int8 else ())
        precisions: Dict[str, Tuple[str, ...]] = {"gpu": gpu}
        if probe.compute_capability in DLA_COMPUTE_CAPABILITIES:
            precisions["dla"] = ("fp16", "int8")
        return Capabilities(precisions=precisions, modes=("throughput", "latency"))

    def unsupported_hint(self, hardware: str) -> str:
        if hardware == "cpu":
            return " (trtexec runs on NVIDIA GPUs and DLA cores)"
        if hardware == "dla":
            return " (DLA cores exist on Jetson Xavier and Orin, in fp16 and int8)"
        return " (trtexec times throughput and latency; accuracy runs through target tensorrt)"

    def versions(self) -> Dict[str, str]:
        if self._probe is None:
            return {}
        return {"tensorrt": self._probe.version, "trtexec": str(self._probe.path)}

    def validate_options(self, options: Mapping[str, Any], source: str) -> None:
        opts = TrtexecOptions.parse(options, source)
        try:
            self._probe_for(opts)  # the binary is per task: found (or refused in one line) before any task runs
        except MLMarkError as exc:
            raise type(exc)("{}: {}".format(source, exc)) from None

    def load(self, request: LoadRequest) -> Session:
        from targets.native.tensorrt import TensorRTInfo
        from targets.tensorrt.target import SIZE_RECHECK_FAILED, precision_inputs, recheck
        if request.host_postprocess:
            raise UnsupportedTask("target trtexec: {}'s MLMark score includes box decoding and NMS on the host, "
                                  "which trtexec does not run; use target tensorrt".format(request.workload))
        opts = TrtexecOptions.parse(request.options, "target trtexec")
        probe = self._probe_for(opts)
        release = probe.release
        if request.hardware not in ("gpu", "dla"):
            raise UnsupportedTask("target trtexec: hardware {} is not supported{}".format(
                request.hardware, self.unsupported_hint(request.hardware)))
        fast_fp16, fast_int8 = fast_precisions(probe.compute_capability)
        trt = TensorRTInfo(version=release.text, header_version=release.text, implicit_int8=release.implicit_int8,
                           inspector=True, fast_fp16=fast_fp16, fast_int8=fast_int8, weak_typing=release.weak_typing)
        cache = EngineCache()
        model_path = Path(request.model_path)
        parsed = precision_inputs(request, trt, cache.directory, target="trtexec")
        calibration = parsed.calibration
        specs = model_inputs(parsed.onnx_path)
        shapes = shapes_flag(specs, request.batch, parsed.onnx_path)
        key = EngineKey(workload=request.workload, model_sha256=sha256_file(model_path), precision=request.precision,
                        batch=request.batch, tensorrt_version=release.text, tensorrt_header_version=release.text,
                        gpu_name=probe.device, compute_capability=probe.compute_capability,
                        workspace_mb=opts.workspace_mb, calibration_kind=calibration[0] if calibration else None,
                        calibration_sha256=calibration[2] if calibration else None,
                        fp16_model_sha256=parsed.fp16.sha256 if parsed.fp16 else None,
                        dla_core=opts.dla_core if request.hardware == "dla" else None)
        label = "trtexec {} {} batch {}".format(request.workload, request.precision, request.batch)
        builder = TrtexecBuilder(probe, cache, parsed.onnx_path, model_path, parsed.table,
                                 calibration[1] if calibration else None, shapes, opts, label)
        rechecked = recheck(cache, key, builder, label)
        failed = rechecked is not None and rechecked.passed is False
        force = (bool(opts.rebuild) and key.file_stem() not in _REBUILT) or failed
        engine = cache.ensure(key, builder, force=force, why=SIZE_RECHECK_FAILED if failed else None)
        if force:
            _REBUILT.add(key.file_stem())
        log.info("trtexec: engine %s (%s)", engine.path.name, engine.status)
        outputs = [s.name for s in _outputs(parsed.onnx_path)]
        info = self._info(request, probe, engine, cache, opts, shapes)
        if rechecked is not None and not failed:
            info["engine"]["precision_recheck"] = rechecked.to_dict()
        if parsed.fp16:
            info["fp16_model"] = parsed.fp16.info()
        return TrtexecSession(probe, cache, key, builder, _with_batch(specs, request.batch), outputs, shapes, opts,
                              request, info)

    @staticmethod
    def _info(request: LoadRequest, probe: tool.Probe, engine: CachedEngine, cache: EngineCache,
              opts: TrtexecOptions, shapes: Optional[str]) -> Dict[str, Any]:
        meta = engine.meta
        builder = meta.get("builder") if isinstance(meta.get("builder"), dict) else {}
        layers = meta.get("layers")
        return {
            "tensorrt": probe.version, "trtexec": str(probe.path), "trtexec_summary_format": probe.release.format,
            "device_name": probe.device, "compute_capability": "{}.{}".format(*probe.compute_capability),
            "options": opts.to_dict(), "shapes": shapes,
            "concurrency": "{} execution context(s), trtexec {}".format(
                request.concurrency, probe.release.streams_flag(request.concurrency)),
            "engine": {
                "path": str(engine.path), "status": engine.status, "bytes": meta.get("engine_bytes"),
                "sha256": meta.get("engine_sha256"), "built": meta.get("built"), "build_s": meta.get("build_s"),
                "built_by": builder.get("tool", "tensorrt (native library)"), "build_log": builder.get("log"),
                "build_attempts": meta.get("build_attempts"), "precision_check": meta.get("precision_check"),
                "layer_count": len(layers) if isinstance(layers, list) else None,
                "layer_precisions": precision_counts(layers),
                "calibration": ({"kind": meta.get("calibration_kind"), "path": meta.get("calibration_path"),
                                 "sha256": meta.get("calibration_sha256")} if meta.get("calibration_kind") else None),
                "workspace_mb": meta.get("workspace_mb"), "dla_core": meta.get("dla_core"),
                "timing_cache": str(cache.timing_cache_path(engine.key)),
            },
        }


def _outputs(onnx_path: Path) -> List[TensorSpec]:
    return onnx_io(onnx_path)[1]
