"""Target plug-ins, registered by name. Adding a target means adding a folder and a line here."""

from __future__ import annotations

import importlib
from typing import Dict, List

from core.errors import ConfigError, clean
from targets.base import Target

# name -> "module:class"; modules are imported only when the target is used, so a missing
# optional package (torch, TensorRT) fails only for the tasks that need it.
_REGISTRY: Dict[str, str] = {
    "onnxruntime": "targets.onnxruntime.target:OnnxRuntimeTarget",
    "pytorch": "targets.pytorch.target:PyTorchTarget",
    # Needs the native library built with TensorRT; check_installed() refuses in one line otherwise.
    "tensorrt": "targets.tensorrt.target:TensorRTTarget",
    # Needs TensorRT's trtexec binary; a task without one is refused in one line saying where it looked.
    "trtexec": "targets.trtexec.target:TrtexecTarget",
}

# MLMark 1.0 targets this project does not provide: named so their configs get a clear refusal.
MLMARK_ONLY_TARGETS = (
    "tensorflow", "tensorflow_lite", "tflite", "openvino_ubuntu", "openvino", "armnn", "armnn_tf",
    "armnn_tflite", "tvm",
)


def target_names() -> List[str]:
    """Names of the targets this project provides."""
    return sorted(_REGISTRY)


def get_target(name: str, source: str = "") -> Target:
    """Instantiate the target registered under name."""
    prefix = source + ": " if source else ""
    if name not in _REGISTRY:
        if name in MLMARK_ONLY_TARGETS:
            raise ConfigError("{}target '{}' is an MLMark 1.0 target this project does not provide "
                              "(provided: {})".format(prefix, name, ", ".join(target_names())))
        raise ConfigError("{}unknown target '{}' (allowed: {})".format(prefix, clean(name), ", ".join(target_names())))
    module_name, class_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()
