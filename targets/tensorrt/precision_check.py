"""Did TensorRT build the precision it was asked for? Pure decisions on recorded build data.

TensorRT treats fp16 and int8 as permissions, not orders, and sometimes builds an engine whose
kernels are all fp32 although fp16 was asked for (NVIDIA/TensorRT issue 3160). A score measured on
such an engine would be labelled fp16 and be an fp32 score. So after every fp16 or int8 build the
target checks what was built, and rebuilds a few times when it does not hold.

The rule, in order:

1. **Layer precisions** (IEngineInspector, where the release can tell). Only *compute layers* count:
   convolutions, deconvolutions, fully connected layers and matrix multiplies, which hold the
   weights and do nearly all the arithmetic. Reformat, shuffle, shape, softmax, pooling,
   element-wise, concatenation and plugin layers legitimately stay in fp32 (or have no precision
   of their own) and are ignored. A compute layer counts as running in the requested precision
   when its precision is that one, or when it mixes precisions and reads the requested one
   (TensorRT kernels compute in their input precision and convert in their epilogue, which is how
   the inspector shows a layer on the boundary between an int8 and an fp16 region). The engine
   passes when at least half of its compute layers run in the requested precision. A fallback
   engine of issue 3160 has none of them; a good engine has nearly all, TensorRT keeping a few in a
   wider precision where the narrow kernel is not faster (the first convolution, which reads only 3
   channels, and depthwise convolutions in int8). One half lies far from both.

2. **Engine size**, where the release cannot tell (no inspector, or no compute layer with a known
   precision): the fp32 engine of the same model and batch, divided by this engine, must reach
   1.5 for fp16 and 2.0 for int8. Weights dominate an engine's size and halve in fp16, so a real
   fp16 engine approaches a ratio of 2 and a fallback engine stays near 1; the ENOT latency
   server, which checks trtexec's engines the same way for the same issue, uses 1.5 (1.9 in some
   of its versions): 1.5 leaves room for what does not shrink (kernel code, metadata, the layers
   that stay fp32) and still lies far above the ~1.0 of a fallback. An int8 engine approaches 4;
   2.0 is what an fp16 engine can reach at best, so an int8 request that fell back to fp16 or fp32
   fails while one that keeps a few layers wider passes.

With `size_check` set to `fp32-engine` or `onnx` (target option `size_check`; `mlmark serve` sets
`fp32-engine` for every task that does not choose), rule 2 is applied beside rule 1, not only in its
place: an engine passes only when neither rule says it failed. This is the ENOT latency server's own
check, for engines whose layers report the requested precision while their weights stayed wide.
Against `onnx`, the reference is the size of the ONNX model itself, which needs no fp32 build (on a
Nano, minutes) but includes none of an engine's own overhead (kernels, metadata), so it suits models
whose weights dominate; it can only judge a model whose weights are float32 (else it says so).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from core.errors import RunError

log = logging.getLogger("mlmark.tensorrt")

#: Reduced precisions the check applies to; fp32 needs no check.
CHECKED = ("fp16", "int8")
#: Share of compute layers that must run in the requested precision.
LAYER_FRACTION = 0.5
#: fp32 engine size / engine size that the requested precision must reach (see the module docstring).
SIZE_RATIO = {"fp16": 1.5, "int8": 2.0}
#: When the size rule applies: only where the layers cannot tell ("fallback"), or beside them, against the fp32
#: engine of the same model and batch or against the ONNX model's own size.
SIZE_CHECKS = ("fallback", "fp32-engine", "onnx")
REFERENCES = {"fallback": "fp32 engine", "fp32-engine": "fp32 engine", "onnx": "ONNX model"}
#: Share of an ONNX model's weight bytes that must be float32 for its size to serve as the fp32 reference.
ONNX_FP32_SHARE = 0.9
#: Substrings of a layer's type (LayerType or ParameterType, lower case) that make it a compute layer:
#: Convolution, CaskConvolution, CaskGemmConvolution, Deconvolution, FullyConnected, gemm,
#: MatrixMultiply. Myelin (ForeignNode) blocks are left out: their boundary tensors need not show
#: the precision they compute in.
COMPUTE_MARKERS = ("convolution", "fullyconnected", "gemm", "matrixmultiply", "matmul")

ISSUE = "NVIDIA/TensorRT issue 3160"


@dataclass(frozen=True)
class PrecisionDecision:
    """The outcome of one check: passed is None when the data cannot tell."""

    requested: str
    method: str  # "layers", "engine size", "not needed" or "undetermined"
    passed: Optional[bool]
    detail: str  # one line for logs and errors
    value: Optional[float] = None  # share of compute layers, or size ratio
    threshold: Optional[float] = None
    counts: Dict[str, int] = field(default_factory=dict)  # compute layers per precision
    reference: Optional[str] = None  # what the size rule compared with: "fp32 engine" or "ONNX model"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def layer_type(layer: Mapping[str, Any]) -> str:
    """The layer's type in lower case, from the record or, failing that, the inspector's raw JSON."""
    parts = [str(layer.get("type") or ""), str(layer.get("parameter_type") or "")]
    raw = _raw(layer)
    for key in ("ParameterType", "LayerType"):
        if raw.get(key):
            parts.append(str(raw[key]))
    return " ".join(parts).lower()


def is_compute_layer(layer: Mapping[str, Any]) -> bool:
    """A convolution, deconvolution, fully connected layer or matrix multiply."""
    kind = layer_type(layer)
    return any(marker in kind for marker in COMPUTE_MARKERS)


def _raw(layer: Mapping[str, Any]) -> Dict[str, Any]:
    raw = layer.get("raw")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _input_precisions(layer: Mapping[str, Any]) -> List[str]:
    """The precisions of a layer's input tensors: from the record, else from the inspector's raw JSON."""
    from targets.native.tensorrt import format_precision

    listed = layer.get("input_precisions")
    if isinstance(listed, list) and listed:
        return [p for p in listed if p]
    found = []
    for tensor in _raw(layer).get("Inputs") or []:
        if isinstance(tensor, dict):
            p = format_precision(tensor.get("Format/Datatype", tensor.get("DataType")))
            if p:
                found.append(p)
    return found


def runs_in(layer: Mapping[str, Any], requested: str) -> bool:
    """Whether a compute layer runs in the requested precision (see the module docstring for 'mixed')."""
    precision = layer.get("precision")
    if precision == requested:
        return True
    return precision == "mixed" and requested in _input_precisions(layer)


def precision_counts(layers: Optional[Sequence[Mapping[str, Any]]]) -> Dict[str, int]:
    """Compute layers per precision ('unknown' where the release did not say)."""
    counts: Dict[str, int] = {}
    for layer in layers or ():
        if is_compute_layer(layer):
            key = str(layer.get("precision") or "unknown")
            counts[key] = counts.get(key, 0) + 1
    return counts


def check_layers(requested: str, layers: Optional[Sequence[Mapping[str, Any]]]) -> PrecisionDecision:
    """Rule 1: the share of compute layers running in the requested precision."""
    if requested not in CHECKED:
        return PrecisionDecision(requested, "not needed", True, "{} needs no precision check".format(requested))
    counted = [layer for layer in layers or () if is_compute_layer(layer) and layer.get("precision")]
    counts = precision_counts(layers)
    if not counted:
        why = ("the engine inspector gave no layer information" if not layers else
               "no compute layer with a known precision among {} layers".format(len(layers)))
        return PrecisionDecision(requested, "undetermined", None, why, counts=counts)
    hits = sum(1 for layer in counted if runs_in(layer, requested))
    share = hits / len(counted)
    detail = "{} in {} of {} compute layers ({:.0f} %, at least {:.0f} % required; {})".format(
        requested, hits, len(counted), 100 * share, 100 * LAYER_FRACTION, _describe_counts(counts))
    return PrecisionDecision(requested, "layers", share >= LAYER_FRACTION, detail, share, LAYER_FRACTION, counts)


def check_size(requested: str, engine_bytes: int, fp32_engine_bytes: Optional[int],
               reference: str = "fp32 engine") -> PrecisionDecision:
    """Rule 2: the reference's size (the fp32 engine's, or the ONNX model's) / this engine's size against the
    precision's threshold; undetermined when there is no usable reference (None)."""
    if requested not in CHECKED:
        return PrecisionDecision(requested, "not needed", True, "{} needs no precision check".format(requested))
    if fp32_engine_bytes is None:
        return PrecisionDecision(requested, "undetermined", None, "the {} gives no fp32 size to compare with (its "
                                 "weights are not float32)".format(reference), reference=reference)
    if engine_bytes <= 0 or fp32_engine_bytes <= 0:
        return PrecisionDecision(requested, "undetermined", None, "an engine size is zero", reference=reference)
    ratio = fp32_engine_bytes / engine_bytes
    threshold = SIZE_RATIO[requested]
    detail = "{} {} / {} engine {} = {:.2f} (at least {:.1f} required)".format(
        reference, _mb(fp32_engine_bytes), requested, _mb(engine_bytes), ratio, threshold)
    return PrecisionDecision(requested, "engine size", ratio >= threshold, detail, ratio, threshold,
                             reference=reference)


def needs_fp32_reference(requested: str, layers: Optional[Sequence[Mapping[str, Any]]],
                         size_check: str = "fallback") -> bool:
    """True when the size rule will be asked, so the reference size is needed."""
    if requested not in CHECKED:
        return False
    return size_check != "fallback" or check_layers(requested, layers).passed is None


def decide(requested: str, layers: Optional[Sequence[Mapping[str, Any]]], engine_bytes: int,
           fp32_engine_bytes: Optional[int] = None, size_check: str = "fallback") -> PrecisionDecision:
    """size_check "fallback": rule 1 where the layers tell, else rule 2 when the fp32 engine's size is given, else
    undetermined. "fp32-engine" or "onnx": both rules (fp32_engine_bytes is then that reference's size, None where
    it has none); fails when either fails, passes when one passes and the other cannot tell."""
    by_layers = check_layers(requested, layers)
    if size_check == "fallback":
        if by_layers.passed is not None or fp32_engine_bytes is None:
            return by_layers
        by_size = check_size(requested, engine_bytes, fp32_engine_bytes)
        return PrecisionDecision(by_size.requested, by_size.method, by_size.passed,
                                 "{} ({})".format(by_size.detail, by_layers.detail), by_size.value, by_size.threshold,
                                 by_layers.counts, by_size.reference)
    if requested not in CHECKED:
        return by_layers
    by_size = check_size(requested, engine_bytes, fp32_engine_bytes, REFERENCES[size_check])
    verdicts = (by_layers.passed, by_size.passed)
    passed = False if False in verdicts else (True if True in verdicts else None)
    failed = [d for d in (by_layers, by_size) if d.passed is False]
    # The one that failed comes first: it is what an error line must say.
    ordered = failed + [d for d in (by_layers, by_size) if d not in failed]
    return PrecisionDecision(requested, "layers and engine size", passed,
                             "; ".join(d.detail for d in ordered), by_size.value, by_size.threshold,
                             by_layers.counts, by_size.reference)


def covers(recorded: Any, size_check: str) -> bool:
    """Whether the check recorded with a cached engine (its sidecar's precision_check) already applied what
    size_check asks: "fallback" asks nothing more; the others ask the size rule against their reference."""
    if size_check == "fallback":
        return True
    return (isinstance(recorded, dict) and recorded.get("method") in ("layers and engine size", "not needed")
            and (recorded.get("method") == "not needed" or recorded.get("reference") == REFERENCES[size_check]))


def size_reference(size_check: str, model_path: Any, cache: Any, key: Any,
                   fp32_builder: Callable[[], Any]) -> Callable[[], Optional[int]]:
    """The size rule's reference for key's engine, computed when first asked for: with size_check onnx, the
    model's own fp32 size; else the fp32 engine's size, built by fp32_builder() and cached for that key."""
    if size_check == "onnx":
        return lambda: onnx_fp32_bytes(model_path)
    return lambda: cache.ensure(key.fp32_reference(), fp32_builder()).engine_bytes


def onnx_fp32_bytes(path: Any) -> Optional[int]:
    """The ONNX file's size as an fp32 reference, or None when its weights are not float32 (a float16 or int8
    model is no fp32 reference). Reads the model's initializers without their external data."""
    import os

    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    float32 = total = 0
    for init in model.graph.initializer:
        size = len(init.raw_data) if init.HasField("raw_data") else init.ByteSize()
        total += size
        if init.data_type == TensorProto.FLOAT:
            float32 += size
    if total == 0 or float32 < ONNX_FP32_SHARE * total:
        return None
    return os.path.getsize(str(path))


def build_until_precision_holds(requested: str, build_once: Callable[[], Tuple[Optional[List[Dict[str, Any]]], int]],
                                fp32_engine_bytes: Optional[Callable[[], Optional[int]]], retries: int,
                                what: str, size_check: str = "fallback") -> Tuple[PrecisionDecision, int]:
    """Build, check, and rebuild up to `retries` times; returns the passing decision and the builds it took.

    build_once() builds into the same place each time and returns (layers, engine bytes);
    fp32_engine_bytes() gives the size rule's reference (the fp32 engine's size, or with size_check "onnx" the
    ONNX model's) and is called at most once, only when the size rule is asked; None where an engine's size says
    nothing of its precision (a DLA engine holds DLA loadables): then only the layers decide.
    Raises RunError (one line) when no build holds.
    """
    attempts = 1 + max(0, int(retries))
    reference: List[Optional[int]] = []
    if fp32_engine_bytes is None:
        size_check = "fallback"
    decision = PrecisionDecision(requested, "undetermined", None, "not built")
    for attempt in range(1, attempts + 1):
        layers, size = build_once()
        if requested not in CHECKED:
            return check_layers(requested, layers), attempt
        if fp32_engine_bytes is not None and needs_fp32_reference(requested, layers, size_check) and not reference:
            found = fp32_engine_bytes()
            reference.append(int(found) if found is not None else None)
        decision = decide(requested, layers, size, reference[0] if reference else None, size_check)
        if decision.passed:
            if attempt > 1:
                log.info("%s: build %d of %d holds %s: %s", what, attempt, attempts, requested, decision.detail)
            return decision, attempt
        if decision.passed is None:  # no rule could decide: accept, and say so in the sidecar and result
            log.warning("%s: cannot check that the engine runs in %s: %s", what, requested, decision.detail)
            return decision, attempt
        if attempt < attempts:
            log.warning("%s: build %d of %d did not hold %s: %s; rebuilding (%s)", what, attempt, attempts,
                        requested, decision.detail, ISSUE)
    raise RunError("{}: asked for {}, but {} build(s) of TensorRT fell back to a wider precision, the last with "
                   "{}; a known TensorRT behaviour ({}); nothing was cached; run again, raise "
                   "params.precision_retries (now {}), or run precision fp32".format(
                       what, requested, attempts, decision.detail, ISSUE, retries))


def recheck_cached(requested: str, meta: Mapping[str, Any], size_check: str,
                   fp32_engine_bytes: Optional[Callable[[], Optional[int]]]) -> Optional[PrecisionDecision]:
    """A cached engine's check under a stricter size_check than the one it was built under, from its sidecar's
    layers and size: None when its recorded check already covers size_check (or no reference exists)."""
    if requested not in CHECKED or fp32_engine_bytes is None or covers(meta.get("precision_check"), size_check):
        return None
    found = fp32_engine_bytes()
    return decide(requested, meta.get("layers"), int(meta.get("engine_bytes") or 0),
                  int(found) if found is not None else None, size_check)


def _describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join("{} {}".format(n, p) for p, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _mb(n: int) -> str:
    return "{:.1f} MB".format(n / 1e6)
