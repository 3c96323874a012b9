"""The engine cache in engines/: names, sidecars, staleness, locking and atomic installation.

A serialized TensorRT engine is only valid for the TensorRT release that built it and the GPU it was
built on; deserializing one from another release is what fails with TensorRT's "Mismatch between
allocated memory size and expected size of serialized engine" assertion, which aborts the process.
So no engine file is ever handed to the deserializer on trust: each engine has a JSON sidecar that
records what it was built from and for, and a lookup compares the sidecar with the running
TensorRT, the GPU, the model and the calibration data, and the engine file's size and SHA-256 with
the sidecar's. Anything that does not match is rebuilt.

Installation is atomic: a build writes a temporary file in engines/, which is renamed over the
engine only after the build succeeded, and the sidecar is written (atomically) after that. A build
killed half way leaves at most a temporary file, removed by the next build of that engine; an
engine without its sidecar is stale. Two processes asking for the same engine build it once: the
build holds an exclusive lock (fcntl.flock) on a lock file beside the engine and checks again after
acquiring it; readers hold the same lock shared while they deserialize, so no build replaces an
engine under them.

The cache knows nothing of TensorRT: a builder callable writes the engine file. The target passes
one that runs TensorRT's builder in a child process (build_worker.py).
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from core import __version__
from core.errors import RunError
from core.fileio import atomic_path, atomic_write_json, file_lock, sha256_file
from core.paths import engines_dir

log = logging.getLogger("mlmark.tensorrt")

SCHEMA = "mlmark-engine/1"
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on: tasks with equal keys share one engine file."""

    workload: str
    model_sha256: str
    precision: str
    batch: int
    tensorrt_version: str  # the runtime that serializes (and must deserialize) the engine
    tensorrt_header_version: str  # the headers the native library was compiled against
    gpu_name: str
    compute_capability: Tuple[int, int]
    workspace_mb: int = 1024
    calibration_kind: Optional[str] = None  # int8: "table" (implicit calibration) or "qdq" (Q/DQ model)
    calibration_sha256: Optional[str] = None  # of the calibration table or of the Q/DQ model
    fp16_model_sha256: Optional[str] = None  # fp16 on a strongly typed builder: of the float16 conversion parsed
    dla_core: Optional[int] = None  # the DLA core the engine runs on (trtexec target, hardware dla); None: the GPU

    @property
    def sm(self) -> str:
        """The GPU architecture as nvcc names it, e.g. '87'."""
        return "{}{}".format(*self.compute_capability)

    def file_stem(self) -> str:
        """workload-model sha prefix-precision-batch-TensorRT version-GPU architecture[-DLA core]."""
        stem = "{}-{}-{}-b{}-trt{}-sm{}".format(_safe(self.workload), self.model_sha256[:12], _safe(self.precision),
                                                self.batch, _safe(self.tensorrt_version), self.sm)
        return stem if self.dla_core is None else "{}-dla{}".format(stem, self.dla_core)

    def fp32_reference(self) -> "EngineKey":
        """The fp32 engine of the same model, batch and builder settings (the size check's reference), on the GPU."""
        return replace(self, precision="fp32", calibration_kind=None, calibration_sha256=None, fp16_model_sha256=None,
                       dla_core=None)

    def to_dict(self) -> Dict[str, Any]:
        """The key as its sidecar records it (compute capability as "8.7")."""
        d = asdict(self)
        d["compute_capability"] = "{}.{}".format(*self.compute_capability)
        return d


#: Sidecar fields compared with the key, each with how a difference reads in the log.
_COMPARED: List[Tuple[str, str]] = [
    ("workload", "built for workload {old}, not {new}"),
    ("precision", "built in {old}, not {new}"),
    ("batch", "built for batch {old}, not {new}"),
    ("tensorrt_version", "built by TensorRT {old}; this is TensorRT {new}"),
    ("tensorrt_header_version", "built by a library compiled against TensorRT {old} headers; this one uses {new}"),
    ("gpu_name", "built on {old}; this GPU is {new}"),
    ("compute_capability", "built for compute capability {old}; this GPU has {new}"),
    ("model_sha256", "built from a model with SHA-256 {old:.12}...; the model is now {new:.12}..."),
    ("calibration_kind", "built with calibration {old}; now {new}"),
    ("calibration_sha256", "built with calibration data of SHA-256 {old:.12}...; it is now {new:.12}..."),
    ("fp16_model_sha256", "built from a float16 conversion with SHA-256 {old:.12}...; it is now {new:.12}..."),
    ("workspace_mb", "built with workspace_mb {old}; the task asks {new}"),
    ("dla_core", "built for DLA core {old}; the task asks {new} (None: the GPU)"),
]
#: Fields added after the first sidecars were written, with the value a sidecar without them means.
_ADDED_LATER: Dict[str, Any] = {"dla_core": None}


def _fmt(template: str, old: Any, new: Any) -> str:
    try:
        return template.format(old=old, new=new)
    except (TypeError, ValueError):  # None under a :.12 format
        return template.replace(":.12", "").format(old=old, new=new)


def stale_reason(meta: Any, key: EngineKey, engine_path: Path) -> Optional[str]:
    """Why the engine at engine_path with sidecar data meta must not be used for key; None when it may."""
    if not isinstance(meta, dict):
        return "its sidecar is not a JSON object"
    if meta.get("schema") != SCHEMA:
        return "its sidecar has schema {!r}, not {!r}".format(meta.get("schema"), SCHEMA)
    want = key.to_dict()
    for name, template in _COMPARED:
        if name not in meta and name not in _ADDED_LATER:
            return "its sidecar lacks field '{}'".format(name)
        old = meta.get(name, _ADDED_LATER.get(name))
        if old != want[name]:
            return _fmt(template, old, want[name])
    for name in ("engine_bytes", "engine_sha256"):
        if name not in meta:
            return "its sidecar lacks field '{}'".format(name)
    try:
        size = engine_path.stat().st_size
    except FileNotFoundError:
        return "the engine file is missing"
    if size != meta["engine_bytes"]:
        return "the engine file has {} bytes, its sidecar says {} (truncated or replaced)".format(
            size, meta["engine_bytes"])
    if sha256_file(engine_path) != meta["engine_sha256"]:
        return "the engine file's SHA-256 differs from its sidecar's (modified or corrupt)"
    return None


@dataclass
class BuildOutcome:
    """What a builder reports after writing an engine file: recorded in the sidecar."""

    build_s: float
    layers: Optional[List[Dict[str, Any]]] = None  # name, type, precision per layer; None if unknown
    record: Dict[str, Any] = field(default_factory=dict)  # more sidecar fields (paths, settings, checks)


#: A builder writes an engine for the key to the given (temporary) path.
Builder = Callable[[EngineKey, Path], BuildOutcome]


@dataclass
class CachedEngine:
    """A verified engine file and its sidecar."""

    key: EngineKey
    path: Path
    sidecar: Path
    meta: Dict[str, Any]
    status: str = "cached"  # "cached", or "built: <why>"

    @property
    def engine_bytes(self) -> int:
        """The engine file's size, as verified."""
        return int(self.meta["engine_bytes"])


class EngineCache:
    """Engines and sidecars in one folder, with their lock files and TensorRT's timing caches."""

    def __init__(self, directory: Optional[Path] = None) -> None:
        self.directory = Path(directory) if directory is not None else engines_dir()

    def engine_path(self, key: EngineKey) -> Path:
        """Where key's engine lives."""
        return self.directory / (key.file_stem() + ENGINE_SUFFIX)

    def sidecar_path(self, key: EngineKey) -> Path:
        """Where key's sidecar lives: the engine's name plus .json."""
        return self.directory / (key.file_stem() + ENGINE_SUFFIX + SIDECAR_SUFFIX)

    def lock_path(self, key: EngineKey) -> Path:
        """The file whose lock serializes builds of key's engine (hidden, never deleted)."""
        return self.directory / ".{}.lock".format(key.file_stem())

    def timing_cache_path(self, key: EngineKey) -> Path:
        """TensorRT's timing cache for this release and GPU architecture, shared by all its builds."""
        return self.directory / "timing-trt{}-sm{}.cache".format(_safe(key.tensorrt_version), key.sm)

    # -- lookup ----------------------------------------------------------------------------------

    def check(self, key: EngineKey) -> Tuple[Optional[CachedEngine], str]:
        """The engine for key if it may be used, else None and why not."""
        path, sidecar = self.engine_path(key), self.sidecar_path(key)
        if not sidecar.is_file():
            return None, ("its sidecar is missing" if path.exists() else "it is not built yet")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None, "its sidecar is not valid JSON (corrupt)"
        why = stale_reason(meta, key, path)
        if why is not None:
            return None, why
        return CachedEngine(key=key, path=path, sidecar=sidecar, meta=meta), "cached"

    def lookup(self, key: EngineKey) -> Optional[CachedEngine]:
        """The verified engine for key, or None (under a shared lock: never a half-installed one)."""
        with self._locked(key, exclusive=False):
            return self.check(key)[0]

    # -- build -----------------------------------------------------------------------------------

    def ensure(self, key: EngineKey, build: Builder, force: bool = False, why: Optional[str] = None) -> CachedEngine:
        """The engine for key: the cached one when current (and not forced), else built here, once; `why` says
        why a forced build is forced (default: params.rebuild)."""
        if not force:
            with self._locked(key, exclusive=False):
                found, reason = self.check(key)
            if found is not None:
                return found
        with self._locked(key, exclusive=True):
            if force:
                reason = why or "a rebuild was asked for (params.rebuild)"
            else:
                found, reason = self.check(key)  # another process may have built it while this one waited
                if found is not None:
                    found.status = "cached (built by another process meanwhile)"
                    return found
            return self._build_and_install(key, build, reason)

    @contextlib.contextmanager
    def open(self, key: EngineKey, build: Builder, force: bool = False,
             why: Optional[str] = None) -> Iterator[CachedEngine]:
        """The engine for key (built if needed), its lock held shared while the caller deserializes it."""
        if not force:
            with self._locked(key, exclusive=False):
                found, _ = self.check(key)
                if found is not None:
                    yield found
                    return
        status = self.ensure(key, build, force, why).status
        with self._locked(key, exclusive=False):
            found, reason = self.check(key)
            if found is None:  # only if something outside MLMark rewrote the file just now
                raise RunError("the engine {} changed while it was being opened ({}); run again".format(
                    self.engine_path(key), reason))
            found.status = status
            yield found

    def _build_and_install(self, key: EngineKey, build: Builder, reason: str) -> CachedEngine:
        """Build into a temporary file, then rename it over the engine and write the sidecar (lock held)."""
        path, sidecar = self.engine_path(key), self.sidecar_path(key)
        log.info("tensorrt: building engine %s because %s", path.name, reason)
        self.remove_orphans(key)
        for stale in (sidecar, path):  # a stale engine is worth nothing, and a Nano's disk is small
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        with atomic_path(path) as tmp:  # named .<stem>.engine.*.tmp: remove_orphans finds it if killed
            outcome = build(key, tmp)
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise RunError("the engine build for {} reported success but wrote no engine".format(path.name))
            meta = self._sidecar(key, tmp, outcome)
        atomic_write_json(sidecar, meta)
        return CachedEngine(key=key, path=path, sidecar=sidecar, meta=meta, status="built: " + reason)

    def _sidecar(self, key: EngineKey, engine_file: Path, outcome: BuildOutcome) -> Dict[str, Any]:
        meta: Dict[str, Any] = {"schema": SCHEMA, "engine": self.engine_path(key).name}
        meta.update(key.to_dict())
        meta.update({
            "built": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "build_s": round(float(outcome.build_s), 3),
            "engine_bytes": engine_file.stat().st_size,
            "engine_sha256": sha256_file(engine_file),
            "layers": outcome.layers,
            "tool_version": __version__,
        })
        for name, value in outcome.record.items():
            meta.setdefault(name, value)
        return meta

    def remove_orphans(self, key: EngineKey) -> List[Path]:
        """Delete temporary files of this engine left by killed builds (call with the exclusive lock held)."""
        removed = []
        for tmp in self.directory.glob(".{}.*.tmp".format(glob.escape(key.file_stem()))):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
        if removed:
            log.info("tensorrt: removed %d temporary file(s) of an earlier, interrupted build of %s", len(removed),
                     self.engine_path(key).name)
        return removed

    # -- locking ---------------------------------------------------------------------------------

    def _locked(self, key: EngineKey, exclusive: bool) -> Any:
        def waiting() -> None:
            log.info("tensorrt: waiting for another process building %s", self.engine_path(key).name)
        return file_lock(self.lock_path(key), exclusive=exclusive, on_wait=waiting)
