"""TensorRT's text calibration cache (the "calibration table"): read, write, and check one against a model.

The format, as TensorRT's calibrators write it (`writeCalibrationCache`) and take it back
(`readCalibrationCache`):

    TRT-<version>-<algorithm>      e.g. TRT-8201-EntropyCalibration2
    <tensor name>: <scale>         one line per tensor, each line ending in a newline

`<version>` is TensorRT's own version number (major*1000 + minor*100 + patch before 10,
major*10000 + minor*100 + patch from 10 on: 8.2.1 -> 8201, 10.3.0 -> 100300) and `<algorithm>` the
calibrator's (EntropyCalibration2, EntropyCalibration, MinMaxCalibration, LegacyCalibration).
TensorRT reads the header, and a cache from another release may be ignored (NVIDIA's DeepStream 6.2
notes ask for new calibration files when moving from TensorRT 7 to 8.5), so a TensorRT target can
serve a table under its own version and calibrator: `CalibrationTable.to_text(version, algorithm)`.
The first tables TensorRT wrote (such as MLMark's first ones) begin with a bare number instead.

`<scale>` is the bit pattern of an IEEE 754 float32 as hexadecimal digits, most significant first
(printf "%x" of the 32 bits; TensorRT drops leading zeros, so `0` is a valid value). The scale is
amax / 127, amax being the calibrated range of the tensor: symmetric int8 maps [-amax, amax] onto
[-127, 127]. Evidence that this, and not amax itself, is what the file holds: ONNX Runtime's
TensorRT execution provider turns each entry into the dynamic range scale x 127 when it reads a
TensorRT table (ReadDynamicRange), and MLMark's own TRT-6001 table stores 3d418306, which is
float32(6 / 127) exactly, for every ReLU6 output.

A sidecar `<table>.json` records what the table was made from (model SHA-256, images, method,
date, onnxruntime version) so that a table that no longer matches its model is noticed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from core.errors import ModelError
from core.fileio import atomic_write_json, atomic_write_text, sha256_file
from core.paths import tables_dir

TABLE_DIR = tables_dir()  # where MLMark keeps its tables: utility/

SIDECAR_FORMAT = "mlmark-calibration/1"
# The header written when no TensorRT is at hand: TensorRT 8.2.1, the release of JetPack 4.6 (Jetson
# Nano). A TensorRT target re-headers the table with its own version before serving it.
DEFAULT_TRT_VERSION = 8201
ENTROPY2 = "EntropyCalibration2"
# Fewer missing names than this are all listed in an error; beyond it, the first ones and the count.
_LIST_MISSING = 5

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z][A-Za-z0-9_]*)$")
_HEX = re.compile(r"^[0-9A-Fa-f]{1,8}$")
PathLike = Union[str, Path]


def trt_version_number(major: int, minor: int, patch: int) -> int:
    """The number TensorRT writes into a table's header (NV_TENSORRT_VERSION) for a release."""
    return (major * 10000 if major >= 10 else major * 1000) + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    """The table's spelling of a float32 scale: its 32 bits as 8 lowercase hex digits."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    """The float32 a table's hex digits (1 to 8 of them) stand for, exactly."""
    return struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0]


@dataclass
class CalibrationTable:
    """A calibration table: header fields and one float32 scale (amax / 127) per tensor, in file order."""

    scales: Dict[str, float]
    version: int = DEFAULT_TRT_VERSION
    algorithm: Optional[str] = ENTROPY2  # None: an early table whose header is the bare version number
    source: str = field(default="", compare=False)  # the file it was read from, for messages

    @property
    def header(self) -> str:
        """The first line of the file."""
        return str(self.version) if self.algorithm is None else "TRT-{}-{}".format(self.version, self.algorithm)

    def to_text(self, version: Optional[int] = None, algorithm: Optional[str] = None) -> str:
        """The file's text; version and algorithm replace the header's (what a TensorRT target serves)."""
        head = CalibrationTable(scales={}, version=self.version if version is None else version,
                                algorithm=algorithm or self.algorithm).header
        lines = [head] + ["{}: {}".format(name, scale_to_hex(s)) for name, s in self.scales.items()]
        return "\n".join(lines) + "\n"

    def dynamic_ranges(self) -> Dict[str, float]:
        """amax (scale x 127) per tensor, what ITensor::setDynamicRange takes as [-amax, amax]."""
        return {name: s * 127.0 for name, s in self.scales.items()}


def parse_table(text: str, source: str = "calibration table") -> CalibrationTable:
    """Parse a table's text; ModelError naming source and line for anything truncated or garbled."""
    if not text.strip():
        raise ModelError("{}: empty calibration table".format(source))
    lines = text.split("\n")
    if lines[-1] != "":
        # TensorRT ends every line with a newline; a last line without one was cut off mid-write.
        raise ModelError("{}: line {}: the table is truncated (its last line '{}' has no line end): "
                         "make it again with python utility/calibrate.py".format(source, len(lines), lines[-1][:60]))
    lines = lines[:-1]
    first = lines[0].strip()
    m = _HEADER.match(first)
    algorithm: Optional[str]
    if m:
        version, algorithm = int(m.group(1)), m.group(2)
    elif first.isdigit():
        version, algorithm = int(first), None
    else:
        raise ModelError("{}: line 1: expected a header 'TRT-<version>-<algorithm>' (such as "
                         "TRT-8201-EntropyCalibration2), got '{}'".format(source, first[:80]))
    scales: Dict[str, float] = {}
    seen: Dict[str, int] = {}
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        # Split at the last colon: tensor names may hold colons themselves (TensorFlow's "x:0").
        name, colon, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name or not _HEX.match(value):
            raise ModelError("{}: line {}: expected '<tensor name>: <float32 scale as up to 8 hex digits>', "
                             "got '{}'".format(source, lineno, line[:80]))
        scale = hex_to_scale(value)
        if not math.isfinite(scale) or scale < 0:
            raise ModelError("{}: line {}: the scale of '{}' is {} (0x{}); a scale is a finite float32 >= 0".format(
                source, lineno, name, scale, value))
        if name in seen:
            raise ModelError("{}: line {}: tensor '{}' is listed twice (first on line {})".format(
                source, lineno, name, seen[name]))
        seen[name] = lineno
        scales[name] = scale
    if not scales:
        raise ModelError("{}: the calibration table has a header but no tensor scale (truncated?)".format(source))
    return CalibrationTable(scales=scales, version=version, algorithm=algorithm, source=source)


def read_table(path: PathLike) -> CalibrationTable:
    """Read a table file; ModelError (one line) if it is missing, unreadable, truncated or garbled."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError("{}: calibration table not found".format(path)) from None
    except OSError as exc:
        raise ModelError("{}: cannot read the calibration table ({})".format(path, exc.strerror or exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ModelError("{}: line {}: not a text calibration table (undecodable bytes)".format(path, line)) from None
    return parse_table(text, str(path))


def sidecar_path(table: PathLike) -> Path:
    """Where a table's record of its origin lives: <table>.json."""
    table = Path(table)
    return table.with_name(table.name + ".json")


def table_for_release(path: PathLike, tensorrt_version: str, out_dir: PathLike) -> Path:
    """A copy of the table whose header names the running TensorRT release, for its calibrator to serve.

    TensorRT skips a calibration cache whose header names another release and then asks the
    calibrator for images, which it does not have; the scales themselves do not depend on the
    release. The copy is named by the table's SHA-256 and the release, and written once, atomically.
    """
    path = Path(path)
    parts = re.findall(r"\d+", tensorrt_version)[:3]
    if len(parts) < 2:
        raise ModelError("cannot tell the TensorRT release from version {!r}".format(tensorrt_version))
    major, minor, patch = (int(p) for p in (parts + ["0"])[:3])
    table = read_table(path)
    number = trt_version_number(major, minor, patch)
    if table.version == number and table.algorithm == ENTROPY2:
        return path
    out = Path(out_dir) / "{}-{}-trt{}".format(path.name, sha256_file(path)[:12], number)
    if not out.is_file():
        atomic_write_text(out, table.to_text(version=number, algorithm=ENTROPY2))
    return out


def write_table(path: PathLike, table: CalibrationTable, sidecar: Mapping[str, Any]) -> Dict[str, Any]:
    """Write the table, then its sidecar (with the table's SHA-256 added), each atomically; returns the sidecar."""
    path = Path(path)
    text = table.to_text()
    record = dict(sidecar)
    record.setdefault("format", SIDECAR_FORMAT)
    record.setdefault("created", datetime.datetime.now().isoformat(timespec="seconds"))
    record["table"] = {"file": path.name, "sha256": _sha256_text(text), "header": table.header,
                       "tensors": len(table.scales),
                       "scale": "float32 amax / 127 per tensor (TensorRT's calibration cache convention)"}
    try:
        atomic_write_text(path, text)
        atomic_write_json(sidecar_path(path), record)
    except OSError as exc:
        raise ModelError("{}: cannot write the calibration table ({})".format(path, exc.strerror or exc)) from None
    return record


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_sidecar(table: PathLike) -> Optional[Dict[str, Any]]:
    """A table's sidecar, or None if it has none (MLMark's own tables); ModelError if it is unreadable."""
    side = sidecar_path(table)
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError("{}: unreadable calibration record ({})".format(side, exc)) from None
    if not isinstance(record, dict):
        raise ModelError("{}: not a calibration record (a JSON object)".format(side))
    return record


def table_path(workload: str) -> Path:
    """The table a workload ships with: utility/CalibrationTable_<workload>, as MLMark names them."""
    return TABLE_DIR / "CalibrationTable_{}".format(workload)


def activation_tensors(model: Any) -> List[str]:
    """Every float activation of an ONNX model (input first, then node outputs in graph order).

    These are the tensors TensorRT asks a calibration table for; `utility/calibrate.py` writes a
    scale for each, and a table lacking any of them was made for another model. `model` is an
    onnx.ModelProto or a path. Types come from ONNX shape inference, as ONNX Runtime's
    calibrators find them.
    """
    import onnx
    from onnx import TensorProto

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot follow: fall back to the declared types
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(graph.input) + list(graph.value_info) + list(graph.output)
             if v.type.HasField("tensor_type")}
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    constants = {i.name for i in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    names: List[str] = []
    seen = set()

    def add(name: str) -> None:
        if name and name not in seen and name not in constants and types.get(name) in floats:
            seen.add(name)
            names.append(name)

    for v in graph.input:
        add(v.name)
    for node in graph.node:
        for name in node.output:
            add(name)
    return names


def _rerun_hint(workload: Optional[str], model_path: Path) -> str:
    args = "--workload {}".format(workload) if workload else "--workload WORKLOAD"
    return "make it again with python utility/calibrate.py {} --model {}".format(args, model_path)


def check_table_for_model(table_path: PathLike, model_path: PathLike, workload: Optional[str] = None) -> None:
    """Refuse (ModelError, one line) a table that is unreadable or not made for this exact model file.

    Checks, in order: the table parses; its sidecar, if any, names this model's SHA-256; every
    activation of the model has a scale (else the missing names, the first few and the count).
    Tables without a sidecar (MLMark's own) are judged on the names alone.
    """
    table_path, model_path = Path(table_path), Path(model_path)
    table = read_table(table_path)
    side = read_sidecar(table_path)
    if side is not None:
        recorded = (side.get("model") or {}).get("sha256")
        digest = sha256_file(model_path)
        if recorded and recorded != digest:
            raise ModelError("{}: made for model {} (sha256 {}), but {} has sha256 {}: the model changed since "
                             "calibration; {}".format(table_path, (side.get("model") or {}).get("file", "?"),
                                                      recorded[:12], model_path, digest[:12],
                                                      _rerun_hint(workload, model_path)))
        table_sha = (side.get("table") or {}).get("sha256")
        if table_sha and table_sha != sha256_file(table_path):
            raise ModelError("{}: the table differs from the one its record {} describes (edited or half "
                             "replaced); {}".format(table_path, sidecar_path(table_path).name,
                                                    _rerun_hint(workload, model_path)))
    wanted = activation_tensors(model_path)
    missing = [name for name in wanted if name not in table.scales]
    if missing:
        shown = ", ".join("'{}'".format(n) for n in missing[:_LIST_MISSING])
        more = " and {} more".format(len(missing) - _LIST_MISSING) if len(missing) > _LIST_MISSING else ""
        raise ModelError("{}: not a table for {}: {} of its {} activation tensors have no scale ({}{}); {}".format(
            table_path, model_path, len(missing), len(wanted), shown, more, _rerun_hint(workload, model_path)))


def table_status(table_path: PathLike, model_path: PathLike, workload: Optional[str] = None) -> Optional[str]:
    """None when the table matches the model, else the reason (for a warning rather than a refusal)."""
    try:
        check_table_for_model(table_path, model_path, workload)
    except ModelError as exc:
        return str(exc)
    return None


def stale_table_warning(workload: str, model_path: PathLike, sha256: Optional[str] = None) -> Optional[str]:
    """A warning line when the workload's shipped table exists but its record names another model.

    Only the sidecar's SHA-256 is compared (cheap, no ONNX parsing; pass the model's sha256 when
    known), so that the harness can call this for every task; a missing table, or one without a
    record, says nothing here.
    """
    path = table_path(workload)
    if not path.is_file():
        return None
    try:
        side = read_sidecar(path)
    except ModelError as exc:
        return str(exc)
    recorded = ((side or {}).get("model") or {}).get("sha256")
    if not recorded:
        return None
    digest = sha256 or sha256_file(model_path)
    if recorded == digest:
        return None
    return ("{}: calibration table made for another model (sha256 {}, this task's {} is {}): INT8 on TensorRT will "
            "refuse it; {}".format(path, recorded[:12], Path(model_path).name, digest[:12],
                                   _rerun_hint(workload, Path(model_path))))
