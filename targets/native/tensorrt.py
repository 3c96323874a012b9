"""The native library's TensorRT backend from Python: what it offers, engine builds and engine inspection.

The TensorRT target (targets/tensorrt/) decides which engine to build and when; this module only calls
the library. Running an engine goes through the loop: NativeLoop(settings, EngineWorkload(path)).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from core.errors import ConfigError, MLMarkError, ModelError, RunError, TargetUnavailable, UnsupportedTask
from targets.native import library as native
from targets.native.library import NativeLibrary, TrtBuildConfigStruct

log = logging.getLogger("mlmark.native")

TENSORRT_MISSING = ("TensorRT was not found when cpp_environment was built; install it or rebuild with cmake "
                    "-DTensorRT_ROOT=<dir> (see targets/tensorrt/README.md)")

PRECISIONS = {"fp32": 0, "fp16": 1, "int8": 2}
MAX_BATCH = 4096
MAX_WORKSPACE_MB = 1 << 20


@dataclass(frozen=True)
class TensorRTInfo:
    """The TensorRT the library was built against and runs with, and what the GPU runs fast."""

    version: str  # runtime version (libnvinfer loaded now), e.g. "10.3.0"
    header_version: str  # version of the headers the library was compiled against
    implicit_int8: bool  # INT8 from a calibration table (calibrators: TensorRT < 10.1)
    inspector: bool  # IEngineInspector can report each layer's precision
    fast_fp16: bool
    fast_int8: bool
    weak_typing: bool = True  # the builder takes precision flags (< 10.12); else the model's types decide
    progress_monitor: bool = False  # builds log phases and steps (>= 10.0)
    fast_from_builder: bool = False  # fast_* came from IBuilder rather than the compute capability table
    # The library was linked against MLMark's TensorRT test double (tests/tensorrt_double), not TensorRT:
    # nothing it builds or measures is a TensorRT result.
    test_double: bool = False


@dataclass
class EngineBuildSpec:
    """One engine build: the ONNX model, where the engine goes, precision and fixed batch."""

    onnx_path: Path
    engine_path: Path  # written whole or not at all; give a temporary name and rename it into place
    precision: str  # 'fp32', 'fp16' or 'int8'
    batch: int
    device: int = 0
    workspace_mb: int = 1024
    calibration_table: Optional[Path] = None  # int8 with implicit quantization (TensorRT < 10.1)
    timing_cache: Optional[Path] = None  # reused when present, saved after the build
    detailed_profiling: bool = True  # kDETAILED, so the inspector reports layer precisions

    def validate(self) -> "EngineBuildSpec":
        """Raise ConfigError for a bad field, ModelError for a missing file; returns self."""
        if self.precision not in PRECISIONS:
            raise ConfigError("precision must be one of {}, got {!r}".format(", ".join(PRECISIONS), self.precision))
        if not isinstance(self.batch, int) or not 1 <= self.batch <= MAX_BATCH:
            raise ConfigError("batch must be an integer within 1..{}, got {!r}".format(MAX_BATCH, self.batch))
        if not isinstance(self.workspace_mb, int) or not 1 <= self.workspace_mb <= MAX_WORKSPACE_MB:
            raise ConfigError("workspace_mb must be an integer within 1..{}, got {!r}".format(
                MAX_WORKSPACE_MB, self.workspace_mb))
        if not isinstance(self.device, int) or self.device < 0:
            raise ConfigError("device must be a GPU index >= 0, got {!r}".format(self.device))
        if not Path(self.onnx_path).is_file():
            raise ModelError("the ONNX model {} does not exist".format(self.onnx_path))
        if self.calibration_table is not None:
            if self.precision != "int8":
                raise ConfigError("a calibration table is for int8 builds only (precision is {})".format(self.precision))
            if not Path(self.calibration_table).is_file():
                raise ModelError("the calibration table {} does not exist".format(self.calibration_table))
        if not Path(self.engine_path).parent.is_dir():
            raise ConfigError("the engine's folder {} does not exist".format(Path(self.engine_path).parent))
        return self


@dataclass
class EngineBuildReport:
    """What a build took and gave."""

    build_s: float
    engine_bytes: int
    layers: Optional[List[Dict[str, Any]]]  # normalize_layers() of the inspector's output; None if unavailable
    timing_cache_loaded: bool = False
    timing_cache_saved: bool = False


def _raise_for(lib: NativeLibrary, status: int, where: str, out_of_memory_hint: str = "") -> None:
    """The harness error for a TensorRT call's status: the model's fault, the target's, or the run's."""
    if status == native.OK:
        return
    message = lib.last_error(status, where)
    if status == native.ERR_MODEL:
        raise ModelError(message)
    if status == native.ERR_INVALID_ARGUMENT:
        raise ConfigError(message)
    if status in (native.ERR_NO_DRIVER, native.ERR_NO_DEVICE):
        raise TargetUnavailable(message)
    if status == native.ERR_UNSUPPORTED:
        raise UnsupportedTask(message)
    if status == native.ERR_OUT_OF_MEMORY and out_of_memory_hint and out_of_memory_hint not in message:
        message = "{}; {}".format(message, out_of_memory_hint)
    raise RunError(message)


def tensorrt_info(lib: NativeLibrary, device: int = 0) -> TensorRTInfo:
    """What the library's TensorRT offers on a GPU; TargetUnavailable when it was built without TensorRT."""
    info = lib.trt_info(device)
    if not info.built_with_tensorrt:
        raise TargetUnavailable(TENSORRT_MISSING)
    result = TensorRTInfo(
        version=info.runtime_version.decode("ascii", "replace"),
        header_version=info.header_version.decode("ascii", "replace"),
        implicit_int8=bool(info.implicit_int8), inspector=bool(info.inspector), fast_fp16=bool(info.fast_fp16),
        fast_int8=bool(info.fast_int8), weak_typing=bool(info.weak_typing),
        progress_monitor=bool(info.progress_monitor), fast_from_builder=bool(info.fast_from_builder),
        test_double=bool(info.test_double))
    if result.version.split(".")[:2] != result.header_version.split(".")[:2]:
        log.warning("the native library was compiled against TensorRT %s but TensorRT %s is loaded; rebuild it (delete "
                    "%s) if engines fail to build or load", result.header_version, result.version, lib.path.parent)
    return result


def build_engine(lib: NativeLibrary, spec: EngineBuildSpec) -> EngineBuildReport:
    """Build an engine file; ModelError for a model the parser rejects (its errors listed), RunError when the
    build runs out of memory (suggesting a smaller workspace or batch) or TensorRT fails otherwise."""
    spec.validate()
    tensorrt_info(lib, spec.device)  # TargetUnavailable first when the library has no TensorRT
    config = TrtBuildConfigStruct()
    config.device = spec.device
    config.onnx_path = os.fsencode(str(spec.onnx_path))
    config.engine_path = os.fsencode(str(spec.engine_path))
    config.calibration_table = os.fsencode(str(spec.calibration_table)) if spec.calibration_table else None
    config.timing_cache = os.fsencode(str(spec.timing_cache)) if spec.timing_cache else None
    config.precision = PRECISIONS[spec.precision]
    config.batch = spec.batch
    config.workspace_mb = spec.workspace_mb
    config.detailed_profiling = int(bool(spec.detailed_profiling))
    status, result = lib.trt_build_engine(config)
    _raise_for(lib, status, "mlmark_trt_build_engine",
               "give a smaller workspace (now {} MiB) or batch (now {})".format(spec.workspace_mb, spec.batch))
    layers: Optional[List[Dict[str, Any]]] = None
    try:
        layers = inspect_engine(lib, Path(spec.engine_path), spec.device)
    except MLMarkError as exc:
        # The engine is built; without layer data the precision check falls back to engine sizes.
        log.warning("could not inspect the new engine %s: %s", spec.engine_path, exc)
    return EngineBuildReport(build_s=float(result.build_s), engine_bytes=int(result.engine_bytes), layers=layers,
                             timing_cache_loaded=bool(result.timing_cache_loaded),
                             timing_cache_saved=bool(result.timing_cache_saved))


def inspect_engine(lib: NativeLibrary, engine_path: Path, device: int = 0) -> Optional[List[Dict[str, Any]]]:
    """Each layer of an engine file with its precision (normalize_layers); None where the release cannot tell."""
    info = tensorrt_info(lib, device)
    if not info.inspector:
        return None
    if not Path(engine_path).is_file():
        raise ModelError("the TensorRT engine {} does not exist".format(engine_path))
    status, text = lib.trt_inspect_engine(device, Path(engine_path))
    _raise_for(lib, status, "mlmark_trt_inspect_engine")
    return normalize_layers(text)


# Inspector format strings name the element type briefly without an execution context ("Float", "Half",
# "Int8") and in full with one ("Row major linear FP32 format", "Channel major FP16 format where channel
# % 2 == 0", "Four wide channel vectorized row major Int8 format"). Checked in this order: "uint8"
# contains "int8", and "bfloat16" contains "float".
_FORMAT_TOKENS = (
    ("uint8", "other"), ("int8", "int8"), ("bf16", "bf16"), ("bfloat", "bf16"), ("fp8", "fp8"), ("e4m3", "fp8"),
    ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32"), ("int32", "other"), ("int64", "other"),
    ("bool", "other"), ("int4", "other"), ("fp4", "other"),
)


def format_precision(fmt: Any) -> Optional[str]:
    """The precision an inspector format string names: 'fp32', 'fp16', 'int8', 'bf16', 'fp8', 'other' or None."""
    if not isinstance(fmt, str) or not fmt:
        return None
    lower = fmt.lower()
    for token, precision in _FORMAT_TOKENS:
        if token in lower:
            return precision
    return None


def _tensor_precisions(tensors: Any) -> List[Optional[str]]:
    if not isinstance(tensors, list):
        return []
    out = []
    for t in tensors:
        if isinstance(t, dict):
            out.append(format_precision(t.get("Format/Datatype", t.get("DataType"))))
    return out


def normalize_layers(text: str) -> Optional[List[Dict[str, Any]]]:
    """The inspector's JSON as a list of {"name", "type", "precision", "input_precisions", "output_precisions",
    "raw"}; None when it lists no layers.

    precision is the one precision all of a layer's input and output tensors share ('fp32', 'fp16', 'int8', or
    'bf16'/'fp8'), 'mixed' when they differ (reformats, quantize/dequantize, a layer that changes precision),
    None when the layer has no floating-point or int8 tensor (shape arithmetic) or the engine was built
    without detailed profiling (then layers are bare names).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RunError("the engine inspector's output is not JSON: {}".format(exc))
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list) or not layers:
        return None
    out: List[Dict[str, Any]] = []
    for item in layers:
        if isinstance(item, str):
            out.append({"name": item, "type": None, "precision": None, "input_precisions": [],
                        "output_precisions": [], "raw": item})
            continue
        if not isinstance(item, dict):
            continue
        inputs = _tensor_precisions(item.get("Inputs"))
        outputs = _tensor_precisions(item.get("Outputs"))
        kinds = {p for p in inputs + outputs if p not in (None, "other")}
        precision = None if not kinds else (kinds.pop() if len(kinds) == 1 else "mixed")
        out.append({"name": item.get("Name"), "type": item.get("LayerType"), "precision": precision,
                    "input_precisions": inputs, "output_precisions": outputs, "raw": item})
    return out
