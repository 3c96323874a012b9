"""The native (C++/CUDA) core: the timed inference loop that GPU targets run outside Python.

Importing this package builds and loads nothing; the library is found or built on first use.
"""

from __future__ import annotations

from targets.native.library import (EXPECTED_ABI_VERSION, DeviceInfo, NativeLibrary, ensure_library,
                                    load_library, source_hash, staleness)
from targets.native.loop import LoopResult, LoopSettings, NativeLoop, SpinWorkload, run_loop

__all__ = [
    "EXPECTED_ABI_VERSION", "DeviceInfo", "LoopResult", "LoopSettings", "NativeLibrary", "NativeLoop",
    "SpinWorkload", "ensure_library", "load_library", "run_loop", "source_hash", "staleness",
]
