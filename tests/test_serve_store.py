"""The upload store of mlmark serve: kept by SHA-256, bounded, least recently used first out, pinned while in use."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, ModelError
from harness.serve.store import MODEL_NAME, TooLarge, UploadStore, check_onnx
from tests.conftest import write_tiny_classifier

KB = 1024


def put(store: UploadStore, data: bytes) -> Any:
    upload = store.new_upload()
    for i in range(0, len(data), 1000):
        upload.write(data[i:i + 1000])
    sha = upload.finish()
    assert sha == hashlib.sha256(data).hexdigest()
    return store.add(upload, sha)


def blob(n: int, kb: int = 10) -> bytes:
    return bytes([n]) * (kb * KB)


def test_least_recently_used_models_go_first_and_pinned_ones_stay(tmp_path: Path) -> None:
    with UploadStore(tmp_path, max_bytes=35 * KB, max_upload_bytes=20 * KB).opened() as store:
        a, b, c = (put(store, blob(i)) for i in range(3))
        for m in (a, b, c):
            store.unpin(m.sha256)
        again = put(store, blob(0))  # a sent again: reused, and now the most recently used
        assert again.reused and again.path == a.path
        store.unpin(a.sha256)
        d = put(store, blob(3))  # 40 KB > 35 KB: b, the least recently used, goes
        assert not b.path.exists() and a.path.exists() and c.path.exists() and d.path.exists()
        # d is still pinned (its measurement has not run): a newer model pushes out c, then a, never d.
        e = put(store, blob(4))
        assert not c.path.exists() and d.path.exists() and e.path.exists()
        f = put(store, blob(5))
        assert not a.path.exists() and d.path.exists() and e.path.exists() and f.path.exists()
        assert store.status()["bytes"] == 30 * KB and store.status()["evicted"] == 3
        for m in (d, e, f):
            store.unpin(m.sha256)
        assert store.status()["pinned"] == 0


def test_a_pinned_model_is_passed_over_and_evicted_once_released(tmp_path: Path) -> None:
    with UploadStore(tmp_path, max_bytes=25 * KB, max_upload_bytes=20 * KB).opened() as store:
        queued = put(store, blob(0))  # its measurement waits in the queue: pinned
        done = put(store, blob(1))
        store.unpin(done.sha256)
        newest = put(store, blob(2))  # 30 KB: the oldest is pinned, so the next oldest goes
        assert queued.path.exists() and not done.path.exists() and newest.path.exists()
        store.pin(newest.sha256)
        later = put(store, blob(3))  # 30 KB and every model pinned: above the bound until one is released
        assert store.status()["bytes"] == 30 * KB
        store.unpin(queued.sha256)  # released: now the least recently used, and out
        assert not queued.path.exists() and later.path.exists() and store.status()["bytes"] == 20 * KB


def test_files_written_beside_a_model_count_and_leave_with_it(tmp_path: Path) -> None:
    with UploadStore(tmp_path, max_bytes=35 * KB, max_upload_bytes=20 * KB).opened() as store:
        a = put(store, blob(0))
        (a.path.parent / "model.qdq.onnx").write_bytes(b"q" * 20 * KB)  # a target made a Q/DQ model beside it
        store.unpin(a.sha256)
        assert store.status()["bytes"] == 30 * KB
        b = put(store, blob(1))
        assert not a.path.parent.exists() and b.path.exists()


def test_the_order_survives_a_restart_and_leftover_uploads_are_removed(tmp_path: Path) -> None:
    with UploadStore(tmp_path, max_bytes=100 * KB, max_upload_bytes=20 * KB).opened() as store:
        old, new = put(store, blob(0)), put(store, blob(1))
        for m in (old, new):
            store.unpin(m.sha256)
        t = time.time()
        os.utime(str(old.path.parent), (t - 100, t - 100))
        store.new_upload()  # a server killed mid-upload leaves its temporary file
    with UploadStore(tmp_path, max_bytes=15 * KB, max_upload_bytes=10 * KB).opened() as store:
        assert not old.path.exists() and new.path.exists()  # the smaller bound evicts the older one
        assert not list((tmp_path / ".incoming").iterdir())


def test_an_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    with UploadStore(tmp_path, max_bytes=100 * KB, max_upload_bytes=5 * KB).opened() as store:
        upload = store.new_upload()
        upload.write(b"x" * 5 * KB)
        with pytest.raises(TooLarge):
            upload.write(b"x")
        upload.discard()
        assert not list((tmp_path / ".incoming").iterdir())


def test_one_server_per_store(tmp_path: Path) -> None:
    with UploadStore(tmp_path, 1 << 20, 1 << 10).opened():
        with pytest.raises(ConfigError, match="another mlmark serve uses this store"):
            with UploadStore(tmp_path, 1 << 20, 1 << 10).opened():
                pass


def test_check_onnx_refuses_external_data(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(write_tiny_classifier(tmp_path / "tiny.onnx")))
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with pytest.raises(ModelError, match="keeps its weights in external data files"):
        check_onnx(tmp_path / "external.onnx", "mobilenet")
    check_onnx(tmp_path / "tiny.onnx", "mobilenet")  # a whole model passes
    assert (tmp_path / "tiny.onnx").stat().st_size > 0 and MODEL_NAME == "model.onnx"
