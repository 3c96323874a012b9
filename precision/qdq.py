"""The Q/DQ ONNX model made from a calibration table, and finding the one an int8 task runs.

The model is the workload's own ONNX with QuantizeLinear/DequantizeLinear pairs where TensorRT's
explicit quantization wants them (NVIDIA's Q/DQ placement advice): on the inputs of Conv, Gemm and
MatMul, activations symmetric int8 per tensor with exactly the table's scales, weights symmetric
int8 per output channel. Outputs of those layers stay float (TensorRT fuses the activation that
follows and quantizes at the next layer's input) and biases stay float (TensorRT 8's ONNX parser
takes int8 DequantizeLinear only). ONNX Runtime's own quantizer (QDQQuantizer, the engine of
quantize_static) inserts the nodes; the table's scales are handed to it as per-tensor overrides, so
it does not recompute them, and `build_qdq` checks afterwards that every activation scale in the
model is the table's, bit for bit.

It is written next to the model it was made from, `<stem>.qdq.onnx` (models/mobilenet/synthetic.onnx
-> models/mobilenet/synthetic.qdq.onnx), so that synthetic and pretrained weights each have their
own, and it records in its metadata the SHA-256 of that model and of the table: an int8 task
refuses a Q/DQ model whose source is not the task's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from core.errors import ModelError, RunError
from core.fileio import sha256_file
from precision.table import CalibrationTable

QDQ_SUFFIX = ".qdq.onnx"
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
# Metadata the Q/DQ model carries about its origin (onnx metadata_props).
META_SOURCE_SHA = "mlmark.int8.source_sha256"
META_SOURCE_FILE = "mlmark.int8.source_file"
META_TABLE_SHA = "mlmark.int8.table_sha256"
META_TABLE_FILE = "mlmark.int8.table_file"
META_METHOD = "mlmark.int8.method"
META_IMAGES = "mlmark.int8.images"
META_CREATED = "mlmark.int8.created"
PathLike = Union[str, Path]


def qdq_path(model_path: PathLike) -> Path:
    """Where the Q/DQ model made from model_path lives: beside it, <stem>.qdq.onnx."""
    p = Path(model_path)
    stem = p.name[:-len(".onnx")] if p.name.lower().endswith(".onnx") else p.name
    return p.with_name(stem + QDQ_SUFFIX)


def quantization_api() -> Any:
    """onnxruntime.quantization, checked for what this module needs (per-tensor scale overrides, 1.17 on)."""
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization import tensor_quant_overrides  # noqa: F401
    except ImportError as exc:
        try:
            import onnxruntime as ort

            have = "onnxruntime " + ort.__version__
        except ImportError:
            have = "no onnxruntime"
        raise RunError("INT8 calibration needs onnxruntime 1.17 or newer with its quantization tools "
                       "(pip install -U onnxruntime); found {} ({})".format(have, exc)) from None
    return quantization


def build_qdq(model_path: PathLike, table: CalibrationTable, metadata: Optional[Mapping[str, str]] = None) -> Any:
    """The Q/DQ onnx.ModelProto of model_path with the table's activation scales; RunError if they differ."""
    import numpy as np
    import onnx

    q = quantization_api()
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    model = load_model_with_shape_infer(Path(model_path))
    original_meta = {p.key: p.value for p in model.metadata_props}
    scales = {name: np.array(s, dtype=np.float32) for name, s in table.scales.items()}
    # The ranges only satisfy the quantizer's bookkeeping; the overrides carry the actual scales.
    ranges = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=(s * -127).astype(np.float32), highest=(s * 127).astype(np.float32))
        for name, s in scales.items()})
    overrides = {name: [{"scale": s, "zero_point": np.array(0, dtype=np.int8)}] for name, s in scales.items()}
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        "TensorQuantOverrides": overrides,
    }
    quantizer = q.QDQQuantizer(model, True, False, q.QuantType.QInt8, q.QuantType.QInt8, ranges, [], [],
                               list(QUANTIZED_OPS), extra)
    quantizer.quantize_model()
    quantizer.model.topological_sort()  # the quantizer appends its nodes; ONNX wants them in order
    out = quantizer.model.model
    meta = dict(original_meta)
    meta.update(metadata or {})
    del out.metadata_props[:]
    for key, value in meta.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, str(value)
    check_qdq_scales(out, table, str(model_path))
    onnx.checker.check_model(out)
    return out


def qdq_scales(model: Any) -> Dict[str, float]:
    """Activation tensor -> the scale of the QuantizeLinear that quantizes it (per-tensor ones only)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    scales: Dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        tensor = inits.get(node.input[1]) or consts.get(node.input[1])
        if tensor is None:
            continue
        value = numpy_helper.to_array(tensor)
        if value.size == 1:
            scales[node.input[0]] = float(value.reshape(()))
    return scales


def check_qdq_scales(model: Any, table: CalibrationTable, source: str = "model") -> None:
    """RunError unless every quantized activation's scale is the table's, bit for bit."""
    import numpy as np

    found = qdq_scales(model)
    if not found:
        raise RunError("{}: the quantizer inserted no QuantizeLinear on any {} input".format(
            source, "/".join(QUANTIZED_OPS)))
    bad = [name for name, s in found.items()
           if name not in table.scales or np.float32(s).tobytes() != np.float32(table.scales[name]).tobytes()]
    if bad:
        name = bad[0]
        raise RunError("{}: Q/DQ scale of '{}' is {!r}, the table's is {!r} ({} tensors differ): the quantizer did "
                       "not keep the table's scales".format(source, name, found[name], table.scales.get(name),
                                                            len(bad)))


def is_qdq_model(model: Any) -> bool:
    """True if the ONNX graph already holds QuantizeLinear/DequantizeLinear nodes (explicitly quantized)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


@dataclass(frozen=True)
class QdqModel:
    """The Q/DQ file an int8 task runs, and where it came from."""

    path: Path
    sha256: str
    explicit: bool  # the task's own model was already quantized: run as given
    source_sha256: Optional[str] = None
    table_file: Optional[str] = None
    table_sha256: Optional[str] = None
    method: Optional[str] = None
    images: Optional[str] = None

    def info(self) -> Dict[str, Any]:
        """What a result records about the int8 model."""
        return {"qdq_model": str(self.path), "qdq_sha256": self.sha256, "explicit": self.explicit,
                "source_sha256": self.source_sha256, "calibration_table": self.table_file,
                "table_sha256": self.table_sha256, "method": self.method, "images": self.images}


def _metadata(path: Path) -> Dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises a variety of types for a corrupt file
        raise ModelError("{}: not a readable ONNX model ({})".format(path, str(exc).splitlines()[0][:200])) from None
    return {p.key: p.value for p in model.metadata_props}


def resolve_qdq(model_path: PathLike, workload: str) -> QdqModel:
    """The Q/DQ model for an int8 task on model_path; ModelError naming utility/calibrate.py if absent or stale."""
    import onnx

    model_path = Path(model_path)
    rerun = "make it with python utility/calibrate.py --workload {} --model {}".format(workload, model_path)
    model = onnx.load(str(model_path), load_external_data=False)
    if is_qdq_model(model):
        return QdqModel(path=model_path, sha256=sha256_file(model_path), explicit=True)
    path = qdq_path(model_path)
    if not path.is_file():
        raise ModelError("{}: precision int8 runs the Q/DQ model calibrated for it, {}, which does not exist: "
                         "{}".format(model_path, path.name, rerun))
    meta = _metadata(path)
    recorded = meta.get(META_SOURCE_SHA)
    digest = sha256_file(model_path)
    if recorded != digest:
        why = "records no source model" if not recorded else "was made from a model with sha256 {}".format(
            recorded[:12])
        raise ModelError("{}: {} {}, and {} has sha256 {} (the model changed since calibration): {}".format(
            path, path.name, why, model_path.name, digest[:12], rerun))
    return QdqModel(path=path, sha256=sha256_file(path), explicit=False, source_sha256=recorded,
                    table_file=meta.get(META_TABLE_FILE), table_sha256=meta.get(META_TABLE_SHA),
                    method=meta.get(META_METHOD), images=meta.get(META_IMAGES))


def quantized_inputs(model: Any) -> List[str]:
    """Op types whose inputs carry a DequantizeLinear, for summaries (Conv x53, Gemm x1, ...)."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS and any(producers.get(i) == "DequantizeLinear" for i in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ["{} x{}".format(k, v) for k, v in sorted(counts.items())]
