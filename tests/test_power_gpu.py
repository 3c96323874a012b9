"""On a real NVIDIA GPU: NVML's energy counter and its integrated power samples agree within 5 % over 30 s of load.

    MLMARK_GPU_TESTS=1 python -m pytest tests/test_power_gpu.py -q -s     (needs torch with CUDA, nvidia-ml-py)
"""

from __future__ import annotations

import threading
import time

import pytest

from system import nvml
from system.power import NvmlSource, PowerSampler, summarize

pytestmark = pytest.mark.gpu

LOAD_S = 30.0
SETTLE_S = 5.0  # power rises for a few seconds after the load starts; the window starts after it


def _load(torch, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    """Back-to-back half-precision matrix products: steady, heavy GPU load until told to stop."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    while not stop.is_set():
        for _ in range(20):
            a.matmul(b)
        torch.cuda.synchronize()


def test_energy_counter_and_integrated_power_agree() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    state = nvml.state()
    assert state["gpus"], state
    gpu = state["gpus"][0]
    print("\nGPU 0:", {k: gpu.get(k) for k in ("name", "sm_clock_mhz", "sm_clock_max_mhz", "power_limit_w",
                                               "temperature_c", "clock_event_reasons")})
    energy, power = NvmlSource(energy=True, indices=[0]), NvmlSource(energy=False, indices=[0])
    stop = threading.Event()
    worker = threading.Thread(target=_load, args=(torch, stop), daemon=True)
    worker.start()
    try:
        time.sleep(SETTLE_S)
        by_counter, by_samples = PowerSampler(energy, rate_hz=20), PowerSampler(power, rate_hz=20)
        by_counter.start()
        by_samples.start()
        time.sleep(LOAD_S)
        w_samples = by_samples.stop()
        w_counter = by_counter.stop()
    finally:
        stop.set()
        worker.join()
        energy.close()
        power.close()
    c, s = summarize(w_counter), summarize(w_samples)
    print("energy counter: {:.1f} W over {:.1f} s ({} readings); power samples: {:.1f} W ({} samples, {} Hz)".format(
        c["average_w"], c["duration_s"], c["samples"], s["average_w"], s["samples"], s["achieved_hz"]))
    assert c.get("error") is None and s.get("error") is None
    assert s["samples"] >= 0.9 * LOAD_S * 20
    assert c["average_w"] > (gpu.get("power_w") or 0) + 30, "the load drew little more than idle power"
    assert s["average_w"] == pytest.approx(c["average_w"], rel=0.05)
