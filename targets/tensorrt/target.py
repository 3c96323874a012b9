"""TensorRT target: an engine per model x precision x batch from the cache, run by the native loop.

Load: look the engine up in engines/ (engine_cache.py), building it in a child process when missing
or stale (build_worker.py) and checking that an fp16 or int8 build holds its precision
(precision_check.py); then the native library deserializes it into `concurrency` execution contexts,
one CUDA stream each, all driven by one host thread of the library. Timed runs happen entirely in
the library (Session.timed_run); accuracy runs go through run(), one synchronous inference at a time.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from core.errors import MLMarkError, ModelError, TargetUnavailable, UnsupportedTask
from core.fileio import sha256_file
from core.specs import TensorSpec
from targets.base import Capabilities, LoadRequest, NativeTiming, Session, Target
from targets.native.library import MEMORY_MODES
from targets.native.loop import SYNC_MODES
from targets.options import OptionConflict, TargetOptions, boolean, choice, integer, option
from targets.tensorrt.build_worker import BuildRequest, build_in_child
from targets.tensorrt.engine_cache import BuildOutcome, CachedEngine, EngineCache, EngineKey
from targets.tensorrt.precision_check import (SIZE_CHECKS, build_until_precision_holds, precision_counts,
                                              recheck_cached, size_reference)

log = logging.getLogger("mlmark.tensorrt")

#: The GPU every engine is built for and run on; pick another with CUDA_VISIBLE_DEVICES.
DEVICE = 0
MAX_WORKSPACE_MB = 1 << 20
MAX_PRECISION_RETRIES = 20
CMAKE_HINT = ("rebuild cpp_environment with TensorRT: cmake -DTensorRT_ROOT=/path/to/TensorRT (the folder holding "
              "include/NvInfer.h and lib/libnvinfer.so; JetPack's own install is found without it), as "
              "targets/tensorrt/README.md shows")
#: Set to 1 by MLMark's own tests, and by nothing else: lets the target run on a native library linked against the
#: TensorRT test double (tests/tensorrt_double), whose every result is then marked as such and not valid.
ALLOW_TEST_DOUBLE_ENV = "MLMARK_ALLOW_TENSORRT_TEST_DOUBLE"
TEST_DOUBLE_NOTE = ("made with MLMark's TensorRT test double (tests/tensorrt_double), not TensorRT: a test of the "
                    "tool, not a TensorRT result")



@dataclass(frozen=True)
class TensorRTOptions(TargetOptions):
    """tensorrt's task params (targets/tensorrt/README.md says more)."""

    cuda_graph: bool = option(False, boolean())  # replay each context's inference as a CUDA graph captured at load
    #: how the loop's thread waits for an inference (see targets.native.loop.SYNC_MODES)
    sync: str = option("blocking", choice(*SYNC_MODES))
    #: hold each stream until an inference is enqueued: GPU compute time without the host
    launch_gate: bool = option(False, boolean())
    transfers: bool = option(True, boolean())  # copy the input in and the outputs out in every inference (trtexec's default)
    #: 'device' (trtexec's way), 'zero-copy', or 'auto' (zero-copy where integrated)
    memory: str = option("device", choice(*MEMORY_MODES))
    force_zero_copy: bool = option(False, boolean())  # allow zero-copy on a discrete GPU (slow: every access crosses PCIe)
    workspace_mb: int = option(1024, integer(1, MAX_WORKSPACE_MB))  # builder workspace (memory pool) limit
    #: rebuilds when an fp16/int8 build falls back to a wider precision
    precision_retries: int = option(2, integer(0, MAX_PRECISION_RETRIES))
    #: the engine-size rule of the precision check: only where the layers cannot tell, or beside them against the
    #: fp32 engine or the ONNX model (precision_check.py)
    size_check: str = option("fallback", choice(*SIZE_CHECKS))
    rebuild: bool = option(False, boolean())  # rebuild the engine (once per run) even when the cached one is current

    def __post_init__(self) -> None:
        if self.force_zero_copy and self.memory == "device":
            raise OptionConflict("params.force_zero_copy needs params.memory zero-copy or auto, not device (the "
                                 "default)")


#: Why a cached engine is rebuilt when it fails the task's stricter size rule (recheck).
SIZE_RECHECK_FAILED = "the cached engine fails the engine-size rule of params.size_check"

# Engines already force-rebuilt by this process: params.rebuild rebuilds once per run, not per task.
_REBUILT: Set[str] = set()


def _prefixed(exc: MLMarkError) -> str:
    text = str(exc)
    return text if text.startswith("target tensorrt") else "target tensorrt: " + text


class TensorRTSession(Session):
    """An engine deserialized into `concurrency` execution contexts inside a native loop."""

    has_timed_run = True

    def __init__(self, loop: Any, info: Dict[str, Any], invalid_reason: Optional[str] = None) -> None:
        self._loop = loop
        bindings = list(loop.bindings())
        self._inputs = [b for b in bindings if b.is_input]
        self._outputs = [b for b in bindings if not b.is_input]
        self._staged: Optional[Dict[str, np.ndarray]] = None
        # The batch each slot's buffers hold. The harness's loop calls run() from one thread per slot
        # (ssdmobilenet, whose NMS runs on the host): each thread loads and infers on its own slot only, which
        # the native library allows at once, so the slots' inferences run concurrently as they would in an
        # application with one thread per stream.
        self._in_slot: Dict[int, Dict[str, np.ndarray]] = {}
        self.info = info
        self.invalid_reason = invalid_reason

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec(b.name, tuple(b.shape), str(b.dtype)) for b in self._inputs]

    def output_names(self) -> List[str]:
        return [b.name for b in self._outputs]

    def stage(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The batch as contiguous arrays of the engine's input shapes and dtypes."""
        staged = {}
        for b in self._inputs:
            if b.name not in inputs:
                raise ModelError("the engine's input {} was not given (given: {})".format(b.name, sorted(inputs)))
            array = np.ascontiguousarray(inputs[b.name], dtype=b.numpy_dtype())
            if tuple(array.shape) != tuple(b.shape):
                raise ModelError("input {} has shape {}, the engine was built for {}".format(
                    b.name, list(array.shape), list(b.shape)))
            staged[b.name] = array
        self._staged = staged
        return staged

    def run(self, slot: int, inputs: Any) -> Sequence[np.ndarray]:
        # Loaded once per batch and slot: the harness's loop passes the same batch each time.
        if self._in_slot.get(slot) is not inputs:
            self._loop.set_inputs(inputs, slot)
            self._in_slot[slot] = inputs
        outputs = self._loop.infer(None, slot)  # with transfers on, the inference copies its input in itself
        return [outputs[b.name] for b in self._outputs]

    def timed_run(self, iterations: int, warmup_iterations: int = 0) -> NativeTiming:
        if self._staged is not None:
            slots = range(int(self._loop.used.concurrency))
            if any(self._in_slot.get(s) is not self._staged for s in slots):
                self._loop.set_inputs(self._staged)
                self._in_slot = {s: self._staged for s in slots}
        result = self._loop.run(iterations, warmup_iterations)
        return NativeTiming(latencies_s=result.e2e_s, gpu_s=result.gpu_s, wall_s=float(result.wall_s),
                            info={"loop": result.settings.to_dict(), "input_bytes": int(result.input_bytes),
                                  "output_bytes": int(result.output_bytes)})

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()


@dataclass(frozen=True)
class ParsedModel:
    """What the engine builder parses for a task, and the precision data it came from."""

    onnx_path: Path  # the model, its Q/DQ version (int8) or its float16 conversion (fp16, strongly typed)
    table: Optional[Path] = None  # implicit int8: the calibration table, headed for the running release
    calibration: Optional[Tuple[str, Path, str]] = None  # int8: (kind "table" or "qdq", file, SHA-256)
    fp16: Optional[Any] = None  # precision.fp16.Fp16Model


def precision_inputs(request: LoadRequest, trt: Any, cache_dir: Path, target: str = "tensorrt") -> "ParsedModel":
    """The ONNX file the builder parses for the task's precision, and the data it was made from (both targets).

    int8 on a release with implicit calibration (TensorRT < 10.1) takes the workload's calibration
    table; later releases (calibrators deprecated in 10.1, gone in 11) the Q/DQ model made from that
    table. A model that is already quantized (Q/DQ nodes of its own) runs as given on either. fp16
    on a strongly typed builder (10.12+ and 11: no FP16 flag) parses a float16 conversion of the
    model, made once into cache_dir/onnx. trt: TensorRTInfo (version, implicit_int8, weak_typing).
    """
    model = Path(request.model_path)
    if request.precision == "fp16" and not trt.weak_typing:
        from precision.fp16 import resolve_fp16

        fp16 = resolve_fp16(model, cache_dir / "onnx")
        return ParsedModel(onnx_path=fp16.path, fp16=fp16)
    if request.precision != "int8":
        return ParsedModel(onnx_path=model)
    from precision.qdq import resolve_qdq
    from precision.table import check_table_for_model, table_for_release, table_path

    if trt.implicit_int8:
        import onnx

        from precision.qdq import is_qdq_model

        if not is_qdq_model(onnx.load(str(model), load_external_data=False)):
            table = table_path(request.workload)
            if not table.is_file():
                raise ModelError("target {}: precision int8 needs the calibration table {}, which does not "
                                 "exist: make it with python utility/calibrate.py --workload {} --model {}".format(
                                     target, table, request.workload, model))
            check_table_for_model(table, model, request.workload)
            served = table_for_release(table, trt.version, cache_dir / "calibration")
            return ParsedModel(onnx_path=model, table=served, calibration=("table", table, sha256_file(table)))
    qdq = resolve_qdq(model, request.workload)
    return ParsedModel(onnx_path=qdq.path, calibration=("qdq", qdq.path, qdq.sha256))


class _EngineBuilder:
    """The cache's builder: TensorRT's builder in a child process, checked for its precision."""

    def __init__(self, library: Any, cache: EngineCache, onnx_path: Path, model_path: Path,
                 calibration_table: Optional[Path], calibration_path: Optional[Path], retries: int, label: str,
                 size_check: str = "fallback") -> None:
        self.library = library
        self.cache = cache
        self.onnx_path = onnx_path  # what the parser reads: the model, or its Q/DQ version for int8
        self.model_path = model_path
        self.calibration_table = calibration_table  # implicit int8 only
        self.calibration_path = calibration_path  # table or Q/DQ model, for the sidecar
        self.retries = retries
        self.label = label
        self.size_check = size_check

    def size_reference(self, key: EngineKey) -> Any:
        """The size rule's reference for key's engine (precision_check.size_reference)."""
        return size_reference(self.size_check, self.model_path, self.cache, key, lambda: _EngineBuilder(
            self.library, self.cache, self.model_path, self.model_path, None, None, 0,
            self.label.replace(key.precision, "fp32 (size reference)")))

    def __call__(self, key: EngineKey, engine_file: Path) -> BuildOutcome:
        timing_cache = self.cache.timing_cache_path(key)
        reports: List[Dict[str, Any]] = []

        def build_once() -> Tuple[Optional[List[Dict[str, Any]]], int]:
            request = BuildRequest(
                onnx_path=str(self.onnx_path), engine_path=str(engine_file), precision=key.precision,
                batch=key.batch, device=DEVICE, workspace_mb=key.workspace_mb,
                calibration_table=str(self.calibration_table) if self.calibration_table else None,
                timing_cache=str(timing_cache), library=str(self.library.path),
                log_level=logging.getLogger().getEffectiveLevel())
            with tempfile.TemporaryDirectory(prefix="mlmark-trt-build-") as work:
                report = build_in_child(request, self.label, Path(work))
            reports.append(report)
            return report.get("layers"), engine_file.stat().st_size

        decision, attempts = build_until_precision_holds(key.precision, build_once, self.size_reference(key),
                                                         self.retries, self.label, self.size_check)
        last = reports[-1]
        layers = last.get("layers")
        return BuildOutcome(build_s=float(last.get("build_s") or 0.0), layers=sidecar_layers(layers), record={
            "model_path": str(self.model_path), "onnx_parsed": str(self.onnx_path),
            "calibration_path": str(self.calibration_path) if self.calibration_path else None,
            "builder": {"workspace_mb": key.workspace_mb, "timing_cache": str(timing_cache),
                        "timing_cache_loaded": bool(last.get("timing_cache_loaded")),
                        "timing_cache_saved": bool(last.get("timing_cache_saved"))},
            "precision_check": decision.to_dict(), "build_attempts": attempts,
            "build_s_all_attempts": round(sum(float(r.get("build_s") or 0.0) for r in reports), 3),
        })


def _version_label(trt: Any) -> str:
    """The TensorRT version as results show it; the test double is named as such."""
    if getattr(trt, "test_double", False):
        return "TensorRT test double for the {} headers (not TensorRT)".format(trt.header_version)
    return str(trt.version)


def sidecar_layers(layers: Optional[List[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    """Layer records for the sidecar: what the precision check reads, without the inspector's bulky raw JSON."""
    if layers is None:
        return None
    out = []
    for layer in layers:
        raw = layer.get("raw") if isinstance(layer.get("raw"), dict) else {}
        out.append({"name": layer.get("name"), "type": layer.get("type"),
                    "parameter_type": raw.get("ParameterType"), "precision": layer.get("precision"),
                    "input_precisions": layer.get("input_precisions") or []})
    return out


def recheck(cache: EngineCache, key: EngineKey, builder: Any, label: str) -> Any:
    """The task's precision check (params.size_check) of a cached engine that was checked by a weaker size rule
    when it was built: None when there is nothing to recheck; a failing decision means: rebuild (both targets)."""
    if builder.size_check == "fallback":  # the weakest rule: every cached engine was checked at least so
        return None
    cached = cache.lookup(key)
    if cached is None:
        return None
    decision = recheck_cached(key.precision, cached.meta, builder.size_check,
                              builder.size_reference(key) if key.dla_core is None else None)
    if decision is not None and decision.passed is False:
        log.warning("%s: the cached engine %s fails params.size_check %s: %s; rebuilding", label, cached.path.name,
                    builder.size_check, decision.detail)
    return decision


class TensorRTTarget(Target):
    """NVIDIA TensorRT through the native library (cpp_environment built with TensorRT)."""

    name = "tensorrt"
    install_hint = "build cpp_environment with TensorRT (targets/tensorrt/README.md)"
    Options = TensorRTOptions

    def __init__(self) -> None:
        self._runtime_cache: Optional[Tuple[Any, Any, Any]] = None

    # -- what is here ----------------------------------------------------------------------------

    def _runtime(self) -> Tuple[Any, Any, Any]:
        """The loaded library, its TensorRT and the GPU: TargetUnavailable in one line if any is missing."""
        if self._runtime_cache is None:
            from targets.native.library import load_library

            try:
                library = load_library()
            except TargetUnavailable as exc:
                raise TargetUnavailable(_prefixed(exc)) from None
            from targets.native.tensorrt import tensorrt_info

            try:
                trt = tensorrt_info(library, DEVICE)
            except TargetUnavailable as exc:
                text = _prefixed(exc)
                lower = str(exc).lower()
                if "TensorRT_ROOT" not in text and ("not found" in lower or "without tensorrt" in lower):
                    text += "; " + CMAKE_HINT
                raise TargetUnavailable(text) from None
            if trt.test_double and os.environ.get(ALLOW_TEST_DOUBLE_ENV) != "1":
                raise TargetUnavailable(
                    "target tensorrt: the native library {} was linked against MLMark's TensorRT test double "
                    "(tests/tensorrt_double), not TensorRT: it exists for MLMark's own tests and gives no TensorRT "
                    "result; {}".format(library.path, CMAKE_HINT))
            try:
                device = library.device_info(DEVICE)
            except TargetUnavailable as exc:
                raise TargetUnavailable(_prefixed(exc)) from None
            self._runtime_cache = (library, trt, device)
        return self._runtime_cache

    def check_installed(self) -> None:
        self._runtime()

    def capabilities(self) -> Capabilities:
        _, trt, _ = self._runtime()
        precisions = ["fp32"] + [p for p, fast in (("fp16", trt.fast_fp16), ("int8", trt.fast_int8)) if fast]
        return Capabilities(precisions={"gpu": tuple(precisions)})

    def unsupported_hint(self, hardware: str) -> str:
        """Why a hardware or precision is missing here."""
        if hardware == "dla":
            return " (this target runs on the GPU; DLA cores are not supported)"
        if hardware == "cpu":
            return " (TensorRT runs on NVIDIA GPUs only)"
        _, trt, device = self._runtime()
        slow = [p for p, fast in (("fp16", trt.fast_fp16), ("int8", trt.fast_int8)) if not fast]
        if not slow:
            return ""
        return (" ({} (sm_{}) has no fast {}: TensorRT's platformHasFast{} is false, so such an engine would run no "
                "faster than fp32 and its score would mislead)".format(
                    device.name, device.sm, " or ".join(slow), "/".join(p.capitalize() for p in slow)))

    def versions(self) -> Dict[str, str]:
        library, trt, device = self._runtime()
        return {"tensorrt": _version_label(trt), "tensorrt_headers": trt.header_version,
                "cuda_driver": device.driver_version, "cuda_runtime": device.runtime_version,
                "native_library": library.source_hash[:12]}

    # -- options ---------------------------------------------------------------------------------

    # -- load ------------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> Session:
        from targets.native.loop import LoopSettings

        if request.hardware != "gpu":
            raise UnsupportedTask("target tensorrt: hardware {} is not supported{}".format(
                request.hardware, self.unsupported_hint(request.hardware)))
        library, trt, device = self._runtime()
        opts = TensorRTOptions.parse(request.options, "target tensorrt")
        settings = LoopSettings(concurrency=request.concurrency, sync=opts.sync, cuda_graph=opts.cuda_graph,
                                launch_gate=opts.launch_gate, transfers=opts.transfers, memory=opts.memory,
                                force_zero_copy=opts.force_zero_copy, device=DEVICE).validate()
        model_path = Path(request.model_path)
        cache = EngineCache()
        parsed = precision_inputs(request, trt, cache.directory)
        onnx_path, table, calibration, fp16 = parsed.onnx_path, parsed.table, parsed.calibration, parsed.fp16
        # An engine of the test double is named and checked as such: it never passes for a TensorRT engine.
        key = EngineKey(workload=request.workload, model_sha256=sha256_file(model_path), precision=request.precision,
                        batch=request.batch,
                        tensorrt_version=trt.version + ("-test-double" if trt.test_double else ""),
                        tensorrt_header_version=trt.header_version,
                        gpu_name=device.name, compute_capability=device.compute_capability,
                        workspace_mb=opts.workspace_mb, calibration_kind=calibration[0] if calibration else None,
                        calibration_sha256=calibration[2] if calibration else None,
                        fp16_model_sha256=fp16.sha256 if fp16 else None)
        label = "tensorrt {} {} batch {}".format(request.workload, request.precision, request.batch)
        builder = _EngineBuilder(library, cache, onnx_path, model_path, table, calibration[1] if calibration else None,
                                 opts.precision_retries, label, opts.size_check)
        rechecked = recheck(cache, key, builder, label)
        failed = rechecked is not None and rechecked.passed is False
        force = (opts.rebuild and key.file_stem() not in _REBUILT) or failed
        with cache.open(key, builder, force=force, why=SIZE_RECHECK_FAILED if failed else None) as engine:
            if force:
                _REBUILT.add(key.file_stem())
            log.info("tensorrt: engine %s (%s)", engine.path.name, engine.status)
            loop = self._create_loop(library, settings, engine, request)
        info = self._info(request, trt, device, engine, cache, opts, loop)
        if rechecked is not None and not failed:
            info["engine"]["precision_recheck"] = rechecked.to_dict()
        if fp16:
            info["fp16_model"] = fp16.info()
        if opts.cuda_graph and not loop.used.cuda_graph:
            info["cuda_graph_note"] = ("CUDA-graph capture failed or did not verify (the log says why): the engine ran "
                                       "without CUDA graphs, as trtexec does")
            log.warning("tensorrt: %s", info["cuda_graph_note"])
        if trt.test_double:
            log.warning("tensorrt: %s", TEST_DOUBLE_NOTE)
        return TensorRTSession(loop, info, invalid_reason=TEST_DOUBLE_NOTE if trt.test_double else None)

    @staticmethod
    def _create_loop(library: Any, settings: Any, engine: CachedEngine, request: LoadRequest) -> Any:
        from targets.native.loop import EngineWorkload, NativeLoop

        try:
            return NativeLoop(settings, EngineWorkload(engine_path=engine.path), library)
        except MLMarkError as exc:
            hint = ""
            if "memory" in str(exc).lower():
                hint = "; try a smaller params.batch (now {}) or params.concurrency (now {})".format(
                    request.batch, request.concurrency)
            raise type(exc)("target tensorrt: cannot run engine {} in {} execution context(s): {}{}".format(
                engine.path.name, request.concurrency, exc, hint)) from None

    @staticmethod
    def _info(request: LoadRequest, trt: Any, device: Any, engine: CachedEngine, cache: EngineCache,
              opts: TensorRTOptions, loop: Any) -> Dict[str, Any]:
        meta = engine.meta
        used = loop.used.to_dict() if hasattr(loop.used, "to_dict") else dict(loop.used)
        host_post = request.host_postprocess
        return {
            "tensorrt": _version_label(trt), "tensorrt_test_double": trt.test_double,
            "tensorrt_headers": trt.header_version, "implicit_int8": trt.implicit_int8,
            "device": device.describe(), "device_name": device.name,
            "compute_capability": "{}.{}".format(*device.compute_capability),
            "options": opts.to_dict(),
            "loop": used,
            "concurrency": "{} execution context(s), one CUDA stream each, driven by {}".format(
                request.concurrency, "one harness thread each" if host_post else "one host thread of the native library"),
            "timing": ("the harness's loop through run(): SSD box decoding and NMS run on the host inside the timed "
                       "region; one thread per execution context, each inferring on its own stream while the "
                       "others infer or post-process" if host_post else "the native library's loop (Session.timed_run)"),
            "engine": {
                "path": str(engine.path), "status": engine.status, "bytes": meta.get("engine_bytes"),
                "sha256": meta.get("engine_sha256"), "built": meta.get("built"), "build_s": meta.get("build_s"),
                "build_attempts": meta.get("build_attempts"), "precision_check": meta.get("precision_check"),
                "layer_precisions": precision_counts(meta.get("layers")),
                "calibration": ({"kind": meta.get("calibration_kind"), "path": meta.get("calibration_path"),
                                 "sha256": meta.get("calibration_sha256")} if meta.get("calibration_kind") else None),
                "workspace_mb": meta.get("workspace_mb"), "timing_cache": str(cache.timing_cache_path(engine.key)),
            },
        }
