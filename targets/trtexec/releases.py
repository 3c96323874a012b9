"""What differs between trtexec releases: the flags each takes and how each prints its summary.

The one place of this target that knows TensorRT release differences. Read from each release's
samples/common/sampleOptions.cpp (flags), sampleReporting.cpp (summary), sampleEngines.cpp and
samples/trtexec/trtexec.cpp (build lines), sampleDevice.{h,cpp} (device lines), NVIDIA/TensorRT
branches release/8.2 to release/11.1; targets/trtexec/README.md tabulates them. Where the engine
build must match the native library's (implicit INT8 before 10.1, weak typing before 10.12), the
boundaries are those cpp_environment/src/tensorrt/trt_compat.cpp names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from core.errors import TargetUnavailable

#: The oldest release whose trtexec this target drives (JetPack 4.6).
OLDEST = (8, 2)
#: Summary formats, each named by the first release that prints it.
FORMATS = ("8.2", "8.4", "8.5", "8.6", "10", "11")

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Tuple[int, int, int]:
    """'8.6.1' (or '8.6', or '10.3.0.26') as (8, 6, 1); ValueError otherwise."""
    m = _VERSION.match(text.strip())
    if not m:
        raise ValueError("not a TensorRT version: {!r}".format(text))
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def decode_version_number(number: int) -> Tuple[int, int, int]:
    """NV_TENSORRT_VERSION as trtexec's first line prints it ("[TensorRT v8601]", "[TensorRT v100300]").

    8.x encodes major * 1000 + minor * 100 + patch; from 10.0 major * 10000 + minor * 100 + patch.
    """
    if number >= 100000:
        return number // 10000, (number // 100) % 100, number % 100
    return number // 1000, (number // 100) % 10, number % 100


@dataclass(frozen=True)
class Release:
    """A trtexec release: its version, the flags it takes and the summary it prints."""

    version: Tuple[int, int, int]

    @classmethod
    def of(cls, text: str) -> "Release":
        """The release of a version string; TargetUnavailable for one older than 8.2."""
        release = cls(parse_version(text))
        if release.version[:2] < OLDEST:
            raise TargetUnavailable("trtexec of TensorRT {} is older than {}.{}, the oldest release this target "
                                    "drives".format(release.text, *OLDEST))
        return release

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.version[:2] >= (major, minor)

    @property
    def text(self) -> str:
        return "{}.{}.{}".format(*self.version)

    # -- the summary it prints (sampleReporting.cpp) ---------------------------------------------

    @property
    def format(self) -> str:
        """The summary format: 8.2 (and 8.3), 8.4, 8.5, 8.6 (and 9.x, not checked), 10, 11 (and later)."""
        if self.at_least(11):
            return "11"
        if self.at_least(10):
            return "10"
        if self.at_least(8, 6):
            return "8.6"
        if self.at_least(8, 5):
            return "8.5"
        if self.at_least(8, 4):
            return "8.4"
        return "8.2"

    @property
    def end_to_end_line(self) -> bool:
        """8.2 prints "End-to-End Host Latency" (H2D start to D2H end, queueing included); 8.4 dropped it."""
        return not self.at_least(8, 4)

    @property
    def percentile_list(self) -> bool:
        """--percentile takes a list from 8.5 (default 90,95,99); before, one value (default 99)."""
        return self.at_least(8, 5)

    @property
    def prints_engine_size(self) -> bool:
        """"Created engine with size: X MiB" after a build, from 10.0 (sampleEngines.cpp)."""
        return self.at_least(10)

    # -- the flags it takes (sampleOptions.cpp) --------------------------------------------------

    @property
    def stable_defaults(self) -> bool:
        """From 11.0 spin wait, CUDA graphs, no data transfers and a separate profile run are the defaults:
        --useSpinWait, --useCudaGraph, --noDataTransfers and --separateProfileRun are deprecated no-ops,
        --noSpinWait, --noCudaGraph and --includeDataTransfers switch them off."""
        return self.at_least(11)

    @property
    def implicit_int8(self) -> bool:
        """int8 from a calibration table (--calib) before 10.1; from 10.1 from a Q/DQ model (--calib gone in 11)."""
        return not self.at_least(10, 1)

    @property
    def weak_typing(self) -> bool:
        """--fp16/--int8 builder flags before 10.12 (the native library's boundary; gone from trtexec in 11)."""
        return not self.at_least(10, 12)

    @property
    def strongly_typed_flag(self) -> bool:
        """--stronglyTyped opts in from 10.0; on 11 strong typing is always on and the flag a no-op."""
        return self.at_least(10) and not self.at_least(11)

    def workspace_flag(self, mb: int) -> str:
        """--workspace=N (MiB) on 8.2; --memPoolSize=workspace:N (MiB without a suffix) from 8.4."""
        return "--memPoolSize=workspace:{}".format(mb) if self.at_least(8, 4) else "--workspace={}".format(mb)

    def streams_flag(self, n: int) -> str:
        """--streams=N before 8.6; --infStreams=N from 8.6 (--streams deprecated)."""
        return "--{}={}".format("infStreams" if self.at_least(8, 6) else "streams", n)

    @property
    def skip_inference_flag(self) -> str:
        """--buildOnly before 8.6; --skipInference from 8.6 (--buildOnly gone in 10.0)."""
        return "--skipInference" if self.at_least(8, 6) else "--buildOnly"

    def percentiles(self) -> Tuple[float, ...]:
        """What this target asks for: MLMark's 90, 95 and 99 where a list is taken, else 95 (its score)."""
        return (90.0, 95.0, 99.0) if self.percentile_list else (95.0,)

    @property
    def percentile_flag(self) -> str:
        """--percentile=95 before 8.5 (one value), --percentile=90,95,99 from 8.5."""
        return "--percentile=" + ",".join("{:g}".format(p) for p in self.percentiles())

    def timing_flags(self, iterations: int, warmup_ms: int, streams: int, cuda_graph: bool, transfers: bool,
                     spin_wait: bool, avg_runs: int) -> List[str]:
        """The timed run's flags: exactly `iterations` asked (--duration=0), trtexec's warm-up in ms."""
        flags = ["--iterations={}".format(iterations), "--duration=0", "--warmUp={}".format(warmup_ms),
                 "--avgRuns={}".format(avg_runs), self.percentile_flag, self.streams_flag(streams)]
        if self.stable_defaults:
            flags += [] if spin_wait else ["--noSpinWait"]
            flags += [] if cuda_graph else ["--noCudaGraph"]
            flags += ["--includeDataTransfers"] if transfers else []
        else:
            flags += ["--useSpinWait"] if spin_wait else []
            flags += ["--useCudaGraph"] if cuda_graph else []
            flags += [] if transfers else ["--noDataTransfers"]
            flags += ["--separateProfileRun"]  # the profiler, when on, never slows the timed run
        return flags

    def precision_flags(self, precision: str, fast_fp16: bool, calibration_table: Optional[Path]) -> List[str]:
        """Builder flags for a precision, matching the native library's build of the same engine key.

        fp16: --fp16 where typing is weak; else the float16 conversion of the model is parsed with
        --stronglyTyped (10.12 to 10.x; always on in 11). int8: --int8 (with --fp16 where the GPU has
        fast fp16, as the native builder sets both) and --calib=TABLE before 10.1; from 10.1 the Q/DQ
        model with --int8, and strongly typed from 10.12.
        """
        if precision == "fp32":
            return []
        if not self.weak_typing:
            return ["--stronglyTyped"] if self.strongly_typed_flag else []
        flags = ["--fp16"] if precision == "fp16" or fast_fp16 else []
        if precision == "int8":
            flags.append("--int8")
            if calibration_table is not None:
                if not self.implicit_int8:
                    raise ValueError("TensorRT {} builds int8 from a Q/DQ model, not a table".format(self.text))
                flags.append("--calib={}".format(calibration_table))
        return flags

    @staticmethod
    def dla_flags(core: int, gpu_fallback: bool) -> List[str]:
        """--useDLACore=N [--allowGPUFallback]: the same in every release."""
        return ["--useDLACore={}".format(core)] + (["--allowGPUFallback"] if gpu_fallback else [])


def fast_precisions(compute_capability: Tuple[int, int]) -> Tuple[bool, bool]:
    """(fast fp16, fast int8) by compute capability: the table the native library falls back to where TensorRT's
    builder no longer answers (10.5+). trtexec prints no such query, so this target always uses it."""
    cc = compute_capability[0] * 10 + compute_capability[1]
    return cc in (53, 60, 62) or cc >= 70, cc == 61 or cc >= 70


#: GPUs with DLA cores: Xavier (7.2) and Orin (8.7).
DLA_COMPUTE_CAPABILITIES = ((7, 2), (8, 7))
