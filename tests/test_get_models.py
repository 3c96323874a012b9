"""Pretrained model downloads against a real HTTP server on 127.0.0.1: verified installs, nothing left on failure."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import tqdm

from core.errors import ModelError
from core.paths import models_dir
from workloads import WORKLOADS, pretrained
from workloads.pretrained import ManifestEntry, download, install, installed

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "utility" / "get_models.py"


class _Handler(http.server.BaseHTTPRequestHandler):
    """/files/NAME serves a file; /cut/NAME sends half of it under the full Content-Length and hangs up;
    /cutnolen/NAME the same without a Content-Length; /moved/NAME redirects (308) to /files/NAME;
    anything else is 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server: Any = self.server
        server.hits.append(self.path)
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "moved":  # a permanent redirect, as zenodo's old record URLs give
            self.send_response(308)
            self.send_header("Location", "/files/" + name)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = server.files.get(name)
        if data is None or kind not in ("files", "cut", "cutnolen"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if kind != "cutnolen":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if kind == "files" else data[:len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A loopback HTTP server on an ephemeral port; .url, .files (name -> bytes) and .hits (paths requested)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # a user's proxy must not see loopback requests
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.hits = {}, []
    httpd.url = "http://127.0.0.1:{}".format(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def payload(n: int = 300_000, seed: int = 1) -> bytes:
    """Deterministic bytes, bigger than one read chunk would be for small CHUNK values."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def entry_for(url: str, data: bytes, **kw: Any) -> ManifestEntry:
    fields: Dict[str, Any] = dict(workload="mobilenet", source="test", url=url, description="test model",
                                  notes="test notes: NCHW float32", checksum_origin="computed by the test",
                                  sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    fields.update(kw)
    return ManifestEntry(**fields)


def files_in(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_untouched(models: Path, workload: str) -> None:
    """A failed download leaves no file, and no folder it made, behind."""
    assert not (models / workload).exists(), files_in(models / workload)


# ---------------------------------------------------------------- manifest and folders


def test_models_dir_follows_env_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLMARK_MODELS", str(tmp_path / "elsewhere"))
    assert models_dir() == tmp_path / "elsewhere" and not (tmp_path / "elsewhere").exists()
    monkeypatch.delenv("MLMARK_MODELS")
    assert models_dir() == REPO / "models"


def test_manifest_covers_every_workload_and_never_guesses() -> None:
    assert set(pretrained.manifest_workloads()) == set(WORKLOADS)
    for name in WORKLOADS:
        assert [e.default for e in pretrained.MANIFEST if e.workload == name].count(True) == 1
        assert pretrained.get_entry(name).workload == name
    for e in pretrained.MANIFEST:
        assert e.url.startswith("https://") and e.filename.endswith(".onnx")
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0)
        assert e.md5 is None or (len(e.md5) == 32 and int(e.md5, 16) >= 0)
        assert e.checksum_origin and e.notes and e.description
        if not e.verifiable:
            assert "none published" in e.checksum_origin
    with pytest.raises(ModelError, match="no source"):
        pretrained.get_entry("resnet50", "nowhere")


# ---------------------------------------------------------------- download()


def test_install_verifies_and_writes_sidecar(server: Any, models_dir: Path) -> None:
    data = payload()
    server.files["model.onnx"] = data
    entry = entry_for(server.url + "/files/model.onnx", data)
    path = download(entry, models_dir / "mobilenet", progress=False)
    assert path == models_dir / "mobilenet" / "pretrained.onnx" and path.read_bytes() == data
    assert files_in(models_dir / "mobilenet") == ["pretrained.json", "pretrained.onnx"]  # no temp files
    meta = json.loads((models_dir / "mobilenet" / "pretrained.json").read_text())
    assert meta["workload"] == "mobilenet" and meta["weights"] == "pretrained"
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["size"] == len(data)
    assert meta["source"] == entry.url and meta["notes"] == entry.notes
    assert meta["verified"] == ["sha256 (published)"]
    datetime.datetime.fromisoformat(meta["installed"])
    assert installed("mobilenet") == meta
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_md5_only_entry_is_verified_through_a_redirect(server: Any, models_dir: Path) -> None:
    data = payload(seed=2)
    server.files["m.onnx"] = data
    entry = entry_for(server.url + "/moved/m.onnx", data, sha256=None, size=None,
                      md5=hashlib.md5(data).hexdigest())
    download(entry, models_dir / "resnet50", progress=False)
    meta = installed("resnet50")
    assert meta is not None and meta["md5"] == entry.md5 and meta["verified"] == ["md5 (published)"]
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()  # recorded at install time
    assert server.hits == ["/moved/m.onnx", "/files/m.onnx"]


def test_hash_mismatch_installs_nothing_and_keeps_the_old_model(server: Any, models_dir: Path) -> None:
    good, bad = payload(seed=3), payload(seed=4)
    server.files["good.onnx"], server.files["bad.onnx"] = good, bad
    folder = models_dir / "mobilenet"
    with pytest.raises(ModelError) as err:
        download(entry_for(server.url + "/files/bad.onnx", good), folder, progress=False)
    msg = str(err.value)
    assert server.url + "/files/bad.onnx" in msg and hashlib.sha256(good).hexdigest() in msg
    assert "nothing was installed" in msg and "\n" not in msg
    assert_untouched(models_dir, "mobilenet")
    download(entry_for(server.url + "/files/good.onnx", good), folder, progress=False)
    before = (folder / "pretrained.json").read_text()
    with pytest.raises(ModelError):
        download(entry_for(server.url + "/files/bad.onnx", good), folder, progress=False)
    assert (folder / "pretrained.onnx").read_bytes() == good and (folder / "pretrained.json").read_text() == before
    assert files_in(folder) == ["pretrained.json", "pretrained.onnx"]


def test_http_404_is_a_clear_error(server: Any, models_dir: Path) -> None:
    entry = entry_for(server.url + "/files/missing.onnx", b"x")
    with pytest.raises(ModelError, match=r"HTTP 404 .*missing\.onnx.*nothing was installed"):
        download(entry, models_dir / "mobilenet", progress=False)
    assert_untouched(models_dir, "mobilenet")


def test_unreachable_server_is_a_clear_error(models_dir: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = entry_for("http://127.0.0.1:{}/m.onnx".format(port), b"x")
    with pytest.raises(ModelError, match="cannot download"):
        download(entry, models_dir / "mobilenet", progress=False, timeout=5)


@pytest.mark.parametrize("kind", ["cut", "cutnolen"])
def test_connection_closed_half_way_installs_nothing(server: Any, models_dir: Path, kind: str) -> None:
    data = payload(seed=5)
    server.files["m.onnx"] = data
    entry = entry_for(server.url + "/{}/m.onnx".format(kind), data, size=None)
    with pytest.raises(ModelError, match="closed after|SHA-256"):
        download(entry, models_dir / "mobilenet", progress=False)
    assert_untouched(models_dir, "mobilenet")
    assert installed("mobilenet") is None


def test_size_mismatch_is_refused_before_reading(server: Any, models_dir: Path) -> None:
    data = payload(seed=6)
    server.files["m.onnx"] = data
    with pytest.raises(ModelError, match="offers {} bytes, expected 12".format(len(data))):
        download(entry_for(server.url + "/files/m.onnx", data, size=12), models_dir / "x", progress=False)
    assert_untouched(models_dir, "x")


def test_interrupt_mid_download_leaves_nothing(server: Any, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(3_000_000, seed=7)
    server.files["m.onnx"] = data

    def interrupt(self: Any, n: int = 1) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        download(entry_for(server.url + "/files/m.onnx", data), models_dir / "mobilenet", progress=True)
    assert_untouched(models_dir, "mobilenet")


def test_no_checksum_needs_sha256_from_the_user(server: Any, models_dir: Path) -> None:
    data = payload(seed=8)
    server.files["m.onnx"] = data
    entry = entry_for(server.url + "/files/m.onnx", data, sha256=None, size=None,
                      checksum_origin="none published; pass --sha256")
    with pytest.raises(ModelError, match="no published checksum.*--sha256"):
        download(entry, models_dir / "mobilenet", progress=False)
    assert server.hits == []  # refused before any request
    with pytest.raises(ModelError, match="64 hexadecimal"):
        download(entry, models_dir / "mobilenet", progress=False, sha256="abc")
    download(entry, models_dir / "mobilenet", progress=False, sha256=hashlib.sha256(data).hexdigest().upper())
    assert installed("mobilenet")["verified"] == ["sha256 (given with --sha256)"]  # type: ignore[index]
    with pytest.raises(ModelError, match="contradicts"):
        download(entry_for(entry.url, data), models_dir / "mobilenet", progress=False, sha256="0" * 64)


def test_install_skips_a_verified_copy_unless_forced(server: Any, models_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = payload(seed=9)
    server.files["m.onnx"] = data
    monkeypatch.setattr(pretrained, "MANIFEST", (entry_for(server.url + "/files/m.onnx", data),))
    path, existing = install("mobilenet", progress=False)
    assert existing is None and path.read_bytes() == data and len(server.hits) == 1
    path, existing = install("mobilenet", progress=False)
    assert existing is not None and len(server.hits) == 1
    install("mobilenet", force=True, progress=False)
    assert len(server.hits) == 2
    path.write_bytes(b"corrupted")  # no longer matches its sidecar: installed again without --force
    install("mobilenet", progress=False)
    assert len(server.hits) == 3 and path.read_bytes() == data


# ---------------------------------------------------------------- the command line


def run_cli(*args: str, models: Path) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, MLMARK_MODELS=str(models), no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    return subprocess.run([sys.executable, str(SCRIPT)] + list(args), cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_installs_and_fails_with_one_line(server: Any, tmp_path: Path) -> None:
    models = tmp_path / "models"
    mobilenet = payload(seed=10)
    server.files["mobilenet_v1_1.0_224.onnx"] = mobilenet
    server.files["resnet50_v1.onnx"] = payload(seed=11)  # not the published file: its MD5 differs
    base = server.url + "/files"

    ok = run_cli("--workload", "mobilenet", "--base-url", base, "--sha256", hashlib.sha256(mobilenet).hexdigest(),
                 "-q", models=models)
    assert ok.returncode == 0, ok.stderr
    assert "mobilenet: installed" in ok.stdout and (models / "mobilenet" / "pretrained.onnx").read_bytes() == mobilenet
    assert json.loads((models / "mobilenet" / "pretrained.json").read_text())["source"] == \
        base + "/mobilenet_v1_1.0_224.onnx"

    bad = run_cli("--workload", "resnet50", "--base-url", base, "-q", models=models)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("get_models: error: " + base + "/resnet50_v1.onnx")
    assert "MD5" in lines[0] and "Traceback" not in bad.stderr
    assert_untouched(models, "resnet50")

    missing = run_cli("--workload", "ssdmobilenet", "--base-url", server.url + "/nothing-here", "-q", "-v",
                      models=models)
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr and "Traceback" in missing.stderr  # -v
    assert_untouched(models, "ssdmobilenet")

    unverified = run_cli("--workload", "mobilenet", "resnet50", "--sha256", "0" * 64, models=models)
    assert unverified.returncode == 2 and len(unverified.stderr.strip().splitlines()) == 1
