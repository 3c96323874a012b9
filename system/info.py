"""What the machine is: recorded with every result so that scores can be traced to a device."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from typing import Any, Dict, Optional

from system import read_text

# Packages whose versions change scores; missing ones are recorded as absent, not guessed.
PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "pycocotools", "cuda-python")


def _read(path: str) -> Optional[str]:
    return read_text(path)[0]  # the reason for a missing file is not recorded here


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (x86 'model name', Arm 'Hardware'/'CPU part'), else platform's guess."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor"):
        for line in info.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_bytes() -> Optional[int]:
    """Total physical memory."""
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def package_versions() -> Dict[str, Optional[str]]:
    """Installed versions of the packages that matter for scores."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return {}
    versions: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["opencv"] = _opencv_version()
    return versions


def _opencv_version() -> Optional[str]:
    """cv2's own version: JetPack's is a system package that no pip distribution name reports."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        return None
    try:
        import cv2
    except ImportError:  # present but unusable (built for another numpy): recorded as absent
        return None
    return str(cv2.__version__)


def gpus() -> list:
    """GPU names, driver and memory via nvidia-smi where present (Jetson boards have none: see jetson())."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    result = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            result.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return result


def jetson() -> Optional[Dict[str, str]]:
    """Board model and L4T release on a Jetson."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if not release and not model:
        return None
    return {"model": (model or "").strip("\x00\n "), "l4t": (release or "").splitlines()[0] if release else ""}


def system_info() -> Dict[str, Any]:
    """Everything above, as one JSON-ready dict."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "gpus": gpus(),
        "jetson": jetson(),
    }
