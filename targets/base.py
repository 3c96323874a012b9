"""The interface every target implements: load a model, run a batch, say what it supports, release.

A target is the system under test. It never times, scores or reports: the harness does that for
every target the same way, so that scores from different targets are comparable.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np

from core.specs import TensorSpec
from targets.options import TargetOptions


@dataclass(frozen=True)
class Capabilities:
    """What a target can run here: precisions per hardware, and bounds on batch and concurrency."""

    precisions: Mapping[str, Tuple[str, ...]]  # hardware -> precisions
    max_batch: int = 4096
    max_concurrency: int = 256
    modes: Tuple[str, ...] = ("throughput", "latency", "accuracy")

    def describe(self) -> str:
        """One-line summary for error messages."""
        combos = "; ".join("{}: {}".format(hw, ", ".join(ps)) for hw, ps in self.precisions.items())
        return "{} (batch up to {}, concurrency up to {})".format(combos or "nothing here", self.max_batch,
                                                                   self.max_concurrency)

    def refusal(self, hardware: str, precision: str, batch: int, concurrency: int, mode: str) -> Optional[str]:
        """Why this combination cannot run, or None if it can."""
        if hardware not in self.precisions:
            return "hardware '{}' is not supported".format(hardware)
        if precision not in self.precisions[hardware]:
            return "precision '{}' is not supported on {}".format(precision, hardware)
        if mode not in self.modes:
            return "mode '{}' is not supported".format(mode)
        if batch > self.max_batch:
            return "batch {} is above {}".format(batch, self.max_batch)
        if concurrency > self.max_concurrency:
            return "concurrency {} is above {}".format(concurrency, self.max_concurrency)
        return None


@dataclass(frozen=True)
class LoadRequest:
    """Everything a target needs to prepare a model for timed runs."""

    model_path: Path
    workload: str  # its name: part of engine cache keys and calibration table names
    hardware: str
    precision: str
    batch: int
    concurrency: int
    options: Mapping[str, Any] = field(default_factory=dict)
    #: each input's shape at this batch, symbolic dimensions filled as the workload fills them
    input_shapes: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)
    #: the harness post-processes every output inside the timed region (SSD box decoding and NMS), so
    #: the target's own timed loop cannot be used
    host_postprocess: bool = False


@dataclass
class NativeTiming:
    """Raw times of a timed loop that a target ran itself (Session.timed_run), in issue order, in seconds."""

    latencies_s: Sequence[float]  # end-to-end per inference: what latency statistics are computed from
    gpu_s: Optional[Sequence[float]]  # GPU compute per inference (CUDA events), recorded beside them
    wall_s: float  # first timed start to last completion: what throughput is computed from
    info: Dict[str, Any] = field(default_factory=dict)  # the loop's settings as used


@dataclass
class ToolSummary:
    """A warm-up and timed loop that an external benchmarking tool ran and summarized itself (Session.summary_run).

    Such a tool (trtexec) warms up inside its own process and prints statistics, not per-inference
    times, so the harness cannot time it: it scores the tool's figures as given, and the result names
    the figure each score came from (in info).
    """

    iterations: int  # timed inferences (batches) the tool counted
    wall_s: float  # the tool's timed region, first timed start to last completion
    throughput_fps: float  # images per second: the tool's inferences per second x batch
    latency_ms: Dict[str, Optional[float]]  # the fields of harness.stats.LatencyStats; None where the tool printed none
    warmup_iterations: int  # warm-up inferences the tool ran
    warmup_s: float
    info: Dict[str, Any] = field(default_factory=dict)  # the tool's settings, its parsed summary, the scores' sources


class Session(abc.ABC):
    """A model loaded by a target: `concurrency` independent slots, each able to run one batch at a time."""

    #: as-run details the result records (threads per session, providers, execution mode, ...)
    info: Dict[str, Any]
    #: True when timed_run() is implemented: the target's own library runs the timed loop
    has_timed_run: bool = False
    #: True when summary_run() is implemented: an external tool runs warm-up and timed loop and summarizes them
    has_summary_run: bool = False
    #: why no score of this session is a valid MLMark result (e.g. it ran on a test double); None when it may be
    invalid_reason: Optional[str] = None

    @abc.abstractmethod
    def input_specs(self) -> List[TensorSpec]:
        """The model's inputs."""

    @abc.abstractmethod
    def output_names(self) -> List[str]:
        """The model's outputs, in the order run() returns them."""

    def stage(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """Put a batch where run() takes it from (a GPU target copies it to the device), once, untimed."""
        return inputs

    @abc.abstractmethod
    def run(self, slot: int, inputs: Any) -> Sequence[Any]:
        """Run one staged batch on slot (0 <= slot < concurrency), thread-safe across slots.

        Returns only when the outputs are complete: a GPU target synchronizes its stream, so
        that the harness's clock covers all the work.
        """

    def to_host(self, outputs: Sequence[Any]) -> List[np.ndarray]:
        """Outputs of run() as numpy arrays (for post-processing and accuracy)."""
        return list(outputs)

    def timed_run(self, iterations: int, warmup_iterations: int = 0) -> NativeTiming:
        """Run the last staged batch `iterations` times over all slots, timed inside the target (no Python
        per inference), after `warmup_iterations` untimed ones. Only where has_timed_run is True; the
        harness still decides warm-up, and computes every statistic and score from the raw times.
        """
        raise NotImplementedError("{} has no timed loop of its own".format(type(self).__name__))

    def summary_run(self, iterations: int, warmup_iterations: int, warmup_s: float) -> ToolSummary:
        """Have an external tool warm up (at least warmup_s seconds; warmup_iterations where it can count them)
        and run at least `iterations` timed inferences, and return its summary. Only where has_summary_run is
        True; used instead of stage(), run() and timed_run() for throughput and latency.
        """
        raise NotImplementedError("{} has no external tool that summarizes a run".format(type(self).__name__))

    def close(self) -> None:
        """Release sessions, buffers and device memory."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Target(abc.ABC):
    """A backend plug-in, registered by name in targets/__init__.py."""

    name: str = ""
    #: what to install when the target's package is missing
    install_hint: str = ""
    #: the task params this target takes besides the common ones, with their defaults and checks
    Options: Type[TargetOptions] = TargetOptions

    @property
    def option_names(self) -> Tuple[str, ...]:
        """Target-specific params a task may set, besides the common ones."""
        return self.Options.names()

    @abc.abstractmethod
    def check_installed(self) -> None:
        """Raise TargetUnavailable naming the package to install if the target cannot be imported."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this target supports on this machine."""

    def validate_options(self, options: Mapping[str, Any], source: str) -> None:
        """Raise ConfigError for a bad target-specific option value."""
        self.Options.parse(options, source)

    def unsupported_hint(self, hardware: str) -> str:
        """Extra advice appended when a task's hardware or precision is refused."""
        return ""

    def preflight(self, request: LoadRequest) -> None:
        """Raise what load() would refuse that can be known without loading (a file the precision needs, say).

        Called for every task before the first one runs, so that a refusal never comes after minutes of
        measurements; it must be quick and must not touch a device.
        """

    @abc.abstractmethod
    def load(self, request: LoadRequest) -> Session:
        """Prepare the model for request's hardware, precision, batch and concurrency."""

    def versions(self) -> Dict[str, str]:
        """Versions of the software this target runs on, for the result."""
        return {}
