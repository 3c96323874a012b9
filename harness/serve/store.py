"""Uploaded models, kept by SHA-256 in a folder of bounded size, least recently used first out.

A model sent again is found by its SHA-256 and reuses the stored file, so the engines the tensorrt
and trtexec targets cached for it (keyed by the model's SHA-256) are found again too. Each model
lives in its own folder, `<sha256>/model.onnx`, because targets write files beside a model (the
int8 Q/DQ model, `model.qdq.onnx`): a folder's whole size counts, and an evicted model takes them
with it. A model that a queued or running measurement uses is pinned and never evicted; while such
models alone exceed the bound, the store stays above it until they are released.

Uploads stream into a temporary file in `.incoming/` (the same file system, so that keeping one is
a rename), hashed and counted as they arrive; one over the limit is refused without being kept.
This is hand-written rather than a cache library because its entries are folders on disk that must
survive restarts (their last use is the folder's mtime) and be pinned while in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

from core.errors import ConfigError, ModelError
from core.fileio import file_lock

log = logging.getLogger("mlmark.serve")

MODEL_NAME = "model.onnx"
INCOMING = ".incoming"
LOCK = ".lock"
MB = 1 << 20


class TooLarge(Exception):
    """An upload went past the size limit."""


class Upload:
    """One upload being received: a temporary file, its running SHA-256 and size."""

    def __init__(self, folder: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".tmp", dir=str(folder))
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.limit = limit
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk; TooLarge once the upload passes the limit."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge()
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Close the file; its SHA-256."""
        self._file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Close and delete the temporary file (safe to call twice)."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class StoredModel:
    """A model in the store."""

    sha256: str
    path: Path
    reused: bool  # it was already there: sent before


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(str(folder)):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


class UploadStore:
    """The folder of uploaded models: add, pin while in use, evict least recently used beyond max_bytes."""

    def __init__(self, folder: Path, max_bytes: int, max_upload_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self._entries: "OrderedDict[str, int]" = OrderedDict()  # sha256 -> bytes, least recently used first
        self._pins: Dict[str, int] = {}
        self.evicted = 0

    @contextlib.contextmanager
    def opened(self) -> Iterator["UploadStore"]:
        """Hold the store for this server (one server per store folder); read what an earlier server kept."""
        try:
            (self.folder / INCOMING).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("{}: cannot use this folder for uploaded models ({}); give --store a folder you can "
                              "write to".format(self.folder, exc.strerror or type(exc).__name__)) from None

        def taken() -> None:
            raise ConfigError("{}: another mlmark serve uses this store; give each server its own --store".format(
                self.folder))

        with file_lock(self.folder / LOCK, on_wait=taken):
            for stale in (self.folder / INCOMING).glob("upload-*.tmp"):  # left by a server that was killed
                with contextlib.suppress(OSError):
                    stale.unlink()
            found = []
            for entry in self.folder.iterdir():
                if entry.is_dir() and len(entry.name) == 64 and (entry / MODEL_NAME).is_file():
                    found.append((entry.stat().st_mtime, entry.name, _folder_bytes(entry)))
            for _, sha, size in sorted(found):
                self._entries[sha] = size
            self._evict()
            yield self

    def new_upload(self) -> Upload:
        """A temporary file for an upload of at most max_upload_bytes."""
        return Upload(self.folder / INCOMING, self.max_upload_bytes)

    def add(self, upload: Upload, sha256: str) -> StoredModel:
        """Keep a finished, validated upload under its SHA-256 (or reuse the copy already kept), pinned."""
        folder = self.folder / sha256
        path = folder / MODEL_NAME
        reused = sha256 in self._entries and path.is_file()
        if reused:
            upload.discard()
        else:
            folder.mkdir(exist_ok=True)
            os.chmod(str(upload.path), 0o644)
            os.replace(str(upload.path), str(path))
        self._touch(sha256)
        self.pin(sha256)
        self._evict()
        return StoredModel(sha256=sha256, path=path, reused=reused)

    def pin(self, sha256: str) -> None:
        """Keep the model while a measurement needs it."""
        self._pins[sha256] = self._pins.get(sha256, 0) + 1

    def unpin(self, sha256: str) -> None:
        """A measurement no longer needs the model; it may be evicted now (and its folder re-measured)."""
        left = self._pins.get(sha256, 0) - 1
        if left > 0:
            self._pins[sha256] = left
        else:
            self._pins.pop(sha256, None)
        if sha256 in self._entries:  # targets may have written beside it (a Q/DQ model)
            self._entries[sha256] = _folder_bytes(self.folder / sha256)
        self._evict()

    def _touch(self, sha256: str) -> None:
        folder = self.folder / sha256
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(str(folder), (now, now))  # the order survives a restart
        self._entries[sha256] = _folder_bytes(folder)
        self._entries.move_to_end(sha256)

    def _evict(self) -> None:
        total = sum(self._entries.values())
        for sha in list(self._entries):
            if total <= self.max_bytes:
                break
            if sha in self._pins:
                continue
            total -= self._entries.pop(sha)
            shutil.rmtree(str(self.folder / sha), ignore_errors=True)
            self.evicted += 1
            log.info("store: removed model %s (least recently used; the store holds at most %d MB)", sha[:12],
                     self.max_bytes // MB)

    def status(self) -> Dict[str, object]:
        """What /health reports of the store."""
        return {"models": len(self._entries), "bytes": sum(self._entries.values()), "max_bytes": self.max_bytes,
                "pinned": len(self._pins), "evicted": self.evicted, "folder": str(self.folder)}



def check_onnx(path: Path, workload: str) -> None:
    """ModelError (one line) unless the file is an ONNX model, in one file, that the workload can run.

    Parsed without loading external data (an upload is one file, and external data could name any path on
    the server), then checked by onnx.checker without shape inference, then its inputs and outputs by the
    workload's own rule, as a local run checks them.
    """
    import onnx

    from core.specs import onnx_io
    from workloads import get_workload

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises a variety of types for bytes that are not a model
        raise ModelError("the upload is not an ONNX model ({})".format(_first_line(exc))) from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ModelError("the upload keeps its weights in external data files; save the model as one file "
                         "(onnx.save(model, path, save_as_external_data=False)) and send that")
    if not model.graph.node:
        raise ModelError("the upload is not an ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError("the upload is not a valid ONNX model: {}".format(_first_line(exc))) from None
    inputs, outputs = onnx_io(model)
    get_workload(workload).check_io(inputs, outputs, "the upload")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
