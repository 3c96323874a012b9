"""The native library (cpp_environment/): find it, build it on first use, load it and check its ABI.

The library is built with CMake into build/cpp_environment/ the first time it is needed, and again
whenever it is stale: older than a source file, or built from sources whose hash differs from the
current tree's. The hash is embedded in the library and read from the file itself, because a library
already loaded into a process cannot be replaced in it.

The library is also stale when the TensorRT headers it was compiled against now say another version (a
JetPack upgrade): it carries their path and version, and is rebuilt from scratch before it is loaded.

Environment: MLMARK_NATIVE_LIB (use this prebuilt library, never build), MLMARK_NATIVE_BUILD_DIR
(build elsewhere), MLMARK_CUDA_ARCHS (GPU architectures to build for, e.g. "87"), TensorRT_ROOT (where
CMake looks for TensorRT first).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from core.errors import ConfigError, MLMarkError, ModelError, RunError, TargetUnavailable, UnsupportedTask
from core.fileio import file_lock
from core.paths import REPO_ROOT

log = logging.getLogger("mlmark.native")

#: The C ABI version this Python side speaks (MLMARK_ABI_VERSION in mlmark_c.h).
EXPECTED_ABI_VERSION = 2
LIBRARY_NAME = "libmlmark_native.so"
SOURCE_DIR = REPO_ROOT / "cpp_environment"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "cpp_environment"
BUILD_LOG_NAME = "build.log"
_HASH_MARKER = b"MLMARK_SOURCE_HASH="
_TENSORRT_MARKER = b"MLMARK_TENSORRT="
_BUILD_TIMEOUT_S = 1800

# Status codes (MLMARK_OK, MLMARK_ERR_* in mlmark_c.h).
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_NO_DRIVER = 2
ERR_NO_DEVICE = 3
ERR_UNSUPPORTED = 4
ERR_OUT_OF_MEMORY = 5
ERR_CUDA = 6
ERR_INTERNAL = 7
ERR_MODEL = 8
ERR_TENSORRT = 9

_ERROR_CLASSES = {
    ERR_INVALID_ARGUMENT: ConfigError,
    ERR_NO_DRIVER: TargetUnavailable,
    ERR_NO_DEVICE: TargetUnavailable,
    ERR_UNSUPPORTED: UnsupportedTask,
    ERR_OUT_OF_MEMORY: UnsupportedTask,
    ERR_MODEL: ModelError,
    ERR_TENSORRT: RunError,
}

MEMORY_MODES = {"auto": 0, "device": 1, "zero-copy": 2}
ZERO_COPY_ALLOCS = {"mapped": 0, "managed": 1}
EXECUTOR_SPIN = 0
EXECUTOR_TENSORRT = 1

#: Element types by their number (MLMARK_DTYPE_*, TensorRT's DataType numbering): the numpy dtype name,
#: or TensorRT's name for types numpy cannot hold.
DTYPE_NAMES = {0: "float32", 1: "float16", 2: "int8", 3: "int32", 4: "bool", 5: "uint8", 6: "fp8", 7: "bfloat16",
               8: "int64", 9: "int4", 10: "fp4", 11: "e8m0"}
NUMPY_DTYPES = frozenset(["float32", "float16", "int8", "int32", "bool", "uint8", "int64"])
MAX_DIMS = 8
MAX_NAME = 4096
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}


class DeviceInfoStruct(ctypes.Structure):
    """mlmark_device_info."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("name", ctypes.c_char * 256),
        ("cc_major", ctypes.c_int32),
        ("cc_minor", ctypes.c_int32),
        ("integrated", ctypes.c_int32),
        ("multiprocessors", ctypes.c_int32),
        ("can_map_host_memory", ctypes.c_int32),
        ("managed_memory", ctypes.c_int32),
        ("concurrent_managed_access", ctypes.c_int32),
        ("driver_version", ctypes.c_int32),
        ("runtime_version", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("total_memory", ctypes.c_uint64),
        ("free_memory", ctypes.c_uint64),
    ]


class LoopConfigStruct(ctypes.Structure):
    """mlmark_loop_config."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("concurrency", ctypes.c_int32),
        ("sync_mode", ctypes.c_int32),
        ("cuda_graph", ctypes.c_int32),
        ("transfers", ctypes.c_int32),
        ("memory", ctypes.c_int32),
        ("force_zero_copy", ctypes.c_int32),
        ("zero_copy_alloc", ctypes.c_int32),
        ("executor", ctypes.c_int32),
        ("spin_ns", ctypes.c_int64),
        ("input_bytes", ctypes.c_uint64),
        ("output_bytes", ctypes.c_uint64),
        ("engine_path", ctypes.c_char_p),
        ("launch_gate", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
    ]


class BindingInfoStruct(ctypes.Structure):
    """mlmark_binding_info."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("index", ctypes.c_int32),
        ("is_input", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("nb_dims", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("dims", ctypes.c_int64 * MAX_DIMS),
        ("bytes", ctypes.c_uint64),
        ("name", ctypes.c_char * MAX_NAME),
    ]


class TrtInfoStruct(ctypes.Structure):
    """mlmark_trt_info."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("built_with_tensorrt", ctypes.c_int32),
        ("implicit_int8", ctypes.c_int32),
        ("inspector", ctypes.c_int32),
        ("progress_monitor", ctypes.c_int32),
        ("weak_typing", ctypes.c_int32),
        ("fast_fp16", ctypes.c_int32),
        ("fast_int8", ctypes.c_int32),
        ("fast_from_builder", ctypes.c_int32),
        ("test_double", ctypes.c_int32),
        ("header_version", ctypes.c_char * 32),
        ("runtime_version", ctypes.c_char * 32),
    ]


class TrtBuildConfigStruct(ctypes.Structure):
    """mlmark_trt_build_config."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("onnx_path", ctypes.c_char_p),
        ("engine_path", ctypes.c_char_p),
        ("calibration_table", ctypes.c_char_p),
        ("timing_cache", ctypes.c_char_p),
        ("precision", ctypes.c_int32),
        ("batch", ctypes.c_int32),
        ("workspace_mb", ctypes.c_int64),
        ("detailed_profiling", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
    ]


class TrtBuildResultStruct(ctypes.Structure):
    """mlmark_trt_build_result."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("timing_cache_loaded", ctypes.c_int32),
        ("timing_cache_saved", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("build_s", ctypes.c_double),
        ("engine_bytes", ctypes.c_uint64),
    ]


class RunInfoStruct(ctypes.Structure):
    """mlmark_run_info."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("concurrency", ctypes.c_int32),
        ("sync_mode", ctypes.c_int32),
        ("cuda_graph", ctypes.c_int32),
        ("transfers", ctypes.c_int32),
        ("memory", ctypes.c_int32),
        ("zero_copy_alloc", ctypes.c_int32),
        ("integrated", ctypes.c_int32),
        ("reserved0", ctypes.c_int32),
        ("iterations", ctypes.c_int64),
        ("warmup", ctypes.c_int64),
        ("input_bytes", ctypes.c_uint64),
        ("output_bytes", ctypes.c_uint64),
        ("wall_s", ctypes.c_double),
        ("launch_gate", ctypes.c_int32),
        ("reserved1", ctypes.c_int32),
    ]


LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@dataclass(frozen=True)
class DeviceInfo:
    """A CUDA GPU as the library sees it."""

    index: int
    name: str
    compute_capability: Tuple[int, int]
    integrated: bool
    multiprocessors: int
    can_map_host_memory: bool
    managed_memory: bool
    concurrent_managed_access: bool
    driver_version: str
    runtime_version: str
    total_memory: int
    free_memory: int

    @property
    def sm(self) -> str:
        """The architecture as nvcc names it, e.g. '87'."""
        return "{}{}".format(*self.compute_capability)

    def describe(self) -> str:
        """One line: name, architecture, kind, driver and runtime."""
        return "{} (sm_{}, {}, {} SMs, {:.1f} GiB), driver CUDA {}, runtime CUDA {}".format(
            self.name, self.sm, "integrated" if self.integrated else "discrete", self.multiprocessors,
            self.total_memory / 2**30, self.driver_version, self.runtime_version)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Sources, staleness and building


def source_files(source_dir: Path = SOURCE_DIR) -> List[str]:
    """The files the library is built from, as sorted relative POSIX paths (as CMake hashes them)."""
    source_dir = Path(source_dir)
    files = ["CMakeLists.txt"]
    for sub in ("cmake", "include", "src"):
        for root, _dirs, names in os.walk(str(source_dir / sub)):
            for name in names:
                rel = (Path(root) / name).relative_to(source_dir).as_posix()
                # The same filter as cmake/MlmarkSourceHash.cmake: no hidden files, no editor backups.
                if re.search(r"(^|/)\.", rel) or rel.endswith("~"):
                    continue
                files.append(rel)
    return sorted(files)


def source_hash(source_dir: Path = SOURCE_DIR) -> str:
    """SHA-256 over '<path> <file sha256>' lines: identical to the hash CMake embeds in the library."""
    source_dir = Path(source_dir)
    lines = []
    for rel in source_files(source_dir):
        digest = hashlib.sha256((source_dir / rel).read_bytes()).hexdigest()
        lines.append("{} {}\n".format(rel, digest))
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def embedded_source_hash(library: Path) -> Optional[str]:
    """The source hash a built library carries, read from the file without loading it."""
    data = Path(library).read_bytes()
    at = data.find(_HASH_MARKER)
    if at < 0:
        return None
    value = data[at + len(_HASH_MARKER):at + len(_HASH_MARKER) + 64]
    if not re.match(rb"^[0-9a-f]{64}$", value):
        return None
    return value.decode("ascii")


def tensorrt_marker(library: Path) -> Optional[Tuple[str, str]]:
    """(TensorRT header version, path of its NvInferVersion.h) a built library carries; ("none", "") without
    TensorRT; None for a library without the marker."""
    data = Path(library).read_bytes()
    at = data.find(_TENSORRT_MARKER)
    if at < 0:
        return None
    end = data.find(b";", at)
    if end < 0:
        return None
    version, _, header = data[at + len(_TENSORRT_MARKER):end].decode("utf-8", "replace").partition("|")
    return version, header


def header_tensorrt_version(header: Path) -> Optional[str]:
    """The version NvInferVersion.h declares ("8.5.2"), following 11.x's alias macros; None if unreadable."""
    try:
        text = Path(header).read_text(errors="replace")
    except OSError:
        return None
    defines = dict(re.findall(r"^#define[ \t]+([A-Za-z0-9_]+)[ \t]+([A-Za-z0-9_]+)", text, re.MULTILINE))
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        value = defines.get("NV_TENSORRT_" + part, "")
        if value and not value.isdigit():
            value = defines.get(value, "")
        if not value.isdigit():
            return None
        parts.append(value)
    return ".".join(parts)


def tensorrt_staleness(library: Path) -> Optional[str]:
    """Why a library built with TensorRT no longer matches the installed TensorRT headers, or None."""
    marker = tensorrt_marker(library)
    if marker is None or marker[0] in ("none", "") or not marker[1]:
        return None
    built, header = marker
    installed = header_tensorrt_version(Path(header))
    if installed is None:
        return "the TensorRT {} headers it was built with ({}) are gone".format(built, header)
    if installed != built:
        return "it was built against TensorRT {} but {} has TensorRT {} now".format(built, header, installed)
    return None


def staleness(library: Path, source_dir: Path = SOURCE_DIR) -> Optional[str]:
    """Why the library must be (re)built, or None when it is current."""
    library = Path(library)
    if not library.is_file():
        return "it is not built yet"
    source_dir = Path(source_dir)
    lib_mtime = library.stat().st_mtime
    newest = max((source_dir / rel).stat().st_mtime for rel in source_files(source_dir))
    if newest > lib_mtime:
        return "a source file is newer than the library"
    embedded = embedded_source_hash(library)
    if embedded is None:
        return "the library carries no source hash"
    if embedded != source_hash(source_dir):
        return "the library was built from other sources (source hash differs)"
    return tensorrt_staleness(library)


def _first_error_line(text: str) -> str:
    """The most telling line of a failed CMake or compiler run."""
    patterns = (r"MLMark: .*", r"CMake Error.*", r".*\berror\b.*", r".*fatal.*")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in patterns:
        for i, line in enumerate(lines):
            if re.match(pattern, line, re.IGNORECASE):
                # CMake puts the message on the lines after "CMake Error at ...:".
                if line.startswith("CMake Error") and line.endswith(":") and i + 1 < len(lines):
                    return "{} {}".format(line, lines[i + 1])
                return line
    return lines[-1] if lines else "no output"


def _run_logged(cmd: Sequence[str], cwd: Path, log_file: Any) -> int:
    log_file.write("$ {}\n".format(" ".join(cmd)))
    log_file.flush()
    try:
        proc = subprocess.run(list(cmd), cwd=str(cwd), stdout=log_file, stderr=subprocess.STDOUT,
                              timeout=_BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log_file.write("\ntimed out after {} s\n".format(_BUILD_TIMEOUT_S))
        return 124
    log_file.flush()
    return proc.returncode


def build_library(build_dir: Optional[Path] = None, source_dir: Path = SOURCE_DIR,
                  cmake_args: Sequence[str] = (), jobs: Optional[int] = None, reason: str = "",
                  fresh: bool = False) -> Path:
    """Configure and build the library with CMake (unless another process just did); TargetUnavailable on failure.

    fresh: start from an empty CMake cache and rebuild every object (another TensorRT was installed, whose
    headers the build system may not track).
    """
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    source_dir = Path(source_dir)
    if not (source_dir / "CMakeLists.txt").is_file():
        raise TargetUnavailable("cannot build the native library: its sources are missing ({} has no "
                                "CMakeLists.txt)".format(source_dir))
    cmake = shutil.which("cmake")
    if cmake is None:
        raise TargetUnavailable("cannot build the native library: cmake was not found on PATH; install CMake 3.10 "
                                "or newer (apt-get install cmake)")
    args = ["-DCMAKE_BUILD_TYPE=Release"] + list(cmake_args)
    archs = os.environ.get("MLMARK_CUDA_ARCHS", "").strip()
    if archs and not any(a.startswith("-DMLMARK_CUDA_ARCHS=") for a in args):
        args.append("-DMLMARK_CUDA_ARCHS={}".format(archs))
    jobs = jobs or max(1, os.cpu_count() or 1)
    library = build_dir / LIBRARY_NAME
    with file_lock(build_dir / ".build.lock"):  # serializes builds of one folder (two runs, parallel tests)
        # Another process may have built it while this one waited for the lock.
        if not cmake_args and staleness(library, source_dir) is None:
            return library
        log.info("building the native library (cpp_environment) in %s%s; this takes a minute or two",
                 build_dir, " because " + reason if reason else "")
        started = time.monotonic()
        if fresh:
            if (build_dir / "CMakeCache.txt").is_file():
                (build_dir / "CMakeCache.txt").unlink()
            shutil.rmtree(str(build_dir / "CMakeFiles"), ignore_errors=True)
        if library.exists():
            # Forces the relink: make trusts time stamps, and a library stamped ahead (see below) would
            # otherwise look newer than the objects just rebuilt.
            library.unlink()
        log_path = build_dir / BUILD_LOG_NAME
        with open(str(log_path), "w") as log_file:
            rc = _run_logged([cmake, str(source_dir)] + args, build_dir, log_file)
            if rc != 0 and (build_dir / "CMakeCache.txt").is_file():
                # A cache from another source folder or toolkit makes CMake refuse; start clean once.
                log_file.write("\nconfigure failed; retrying with a fresh cache\n")
                (build_dir / "CMakeCache.txt").unlink()
                shutil.rmtree(str(build_dir / "CMakeFiles"), ignore_errors=True)
                rc = _run_logged([cmake, str(source_dir)] + args, build_dir, log_file)
            if rc == 0:
                rc = _run_logged([cmake, "--build", ".", "--", "-j{}".format(jobs)], build_dir, log_file)
        if rc != 0:
            text = log_path.read_text(errors="replace")
            raise TargetUnavailable("building the native library failed: {} (full log: {})".format(
                _first_error_line(text), log_path))
        if not library.is_file():
            raise TargetUnavailable("building the native library produced no {} in {} (log: {})".format(
                LIBRARY_NAME, build_dir, log_path))
        # The build system may rightly find nothing to relink (a comment-only change of CMakeLists.txt),
        # and sources may carry time stamps from the future (a board without a set clock); the hash
        # below proves the library current, so stamp it no older than its newest source.
        newest = max((source_dir / rel).stat().st_mtime for rel in source_files(source_dir))
        if library.stat().st_mtime < newest:
            os.utime(str(library), (newest, newest))
        embedded = embedded_source_hash(library)
        if embedded != source_hash(source_dir):
            raise TargetUnavailable("the native library in {} does not match its sources after a build (source "
                                    "changed during the build?); run again".format(build_dir))
        log.info("built the native library in %.0f s: %s", time.monotonic() - started, library)
    return library


def default_build_dir() -> Path:
    """build/cpp_environment at the repository root, or $MLMARK_NATIVE_BUILD_DIR."""
    env = os.environ.get("MLMARK_NATIVE_BUILD_DIR")
    return Path(env) if env else DEFAULT_BUILD_DIR


def ensure_library(build_dir: Optional[Path] = None, source_dir: Path = SOURCE_DIR,
                   cmake_args: Sequence[str] = ()) -> Path:
    """The path of a current library: $MLMARK_NATIVE_LIB as is, else built or rebuilt when stale."""
    env = os.environ.get("MLMARK_NATIVE_LIB")
    if env and build_dir is None:
        library = Path(env)
        if not library.is_file():
            raise TargetUnavailable("MLMARK_NATIVE_LIB names {}, which does not exist".format(library))
        if (Path(source_dir) / "CMakeLists.txt").is_file():
            reason = staleness(library, source_dir)
            if reason is not None:
                # The user chose this build; the ABI check on loading still guards against the worst.
                log.warning("MLMARK_NATIVE_LIB=%s does not match the sources in %s (%s); using it as asked",
                            library, source_dir, reason)
        return library
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    library = build_dir / LIBRARY_NAME
    reason = staleness(library, source_dir)
    if reason is None:
        return library
    fresh = library.is_file() and tensorrt_staleness(library) == reason
    return build_library(build_dir, source_dir, cmake_args, reason=reason, fresh=fresh)


# ---------------------------------------------------------------------------------------------
# Loading


def _python_level_to_native(level: int) -> int:
    if level <= logging.DEBUG:
        return 0
    if level <= logging.INFO:
        return 1
    if level <= logging.WARNING:
        return 2
    return 3


def _log_from_native(level: int, message: bytes, _user: Any) -> None:
    # An exception must not escape into C: ctypes would print it and carry on, mid-loop.
    try:
        text = message.decode("utf-8", "replace") if message else ""
        log.log(_LOG_LEVELS.get(level, logging.INFO), "%s", text)
    except Exception:  # noqa: BLE001 - nothing may propagate into the library
        pass


# One callback object for the process: ctypes callbacks must outlive every library holding them.
_LOG_CALLBACK = LOG_CALLBACK(_log_from_native)


class NativeLibrary:
    """The loaded library: typed wrappers around its C functions, errors raised as MLMarkError."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            hint = ""
            if "libnv" in str(exc) or "libcuda" in str(exc):
                hint = ("; it links a TensorRT or CUDA library that is not installed (any more): delete {} and run "
                        "again to rebuild it".format(self.path.parent))
            raise TargetUnavailable("cannot load the native library {}: {}{}".format(self.path, exc, hint))
        abi = self._function("mlmark_abi_version", ctypes.c_int, [])()
        if abi != EXPECTED_ABI_VERSION:
            raise TargetUnavailable(
                "the native library {} has ABI version {} but this MLMark expects {}: rebuild it (delete {} "
                "and run again) or point MLMARK_NATIVE_LIB at a matching build".format(
                    self.path, abi, EXPECTED_ABI_VERSION, self.path.parent))
        f = self._function
        self._source_hash = f("mlmark_source_hash", ctypes.c_char_p, [])
        self._build_info = f("mlmark_build_info", ctypes.c_char_p, [])
        self._last_error = f("mlmark_last_error", ctypes.c_char_p, [])
        self._set_log_callback = f("mlmark_set_log_callback", None, [LOG_CALLBACK, ctypes.c_void_p, ctypes.c_int])
        self._device_count = f("mlmark_device_count", ctypes.c_int, [ctypes.POINTER(ctypes.c_int32)])
        self._device_info = f("mlmark_get_device_info", ctypes.c_int,
                              [ctypes.c_int32, ctypes.POINTER(DeviceInfoStruct)])
        self._loop_create = f("mlmark_loop_create", ctypes.c_int,
                              [ctypes.POINTER(LoopConfigStruct), ctypes.POINTER(ctypes.c_void_p)])
        self._loop_get_info = f("mlmark_loop_get_info", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(RunInfoStruct)])
        self._loop_run = f("mlmark_loop_run", ctypes.c_int,
                           [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_double),
                            ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double),
                            ctypes.POINTER(RunInfoStruct)])
        self._loop_set_parameter = f("mlmark_loop_set_parameter", ctypes.c_int,
                                     [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_double])
        self._loop_destroy = f("mlmark_loop_destroy", ctypes.c_int, [ctypes.c_void_p])
        self._loop_binding_count = f("mlmark_loop_binding_count", ctypes.c_int,
                                     [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32)])
        self._loop_get_binding = f("mlmark_loop_get_binding", ctypes.c_int,
                                   [ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(BindingInfoStruct)])
        self._loop_set_input = f("mlmark_loop_set_input", ctypes.c_int,
                                 [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint64])
        self._loop_infer = f("mlmark_loop_infer", ctypes.c_int,
                             [ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int32])
        self._trt_get_info = f("mlmark_trt_get_info", ctypes.c_int, [ctypes.c_int32, ctypes.POINTER(TrtInfoStruct)])
        self._trt_build_engine = f("mlmark_trt_build_engine", ctypes.c_int,
                                   [ctypes.POINTER(TrtBuildConfigStruct), ctypes.POINTER(TrtBuildResultStruct)])
        self._trt_inspect_engine = f("mlmark_trt_inspect_engine", ctypes.c_int,
                                     [ctypes.c_int32, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)])
        self.abi_version = abi
        self.source_hash = (self._source_hash() or b"").decode("ascii", "replace")
        self.build_info = (self._build_info() or b"").decode("utf-8", "replace")
        self.sync_log_level()

    def _function(self, name: str, restype: Any, argtypes: List[Any]) -> Callable[..., Any]:
        try:
            fn = getattr(self._lib, name)
        except AttributeError:
            raise TargetUnavailable("{} is not an MLMark native library of this version: it lacks {}(); rebuild "
                                    "it".format(self.path, name))
        fn.restype = restype
        fn.argtypes = argtypes
        return fn  # type: ignore[no-any-return]

    def sync_log_level(self) -> None:
        """Tell the library which messages Python's logger would keep, so it formats no others."""
        self._set_log_callback(_LOG_CALLBACK, None, _python_level_to_native(log.getEffectiveLevel()))

    def last_error(self, status: int, where: str) -> str:
        """The calling thread's last error from the library, on one line."""
        raw = self._last_error() or b""
        message = " ".join(raw.decode("utf-8", "replace").split())
        return message or "{} failed with status {}".format(where, status)

    def check(self, status: int, where: str) -> None:
        """Raise the MLMarkError matching a non-zero status, with the library's message on one line."""
        if status == OK:
            return
        raise _ERROR_CLASSES.get(status, MLMarkError)(self.last_error(status, where))

    def device_count(self) -> int:
        """Number of visible CUDA GPUs; TargetUnavailable with the reason when there is none."""
        count = ctypes.c_int32(0)
        self.check(self._device_count(ctypes.byref(count)), "mlmark_device_count")
        return int(count.value)

    def device_info(self, device: int = 0) -> DeviceInfo:
        """Properties of one GPU."""
        info = DeviceInfoStruct()
        info.struct_size = ctypes.sizeof(DeviceInfoStruct)
        self.check(self._device_info(int(device), ctypes.byref(info)), "mlmark_get_device_info")
        return DeviceInfo(
            index=int(info.device), name=info.name.decode("utf-8", "replace"),
            compute_capability=(int(info.cc_major), int(info.cc_minor)), integrated=bool(info.integrated),
            multiprocessors=int(info.multiprocessors), can_map_host_memory=bool(info.can_map_host_memory),
            managed_memory=bool(info.managed_memory),
            concurrent_managed_access=bool(info.concurrent_managed_access),
            driver_version=_cuda_version(info.driver_version), runtime_version=_cuda_version(info.runtime_version),
            total_memory=int(info.total_memory), free_memory=int(info.free_memory))

    def loop_create(self, config: LoopConfigStruct) -> int:
        """A new loop handle (an opaque address)."""
        self.sync_log_level()
        config.struct_size = ctypes.sizeof(LoopConfigStruct)
        handle = ctypes.c_void_p()
        self.check(self._loop_create(ctypes.byref(config), ctypes.byref(handle)), "mlmark_loop_create")
        if not handle.value:
            raise MLMarkError("the native library returned no loop")
        return int(handle.value)

    def loop_info(self, handle: int) -> RunInfoStruct:
        """The settings a loop resolved."""
        info = RunInfoStruct()
        info.struct_size = ctypes.sizeof(RunInfoStruct)
        self.check(self._loop_get_info(ctypes.c_void_p(handle), ctypes.byref(info)), "mlmark_loop_get_info")
        return info

    def loop_run(self, handle: int, iterations: int,
                 warmup: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, RunInfoStruct]:
        """Run a loop; per-inference end-to-end, GPU and enqueue times in seconds (issue order), and the info."""
        e2e = np.zeros(iterations, dtype=np.float64)
        gpu = np.zeros(iterations, dtype=np.float64)
        enqueue = np.zeros(iterations, dtype=np.float64)
        info = RunInfoStruct()
        info.struct_size = ctypes.sizeof(RunInfoStruct)
        dptr = ctypes.POINTER(ctypes.c_double)
        # ctypes releases the GIL for the call: the whole timed loop runs without Python.
        status = self._loop_run(ctypes.c_void_p(handle), int(iterations), int(warmup), e2e.ctypes.data_as(dptr),
                                gpu.ctypes.data_as(dptr), enqueue.ctypes.data_as(dptr), ctypes.byref(info))
        self.check(status, "mlmark_loop_run")
        return e2e, gpu, enqueue, info

    def loop_set_parameter(self, handle: int, name: str, value: float) -> None:
        """Change a calibrated workload's parameter (e.g. 'spin_ns') between runs."""
        self.check(self._loop_set_parameter(ctypes.c_void_p(handle), name.encode("ascii"), float(value)),
                   "mlmark_loop_set_parameter")

    def loop_bindings(self, handle: int) -> List[BindingInfoStruct]:
        """A loop's inputs and outputs, in binding order."""
        count = ctypes.c_int32(0)
        self.check(self._loop_binding_count(ctypes.c_void_p(handle), ctypes.byref(count)), "mlmark_loop_binding_count")
        out = []
        for i in range(int(count.value)):
            info = BindingInfoStruct()
            info.struct_size = ctypes.sizeof(BindingInfoStruct)
            self.check(self._loop_get_binding(ctypes.c_void_p(handle), i, ctypes.byref(info)), "mlmark_loop_get_binding")
            out.append(info)
        return out

    def loop_set_input(self, handle: int, slot: int, binding: int, data: np.ndarray) -> None:
        """Copy a C-contiguous array into an input binding of one slot (-1: every slot)."""
        self.check(self._loop_set_input(ctypes.c_void_p(handle), int(slot), int(binding), ctypes.c_void_p(data.ctypes.data),
                                        int(data.nbytes)), "mlmark_loop_set_input")

    def loop_infer(self, handle: int, slot: int, outputs: Sequence[Optional[np.ndarray]]) -> None:
        """One synchronous inference on a slot; outputs[i] (C-contiguous, or None) receives binding i."""
        pointers = (ctypes.c_void_p * len(outputs))(*[None if a is None else a.ctypes.data for a in outputs])
        self.check(self._loop_infer(ctypes.c_void_p(handle), int(slot), pointers, len(outputs)), "mlmark_loop_infer")

    def trt_info(self, device: int = 0) -> TrtInfoStruct:
        """The TensorRT backend's capabilities (built_with_tensorrt = 0 and nothing else without TensorRT)."""
        info = TrtInfoStruct()
        info.struct_size = ctypes.sizeof(TrtInfoStruct)
        self.check(self._trt_get_info(int(device), ctypes.byref(info)), "mlmark_trt_get_info")
        return info

    def trt_build_engine(self, config: TrtBuildConfigStruct) -> Tuple[int, TrtBuildResultStruct]:
        """Build an engine; the raw status (the caller picks the error class) and the result."""
        self.sync_log_level()
        config.struct_size = ctypes.sizeof(TrtBuildConfigStruct)
        result = TrtBuildResultStruct()
        result.struct_size = ctypes.sizeof(TrtBuildResultStruct)
        status = self._trt_build_engine(ctypes.byref(config), ctypes.byref(result))
        return int(status), result

    def trt_inspect_engine(self, device: int, engine_path: Path) -> Tuple[int, str]:
        """IEngineInspector's JSON for an engine file; the raw status and the text ("" on failure)."""
        self.sync_log_level()
        out = ctypes.c_char_p()
        status = self._trt_inspect_engine(int(device), os.fsencode(str(engine_path)), ctypes.byref(out))
        text = out.value.decode("utf-8", "replace") if status == OK and out.value is not None else ""
        return int(status), text

    def loop_destroy(self, handle: int) -> None:
        """Free a loop; errors are logged, never raised (this runs from close() and finalizers)."""
        status = self._loop_destroy(ctypes.c_void_p(handle))
        if status != OK:
            log.debug("mlmark_loop_destroy: status %d", status)


def _cuda_version(encoded: int) -> str:
    if encoded <= 0:
        return "none"
    return "{}.{}".format(encoded // 1000, (encoded % 1000) // 10)


_LOADED: Dict[str, NativeLibrary] = {}
_DEFAULT: Optional[NativeLibrary] = None
_LOAD_LOCK = threading.Lock()


def load_library(path: Optional[Path] = None, build: bool = True) -> NativeLibrary:
    """The library at path (default: the project's build, built or rebuilt here if needed), loaded once."""
    global _DEFAULT
    with _LOAD_LOCK:
        if path is None and _DEFAULT is not None:
            # Checked once per process: a library loaded into a process cannot be swapped anyway.
            return _DEFAULT
        wants_default = path is None
        if path is None:
            if build:
                path = ensure_library()
            else:
                env = os.environ.get("MLMARK_NATIVE_LIB")
                path = Path(env) if env else default_build_dir() / LIBRARY_NAME
        path = Path(path).resolve()
        key = str(path)
        if key in _LOADED:
            if wants_default:
                _DEFAULT = _LOADED[key]
            return _LOADED[key]
        if not path.is_file():
            raise TargetUnavailable("the native library {} does not exist; build it with cmake (see "
                                    "cpp_environment/README.md)".format(path))
        library = NativeLibrary(path)
        _LOADED[key] = library
        if wants_default:
            _DEFAULT = library
        log.debug("loaded %s (ABI %d, source %s, %s)", path, library.abi_version, library.source_hash[:12],
                  library.build_info)
        return library
