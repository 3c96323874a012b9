"""The native timed loop from Python: settings in, raw per-inference times out.

The loop itself runs inside the library (one host thread, one CUDA stream and one executor per unit
of concurrency); Python only passes settings and receives arrays. Percentiles are the harness's job:
LoopResult.summary() goes through harness.stats.summarize.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional

import numpy as np

from harness.errors import ConfigError
from harness.stats import summarize
from targets.native.library import (EXECUTOR_SPIN, MEMORY_MODES, SYNC_MODES, ZERO_COPY_ALLOCS, LoopConfigStruct,
                                    NativeLibrary, RunInfoStruct, load_library)

MAX_CONCURRENCY = 1024
MAX_SPIN_NS = 10 * 1000 * 1000 * 1000


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: streams, iterations, waiting, graphs, transfers and memory."""

    concurrency: int = 1
    iterations: int = 1000
    warmup: int = 100
    sync: str = "blocking"  # 'blocking' (sleep until the GPU signals) or 'spin' (poll)
    cuda_graph: bool = False
    transfers: bool = True  # copy inputs in and outputs out per inference (trtexec without --noDataTransfers)
    memory: str = "auto"  # 'device', 'zero-copy', or 'auto' (zero-copy on integrated GPUs only)
    force_zero_copy: bool = False  # allow zero-copy on a discrete GPU
    zero_copy_alloc: str = "mapped"  # 'mapped' pinned host memory or 'managed' memory
    device: int = 0

    def validate(self) -> "LoopSettings":
        """Raise ConfigError naming the first bad field; returns self."""
        if not isinstance(self.concurrency, int) or not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError("concurrency must be an integer within 1..{}, got {!r}".format(
                MAX_CONCURRENCY, self.concurrency))
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError("iterations must be an integer >= 1, got {!r}".format(self.iterations))
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError("warmup must be an integer >= 0, got {!r}".format(self.warmup))
        if self.sync not in SYNC_MODES:
            raise ConfigError("sync must be one of {}, got {!r}".format(", ".join(SYNC_MODES), self.sync))
        if self.memory not in MEMORY_MODES:
            raise ConfigError("memory must be one of {}, got {!r}".format(", ".join(MEMORY_MODES), self.memory))
        if self.zero_copy_alloc not in ZERO_COPY_ALLOCS:
            raise ConfigError("zero_copy_alloc must be one of {}, got {!r}".format(
                ", ".join(ZERO_COPY_ALLOCS), self.zero_copy_alloc))
        if not isinstance(self.device, int) or self.device < 0:
            raise ConfigError("device must be a GPU index >= 0, got {!r}".format(self.device))
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpinWorkload:
    """The calibrated workload: a one-thread kernel that runs for duration_ns by the GPU's global timer."""

    duration_ns: int
    input_bytes: int = 4096
    output_bytes: int = 4096

    def validate(self) -> "SpinWorkload":
        """Raise ConfigError for a negative or absurd duration or size; returns self."""
        if not isinstance(self.duration_ns, int) or not 0 <= self.duration_ns <= MAX_SPIN_NS:
            raise ConfigError("spin duration must be an integer within 0..{} ns, got {!r}".format(
                MAX_SPIN_NS, self.duration_ns))
        for name in ("input_bytes", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError("{} must be an integer >= 0, got {!r}".format(name, value))
        return self


@dataclass
class LoopResult:
    """Raw per-inference times of one run, in issue order, and the settings it actually used."""

    e2e_s: np.ndarray  # end-to-end latency, host steady clock, enqueue to observed completion
    gpu_s: np.ndarray  # GPU compute time, CUDA events around the executor's work
    enqueue_s: np.ndarray  # host time of the inference's enqueue calls (copies, events, executor)
    wall_s: float  # first timed enqueue to last timed completion
    settings: LoopSettings  # as used: 'auto' resolved, transfers off under zero-copy
    input_bytes: int
    output_bytes: int
    integrated: bool

    @property
    def iterations(self) -> int:
        return int(self.e2e_s.size)

    @property
    def throughput_per_s(self) -> float:
        """Inferences per second over the wall time."""
        return self.iterations / self.wall_s if self.wall_s > 0 else 0.0

    def overhead_s(self) -> np.ndarray:
        """Per inference, end-to-end minus GPU time: what the loop and the transfers add."""
        return self.e2e_s - self.gpu_s

    def summary(self) -> Dict[str, Any]:
        """Latency statistics (via harness.stats), throughput and settings, for reports."""
        return {
            "iterations": self.iterations,
            "wall_s": self.wall_s,
            "throughput_per_s": self.throughput_per_s,
            "e2e": summarize(self.e2e_s.tolist()).to_dict(),
            "gpu": summarize(self.gpu_s.tolist()).to_dict(),
            "overhead": summarize(self.overhead_s().tolist()).to_dict(),
            "enqueue": summarize(self.enqueue_s.tolist()).to_dict(),
            "settings": self.settings.to_dict(),
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
        }


def _name_of(table: Dict[str, int], value: int) -> str:
    for name, code in table.items():
        if code == value:
            return name
    return str(value)


class NativeLoop:
    """A prepared loop (streams, executors, buffers, graphs) that can be run several times."""

    def __init__(self, settings: LoopSettings, workload: SpinWorkload,
                 library: Optional[NativeLibrary] = None) -> None:
        self.settings = settings.validate()
        self.workload = workload.validate()
        self._library = library if library is not None else load_library()
        config = LoopConfigStruct()
        config.device = settings.device
        config.concurrency = settings.concurrency
        config.sync_mode = SYNC_MODES[settings.sync]
        config.cuda_graph = int(bool(settings.cuda_graph))
        config.transfers = int(bool(settings.transfers))
        config.memory = MEMORY_MODES[settings.memory]
        config.force_zero_copy = int(bool(settings.force_zero_copy))
        config.zero_copy_alloc = ZERO_COPY_ALLOCS[settings.zero_copy_alloc]
        config.executor = EXECUTOR_SPIN
        config.spin_ns = workload.duration_ns
        config.input_bytes = workload.input_bytes
        config.output_bytes = workload.output_bytes
        self._handle: Optional[int] = self._library.loop_create(config)
        self.used = self._settings_used(self._library.loop_info(self._handle))

    def _settings_used(self, info: RunInfoStruct) -> LoopSettings:
        return replace(
            self.settings, concurrency=int(info.concurrency), sync=_name_of(SYNC_MODES, info.sync_mode),
            cuda_graph=bool(info.cuda_graph), transfers=bool(info.transfers),
            memory=_name_of(MEMORY_MODES, info.memory),
            zero_copy_alloc=_name_of(ZERO_COPY_ALLOCS, info.zero_copy_alloc), device=int(info.device))

    def run(self, iterations: Optional[int] = None, warmup: Optional[int] = None) -> LoopResult:
        """Run warmup untimed and iterations timed inferences (defaults: the settings')."""
        if self._handle is None:
            raise ConfigError("this loop is closed")
        n = self.settings.iterations if iterations is None else int(iterations)
        w = self.settings.warmup if warmup is None else int(warmup)
        replace(self.settings, iterations=n, warmup=w).validate()
        e2e, gpu, enqueue, info = self._library.loop_run(self._handle, n, w)
        used = replace(self._settings_used(info), iterations=n, warmup=w)
        return LoopResult(e2e_s=e2e, gpu_s=gpu, enqueue_s=enqueue, wall_s=float(info.wall_s), settings=used,
                          input_bytes=int(info.input_bytes), output_bytes=int(info.output_bytes),
                          integrated=bool(info.integrated))

    def set_spin_ns(self, duration_ns: int) -> None:
        """Change the spin kernel's duration for later runs, on the same streams and graphs."""
        if self._handle is None:
            raise ConfigError("this loop is closed")
        replace(self.workload, duration_ns=duration_ns).validate()
        self._library.loop_set_parameter(self._handle, "spin_ns", duration_ns)
        self.workload = replace(self.workload, duration_ns=duration_ns)

    def close(self) -> None:
        """Free the streams, buffers and executors (idempotent)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._library.loop_destroy(handle)

    def __enter__(self) -> "NativeLoop":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - finalizers must not raise
            pass


def run_loop(settings: LoopSettings, workload: SpinWorkload, library: Optional[NativeLibrary] = None) -> LoopResult:
    """Prepare a loop, run it once with the settings' iterations and warm-up, and free it."""
    with NativeLoop(settings, workload, library) as loop:
        return loop.run()
