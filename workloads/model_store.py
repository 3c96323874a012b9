"""Which ONNX file a task runs, and what is known about it (SHA-256, synthetic or pretrained weights).

Order: the task's own `model` file; else a pretrained model installed by utility/get_models.py;
else the synthetic-weight model, generated on first use. Every target runs the file chosen here,
so scores from different targets compare the same network and weights.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from core.errors import ModelError
from core.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from core.paths import models_dir
from core.specs import TensorSpec, onnx_io
from workloads.base import Workload

log = logging.getLogger("mlmark.models")

WEIGHTS_SYNTHETIC = "synthetic"
WEIGHTS_PRETRAINED = "pretrained"
WEIGHTS_UNKNOWN = "unknown"  # a user's own file that does not say


@dataclass(frozen=True)
class ModelFile:
    """An ONNX file ready to run, with its identity."""

    path: Path
    sha256: str
    weights: str
    source: str  # "generated", "get_models", "task"
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def to_dict(self) -> Dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "weights": self.weights, "source": self.source,
                "inputs": [s.to_list() for s in self.inputs], "outputs": [s.to_list() for s in self.outputs]}


def resolve_model(workload: Workload, user_path: Optional[str] = None) -> ModelFile:
    """The model a task runs: the user's file, an installed pretrained model, or the synthetic one."""
    if user_path:
        return _describe(Path(user_path), workload, source="task", sidecar=None)
    folder = models_dir() / workload.name
    pretrained = folder / "pretrained.onnx"
    if pretrained.is_file():
        return _describe(pretrained, workload, source="get_models", sidecar=folder / "pretrained.json")
    return synthetic_model(workload)


def synthetic_model(workload: Workload) -> ModelFile:
    """The synthetic-weight model, generated (or regenerated when its generator changed) on first use."""
    folder = models_dir() / workload.name
    path, sidecar = folder / "synthetic.onnx", folder / "synthetic.json"
    version = workload.generator_version()
    meta = _read_json(sidecar)
    if not (path.is_file() and meta.get("generator_version") == version and meta.get("sha256") == sha256_file(path)):
        log.info("generating %s with synthetic weights (first use) into %s", workload.title, path)
        t0 = time.perf_counter()
        data = workload.build_synthetic(seed=0).SerializeToString()
        try:
            atomic_write_bytes(path, data)
            atomic_write_json(sidecar, {"workload": workload.name, "weights": WEIGHTS_SYNTHETIC,
                                        "generator_version": version, "seed": 0, "sha256": sha256_file(path),
                                        "created": datetime.datetime.now().isoformat(timespec="seconds")})
        except OSError as exc:
            raise ModelError("{}: cannot write the generated model there ({}); set MLMARK_MODELS to a folder you "
                             "can write to".format(folder, exc.strerror or type(exc).__name__)) from None
        log.info("generated %s (%.1f MB) in %.1f s", path.name, len(data) / 1e6, time.perf_counter() - t0)
    return _describe(path, workload, source="generated", sidecar=sidecar)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(path: Path, workload: Workload, source: str, sidecar: Optional[Path]) -> ModelFile:
    import onnx  # heavy; only when a model is actually resolved

    if not path.is_file():
        raise ModelError("{}: model file not found".format(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises a variety of types for a corrupt file
        raise ModelError("{}: not a readable ONNX model ({})".format(path, str(exc).splitlines()[0][:200])) from None
    if not model.graph.node:
        raise ModelError("{}: not an ONNX model (no graph nodes)".format(path))
    digest = sha256_file(path)
    meta = {p.key: p.value for p in model.metadata_props}
    weights = meta.get("weights") or WEIGHTS_UNKNOWN
    if sidecar is not None:
        side = _read_json(sidecar)
        weights = side.get("weights", weights)
        if side.get("sha256") and side["sha256"] != digest:
            raise ModelError("{}: SHA-256 {} does not match the {} recorded at install ({}); "
                             "reinstall it with utility/get_models.py --force".format(
                                 path, digest[:12], side["sha256"][:12], sidecar.name))
    inputs, outputs = onnx_io(model)
    workload.check_io(inputs, outputs, str(path))
    return ModelFile(path=path.resolve(), sha256=digest, weights=weights, source=source, inputs=inputs,
                     outputs=outputs)
