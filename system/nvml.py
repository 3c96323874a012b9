"""NVIDIA GPU state through NVML (nvidia-ml-py, imported lazily): clocks, limits, temperature, throttling, energy.

A query the GPU does not support (a Jetson's NVML answers Not Supported to most) is None with the
reason, never an error.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple

from system import Fields

# NVML's clock event reason bits (nvmlClocksEventReason*, the same values as the older
# nvmlClocksThrottleReason*): a stable part of the C API, named here so results read as words.
EVENT_REASONS = (
    (0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"), (0x8, "hw_slowdown"),
    (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"), (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"), (0x100, "display_clock_setting"),
)
# Reasons that mean the GPU runs below the clocks it was asked for (idle and settings do not).
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def load() -> Tuple[Optional[Any], Optional[str]]:
    """(pynvml, None) with NVML initialised, or (None, reason)."""
    try:
        nv = importlib.import_module("pynvml")
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        nv.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no NVIDIA driver here
        return None, "NVML: {}".format(_error(exc))
    return nv, None


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _query(fields: Fields, key: str, fn: Callable[[], Any], convert: Callable[[Any], Any] = lambda v: v) -> Any:
    try:
        return fields.put(key, convert(fn()))
    except Exception as exc:  # NVMLError_NotSupported / _NoPermission / a binding without the function
        return fields.put(key, None, "NVML: {}".format(_error(exc)))


def reason_names(mask: Optional[int]) -> Optional[List[str]]:
    """The names of the bits set in a clock event reason mask."""
    if mask is None:
        return None
    return [name for bit, name in EVENT_REASONS if mask & bit]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def device_state(nv: Any, handle: Any) -> Dict[str, Any]:
    """One GPU: name, clocks and their maxima, application clocks, power limit and draw, temperature, reasons."""
    f = Fields()
    _query(f, "name", lambda: nv.nvmlDeviceGetName(handle), _text)
    _query(f, "uuid", lambda: nv.nvmlDeviceGetUUID(handle), _text)
    clocks = (("sm", nv.NVML_CLOCK_SM), ("memory", nv.NVML_CLOCK_MEM), ("graphics", nv.NVML_CLOCK_GRAPHICS))
    for label, kind in clocks:
        _query(f, "{}_clock_mhz".format(label), lambda k=kind: nv.nvmlDeviceGetClockInfo(handle, k))
        _query(f, "{}_clock_max_mhz".format(label), lambda k=kind: nv.nvmlDeviceGetMaxClockInfo(handle, k))
    for label, kind in clocks[:2]:
        _query(f, "applications_{}_clock_mhz".format(label),
               lambda k=kind: nv.nvmlDeviceGetApplicationsClock(handle, k))
    watts = lambda mw: round(mw / 1000.0, 3)  # noqa: E731 - NVML reports milliwatts
    _query(f, "power_limit_w", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle), watts)
    _query(f, "power_w", lambda: nv.nvmlDeviceGetPowerUsage(handle), watts)
    _query(f, "temperature_c", lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
    _query(f, "performance_state", lambda: nv.nvmlDeviceGetPerformanceState(handle), lambda p: "P{}".format(p))
    _query(f, "persistence_mode", lambda: nv.nvmlDeviceGetPersistenceMode(handle), bool)
    # nvmlDeviceGetCurrentClocksEventReasons replaces ...ThrottleReasons (deprecated) in newer drivers.
    mask = _query(f, "clock_event_reasons_mask",
                  lambda: (getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
                           or getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons"))(handle), int)
    f.put("clock_event_reasons", reason_names(mask))
    f.put("throttled", None if mask is None else bool(mask & THROTTLE_MASK))
    _query(f, "energy_counter_j", lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle), lambda mj: mj / 1000.0)
    return f.to_dict()


def state() -> Dict[str, Any]:
    """Driver version and every GPU's state, or {'gpus': [], 'unreadable': {...}} without NVML."""
    f = Fields()
    nv, why = load()
    if nv is None:
        f.put("driver", None, why)
        f.put("gpus", [])
        return f.to_dict()
    try:
        _query(f, "driver", nv.nvmlSystemGetDriverVersion, _text)
        count = _query(f, "count", nv.nvmlDeviceGetCount)
        gpus = []
        for i in range(count or 0):
            try:
                gpus.append(device_state(nv, nv.nvmlDeviceGetHandleByIndex(i)))
            except Exception as exc:  # a GPU that cannot be opened (no permission, fallen off the bus)
                gpus.append({"index": i, "unreadable": {"handle": "NVML: {}".format(_error(exc))}})
        f.put("gpus", gpus)
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass
    return f.to_dict()
