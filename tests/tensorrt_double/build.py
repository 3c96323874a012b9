"""Build the TensorRT test double and a native library linked against it, for the tests only.

    python -m tests.tensorrt_double.build [--release 10.3] [--coverage] [--out build/tensorrt_double]

The double (this folder's CMakeLists.txt) is compiled against the real headers of one TensorRT release in
third_party/trt/ (not in the repository), and cpp_environment/ is configured with that library as both of
TensorRT's libraries (FindTensorRT's cache variables), into a folder of its own: the product's own build
folder (build/cpp_environment) is never touched, and nothing is installed. With coverage the native
library is compiled with --coverage at -O0, for gcov (tests/tensorrt_double/coverage.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tests.conftest import find_nvcc

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
THIRD_PARTY = REPO / "third_party" / "trt"
DEFAULT_OUT = REPO / "build" / "tensorrt_double"

#: Releases the double is written for: (headers, ONNX parser headers) under third_party/trt/. 8.2 runs the
#: bindings API (enqueueV2) and a network fixed by setDimensions, 8.6 named I/O tensors with a shared
#: optimization profile and implicit INT8 from a calibration table, 10.3 explicit INT8 from Q/DQ models and
#: the progress monitor.
RELEASES: Dict[str, Tuple[str, str]] = {"8.2": ("8.2/include", "onnx-8.2"), "8.6": ("8.6/include", "onnx-8.6"),
                                        "10.3": ("10.3/include", "onnx-10.1")}
DEFAULT_RELEASE = "10.3"
_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DoubleBuild:
    """A built double and the native library linked against it."""

    release: str
    double: Path  # libnvinfer_double-<release>.so
    native: Path  # libmlmark_native.so linked against it
    native_build_dir: Path
    coverage: bool


def headers(release: str) -> Tuple[Path, Path]:
    """The release's include folder and its ONNX parser's; ValueError for a release the double does not know."""
    if release not in RELEASES:
        raise ValueError("the test double is written for TensorRT {}, not {}".format(", ".join(RELEASES), release))
    include, onnx = RELEASES[release]
    return THIRD_PARTY / include, THIRD_PARTY / onnx


def have_headers(release: str) -> bool:
    """True when third_party/trt/ holds the release's headers."""
    include, onnx = headers(release)
    return (include / "NvInfer.h").is_file() and (onnx / "NvOnnxParser.h").is_file()




@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One build of a folder at a time (parallel test processes share build/tensorrt_double)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(str(folder / ".lock"), "w") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(cmd: Sequence[str], log: Path, env: Dict[str, str]) -> None:
    with open(str(log), "a") as out:
        out.write("$ {}\n".format(" ".join(cmd)))
        out.flush()
        proc = subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, timeout=_TIMEOUT_S)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError("{} failed (exit {}); the end of {}:\n{}".format(cmd[0:3], proc.returncode, log,
                                                                         "\n".join(tail)))


def _cuda_archs() -> List[str]:
    """MLMARK_CUDA_ARCHS when set (e.g. "90" for an H200: a quicker build), else the build's default."""
    archs = os.environ.get("MLMARK_CUDA_ARCHS", "").strip()
    return ["-DMLMARK_CUDA_ARCHS={}".format(archs)] if archs else []


def build_double(release: str = DEFAULT_RELEASE, out: Path = DEFAULT_OUT, coverage: bool = False,
                 jobs: Optional[int] = None) -> DoubleBuild:
    """Configure and build the double for a release and a native library linked against it (incrementally)."""
    include, onnx = headers(release)
    if not have_headers(release):
        raise FileNotFoundError("the TensorRT {} headers are not in {} (NvInfer.h in {}, NvOnnxParser.h in {})".format(
            release, THIRD_PARTY, include, onnx))
    compiler = find_nvcc()
    if not compiler or not shutil.which("cmake"):
        raise FileNotFoundError("building the TensorRT test double needs cmake and nvcc")
    out = Path(out)
    env = dict(os.environ, CUDACXX=compiler)
    jobs = jobs or max(1, os.cpu_count() or 1)
    double_dir = out / "double-{}".format(release)
    native_dir = out / "native-{}{}".format(release, "-coverage" if coverage else "")
    with _locked(out):
        log = out / "build-{}{}.log".format(release, "-coverage" if coverage else "")
        log.write_text("")
        _run(["cmake", "-S", str(HERE), "-B", str(double_dir), "-DTRT_DOUBLE_INCLUDE={}".format(include),
              "-DTRT_DOUBLE_ONNX_INCLUDE={}".format(onnx), "-DPython3_EXECUTABLE={}".format(sys.executable)]
             + _cuda_archs(), log, env)
        _run(["cmake", "--build", str(double_dir), "--", "-j{}".format(jobs)], log, env)
        double = double_dir / "libnvinfer_double-{}.so".format(release)
        native_args = ["cmake", "-S", str(REPO / "cpp_environment"), "-B", str(native_dir), "-DMLMARK_WITH_TENSORRT=ON",
                       "-DTensorRT_INCLUDE_DIR={}".format(include), "-DTensorRT_ONNX_INCLUDE_DIR={}".format(onnx),
                       "-DTensorRT_LIBRARY={}".format(double), "-DTensorRT_ONNX_LIBRARY={}".format(double)]
        if coverage:
            native_args += ["-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS=--coverage -O0",
                            "-DCMAKE_SHARED_LINKER_FLAGS=--coverage"]
        _run(native_args + _cuda_archs(), log, env)
        _run(["cmake", "--build", str(native_dir), "--", "-j{}".format(jobs)], log, env)
    return DoubleBuild(release=release, double=double, native=native_dir / "libmlmark_native.so",
                       native_build_dir=native_dir, coverage=coverage)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tensorrt_double.build", description=__doc__.splitlines()[0])
    parser.add_argument("--release", default=DEFAULT_RELEASE, choices=sorted(RELEASES))
    parser.add_argument("--coverage", action="store_true", help="the native library with --coverage, for gcov")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    built = build_double(args.release, args.out, args.coverage)
    print("TensorRT test double {}: {}\nnative library linked against it: {}".format(
        built.release, built.double, built.native))
    return 0


if __name__ == "__main__":
    sys.exit(main())
