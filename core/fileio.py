"""Safe file writing, file hashing and file locks: the one place that knows how to write a file safely.

Every file the project writes for later readers (results, sidecars, models, engines, calibration
tables, caches) goes through `atomic_path`, so a reader sees the old file or the whole new one,
never a part, and a write that fails or is interrupted leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking, one process at a time is assumed
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; results and models are shared like any file.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without error.

    The file is flushed to disk before the rename, so a crash never leaves a half-written file under
    the final name; on an error (or Ctrl-C) the temporary file is removed and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=suffix, dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, str(path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write data to path so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write obj as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: PathLike, exclusive: bool = True, on_wait: Any = None) -> Iterator[None]:
    """Hold an advisory lock (flock) on `path` between processes: exclusive, or shared with other readers.

    The lock file is created if needed and never deleted: removing a file another process waits on
    would let a third process lock a new file beside it. `on_wait()` is called once if the lock is
    held elsewhere, before waiting for it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(str(path), "a") as handle:  # "a" creates without truncating
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
