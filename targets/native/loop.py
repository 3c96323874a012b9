"""The native timed loop from Python: settings in, raw per-inference times out.

The loop itself runs inside the library (one host thread, one CUDA stream and one executor per unit
of concurrency); Python only passes settings and receives arrays. Percentiles are the harness's job:
LoopResult.summary() goes through core.stats.summarize.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from core.errors import ConfigError, ModelError, UnsupportedTask
from core.stats import summarize
from targets.native.library import (
    DTYPE_NAMES,
    EXECUTOR_SPIN,
    EXECUTOR_TENSORRT,
    MEMORY_MODES,
    NUMPY_DTYPES,
    ZERO_COPY_ALLOCS,
    LoopConfigStruct,
    NativeLibrary,
    RunInfoStruct,
    load_library,
)

# How the loop's host thread waits for an inference (MLMARK_SYNC_* in mlmark_c.h):
#   blocking: cudaEventSynchronize on a plain event: the thread blocks in the call while the driver
#             busy-waits (whatever the process's scheduling flags, which the loop never changes).
#   spin:     the loop polls cudaEventQuery over all streams itself.
#   sleep:    cudaEventSynchronize on a blocking-sync event: the thread sleeps until the GPU's interrupt
#             wakes it (trtexec's default). Frees the CPU core, e.g. for power measurements on Jetson,
#             and costs an OS wake-up per inference.
SYNC_MODES = {"blocking": 0, "spin": 1, "sleep": 2}
MAX_CONCURRENCY = 1024
MAX_SPIN_NS = 10 * 1000 * 1000 * 1000


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: streams, iterations, waiting, graphs, transfers and memory."""

    concurrency: int = 1
    iterations: int = 1000
    warmup: int = 100
    sync: str = "blocking"  # 'blocking', 'spin' or 'sleep' (see SYNC_MODES)
    cuda_graph: bool = False
    # Launches behind a launch gate: each stream waits until the whole inference is enqueued (a graph's
    # launch call too), so that GPU compute time (CUDA events) excludes the host's launch calls. The enqueue
    # then no longer overlaps GPU work: for timing GPU compute, not for throughput.
    launch_gate: bool = False
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
        if not isinstance(self.launch_gate, bool):
            raise ConfigError("launch_gate must be true or false, got {!r}".format(self.launch_gate))
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


@dataclass(frozen=True)
class EngineWorkload:
    """A serialized TensorRT engine: one execution context per stream (needs a library built with TensorRT)."""

    engine_path: Path

    def validate(self) -> "EngineWorkload":
        """Raise ModelError when the engine file is missing or empty; returns self."""
        path = Path(self.engine_path)
        if not path.is_file():
            raise ModelError("the TensorRT engine {} does not exist".format(path))
        if path.stat().st_size == 0:
            raise ModelError("the TensorRT engine {} is empty; delete it so that it is built again".format(path))
        return self


@dataclass(frozen=True)
class BindingInfo:
    """One input or output tensor of the loop's inferences."""

    name: str
    shape: Tuple[int, ...]
    dtype: str  # numpy's name ('float32'), or TensorRT's for types numpy cannot hold ('bfloat16', 'fp8')
    is_input: bool
    nbytes: int

    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype; UnsupportedTask for a type numpy cannot hold."""
        if self.dtype not in NUMPY_DTYPES:
            raise UnsupportedTask("tensor '{}' has element type {}, which numpy cannot hold".format(self.name, self.dtype))
        return np.dtype(self.dtype)


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
        """Latency statistics (via core.stats), throughput and settings, for reports."""
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

    def __init__(self, settings: LoopSettings, workload: Union[SpinWorkload, EngineWorkload],
                 library: Optional[NativeLibrary] = None) -> None:
        self._handle: Optional[int] = None
        self.settings = settings.validate()
        self.workload = workload.validate()
        self._library = library if library is not None else load_library()
        config = LoopConfigStruct()
        config.device = settings.device
        config.concurrency = settings.concurrency
        config.sync_mode = SYNC_MODES[settings.sync]
        config.cuda_graph = int(bool(settings.cuda_graph))
        config.launch_gate = int(bool(settings.launch_gate))
        config.transfers = int(bool(settings.transfers))
        config.memory = MEMORY_MODES[settings.memory]
        config.force_zero_copy = int(bool(settings.force_zero_copy))
        config.zero_copy_alloc = ZERO_COPY_ALLOCS[settings.zero_copy_alloc]
        if isinstance(workload, EngineWorkload):
            config.executor = EXECUTOR_TENSORRT
            config.engine_path = os.fsencode(str(workload.engine_path))
        else:
            config.executor = EXECUTOR_SPIN
            config.spin_ns = workload.duration_ns
            config.input_bytes = workload.input_bytes
            config.output_bytes = workload.output_bytes
        self._handle = self._library.loop_create(config)
        self.used = self._settings_used(self._library.loop_info(self._handle))
        self._bindings = [_binding(b) for b in self._library.loop_bindings(self._handle)]

    def bindings(self) -> List[BindingInfo]:
        """The loop's inputs and outputs, in the library's binding order."""
        return list(self._bindings)

    def _inputs_in_order(self, inputs: Dict[str, np.ndarray]) -> List[Tuple[int, np.ndarray]]:
        """(binding index, C-contiguous array of the binding's dtype and shape) for every input binding."""
        expected = [b.name for b in self._bindings if b.is_input]
        unknown = sorted(set(inputs) - set(expected))
        missing = [n for n in expected if n not in inputs]
        if unknown or missing:
            raise ConfigError("the inputs must be exactly {}; missing {}, unknown {}".format(expected, missing, unknown))
        out = []
        for index, b in enumerate(self._bindings):
            if not b.is_input:
                continue
            value = np.asarray(inputs[b.name])
            if tuple(value.shape) != b.shape:
                raise ConfigError("input '{}' must have shape {}, got {}".format(b.name, list(b.shape), list(value.shape)))
            dtype = b.numpy_dtype()
            if value.dtype != dtype and not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise ConfigError("input '{}' is {} and cannot become {}".format(b.name, value.dtype, dtype))
            array = np.ascontiguousarray(value, dtype=dtype)
            if array.nbytes != b.nbytes:
                raise ConfigError("input '{}' holds {} bytes, the engine takes {}".format(b.name, array.nbytes, b.nbytes))
            out.append((index, array))
        return out

    def set_inputs(self, inputs: Dict[str, np.ndarray], slot: Optional[int] = None) -> None:
        """Give every stream (or one slot's) these input arrays (by binding name), so runs read real data.

        With a slot only that slot is touched, so one thread per slot may do this while others infer.
        """
        if self._handle is None:
            raise ConfigError("this loop is closed")
        if slot is not None and (not isinstance(slot, int) or not 0 <= slot < self.used.concurrency):
            raise ConfigError("slot must be within 0..{}, got {!r}".format(self.used.concurrency - 1, slot))
        for index, array in self._inputs_in_order(inputs):
            self._library.loop_set_input(self._handle, -1 if slot is None else slot, index, array)

    def infer(self, inputs: Optional[Dict[str, np.ndarray]], slot: int = 0) -> Dict[str, np.ndarray]:
        """One synchronous inference on one stream, through the timed path; the outputs by binding name.

        inputs None: the stream's buffers hold them already (set_inputs), as in the timed loop. Different
        slots may infer from different threads at once (one thread per slot).
        """
        if self._handle is None:
            raise ConfigError("this loop is closed")
        if not isinstance(slot, int) or not 0 <= slot < self.used.concurrency:
            raise ConfigError("slot must be within 0..{}, got {!r}".format(self.used.concurrency - 1, slot))
        for index, array in self._inputs_in_order(inputs) if inputs is not None else ():
            self._library.loop_set_input(self._handle, slot, index, array)
        outputs: List[Optional[np.ndarray]] = []
        for b in self._bindings:
            outputs.append(None if b.is_input else np.empty(b.shape, dtype=b.numpy_dtype()))
        self._library.loop_infer(self._handle, slot, outputs)
        return {b.name: array for b, array in zip(self._bindings, outputs) if array is not None}

    def _settings_used(self, info: RunInfoStruct) -> LoopSettings:
        return replace(
            self.settings, concurrency=int(info.concurrency), sync=_name_of(SYNC_MODES, info.sync_mode),
            cuda_graph=bool(info.cuda_graph), launch_gate=bool(info.launch_gate), transfers=bool(info.transfers),
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
        if not isinstance(self.workload, SpinWorkload):
            raise ConfigError("only the calibrated spin workload has a duration to change")
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


def _binding(info: Any) -> BindingInfo:
    return BindingInfo(name=info.name.decode("utf-8", "replace"),
                       shape=tuple(int(info.dims[d]) for d in range(int(info.nb_dims))),
                       dtype=DTYPE_NAMES.get(int(info.dtype), "unknown"), is_input=bool(info.is_input),
                       nbytes=int(info.bytes))


def run_loop(settings: LoopSettings, workload: Union[SpinWorkload, EngineWorkload],
             library: Optional[NativeLibrary] = None) -> LoopResult:
    """Prepare a loop, run it once with the settings' iterations and warm-up, and free it."""
    with NativeLoop(settings, workload, library) as loop:
        return loop.run()
