"""The power sampler and its summary, over sources whose true energy is known; NVML through a fake module."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from system import nvml
from system.power import (
    NvmlSource,
    PowerSampler,
    Source,
    SourceUnavailable,
    Window,
    measure_idle,
    open_source,
    summarize,
)
from tests.fake_pynvml import FakeNvml


class Ramp(Source):
    """Power rising linearly with time (W = a + b t): its exact energy over any interval is known."""

    name = "ramp"
    total_rail = "IN"
    measures = "a test ramp"

    def __init__(self, a: float = 5.0, b: float = 10.0) -> None:
        self.a, self.b, self.t0 = a, b, time.perf_counter()
        self.reads = 0

    def read(self) -> Dict[str, float]:
        self.reads += 1
        t = time.perf_counter() - self.t0
        return {"IN": self.a + self.b * t, "GPU": 1.0}

    def energy(self, t0: float, t1: float) -> float:
        t0, t1 = t0 - self.t0, t1 - self.t0
        return self.a * (t1 - t0) + 0.5 * self.b * (t1 * t1 - t0 * t0)


def test_sampler_rate_and_trapezoid_energy() -> None:
    src = Ramp()
    sampler = PowerSampler(src, rate_hz=50)
    sampler.start()
    time.sleep(0.5)
    window = sampler.stop()
    t0, t1 = window.samples[0][0], window.samples[-1][0]
    result = summarize(window, inferences=1000)
    # A linear ramp is integrated exactly by the trapezoid rule, whatever the sample times were (the
    # tolerance is the microseconds between a reading's timestamp and the read).
    assert result["energy_j"] == pytest.approx(src.energy(t0, t1), rel=1e-4)
    assert result["rails_w"]["GPU"] == pytest.approx(1.0)
    assert result["rate_hz"] == 50 and result["samples"] == len(window.samples)
    assert 20 <= len(window.samples) <= 28  # 0.5 s at 50 Hz, plus the readings in start() and stop()
    assert 40 <= result["achieved_hz"] <= 55
    assert 0 <= result["sampler_cpu_pct"] < 20 and 0 <= result["sampler_busy_pct"] < 20
    assert result["energy_per_inference_mj"] == pytest.approx(1e3 * result["energy_j"] / 1000)
    assert result["inferences_per_joule"] == pytest.approx(1000 / result["energy_j"])
    assert result["total"] == "IN" and result["source"] == "ramp"


def test_summary_with_wall_time_and_idle_baseline() -> None:
    window = Window(source={"source": "fixed", "total": "sum of rails", "measures": ""}, cumulative=False,
                    rate_hz=10.0, samples=[(0.0, {"A": 4.0, "B": 1.0}), (1.0, {"A": 4.0, "B": 1.0}),
                                           (2.0, {"A": 4.0, "B": 1.0})])
    r = summarize(window, inferences=500, wall_s=1.9, idle_w=2.0)
    assert r["average_w"] == 5.0 and r["rails_w"] == {"A": 4.0, "B": 1.0}
    # energy = average power x the timed loop's wall time: inferences/J is exactly fps / W
    assert r["energy_j"] == pytest.approx(9.5)
    fps = 500 / 1.9
    assert r["inferences_per_joule"] == pytest.approx(fps / 5.0)
    assert r["energy_per_inference_mj"] == pytest.approx(19.0)
    assert r["idle_w"] == 2.0 and r["net_average_w"] == 3.0
    assert r["net_energy_per_inference_mj"] == pytest.approx(1e3 * 3.0 * 1.9 / 500)


def test_cumulative_source_uses_the_counter_difference() -> None:
    window = Window(source={"source": "counter", "total": "sum of rails", "measures": ""}, cumulative=True,
                    rate_hz=10.0, samples=[(10.0, {"gpu0": 1000.0}), (10.5, {"gpu0": 1090.0}),
                                           (12.0, {"gpu0": 1600.0})])
    r = summarize(window, inferences=300)
    assert r["energy_j"] == pytest.approx(600.0) and r["average_w"] == pytest.approx(300.0)
    assert r["energy_per_inference_mj"] == pytest.approx(2000.0)


def test_a_counter_is_read_at_the_start_and_the_end_only() -> None:
    class Counter(Ramp):
        cumulative = True

        def read(self) -> Dict[str, float]:
            self.reads += 1
            t = time.perf_counter() - self.t0
            return {"IN": self.a * t + 0.5 * self.b * t * t}  # the ramp's energy so far, in J

    src = Counter()
    sampler = PowerSampler(src, rate_hz=50)
    sampler.start()
    time.sleep(0.3)
    window = sampler.stop()
    assert src.reads == 2 and len(window.samples) == 2  # no thread read it in between: a read costs, gives nothing
    t0, t1 = window.samples[0][0], window.samples[-1][0]
    result = summarize(window, inferences=100)
    assert result["energy_j"] == pytest.approx(src.energy(t0, t1), rel=1e-3)
    assert result["rate_hz"] == 0.0 and result["achieved_hz"] == 0.0


def test_too_short_and_failing_windows() -> None:
    one = Window(source={"source": "x"}, cumulative=False, rate_hz=10.0, samples=[(0.0, {"A": 1.0})])
    r = summarize(one, inferences=10)
    assert r["average_w"] is None and "fewer than two samples" in r["unreadable"]["average_w"]

    class Failing(Ramp):
        def read(self) -> Dict[str, float]:
            if self.reads >= 3:
                raise OSError("rail vanished")
            return super().read()

    sampler = PowerSampler(Failing(), rate_hz=100)
    sampler.start()
    time.sleep(0.2)
    window = sampler.stop()
    assert window.error == "ramp: rail vanished" and len(window.samples) == 3
    assert summarize(window)["error"] == "ramp: rail vanished"


def test_sampler_lifecycle() -> None:
    with pytest.raises(ValueError):
        PowerSampler(Ramp(), rate_hz=0)
    sampler = PowerSampler(Ramp(), rate_hz=20)
    with pytest.raises(RuntimeError):
        sampler.stop()
    with sampler:
        with pytest.raises(RuntimeError):
            sampler.start()
    assert not [t for t in threading.enumerate() if t.name == "mlmark-power"]
    sampler.start()  # reusable: one sampler per run, a window per task
    assert len(sampler.stop().samples) >= 2


def test_idle_baseline() -> None:
    idle = measure_idle(Ramp(a=3.0, b=0.0), seconds=0.2, rate_hz=50)
    assert idle["average_w"] == pytest.approx(3.0) and idle["samples"] >= 5


# -- NVML through the fake module ---------------------------------------------------------------------

def test_nvml_energy_counter_source(monkeypatch: Any) -> None:
    fake = FakeNvml(gpus=2, watts=300.0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    src, reasons = open_source(str(Path("/nonexistent")))
    assert src is not None and src.name == "nvml-energy" and src.cumulative
    assert reasons and reasons[0].startswith("ina3221: no INA3221")
    sampler = PowerSampler(src, rate_hz=20)
    sampler.start()
    time.sleep(0.5)
    r = summarize(sampler.stop(), inferences=100)
    src.close()
    assert r["rails_w"]["gpu0"] == pytest.approx(300.0, rel=0.01) and r["average_w"] == pytest.approx(600.0, rel=0.01)
    assert "GPU card only" in r["measures"] and r["total"] == "sum of rails"
    assert fake.inits == 0  # NVML shut down again


def test_nvml_power_samples_without_energy_counter(monkeypatch: Any) -> None:
    fake = FakeNvml(watts=120.0, unsupported=["nvmlDeviceGetTotalEnergyConsumption"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    src, reasons = open_source("/nonexistent")
    assert src is not None and src.name == "nvml-power" and not src.cumulative
    assert "nvml-energy: NVML energy counter: Not Supported" in reasons
    sampler = PowerSampler(src, rate_hz=50)
    sampler.start()
    time.sleep(0.2)
    r = summarize(sampler.stop())
    src.close()
    assert r["average_w"] == pytest.approx(120.0) and r["source"] == "nvml-power"


def test_jetson_nvml_answers_not_supported(monkeypatch: Any, tmp_path: Path) -> None:
    everything = ["nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetClockInfo",
                  "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetApplicationsClock", "nvmlDeviceGetEnforcedPowerLimit",
                  "nvmlDeviceGetTemperature", "nvmlDeviceGetPerformanceState", "nvmlDeviceGetPersistenceMode",
                  "nvmlDeviceGetCurrentClocksEventReasons"]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(unsupported=everything))
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats either
    src, reasons = open_source(str(tmp_path))
    assert src is None and [r.split(":")[0] for r in reasons] == ["ina3221", "nvml-energy", "nvml-power", "tegrastats"]
    gpu = nvml.state()["gpus"][0]
    assert gpu["name"] == "NVIDIA Fake GPU"
    assert gpu["sm_clock_mhz"] is None and gpu["unreadable"]["sm_clock_mhz"] == "NVML: Not Supported"
    assert gpu["throttled"] is None and gpu["clock_event_reasons"] is None


def test_no_nvml(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(driver=False))
    s = nvml.state()
    assert s["gpus"] == [] and s["unreadable"]["driver"] == "NVML: NVML Shared Library Not Found"
    with pytest.raises(SourceUnavailable, match="Library Not Found"):
        NvmlSource(energy=True)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert "pip install nvidia-ml-py" in nvml.state()["unreadable"]["driver"]


def test_nvml_state(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus=1, watts=250.0, reasons=0x1 | 0x4 | 0x40))
    s = nvml.state()
    assert s["driver"] == "570.00" and s["count"] == 1
    g = s["gpus"][0]
    assert (g["sm_clock_mhz"], g["sm_clock_max_mhz"], g["memory_clock_mhz"]) == (1980, 1990, 3201)
    assert g["applications_sm_clock_mhz"] == 1880 and g["power_limit_w"] == 700.0 and g["power_w"] == 250.0
    assert g["temperature_c"] == 41 and g["performance_state"] == "P0" and g["persistence_mode"] is True
    assert g["clock_event_reasons"] == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert g["throttled"] is True and g["energy_counter_j"] > 1000
    assert "unreadable" not in g
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(reasons=0x1))
    assert nvml.state()["gpus"][0]["throttled"] is False  # idle is not throttling


def test_open_for_run(monkeypatch: Any) -> None:
    from system.power import open_for_run

    fixture = str(Path(__file__).resolve().parent / "fixtures" / "sysfs" / "orin-nano")
    monkeypatch.setenv("MLMARK_POWER", "off")
    assert open_for_run(base=fixture) == (None, {"source": None, "unavailable": ["MLMARK_POWER=off"]})
    monkeypatch.setenv("MLMARK_POWER", "bogus")
    sampler, info = open_for_run(base=fixture)
    assert sampler is None and "allowed are off, ina3221" in info["unavailable"][0]
    monkeypatch.setenv("MLMARK_POWER", "ina3221")
    sampler, info = open_for_run(idle_s=0.2, base=fixture)
    assert sampler is not None and sampler.source.name == "ina3221" and sampler.rate_hz == 20.0
    assert info["source"] == "ina3221" and info["total"] == "VDD_IN"
    assert info["idle"]["average_w"] == pytest.approx(4.558, abs=1e-3)
