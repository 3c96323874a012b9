"""The interface every target implements: load a model, run a batch, say what it supports, release.

A target is the system under test. It never times, scores or reports: the harness does that for
every target the same way, so that scores from different targets are comparable.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None or a string for a symbolic dimension) and numpy dtype of a model input."""

    name: str
    shape: Tuple[Any, ...]
    dtype: str


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
    workload: str
    hardware: str
    precision: str
    batch: int
    concurrency: int
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class NativeTiming:
    """Raw times of a timed loop that a target ran itself (Session.timed_run), in issue order, in seconds."""

    latencies_s: Sequence[float]  # end-to-end per inference: what latency statistics are computed from
    gpu_s: Optional[Sequence[float]]  # GPU compute per inference (CUDA events), recorded beside them
    wall_s: float  # first timed start to last completion: what throughput is computed from
    info: Dict[str, Any] = field(default_factory=dict)  # the loop's settings as used


class Session(abc.ABC):
    """A model loaded by a target: `concurrency` independent slots, each able to run one batch at a time."""

    #: as-run details the result records (threads per session, providers, execution mode, ...)
    info: Dict[str, Any]
    #: where SSD box decoding and NMS run when the target does them itself; None = the harness does
    postprocess_on_target: Optional[str] = None
    #: True when timed_run() is implemented: the target's own library runs the timed loop
    has_timed_run: bool = False
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
    #: target-specific params a task may set, besides the common ones
    option_names: Tuple[str, ...] = ()

    @abc.abstractmethod
    def check_installed(self) -> None:
        """Raise TargetUnavailable naming the package to install if the target cannot be imported."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this target supports on this machine."""

    def validate_options(self, options: Mapping[str, Any], source: str) -> None:
        """Raise ConfigError for a bad target-specific option value."""

    def unsupported_hint(self, hardware: str) -> str:
        """Extra advice appended when a task's hardware or precision is refused."""
        return ""

    @abc.abstractmethod
    def load(self, request: LoadRequest) -> Session:
        """Prepare the model for request's hardware, precision, batch and concurrency."""

    def versions(self) -> Dict[str, str]:
        """Versions of the software this target runs on, for the result."""
        return {}
