"""float16 copies of a workload's ONNX model, for builders that take precision from the model's types.

TensorRT's strongly typed networks (always on 11, the default path from 10.12) have no FP16 flag: a
layer runs in float16 only where the ONNX says float16. `resolve_fp16` converts a float32 model with
onnxconverter-common (weights and activations float16; inputs and outputs stay float32, so the
harness feeds and reads the same arrays as for fp32) and keeps the result in a cache folder, named by
the source model's SHA-256, so that an unchanged model is converted once.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

from core.errors import ModelError, UnsupportedTask
from core.fileio import atomic_write_bytes, sha256_file

log = logging.getLogger("mlmark.fp16")

PathLike = Union[str, Path]

META_SOURCE_SHA = "mlmark.fp16.source_sha256"
META_CONVERTER = "mlmark.fp16.converter"
META_CLAMPED = "mlmark.fp16.clamped"


@dataclass(frozen=True)
class Fp16Model:
    """The float16 ONNX a task runs, and where it came from."""

    path: Path
    sha256: str
    source_sha256: str
    converter: str
    clamped: int  # weights outside float16's range that the converter moved to its limits

    def info(self) -> Dict[str, Any]:
        """What a result records about the converted model."""
        return {"fp16_model": str(self.path), "fp16_sha256": self.sha256, "source_sha256": self.source_sha256,
                "converter": self.converter, "clamped_values": self.clamped}


def _converter() -> Any:
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise UnsupportedTask("precision fp16 on a strongly typed TensorRT needs a float16 model, made with "
                              "onnxconverter-common: pip install onnxconverter-common") from None
    return float16


def _converter_name() -> str:
    import onnxconverter_common

    return "onnxconverter-common {} convert_float_to_float16(keep_io_types=True)".format(
        getattr(onnxconverter_common, "__version__", "?"))


def fp16_path(model_path: PathLike, source_sha256: str, cache_dir: PathLike) -> Path:
    """Where the float16 copy of model_path lives: one file per source model content."""
    return Path(cache_dir) / "{}-{}.fp16.onnx".format(Path(model_path).stem, source_sha256[:12])


def is_fp16_model(model: Any) -> bool:
    """True if the ONNX graph holds float16 weights already (converted before, or exported so)."""
    from onnx import TensorProto

    return any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def _read(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises a variety of types for a corrupt file
        raise ModelError("{}: not a readable ONNX model ({})".format(path, str(exc).splitlines()[0][:200])) from None


def resolve_fp16(model_path: PathLike, cache_dir: PathLike) -> Fp16Model:
    """The float16 copy of a float32 ONNX model, converted now unless the cache holds it already."""
    import onnx

    model_path = Path(model_path)
    source_sha = sha256_file(model_path)
    model = _read(model_path)
    if is_fp16_model(model):
        return Fp16Model(path=model_path, sha256=source_sha, source_sha256=source_sha,
                         converter="none: the model is float16 already", clamped=0)
    path = fp16_path(model_path, source_sha, cache_dir)
    if path.is_file():
        meta = {p.key: p.value for p in _read(path).metadata_props}
        if meta.get(META_SOURCE_SHA) == source_sha:
            return Fp16Model(path=path, sha256=sha256_file(path), source_sha256=source_sha,
                             converter=meta.get(META_CONVERTER, "?"), clamped=int(meta.get(META_CLAMPED, 0)))
        log.warning("%s does not record %s as its source; converting again", path, model_path.name)
    float16 = _converter()
    log.info("converting %s to float16 (weights and activations; inputs and outputs stay float32)", model_path.name)
    with warnings.catch_warnings(record=True) as caught:
        # One warning per clamped value: counted and said once instead.
        warnings.simplefilter("always")
        try:
            half = float16.convert_float_to_float16(model, keep_io_types=True)
        except Exception as exc:  # the converter raises plain exceptions for graphs it cannot handle
            raise ModelError("{}: onnxconverter-common could not convert it to float16: {}".format(
                model_path, str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)) from None
    clamped = sum(1 for w in caught if "truncated" in str(w.message))
    if clamped:
        log.info("%s: %d weight values lie outside float16's range and were moved to its limits (1e-7 or 65504)",
                 model_path.name, clamped)
    converter = _converter_name()
    props = {p.key: p.value for p in half.metadata_props}
    props.update({META_SOURCE_SHA: source_sha, META_CONVERTER: converter, META_CLAMPED: str(clamped)})
    onnx.helper.set_model_props(half, props)
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as exc:
        raise ModelError("{}: its float16 conversion is not a valid ONNX model: {}".format(
            model_path, str(exc).splitlines()[0][:300])) from None
    atomic_write_bytes(path, half.SerializeToString())
    return Fp16Model(path=path, sha256=sha256_file(path), source_sha256=source_sha, converter=converter,
                     clamped=clamped)
