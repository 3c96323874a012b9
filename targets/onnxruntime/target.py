"""ONNX Runtime target: one InferenceSession per unit of concurrency, CPU threads divided between them.

precision int8 (CPU) runs the Q/DQ model that utility/calibrate.py made beside the task's model
(precision/qdq.py): the same explicitly quantized network TensorRT 11 builds, so an int8 score
and its accuracy can be produced and checked on any machine. It is not a CPU int8 speed figure: the
Q/DQ pairs sit on operator inputs only (TensorRT's placement), which ONNX Runtime's CPU provider
cannot fuse into its int8 kernels, so it dequantizes and runs float kernels (results say so).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from core.errors import TargetUnavailable
from core.specs import TensorSpec
from targets.base import Capabilities, LoadRequest, Session, Target
from targets.options import TargetOptions, integer, option

log = logging.getLogger("mlmark.onnxruntime")

_CUDA = "CUDAExecutionProvider"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise TargetUnavailable("target onnxruntime: the Python package is not installed "
                                "(pip install onnxruntime; onnxruntime-gpu for hardware gpu)") from None
    return onnxruntime


class OnnxRuntimeSession(Session):
    """`concurrency` InferenceSessions of one model, each run from its own harness thread."""

    def __init__(self, sessions: List[Any], info: Dict[str, Any]) -> None:
        self._sessions = sessions
        self._outputs = [o.name for o in sessions[0].get_outputs()]
        self.info = info

    @property
    def sessions(self) -> List[Any]:
        """The underlying InferenceSessions (for benchmarks that compare against a plain loop)."""
        return list(self._sessions)

    def input_specs(self) -> List[TensorSpec]:
        return [TensorSpec(i.name, tuple(i.shape), _np_dtype(i.type)) for i in self._sessions[0].get_inputs()]

    def output_names(self) -> List[str]:
        return list(self._outputs)

    def run(self, slot: int, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        return self._sessions[slot].run(self._outputs, inputs)

    def close(self) -> None:
        self._sessions = []


def _np_dtype(ort_type: str) -> str:
    # ORT reports "tensor(float)"; map the few element types image models use.
    return {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
            "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}.get(ort_type, "float32")


@dataclass(frozen=True)
class OnnxRuntimeOptions(TargetOptions):
    """onnxruntime's task params."""

    #: CPU threads divided between the concurrent sessions (default: all cores)
    threads: Optional[int] = option(None, integer(1, 1024, allow_none=True))


class OnnxRuntimeTarget(Target):
    """CPU (and, with onnxruntime-gpu, CUDA) inference through ONNX Runtime."""

    name = "onnxruntime"
    install_hint = "pip install onnxruntime"
    Options = OnnxRuntimeOptions

    def check_installed(self) -> None:
        _ort()

    def capabilities(self) -> Capabilities:
        ort = _ort()
        precisions = {"cpu": ("fp32", "int8")}
        if _CUDA in ort.get_available_providers():
            precisions["gpu"] = ("fp32",)
        return Capabilities(precisions=precisions)

    def unsupported_hint(self, hardware: str) -> str:
        """Extra advice when hardware is refused."""
        if hardware == "gpu":
            return " (hardware gpu needs the onnxruntime-gpu package and a CUDA GPU)"
        return ""

    def versions(self) -> Dict[str, str]:
        return {"onnxruntime": _ort().__version__}

    def preflight(self, request: LoadRequest) -> None:
        if request.precision == "int8":
            from precision.qdq import resolve_qdq

            resolve_qdq(request.model_path, request.workload)  # ModelError naming utility/calibrate.py

    def load(self, request: LoadRequest) -> Session:
        ort = _ort()
        options = OnnxRuntimeOptions.parse(request.options, "target onnxruntime")
        total = int(options.threads or os.cpu_count() or 1)
        per_session = max(1, total // request.concurrency)
        providers = [_CUDA, "CPUExecutionProvider"] if request.hardware == "gpu" else ["CPUExecutionProvider"]
        model_path, int8 = request.model_path, None
        if request.precision == "int8":
            from precision.qdq import resolve_qdq

            int8 = resolve_qdq(request.model_path, request.workload)  # ModelError naming utility/calibrate.py
            model_path = int8.path
            log.info("onnxruntime: int8 runs %s (table sha256 %s)", model_path.name, (int8.table_sha256 or "-")[:12])
        sessions = []
        for _ in range(request.concurrency):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = per_session
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            sessions.append(ort.InferenceSession(str(model_path), sess_options=opts, providers=providers))
        used = sessions[0].get_providers()
        if request.hardware == "gpu" and _CUDA not in used:
            raise TargetUnavailable("target onnxruntime: the CUDA provider did not load; check CUDA and cuDNN "
                                    "for onnxruntime-gpu {}".format(ort.__version__))
        split = "{} session(s) x {} intra-op thread(s) of {} CPU thread(s)".format(
            request.concurrency, per_session, total)
        if per_session * request.concurrency > total:
            split += " (oversubscribed: more sessions than threads)"
        log.info("onnxruntime: %s, providers %s", split, ", ".join(used))
        info = {"providers": used, "sessions": request.concurrency, "intra_op_threads": per_session,
                "inter_op_threads": 1, "cpu_threads_total": total, "thread_split": split,
                "graph_optimization": "ORT_ENABLE_ALL"}
        if int8 is not None:
            info["int8"] = dict(int8.info(), kernels="dequantize + float kernels: Q/DQ on operator inputs only "
                                                    "(TensorRT's placement) forms no ONNX Runtime int8 kernels")
        return OnnxRuntimeSession(sessions, info)
