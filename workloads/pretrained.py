"""Official pretrained ONNX models: where they come from, their published checksums, and a verified install.

`utility/get_models.py` is the command line over this module. A model is streamed into a temporary
file next to its destination, hashed while it arrives, checked against every published checksum,
then moved into place with os.replace and described by a JSON sidecar; a failed, corrupt or
interrupted download leaves nothing behind. A file with no published checksum is only installed
when the user supplies its SHA-256 (--sha256): nothing unverified is ever installed.

Layouts differ from the project's generated models (see each entry's notes); the model store
checks a model's inputs and outputs when it loads one.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import signal
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from core.errors import ModelError
from core.fileio import atomic_path, atomic_write_json, sha256_file
from core.paths import models_dir
from core.progress import progress as progress_bar

MODEL_NAME = "pretrained.onnx"
SIDECAR_NAME = "pretrained.json"
CHUNK = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ManifestEntry:
    """One downloadable model: where it is, how to verify it, and what its interface is."""

    workload: str
    source: str  # short name for --source
    url: str
    description: str
    notes: str  # input layout/dtype/preprocessing and output convention
    checksum_origin: str  # where the checksum below was published, or why there is none
    sha256: Optional[str] = None
    md5: Optional[str] = None
    size: Optional[int] = None
    default: bool = True

    @property
    def filename(self) -> str:
        """The file's name at its URL (what --base-url mirrors must serve)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def verifiable(self) -> bool:
        """True when a published checksum exists, so no --sha256 is needed."""
        return bool(self.sha256 or self.md5)


_MLPERF_README = "mlcommons/inference vision/classification_and_detection/README.md"

MANIFEST: Tuple[ManifestEntry, ...] = (
    ManifestEntry(
        workload="resnet50", source="mlperf",
        url="https://zenodo.org/record/4735647/files/resnet50_v1.onnx",
        description="ResNet-50 v1.5, MLPerf Inference reference ONNX (opset 11), 76.456% top-1",
        md5="f6a4da60cd5f084d97efc2c1ddb10beb",
        checksum_origin="MD5 from mlcommons/cm4mlops script/get-ml-model-resnet50/_cm.yaml (variation "
                        "onnx,opset-11); URL from " + _MLPERF_README,
        notes="MLPerf's resnet50_v1.pb (TF) converted by tf2onnx with --inputs-as-nchw: input 'input_tensor:0' "
              "float32 [N, 3, 224, 224] NCHW, RGB, per-channel mean 123.68/116.78/103.94 subtracted, not "
              "scaled. Outputs per MLPerf's convert-to-onnx.sh: 'ArgMax:0' (int64 [N]) then "
              "'softmax_tensor:0' (float32 [N, 1001], index 0 = background). The project's own resnet50 "
              "has one logits output; this layout is checked when the model is loaded."),
    ManifestEntry(
        workload="mobilenet", source="mlperf",
        url="https://zenodo.org/record/4735651/files/mobilenet_v1_1.0_224.onnx",
        description="MobileNet v1 1.0 224, MLPerf Inference reference ONNX (opset 11), 71.676% top-1",
        checksum_origin="none published in the MLPerf README or the MLCommons CK/CM model scripts (the "
                        "zenodo record page shows an MD5 to compare with)",
        notes="TF mobilenet_v1_1.0_224 (2018_08_02) converted by tf2onnx with --inputs-as-nchw: input "
              "'input:0' float32 [N, 3, 224, 224] NCHW, RGB scaled to [-1, 1] (x / 127.5 - 1). Output "
              "'MobilenetV1/Predictions/Reshape_1:0' float32 [N, 1001] softmax, index 0 = background. "
              "The project's own mobilenet differs in names and layout; it is checked when loaded."),
    ManifestEntry(
        workload="ssdmobilenet", source="onnx-zoo",
        url="https://media.githubusercontent.com/media/onnx/models/8c2e6481462fdd42dd72ad9d9ff6d9d103f2bf97/"
            "vision/object_detection_segmentation/ssd-mobilenetv1/model/ssd_mobilenet_v1_12.onnx",
        description="SSD-MobileNet v1 COCO, ONNX Model Zoo ssd_mobilenet_v1_12 (opset 12), TF "
                    "ssd_mobilenet_v1_coco_2018_01_28 converted by tf2onnx",
        sha256="b8fba5e404077d4048d27fcd1667e85e27e192eb9bf51e696c46a3acd7d21058", size=29461455,
        checksum_origin="SHA-256 and size from the Git LFS pointer of onnx/models "
                        "vision/object_detection_segmentation/ssd-mobilenetv1/model/ssd_mobilenet_v1_12.onnx "
                        "at commit 8c2e6481462fdd42dd72ad9d9ff6d9d103f2bf97 (the URL is pinned to it)",
        notes="Input 'image_tensor:0' uint8 [N, H, W, 3] NHWC RGB, 0..255, no normalisation (feed 300x300). "
              "TF's resize, box decoding and NMS (score 0.3, IoU 0.6, 100 detections) are inside the graph: "
              "outputs num_detections, detection_boxes [N, 100, 4] (ymin, xmin, ymax, xmax normalised), "
              "detection_scores, detection_classes (float, COCO ids 1..90). The project's ssdmobilenet "
              "expects raw boxes/scores and does post-processing itself; this layout is checked when loaded."),
    ManifestEntry(
        workload="ssdmobilenet", source="mlperf", default=False,
        url="https://zenodo.org/record/4735652/files/ssd_mobilenet_v1_coco_2018_01_28.onnx",
        description="SSD-MobileNet v1 COCO, MLPerf Inference reference ONNX (opset 11), mAP 0.23",
        checksum_origin="none published in the MLPerf README or the MLCommons CK/CM model scripts (the "
                        "zenodo record page shows an MD5 to compare with)",
        notes="TF ssd_mobilenet_v1_coco_2018_01_28 frozen graph converted by tf2onnx: input 'image_tensor:0' "
              "uint8 [N, 300, 300, 3] NHWC RGB; TF post-processing embedded (score 0.3, IoU 0.6, 100 "
              "detections); outputs num_detections, detection_boxes, detection_scores, detection_classes "
              "(COCO ids 1..90). Checked when loaded, as the onnx-zoo entry."),
)


def manifest_workloads() -> List[str]:
    """Workloads with at least one manifest entry, in manifest order."""
    seen: List[str] = []
    for e in MANIFEST:
        if e.workload not in seen:
            seen.append(e.workload)
    return seen


def get_entry(workload: str, source: Optional[str] = None) -> ManifestEntry:
    """The manifest entry of a workload: its default one, or the one named by source."""
    entries = [e for e in MANIFEST if e.workload == workload]
    if not entries:
        raise ModelError("no pretrained model is known for workload '{}' (known: {})".format(
            workload, ", ".join(manifest_workloads())))
    for e in entries:
        if (source is None and e.default) or e.source == source:
            return e
    raise ModelError("workload '{}' has no source '{}' (sources: {})".format(
        workload, source, ", ".join(e.source for e in entries)))


def download(entry: ManifestEntry, dest_dir: Path, base_url: Optional[str] = None, progress: bool = True,
             sha256: Optional[str] = None, timeout: float = TIMEOUT_S) -> Path:
    """Download entry into dest_dir/pretrained.onnx, verified, with its sidecar; returns the model's path."""
    expected_sha = _normalise_hex(sha256, 64, "--sha256") if sha256 else entry.sha256
    if sha256 and entry.sha256 and expected_sha != entry.sha256:
        raise ModelError("{}: --sha256 {} contradicts the published SHA-256 {} ({})".format(
            entry.filename, expected_sha, entry.sha256, entry.checksum_origin))
    if not expected_sha and not entry.md5:
        raise ModelError("{}: no published checksum ({}); check the file yourself and give its SHA-256 with "
                         "--sha256".format(entry.url, entry.checksum_origin))
    url = base_url.rstrip("/") + "/" + entry.filename if base_url else entry.url
    dest_dir = Path(dest_dir)
    new_dirs = [d for d in [dest_dir] + list(dest_dir.parents) if not d.exists()]
    hold = _HoldInterrupt()
    try:
        with hold:
            with atomic_path(dest_dir / MODEL_NAME, suffix=".part") as tmp:
                with open(str(tmp), "wb") as out:
                    got_sha, got_md5, size = _fetch(url, entry, out, progress, timeout)
                problems = []
                if entry.size is not None and size != entry.size:
                    problems.append("{} bytes, expected {}".format(size, entry.size))
                if expected_sha and got_sha != expected_sha:
                    problems.append("SHA-256 {}, expected {}".format(got_sha, expected_sha))
                if entry.md5 and got_md5 != entry.md5:
                    problems.append("MD5 {}, expected {}".format(got_md5, entry.md5))
                if problems:
                    raise ModelError("{}: got {}; nothing was installed".format(url, "; ".join(problems)))
                verified = []
                if expected_sha:
                    verified.append("sha256 (given with --sha256)" if sha256 else "sha256 (published)")
                if entry.md5:
                    verified.append("md5 (published)")
                meta = {"workload": entry.workload, "weights": "pretrained", "sha256": got_sha, "source": url,
                        "official_url": entry.url, "manifest_source": entry.source, "size": size,
                        "verified": verified, "checksum_origin": entry.checksum_origin,
                        "installed": datetime.datetime.now().isoformat(timespec="seconds"),
                        "description": entry.description, "notes": entry.notes}
                if entry.md5:
                    meta["md5"] = got_md5
                hold.start()  # the model and its sidecar change together or not at all
            atomic_write_json(dest_dir / SIDECAR_NAME, meta)
        return dest_dir / MODEL_NAME
    except BaseException:
        for d in new_dirs:  # folders made for this download go too, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def installed(workload: str, models: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The sidecar of a workload's installed pretrained model, if the model matches it; else None."""
    folder = (models or models_dir()) / workload
    model, sidecar = folder / MODEL_NAME, folder / SIDECAR_NAME
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not model.is_file() or meta.get("sha256") != sha256_file(model):
        return None
    return meta


def install(workload: str, source: Optional[str] = None, force: bool = False, base_url: Optional[str] = None,
            sha256: Optional[str] = None, progress: bool = True,
            models: Optional[Path] = None) -> Tuple[Path, Optional[Dict[str, Any]]]:
    """Install a workload's pretrained model unless a verified copy is there; (path, sidecar if skipped)."""
    entry = get_entry(workload, source)
    folder = (models or models_dir()) / workload
    current = None if force else installed(workload, models)
    if current is not None and current.get("official_url") == entry.url and (
            not sha256 or current.get("sha256") == sha256.strip().lower()):
        return folder / MODEL_NAME, current
    return download(entry, folder, base_url=base_url, progress=progress, sha256=sha256), None


def _fetch(url: str, entry: ManifestEntry, out: Any, progress: bool, timeout: float) -> Tuple[str, str, int]:
    """Stream url into out, hashing as it arrives; (sha256, md5, bytes)."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    size = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "mlmark-get-models"})
        with urllib.request.build_opener(_Redirects).open(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and entry.size is not None and total != entry.size:
                raise ModelError("{}: the server offers {} bytes, expected {} ({}); nothing was installed".format(
                    url, total, entry.size, entry.filename))
            with progress_bar("  " + entry.filename, total, scale_bytes=True, enabled=None if progress else False) as meter:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    sha.update(block)
                    md5.update(block)
                    size += len(block)
                    meter.update(len(block))
    except urllib.error.HTTPError as exc:
        raise ModelError("{}: HTTP {} {} (expected {}); nothing was installed".format(
            url, exc.code, exc.reason, entry.filename)) from None
    except urllib.error.URLError as exc:
        raise ModelError("{}: cannot download ({}); nothing was installed".format(url, exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, timeouts, bad URLs or responses
        raise ModelError("{}: download failed after {} bytes ({}); nothing was installed".format(
            url, size, str(exc) or type(exc).__name__)) from None
    if total is not None and size != total:
        raise ModelError("{}: the connection closed after {} of {} bytes; nothing was installed".format(
            url, size, total))
    return sha.hexdigest(), md5.hexdigest(), size


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows 308 redirects too, which urllib only learnt in Python 3.11 (zenodo moved its URLs)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        return super().redirect_request(req, fp, 307 if code == 308 else code, msg, headers, newurl)

    http_error_308 = urllib.request.HTTPRedirectHandler.http_error_302


def _normalise_hex(value: str, length: int, what: str) -> str:
    v = value.strip().lower()
    if len(v) != length or any(ch not in "0123456789abcdef" for ch in v):
        raise ModelError("{} must be {} hexadecimal digits, got '{}'".format(what, length, value))
    return v


class _HoldInterrupt:
    """Once start() is called, hold Ctrl-C back until the block ends (main thread only, where Python delivers it)."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._caught: List[int] = []
        self._active = False

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda signum, frame: self._caught.append(signum))
            self._active = True

    def __enter__(self) -> "_HoldInterrupt":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
            self._active = False
            if self._caught:
                raise KeyboardInterrupt
