"""Where the project's folders are: the repository and the data folders users can move elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _folder(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else REPO_ROOT / default


def models_dir() -> Path:
    """Generated and downloaded ONNX models: $MLMARK_MODELS, else <repo>/models."""
    return _folder("MLMARK_MODELS", "models")


def datasets_root() -> Path:
    """Accuracy datasets: $MLMARK_DATASETS, else <repo>/datasets. Creates nothing."""
    return _folder("MLMARK_DATASETS", "datasets")


def engines_dir() -> Path:
    """The TensorRT engine cache: $MLMARK_ENGINES, else <repo>/engines."""
    return _folder("MLMARK_ENGINES", "engines")


def results_dir() -> Path:
    """Where result files go unless -r says otherwise: <repo>/Results."""
    return REPO_ROOT / "Results"


def tables_dir() -> Path:
    """INT8 calibration tables, as MLMark keeps them: <repo>/utility."""
    return REPO_ROOT / "utility"
