"""Power and energy during the timed loop: a sampler thread at a fixed rate over one of four sources.

Sources, in the order `open_source` tries them:

- `ina3221`: a Jetson's INA3221 power monitors through sysfs. JetPack 4 (L4T 32) drives them with
  NVIDIA's `ina3221x` IIO driver, one folder per chip with `rail_name_N`, `in_power{N}_input` (mW),
  `in_voltage{N}_input` (mV) and `in_current{N}_input` (mA): /sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0
  on the Nano (POM_5V_IN, POM_5V_GPU, POM_5V_CPU), .../7-0040/iio:device0 on the Xavier NX (VDD_IN,
  VDD_CPU_GPU_CV, VDD_SOC), .../1-0040/iio:device0 and 1-0041/iio:device1 on the AGX Xavier (GPU, CPU,
  SOC; CV, VDDRQ, SYS5V). JetPack 5 and 6 use the mainline `ina3221` hwmon driver, with
  `in{N}_label`, `in{N}_input` (mV) and `curr{N}_input` (mA): /sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*
  on the Orin Nano and NX (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC), 1-0040 and 1-0041 on the AGX Orin
  (VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0; NC, VDDQ_VDD2_1V8AO, NC), and 7-0040 / 1-0040 on the
  Xaviers. Source: NVIDIA Jetson Linux Developer Guide, "Platform Power and Performance", section
  "Power Monitor" / "Software-Based Power Consumption Modeling" of each family: L4T 32.7
  power_management_nano.html and power_management_jetson_xavier.html, r35
  JetsonXavierNxSeriesAndJetsonAgxXavierSeries.html, r35/r36
  JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html; the same paths are what
  public Jetson tools (jetson_stats) and users' scripts read. The folders are found by globbing
  both drivers, so a bus number or hwmon index that differs on a carrier board is still found.
- `nvml-energy`: NVML's total energy counter of each GPU (Volta and newer): exact, preferred on a dGPU.
- `nvml-power`: NVML power samples, integrated over time (older GPUs).
- `tegrastats`: the VDD_* fields of `tegrastats --interval` (system.tegrastats), when sysfs cannot be read.

What each measures is recorded with it: a Jetson's input rail covers the whole module (CPU, GPU,
memory, SoC); a dGPU's NVML power covers the GPU board only, not the host.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from system import path, read_text, root

# Rails that are the module's whole input; without one, the total is the sum of the rails.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
DEFAULT_RATE_HZ = 20.0
IDLE_SECONDS = 3.0
SOURCES = ("ina3221", "nvml-energy", "nvml-power", "tegrastats")

_clock = time.perf_counter


class SourceUnavailable(Exception):
    """A power source that cannot be read on this machine (the reason is the message)."""


class Source:
    """Reads every rail at once: watts, or joules since an arbitrary origin when `cumulative`."""

    name = ""
    cumulative = False
    total_rail: Optional[str] = None  # the rail that is the whole; None: the sum of the rails
    measures = ""

    def read(self) -> Dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a subprocess, NVML)."""

    def describe(self) -> Dict[str, Any]:
        return {"source": self.name, "total": self.total_rail or "sum of rails", "measures": self.measures}


# -- Jetson INA3221 through sysfs ---------------------------------------------------------------------

# A rail's power in W is the product of its files' integers times a scale: mW x 1e-3, or mV x mA x 1e-6.
Rail = Tuple[Tuple[str, ...], float]


def find_ina3221_rails(base: Optional[str] = None) -> Dict[str, Rail]:
    """{rail name: (files, scale)} for every INA3221 channel under the root folder (JetPack 4 IIO or 5+ hwmon)."""
    base = root(base)
    rails: Dict[str, Rail] = {}
    for dev in sorted(glob.glob(path(base, "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
        for label_file in sorted(glob.glob(os.path.join(dev, "rail_name_*"))):
            n = label_file.rsplit("_", 1)[1]
            name, _ = read_text(label_file)
            name = (name or "").strip()
            power = os.path.join(dev, "in_power{}_input".format(n))
            volts, amps = (os.path.join(dev, "in_{}{}_input".format(k, n)) for k in ("voltage", "current"))
            if not name:
                continue
            if os.path.isfile(power):
                rails[name] = ((power,), 1e-3)
            elif os.path.isfile(volts) and os.path.isfile(amps):
                rails[name] = ((volts, amps), 1e-6)
    for dev in sorted(glob.glob(path(base, "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))):
        for label_file in sorted(glob.glob(os.path.join(dev, "in*_label"))):
            n = re.sub(r"\D", "", os.path.basename(label_file))
            name, _ = read_text(label_file)
            name = (name or "").strip()
            # NC: channel not connected (AGX Orin); in7 is the driver's sum of shunt voltages.
            if not name or name.upper() == "NC" or "sum" in name.lower() or n == "7":
                continue
            volts, amps = (os.path.join(dev, "{}{}_input".format(k, n)) for k in ("in", "curr"))
            if os.path.isfile(volts) and os.path.isfile(amps):
                rails[name] = ((volts, amps), 1e-6)
    return rails


def _measures(total: Optional[str], rails: Sequence[str]) -> str:
    if total:
        return ("board input ({}): the whole module, CPU, GPU, memory and SoC together, not the carrier "
                "board's peripherals".format(total))
    return ("sum of the module's rails ({}): this board has no input rail; CPU, GPU, memory and SoC are "
            "included, regulator losses are not".format(", ".join(rails)))


class Ina3221Source(Source):
    """A Jetson's INA3221 rails from sysfs.

    The files stay open and are re-read with pread at offset 0, which makes sysfs produce a fresh
    value: a ninth of the cost of opening each file for every sample.
    """

    name = "ina3221"

    def __init__(self, base: Optional[str] = None) -> None:
        rails = find_ina3221_rails(base)
        if not rails:
            raise SourceUnavailable("no INA3221 power monitor under {}".format(
                path(root(base), "/sys/bus/i2c/drivers/ina3221{,x}")))
        self._fds: List[int] = []
        try:
            self.rails = {name: (tuple(self._open(f) for f in files), scale) for name, (files, scale) in rails.items()}
            self.read()
        except (OSError, ValueError, IndexError) as exc:
            self.close()
            raise SourceUnavailable("INA3221 rails unreadable: {}".format(exc)) from None
        self.total_rail = next((r for r in INPUT_RAILS if r in self.rails), None)
        self.measures = _measures(self.total_rail, list(self.rails))

    def _open(self, file: str) -> int:
        fd = os.open(file, os.O_RDONLY)
        self._fds.append(fd)
        return fd

    def read(self) -> Dict[str, float]:
        out = {}
        for name, (fds, scale) in self.rails.items():
            value = scale
            for fd in fds:
                value *= int(os.pread(fd, 64, 0).split()[0])
            out[name] = value
        return out

    def close(self) -> None:
        fds, self._fds = getattr(self, "_fds", []), []
        for fd in fds:
            os.close(fd)


# -- NVML ---------------------------------------------------------------------------------------------

class NvmlSource(Source):
    """Each NVIDIA GPU as a rail 'gpu<index>': its energy counter (cumulative J) or its power draw (W)."""

    def __init__(self, energy: bool, indices: Optional[Sequence[int]] = None) -> None:
        from system import nvml

        nv, why = nvml.load()
        if nv is None:
            raise SourceUnavailable(why or "NVML unavailable")
        self.nv, self.cumulative = nv, energy
        self.name = "nvml-energy" if energy else "nvml-power"
        self._read = nv.nvmlDeviceGetTotalEnergyConsumption if energy else nv.nvmlDeviceGetPowerUsage
        try:
            count = nv.nvmlDeviceGetCount()
            chosen = list(indices) if indices is not None else list(range(count))
            self.handles = {"gpu{}".format(i): nv.nvmlDeviceGetHandleByIndex(i) for i in chosen}
            if not self.handles:
                raise SourceUnavailable("NVML finds no GPU")
            self.read()
        except SourceUnavailable:
            self.close()
            raise
        except Exception as exc:  # NVMLError_NotSupported: no energy counter before Volta, none at all on Jetson
            self.close()
            raise SourceUnavailable("NVML {}: {}".format(
                "energy counter" if energy else "power reading", str(exc) or type(exc).__name__)) from None
        self.measures = ("GPU board power from NVML ({}): the GPU card only; the host's CPU, memory and power "
                         "supply are not included".format(", ".join(self.handles)))

    def read(self) -> Dict[str, float]:
        # milli-joules or milliwatts
        return {rail: self._read(h) / 1000.0 for rail, h in self.handles.items()}

    def close(self) -> None:
        nv, self.nv = getattr(self, "nv", None), None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass


# -- tegrastats ---------------------------------------------------------------------------------------

class TegrastatsSource(Source):
    """The latest rails printed by a running `tegrastats --interval MS` (sample and hold)."""

    name = "tegrastats"

    def __init__(self, interval_ms: int = 100, command: Optional[Sequence[str]] = None,
                 first_line_s: float = 5.0) -> None:
        from system.tegrastats import parse_line

        if command is None:
            exe = shutil.which("tegrastats")
            if not exe:
                raise SourceUnavailable("tegrastats not found on PATH")
            command = [exe, "--interval", str(int(interval_ms))]
        self._parse = parse_line
        self._latest: Optional[Dict[str, float]] = None
        self.lines = 0
        self._got = threading.Event()
        try:
            self._proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        except OSError as exc:
            raise SourceUnavailable("tegrastats: {}".format(exc)) from None
        self._thread = threading.Thread(target=self._pump, name="mlmark-tegrastats", daemon=True)
        self._thread.start()
        if not self._got.wait(first_line_s) or self._latest is None:
            self.close()
            raise SourceUnavailable("tegrastats printed no power rails within {:.0f} s".format(first_line_s))
        rails = list(self._latest)
        self.total_rail = next((r for r in INPUT_RAILS if r in rails), None)
        self.measures = _measures(self.total_rail, rails) + "; from tegrastats every {} ms".format(interval_ms)

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = self._parse(line)
            if parsed is not None:
                self._latest = parsed.current_w
                self.lines += 1
                self._got.set()
        self._got.set()

    def read(self) -> Dict[str, float]:
        if self._proc.poll() is not None:
            raise OSError("tegrastats exited with status {}".format(self._proc.returncode))
        return dict(self._latest or {})

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def open_source(base: Optional[str] = None, only: Optional[str] = None,
                rate_hz: float = DEFAULT_RATE_HZ) -> Tuple[Optional[Source], List[str]]:
    """The first source that can be read here (or `only` that one), and why each one before it could not."""
    if only is not None and only not in SOURCES:
        raise ValueError("power source {!r}: allowed are {}".format(only, ", ".join(SOURCES)))
    makers: Dict[str, Callable[[], Source]] = {
        "ina3221": lambda: Ina3221Source(base),
        "nvml-energy": lambda: NvmlSource(energy=True),
        "nvml-power": lambda: NvmlSource(energy=False),
        "tegrastats": lambda: TegrastatsSource(interval_ms=max(1, int(round(1000.0 / rate_hz)))),
    }
    reasons = []
    for name in ([only] if only else SOURCES):
        try:
            return makers[name](), reasons
        except SourceUnavailable as exc:
            reasons.append("{}: {}".format(name, exc))
    return None, reasons


# -- sampling -----------------------------------------------------------------------------------------

@dataclass
class Window:
    """The samples of one sampling window: (time s, {rail: value}) in order, and what produced them."""

    source: Dict[str, Any]
    cumulative: bool
    rate_hz: float
    samples: List[Tuple[float, Dict[str, float]]] = field(default_factory=list)
    error: Optional[str] = None
    busy_s: float = 0.0  # time spent reading the source
    thread_cpu_s: float = 0.0  # CPU time of the sampler thread: its cost to the machine


class PowerSampler:
    """A thread that reads a source at a fixed rate between start() and stop(), off the hot path.

    Readings are scheduled at start + k / rate (no drift); the first and last are taken in start()
    and stop() themselves, so the window covers exactly what ran between the two calls. A cumulative
    source (an energy counter) is read only there: the difference is the exact energy, and reading
    it in between would only cost (an NVML read took about 4 ms of CPU on a virtualized H200 host,
    8 % of a CPU benchmark's throughput at 20 Hz), so no thread runs and the rate is recorded as 0.
    """

    def __init__(self, source: Source, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        if not rate_hz > 0:
            raise ValueError("sampling rate must be positive, got {}".format(rate_hz))
        self.source, self.rate_hz = source, float(rate_hz)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._window: Optional[Window] = None

    def _sample(self, window: Window) -> bool:
        try:
            t0 = _clock()
            values = self.source.read()
            window.busy_s += _clock() - t0
            window.samples.append((t0, values))
            return True
        except Exception as exc:  # a rail that stops answering ends the window, not the benchmark
            window.error = window.error or "{}: {}".format(self.source.name, exc)
            return False

    def _run(self, window: Window, start: float) -> None:
        cpu0 = time.thread_time()
        try:
            self._loop(window, start)
        finally:
            window.thread_cpu_s = time.thread_time() - cpu0

    def _loop(self, window: Window, start: float) -> None:
        period = 1.0 / self.rate_hz
        k = 1
        while True:
            delay = start + k * period - _clock()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set() or not self._sample(window):
                return
            # The next slot still ahead: after a stalled read, missed slots are skipped, not sampled in a burst.
            k = max(k + 1, int((_clock() - start) / period) + 1)

    def start(self) -> None:
        """Take the first reading and start the thread."""
        if self._window is not None:
            raise RuntimeError("power sampler already running")
        self._stop.clear()
        cumulative = self.source.cumulative
        self._window = Window(source=self.source.describe(), cumulative=cumulative,
                              rate_hz=0.0 if cumulative else self.rate_hz)
        self._sample(self._window)
        if cumulative:
            return
        start = self._window.samples[0][0] if self._window.samples else _clock()
        self._thread = threading.Thread(target=self._run, args=(self._window, start), name="mlmark-power",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> Window:
        """Stop the thread, take the last reading, return the window."""
        if self._window is None:
            raise RuntimeError("power sampler not running")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        window, self._window = self._window, None
        if window.error is None:
            self._sample(window)
        return window

    def __enter__(self) -> "PowerSampler":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._window is not None:
            self.stop()


def _energy_by_rail(window: Window) -> Dict[str, float]:
    """Joules per rail over the window: counter difference, or power integrated with the trapezoid rule."""
    samples = window.samples
    rails = [r for r in samples[0][1] if all(r in s for _, s in samples)]
    if window.cumulative:
        return {r: samples[-1][1][r] - samples[0][1][r] for r in rails}
    energy = {r: 0.0 for r in rails}
    for (t0, a), (t1, b) in zip(samples, samples[1:]):
        for r in rails:
            energy[r] += 0.5 * (a[r] + b[r]) * (t1 - t0)
    return energy


def summarize(window: Window, inferences: Optional[int] = None, wall_s: Optional[float] = None,
              idle_w: Optional[float] = None) -> Dict[str, Any]:
    """Average power per rail (W) and in total; with `inferences`, energy per inference (mJ) and inferences/J.

    An inference is one image, as fps counts images, so inferences per joule equals fps per watt.
    `wall_s` is the timed loop's wall time: energy = average power x wall time, so that inferences
    per joule is exactly the task's fps divided by its average power. `idle_w` (the idle baseline)
    adds the net figures: what the work cost above idling.
    """
    out: Dict[str, Any] = dict(window.source)
    out.update(rate_hz=window.rate_hz, samples=len(window.samples))
    if window.error:
        out["error"] = window.error
    samples = window.samples
    duration = samples[-1][0] - samples[0][0] if len(samples) >= 2 else 0.0
    out["duration_s"] = round(duration, 4)
    if duration <= 0:
        out.update(average_w=None, unreadable={"average_w": "fewer than two samples in the window"})
        return out
    energy = _energy_by_rail(window)
    out["achieved_hz"] = round((len(samples) - 1) / duration, 2) if window.rate_hz else 0.0
    out["sampler_busy_pct"] = round(100.0 * window.busy_s / duration, 4)
    out["sampler_cpu_pct"] = round(100.0 * window.thread_cpu_s / duration, 4)
    out["rails_w"] = {r: round(e / duration, 4) for r, e in energy.items()}
    total_rail = window.source.get("total")
    total = energy[total_rail] if total_rail in energy else sum(energy.values())
    average = total / duration
    out["average_w"] = round(average, 4)
    seconds = wall_s if wall_s and wall_s > 0 else duration
    joules = average * seconds
    out["energy_j"] = round(joules, 6)
    if inferences and joules > 0:
        out["energy_per_inference_mj"] = round(1e3 * joules / inferences, 6)
        out["inferences_per_joule"] = round(inferences / joules, 6)
    if idle_w is not None:
        out["idle_w"] = round(idle_w, 4)
        out["net_average_w"] = round(average - idle_w, 4)
        if inferences:
            out["net_energy_per_inference_mj"] = round(1e3 * (average - idle_w) * seconds / inferences, 6)
    return out


def measure_idle(source: Source, seconds: float = IDLE_SECONDS, rate_hz: float = DEFAULT_RATE_HZ) -> Dict[str, Any]:
    """The idle baseline: average power per rail over `seconds` of doing nothing."""
    sampler = PowerSampler(source, rate_hz)
    sampler.start()
    time.sleep(seconds)
    return summarize(sampler.stop())


POWER_ENV = "MLMARK_POWER"  # "off", or one source name to use only that one


def open_for_run(rate_hz: float = DEFAULT_RATE_HZ, idle_s: float = IDLE_SECONDS,
                 base: Optional[str] = None) -> Tuple[Optional[PowerSampler], Dict[str, Any]]:
    """A run's sampler over the first readable source, with its idle baseline measured now; and what to record.

    $MLMARK_POWER=off turns power measurement off; =<source> allows only that source.
    """
    choice = os.environ.get(POWER_ENV, "").strip().lower()
    if choice == "off":
        return None, {"source": None, "unavailable": ["{}=off".format(POWER_ENV)]}
    if choice and choice not in SOURCES:
        return None, {"source": None, "unavailable": ["{}={}: allowed are off, {}".format(
            POWER_ENV, choice, ", ".join(SOURCES))]}
    source, reasons = open_source(base, only=choice or None, rate_hz=rate_hz)
    if source is None:
        return None, {"source": None, "unavailable": reasons}
    info = dict(source.describe(), rate_hz=rate_hz, idle=measure_idle(source, idle_s, rate_hz))
    if reasons:
        info["unavailable"] = reasons
    return PowerSampler(source, rate_hz), info
