"""The machine a score is made on: what it is (info.py) and how it is set (power mode, clocks, throttling, power
draw: jetson.py, nvml.py, tegrastats.py, power.py).

Imports only the standard library, numpy and (lazily) nvidia-ml-py. Every file read goes through
`root()`, so tests point the readers at a recorded tree with MLMARK_SYSFS_ROOT or a parameter.
A value that cannot be read is None, and the reason is kept beside it (see `Fields`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

ROOT_ENV = "MLMARK_SYSFS_ROOT"


def root(override: Optional[str] = None) -> str:
    """The folder that stands for '/': the parameter, else $MLMARK_SYSFS_ROOT, else '/'."""
    return override or os.environ.get(ROOT_ENV) or "/"


def path(base: str, absolute: str) -> str:
    """An absolute machine path ('/sys/...') under the root folder."""
    return os.path.join(base, absolute.lstrip("/"))


def read_text(file: str) -> Tuple[Optional[str], Optional[str]]:
    """(text, None) or (None, reason): a missing file, no permission, or a read error."""
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            return f.read(), None
    except FileNotFoundError:
        return None, "{}: not present".format(file)
    except PermissionError:
        return None, "{}: permission denied (needs root)".format(file)
    except OSError as exc:
        return None, "{}: {}".format(file, exc.strerror or exc)


def read_int(file: str) -> Tuple[Optional[int], Optional[str]]:
    """The first integer in a file, or (None, reason)."""
    text, why = read_text(file)
    if text is None:
        return None, why
    try:
        return int(text.strip().split()[0]), None
    except (ValueError, IndexError):
        return None, "{}: not an integer: {!r}".format(file, text.strip()[:40])


class Fields:
    """A JSON-ready dict of readings in which each unreadable value is None with its reason under 'unreadable'."""

    def __init__(self) -> None:
        self.data: Dict[str, Any] = {}
        self.unreadable: Dict[str, str] = {}

    def put(self, key: str, value: Any, why: Optional[str] = None) -> Any:
        self.data[key] = value
        if value is None and why:
            self.unreadable[key] = why
        return value

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.data)
        if self.unreadable:
            out["unreadable"] = dict(self.unreadable)
        return out


def state(base: Optional[str] = None) -> Dict[str, Any]:
    """This machine's power and clock state: a Jetson's (system.jetson) and NVML GPUs' (system.nvml)."""
    from system import jetson, nvml

    return {"jetson": jetson.state(base), "nvml": nvml.state()}


def state_warning(current: Dict[str, Any]) -> Optional[str]:
    """One line to show before measuring when a Jetson is not in its maximum mode or its clocks are not pinned."""
    from system import jetson

    return jetson.warning(current.get("jetson"))
