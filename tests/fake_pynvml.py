"""A stand-in for nvidia-ml-py's `pynvml` module: the calls system.nvml and system.power make, on the CPU.

Each GPU draws a constant power; its energy counter grows with the real clock, so a sampler over it
sees what it would see on a GPU at that power. Tests install it with
monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(...)).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence

NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """As pynvml's: str() is NVML's message."""


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class FakeNvml:
    """pynvml with `gpus` devices at `watts` each; `unsupported` names calls that answer Not Supported."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVMLError = NVMLError

    def __init__(self, gpus: int = 1, watts: float = 250.0, unsupported: Sequence[str] = (), driver: bool = True,
                 reasons: int = 0x1, clocks: Optional[Dict[int, int]] = None) -> None:
        self.gpus, self.watts, self.unsupported, self.driver = gpus, watts, set(unsupported), driver
        self.reasons = reasons
        self.clocks = clocks or {NVML_CLOCK_SM: 1980, NVML_CLOCK_MEM: 3201, NVML_CLOCK_GRAPHICS: 1980}
        self.origin = time.perf_counter()
        self.inits = 0
        self.calls: Dict[str, int] = {}

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.unsupported:
            raise NVMLError_NotSupported()

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError_LibraryNotFound()
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.00"

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if not 0 <= i < self.gpus:
            raise NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetName(self, h: Any) -> bytes:
        return b"NVIDIA Fake GPU"

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return "GPU-0000000{}".format(h)

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        self._call("nvmlDeviceGetClockInfo")
        return self.clocks[kind]

    def nvmlDeviceGetMaxClockInfo(self, h: Any, kind: int) -> int:
        self._call("nvmlDeviceGetMaxClockInfo")
        return self.clocks[kind] + 10

    def nvmlDeviceGetApplicationsClock(self, h: Any, kind: int) -> int:
        self._call("nvmlDeviceGetApplicationsClock")
        return self.clocks[kind] - 100

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        self._call("nvmlDeviceGetEnforcedPowerLimit")
        return 700000

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        self._call("nvmlDeviceGetPowerUsage")
        return int(self.watts * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:
        self._call("nvmlDeviceGetTotalEnergyConsumption")
        return int(1e6 + self.watts * (time.perf_counter() - self.origin) * 1000)

    def nvmlDeviceGetTemperature(self, h: Any, kind: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        return 41

    def nvmlDeviceGetPerformanceState(self, h: Any) -> int:
        self._call("nvmlDeviceGetPerformanceState")
        return 0

    def nvmlDeviceGetPersistenceMode(self, h: Any) -> int:
        self._call("nvmlDeviceGetPersistenceMode")
        return 1

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return self.reasons
