"""Per-workload image preprocessing (OpenCV), parallel decoding, and the on-disk cache of its output.

A workload's `PreprocessSpec` is the one definition of its input pipeline; accuracy runs, every
target and INT8 calibration all go through it. It has two stages:

1. Geometry (`PreprocessSpec.pixels`): decode, crop and resize with OpenCV into uint8 [h, w, 3].
   This is the expensive part, and what the cache stores (planar RGB, [3, h, w] per image, so
   that feeding an NCHW model reads contiguous planes).
2. Normalisation (`PreprocessSpec.normalize`): (pixel - mean) * scale per channel, in the model's
   dtype and layout (NCHW or NHWC). A uint8 model gets the pixels themselves, since such models
   (the official TF-exported detectors) normalise inside their graph. This costs about 0.05 ms an
   image and is done as batches are fed.

Each spec names its resampling, and each maps onto one OpenCV call:

- bilinear "tf1": TF 1.x `resize_bilinear(align_corners=False)`, source = destination * scale,
  two taps per axis, no antialiasing: `cv2.warpAffine` with that scale matrix (INTER_LINEAR,
  inverse map, replicated border, which is TF's clamp at the last pixel). OpenCV 5 computes the
  source positions in floating point: within one grey level of TF. OpenCV 4.x rounds them to
  1/32 pixel, which moves a value by up to 1/64 of the step between neighbouring pixels: within
  one level on photographs except at the sharpest edges, up to 7 levels on random noise.
  `cv2.resize` cannot express this convention (it samples at half-pixel centres).
- bilinear "half_pixel": `cv2.resize` INTER_LINEAR, source = (destination + 0.5) * scale - 0.5.
- area: `cv2.resize` INTER_AREA, as MLPerf's ResNet-50 pipeline calls it: each output pixel the
  mean of the input area it covers when shrinking, OpenCV's own two-tap rule when enlarging.

A shorter-side crop (MLPerf's resize, then centre crop) resizes only the part of the image that
the crop reads, with the whole image's ratios: the same pixels for less work (`_resize_leading`).

Pillow's resize is not used because its bilinear filter antialiases when it shrinks (it widens
its support with the scale), unlike TF's and OpenCV's. JPEGs are decoded with `cv2.imdecode`
(libjpeg-turbo, accurate integer IDCT: the same pixels as Pillow, which is about 20 % slower;
CMYK JPEGs differ by one level in the colour conversion). EXIF orientation is ignored, as
TensorFlow's and Pillow's decoders do. What OpenCV cannot decode, and a JPEG that does not end
in its end-of-image marker (OpenCV 4.x returns a truncated JPEG grey-filled, without an error), goes
to Pillow, which decodes it or says why not. The worker processes run OpenCV on
cores / processes threads each, so that they do not oversubscribe the cores.

Storing uint8 after the geometry stage rounds each value by at most half a grey level before
normalisation. OpenCV-based pipelines (MLPerf's) round there too; TF-slim's float pipeline does
not, and the difference (at most 0.0039 on a [-1, 1] input) is far below anything that changes a
prediction. It makes the cache a quarter of the size of float32 tensors (750 MB rather than 3 GB
for 5,000 ImageNet images; that matters on a Jetson's eMMC) and lets one cache serve float32,
float16 and uint8 models in either layout.

The cache: one folder per key under the datasets' `.cache/`, holding `pixels.npy` (uint8
[N, 3, h, w], read back memory-mapped) and `meta.json`. The key is a SHA-256 of the dataset's
identity (label or annotation file hash), the subset (the files with their sizes and modification
times), the spec, the stored dtype and layout and the OpenCV version (4.x and 5.x resample
differently), so changing any of them misses the cache. An entry is built in a temporary folder
and renamed into place once complete: an interrupted or failed build leaves nothing that a later
run could take for a cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core.errors import DatasetError, ModelError
from core.fileio import atomic_write_json
from core.progress import progress

log = logging.getLogger("mlmark.preprocess")

CACHE_FORMAT = 3  # bump when the cache's files or their meaning change (2: OpenCV resampling; 3: checksum)
STORED_DTYPE = "uint8"
STORED_LAYOUT = "NCHW"
PIXELS_FILE = "pixels.npy"
META_FILE = "meta.json"
_STALE_TMP_S = 24 * 3600  # leftovers of a killed build older than this are removed
_MAX_CHUNK = 32  # images per worker task: small enough for a smooth progress bar and a quick Ctrl-C

GEOMETRIES = ("central_crop", "shorter_side_crop", "stretch")
INTERPOLATIONS = ("bilinear", "area")
CENTERS = ("tf1", "half_pixel")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class PreprocessSpec:
    """One workload's input pipeline: crop/resize geometry, resampling, per-channel (x - mean) * scale, RGB."""

    name: str
    size: Tuple[int, int]  # output (height, width)
    geometry: str  # central_crop: crop a central fraction, resize it to size (TF-slim)
    #                shorter_side_crop: resize the shorter side, keep the aspect, centre-crop size (MLPerf)
    #                stretch: resize the whole image to size, aspect not kept (TF OD API fixed_shape_resizer)
    interpolation: str = "bilinear"
    centers: str = "half_pixel"  # bilinear sampling convention, see the module docstring
    central_fraction: float = 1.0  # central_crop only
    shorter_side: int = 0  # shorter_side_crop only
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGB
    scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB
    version: int = 1  # bump when this spec's output changes (for every spec at once: CACHE_FORMAT)
    source: str = field(default="", compare=False)  # where the definition comes from (documentation only)

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES or self.interpolation not in INTERPOLATIONS or self.centers not in CENTERS:
            raise ValueError("bad preprocessing spec {!r}".format(self))

    def key(self) -> Dict[str, Any]:
        """Every field that changes the output (what the cache key covers)."""
        d = asdict(self)
        d.pop("source")
        return d

    def describe(self) -> str:
        """One line for logs and results."""
        h, w = self.size
        if self.geometry == "central_crop":
            geo = "central crop {:g} %, resize to {}x{}".format(self.central_fraction * 100, h, w)
        elif self.geometry == "shorter_side_crop":
            geo = "shorter side to {}, centre crop {}x{}".format(self.shorter_side, h, w)
        else:
            geo = "resize to {}x{}".format(h, w)
        return "{}: {} ({} {}), RGB, (x - {}) * {}".format(
            self.name, geo, self.interpolation, self.centers if self.interpolation == "bilinear" else "",
            _fmt3(self.mean), _fmt3(self.scale)).replace(" )", ")")

    # ------------------------------------------------------------------ geometry (cached stage)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """Crop and resize a decoded image [H, W, 3] uint8 into [h, w, 3] uint8 (channel order kept)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError("expected an image [H, W, 3], got shape {}".format(list(image.shape)))
        if image.dtype != np.uint8 or image.strides[1:] != (3, 1):  # OpenCV takes rows with contiguous pixels
            image = np.ascontiguousarray(image, dtype=np.uint8)
        in_h, in_w = image.shape[:2]
        out_h, out_w = self.size
        if self.geometry == "central_crop":
            # tf.image.central_crop: offset int((n - n * fraction) / 2), size n - 2 * offset
            y0, x0 = int((in_h - in_h * self.central_fraction) / 2), int((in_w - in_w * self.central_fraction) / 2)
            return self._resize(image[y0:in_h - y0, x0:in_w - x0], out_h, out_w)
        if self.geometry == "stretch":
            return self._resize(image, out_h, out_w)
        full_h, full_w = _shorter_side_size(in_h, in_w, self.shorter_side)
        if full_h < out_h or full_w < out_w:
            raise ValueError("shorter side {} is smaller than the crop {}".format(self.shorter_side, self.size))
        # MLPerf's centre crop of the resized image: offset int((resized - crop) / 2)
        top, left = (full_h - out_h) // 2, (full_w - out_w) // 2
        return self._resize(image, full_h, full_w, (top + out_h, left + out_w))[top:top + out_h, left:left + out_w]

    def _resize(self, image: np.ndarray, h: int, w: int, needed: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """image resized to [h, w] with this spec's resampling (see the module docstring).

        With `needed` = (rows, cols), only the first rows x cols of the result are asked for: what lies
        beyond may be missing or wrong.
        """
        cv2 = opencv()
        in_h, in_w = image.shape[:2]
        if in_h == in_w == 1:  # one pixel resamples to itself; OpenCV 4.5's cv2.resize refuses a 1x1 image
            return np.full((h, w, 3), image[0, 0], dtype=np.uint8)
        if self.interpolation == "bilinear" and self.centers == "tf1":
            return self._warp_tf1(image, h, w)
        flag = cv2.INTER_AREA if self.interpolation == "area" else cv2.INTER_LINEAR
        # Shrinking by a fractional factor with INTER_AREA, OpenCV runs the same float arithmetic on
        # uint8 and float32 images (the same pixels once rounded), the float32 one 10-25 % faster
        # with the conversions (whole-number factors take a faster integer path, kept as is).
        as_float = flag == cv2.INTER_AREA and in_h >= h and in_w >= w and bool(in_h % h or in_w % w)
        out = None
        if needed is not None and needed != (h, w):
            out = _resize_leading(cv2, image, h, w, needed, flag, as_float)
        if out is None:
            out = cv2.resize(np.float32(image) if as_float else image, (w, h), interpolation=flag)
        return cv2.convertScaleAbs(out) if as_float else out

    def _warp_tf1(self, image: np.ndarray, h: int, w: int) -> np.ndarray:
        cv2 = opencv()
        in_h, in_w = image.shape[:2]
        source_of = np.array([[in_w / w, 0.0, 0.0], [0.0, in_h / h, 0.0]])  # TF 1.x: source = destination * scale
        # On four channels OpenCV 5's warpAffine takes half the time it takes on three, conversion
        # included; the pixels are the same.
        return cv2.warpAffine(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA), source_of, (w, h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)[:, :, :3]

    # ------------------------------------------------------------------ normalisation (per batch)

    def normalize(self, planes: np.ndarray, dtype: Any = "float32", layout: str = "NCHW") -> np.ndarray:
        """uint8 planes [N, 3, h, w] -> the model's input: (x - mean) * scale in dtype and layout (uint8: as is)."""
        if layout not in LAYOUTS:
            raise ValueError("layout must be NCHW or NHWC, got {}".format(layout))
        x = planes.transpose(0, 2, 3, 1) if layout == "NHWC" else planes
        dt = np.dtype(dtype)
        if dt == np.uint8:
            return np.ascontiguousarray(x)
        shape = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
        # One pass converts, subtracts and (for NHWC) transposes: transposing uint8 is 4x cheaper than
        # float32, and the output is written once. The pass is memory-bound, so a scale of 1 is skipped.
        out = np.subtract(x, np.asarray(self.mean, dtype=np.float32).reshape(shape), dtype=np.float32, order="C")
        if any(v != 1.0 for v in self.scale):
            out *= np.asarray(self.scale, dtype=np.float32).reshape(shape)
        return out if dt == np.float32 else out.astype(dt)


def _resize_leading(cv2: Any, image: np.ndarray, h: int, w: int, needed: Tuple[int, int], flag: int,
                    as_float: bool) -> Optional[np.ndarray]:
    """The first needed = (rows, cols) pixels of cv2.resize(image, (w, h)), resampling only the source they read.

    cv2.resize places output pixel k at source k * in / out (plus the half-pixel shift) counted from
    the first pixel, and given fx and fy instead of a size it uses them as that ratio. So the source
    cut after the last pixel that the needed outputs read, resized with the full image's ratios,
    gives those outputs bit for bit, from less work: MLPerf's centre crop reads about 80 % of the
    image. (The cut cannot be made at the start: output pixels start at fractions of a source pixel.)
    Outputs after the needed ones read a cut source: they may be wrong. None when the cut saves nothing.
    """
    in_h, in_w = image.shape[:2]
    rows, cols = needed
    # +1: the last needed output reads up to its end position, and linear interpolation one further
    src_h = min(in_h, int(math.ceil(rows * in_h / h)) + 1)
    src_w = min(in_w, int(math.ceil(cols * in_w / w)) + 1)
    if (src_h, src_w) == (in_h, in_w) or min(src_h, src_w) < 2:
        return None
    part = image[:src_h, :src_w]
    out = cv2.resize(np.float32(part) if as_float else part, None, fx=w / in_w, fy=h / in_h, interpolation=flag)
    if out.shape[0] < rows or out.shape[1] < cols:  # cv2 rounds the size it makes; never short, but checked
        return None
    return out


def _fmt3(v: Sequence[float]) -> str:
    if len(set(v)) == 1:
        return "{:.6g}".format(v[0])
    return "[{}]".format(", ".join("{:.6g}".format(x) for x in v))


def _shorter_side_size(h: int, w: int, side: int) -> Tuple[int, int]:
    """MLPerf's resize_with_aspectratio: the shorter side becomes `side`, the other int(side * long / short)."""
    if h > w:
        return int(side * h / w), side
    return side, int(side * w / h)


# ---------------------------------------------------------------------- decoding


def opencv() -> Any:
    """The cv2 module; a DatasetError saying what to install where it cannot be imported."""
    try:
        import cv2
    except ImportError as exc:  # absent, or built for another numpy
        raise DatasetError("preprocessing needs OpenCV's Python module cv2, which cannot be imported ({}): on a "
                           "Jetson use JetPack's (a virtual environment sees it when created with "
                           "--system-site-packages), elsewhere pip install -e '.[opencv]' (opencv-python-headless)".format(
                               str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)) from None
    return cv2


def opencv_version() -> str:
    """OpenCV's version (part of the cache key: OpenCV 4.x and 5.x resample TF 1.x bilinear differently)."""
    return str(opencv().__version__)


def decode_bgr(path: Any) -> np.ndarray:
    """Decode an image file into BGR uint8 [H, W, 3], OpenCV's order (grey, CMYK, palette, alpha converted)."""
    cv2 = opencv()
    data = np.fromfile(str(path), dtype=np.uint8)
    image = None
    if data.size and not _truncated_jpeg(data):
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error:
            image = None
    if image is None:  # not something OpenCV decodes: Pillow decodes it or says what is wrong with it
        image = np.ascontiguousarray(_decode_pillow(path)[:, :, ::-1])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("decoded to shape {}".format(list(image.shape)))
    return image


def decode_rgb(path: Any) -> np.ndarray:
    """Decode an image file into RGB uint8 [H, W, 3]."""
    return np.ascontiguousarray(decode_bgr(path)[:, :, ::-1])


def _truncated_jpeg(data: np.ndarray) -> bool:
    """A JPEG without its end-of-image marker, which OpenCV 4.x decodes grey-filled without an error."""
    return bytes(data[:2]) == b"\xff\xd8" and not bytes(data[-16:]).rstrip(b"\0").endswith(b"\xff\xd9")


def _decode_pillow(path: Any) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)


def rgb_planes(image_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A decoded BGR image through spec's geometry as planar RGB uint8 [3, h, w] (a cache row)."""
    return np.ascontiguousarray(spec.pixels(image_bgr).transpose(2, 0, 1)[::-1])


def _decode_error(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return "{}: {}".format(type(exc).__name__, text) if text else type(exc).__name__


def preprocess_file(path: Any, spec: PreprocessSpec, dtype: Any = "float32", layout: str = "NCHW") -> np.ndarray:
    """One image file as the model's input [1, ...] (e.g. for INT8 calibration); raises on a corrupt file."""
    return spec.normalize(rgb_planes(decode_bgr(path), spec)[None], dtype, layout)


def preprocess_files(paths: Sequence[Any], spec: PreprocessSpec, dtype: Any = "float32", layout: str = "NCHW",
                     workers: Optional[int] = None) -> np.ndarray:
    """Several image files as one batch of model input, decoded in parallel, not cached (calibration sets)."""
    with tempfile.TemporaryDirectory(prefix="mlmark-pre-") as tmp:
        npy = Path(tmp) / PIXELS_FILE
        h, w = spec.size
        np.lib.format.open_memmap(str(npy), mode="w+", dtype=np.uint8, shape=(len(paths), 3, h, w)).flush()
        status = _run_workers(npy, [str(p) for p in paths], spec, workers, None)
        bad = [(paths[i], why) for i, why, _, _ in status if why]
        if bad:
            raise DatasetError("{}: cannot decode ({})".format(bad[0][0], bad[0][1]))
        pixels = np.load(str(npy), mmap_mode="r")
        return spec.normalize(np.asarray(pixels), dtype, layout)


# ---------------------------------------------------------------------- model input format


def input_format(shape: Sequence[Any], dtype: str, size: Tuple[int, int], model: str = "the model") -> Tuple[str, str]:
    """The dtype and layout (NCHW or NHWC) to feed a model input of this shape and dtype; ModelError if unusable."""
    if len(shape) != 4:
        raise ModelError("{}: expects an image input of rank 4, the input has shape {}".format(model, list(shape)))
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8)):
        raise ModelError("{}: input dtype {} is not supported for accuracy (float32, float16 or uint8)".format(
            model, dt.name))

    def fixed(d: Any, want: int) -> bool:
        return isinstance(d, int) and d == want

    def fits(d: Any, want: int) -> bool:
        return not isinstance(d, int) or d <= 0 or d == want

    h, w = size
    if fixed(shape[1], 3) and fits(shape[2], h) and fits(shape[3], w):
        layout = "NCHW"
    elif fixed(shape[3], 3) and fits(shape[1], h) and fits(shape[2], w):
        layout = "NHWC"
    elif not any(isinstance(d, int) and d > 0 for d in shape[1:]):
        layout = "NCHW"  # fully dynamic: the project's own models are NCHW
    else:
        raise ModelError("{}: input shape {} is neither [N, 3, {}, {}] nor [N, {}, {}, 3]".format(
            model, list(shape), h, w, h, w))
    return dt.name, layout


# ---------------------------------------------------------------------- the cache


@dataclass
class CachedImages:
    """Preprocessed pixels of a list of images, from the cache or just built into it."""

    pixels: np.ndarray  # uint8 [N, 3, h, w], memory-mapped
    ok: np.ndarray  # bool [N]: False where the image could not be decoded (its row is zeros)
    failures: List[Tuple[int, str]]  # (index, reason) of the images that could not be decoded
    sizes: np.ndarray  # int [N, 2]: decoded (height, width), 0 where not decoded
    key: str
    path: Path
    hit: bool
    seconds: float  # time to load or build
    workers: int = 0  # processes that decoded (0 on a hit)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def files_fingerprint(paths: Sequence[Any]) -> str:
    """SHA-256 over each file's path, size and modification time: changes when any image is replaced."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(str(p))
            h.update("{}\0{}\0{}\n".format(p, st.st_size, st.st_mtime_ns).encode("utf-8", "surrogateescape"))
        except OSError:
            h.update("{}\0missing\n".format(p).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cache_key(paths: Sequence[Any], spec: PreprocessSpec, identity: Mapping[str, Any]) -> str:
    """The cache key of these images (with their dataset identity) under this spec."""
    parts = {"format": CACHE_FORMAT, "identity": dict(identity), "files": files_fingerprint(paths),
             "count": len(paths), "spec": spec.key(), "dtype": STORED_DTYPE, "layout": STORED_LAYOUT,
             "opencv": opencv_version()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def cached_preprocess(paths: Sequence[Any], spec: PreprocessSpec, cache_dir: Path, identity: Mapping[str, Any],
                      tag: str, workers: Optional[int] = None, label: str = "preprocessing") -> CachedImages:
    """The preprocessed pixels of paths: from cache_dir when an entry with the same key exists, else built there."""
    # `tag` names the slot (dataset, spec and subset): once a new entry of a tag is built, the
    # other entries of that tag are stale and removed. `label` titles the progress bar.
    t0 = time.perf_counter()
    key = cache_key(paths, spec, identity)
    final = Path(cache_dir) / "{}-{}".format(_safe(tag), key[:16])
    hit = _load(final, key, len(paths), spec)
    if hit is not None:
        pixels, meta = hit
        log.info("preprocessing cache hit: %s (%d images)", final, len(paths))
        return _cached(pixels, meta, key, final, True, time.perf_counter() - t0, 0)
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return _build(paths, spec, cache_dir, identity, tag, workers, label, key, final, t0)
    except OSError as exc:  # read-only folder, disk full...
        raise DatasetError("cannot write the preprocessing cache in {} ({}): make it writable, or set "
                           "MLMARK_DATASETS to a writable folder that links the datasets".format(
                               cache_dir, exc.strerror or exc)) from None


def _build(paths: Sequence[Any], spec: PreprocessSpec, cache_dir: Path, identity: Mapping[str, Any], tag: str,
           workers: Optional[int], label: str, key: str, final: Path, t0: float) -> CachedImages:
    """Build a cache entry in a temporary folder and rename it into place."""
    _remove_stale_tmp(cache_dir)
    h, w = spec.size
    need = len(paths) * h * w * 3
    free = shutil.disk_usage(str(cache_dir)).free
    if need + (64 << 20) > free:
        raise DatasetError("not enough disk space for the preprocessing cache: {:.2f} GB needed, {:.2f} GB free in "
                           "{} (set MLMARK_DATASETS to a larger disk)".format(need / 1e9, free / 1e9, cache_dir))
    n_workers = _worker_count(len(paths), workers)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-{}-".format(key[:16]), dir=str(cache_dir)))
    try:
        npy = tmp / PIXELS_FILE
        np.lib.format.open_memmap(str(npy), mode="w+", dtype=np.uint8, shape=(len(paths), 3, h, w)).flush()
        with progress(label, len(paths)) as bar:
            status = _run_workers(npy, [str(p) for p in paths], spec, n_workers, bar)
        failures = sorted((i, why) for i, why, _, _ in status if why)
        if len(failures) == len(paths):
            raise DatasetError("none of the {} images could be decoded (first: {}: {})".format(
                len(paths), paths[failures[0][0]], failures[0][1]))
        sizes = [[0, 0]] * len(paths)
        for i, _, ih, iw in status:
            sizes[i] = [ih, iw]
        with open(str(npy), "rb+") as f:
            os.fsync(f.fileno())
        crc, size = file_crc32(npy)
        meta = {"format": CACHE_FORMAT, "key": key, "tag": tag, "identity": dict(identity), "spec": spec.key(),
                "pixels_crc32": crc, "pixels_bytes": size,
                "spec_text": spec.describe(), "opencv": opencv_version(), "dtype": STORED_DTYPE,
                "layout": STORED_LAYOUT, "shape": [len(paths), 3, h, w], "failures": [[i, str(paths[i]), why] for i, why in failures],
                "sizes": sizes, "workers": n_workers, "build_seconds": round(time.perf_counter() - t0, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(tmp / META_FILE, meta)
        _usual_permissions(tmp, tmp / META_FILE)
        if final.exists():  # an unreadable entry under the same key: replace it
            shutil.rmtree(str(final), ignore_errors=True)
        try:
            os.rename(str(tmp), str(final))
        except OSError:
            # Another run committed the same entry meanwhile: use theirs if it is complete.
            shutil.rmtree(str(tmp), ignore_errors=True)
            if _load(final, key, len(paths), spec) is None:
                raise
    except BaseException:
        shutil.rmtree(str(tmp), ignore_errors=True)
        raise
    _prune(cache_dir, tag, final)
    loaded = _load(final, key, len(paths), spec, verify=False)  # just written and checksummed
    if loaded is None:
        raise DatasetError("preprocessing cache {} could not be read back after it was written".format(final))
    pixels, meta = loaded
    seconds = time.perf_counter() - t0
    log.info("preprocessed %d images in %.1f s (%.0f images/s, %d process(es)) into %s", len(paths), seconds,
             len(paths) / max(seconds, 1e-9), n_workers, final)
    return _cached(pixels, meta, key, final, False, seconds, n_workers)


def _usual_permissions(folder: Path, meta: Path) -> None:
    # mkdtemp and the atomic writer create private (0700/0600) files; a cache is shared as the datasets are.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(str(folder), 0o777 & ~mask)
    os.chmod(str(meta), 0o666 & ~mask)


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)[:80] or "cache"


def _cached(pixels: np.ndarray, meta: Dict[str, Any], key: str, path: Path, hit: bool, seconds: float,
            workers: int) -> CachedImages:
    n = pixels.shape[0]
    ok = np.ones(n, dtype=bool)
    failures = [(int(i), str(why)) for i, _, why in meta.get("failures", [])]
    for i, _ in failures:
        ok[i] = False
    return CachedImages(pixels=pixels, ok=ok, failures=failures, sizes=np.asarray(meta["sizes"], dtype=np.int64),
                        key=key, path=path, hit=hit, seconds=seconds, workers=workers)


def _load(folder: Path, key: str, count: int, spec: PreprocessSpec,
          verify: bool = True) -> Optional[Tuple[np.ndarray, Dict[str, Any]]]:
    """A complete cache entry's pixels and meta, or None if absent, foreign or damaged (checksum checked)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        h, w = spec.size
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key or meta.get("shape") != [count, 3, h, w] \
                or len(meta.get("sizes", ())) != count:
            return None
        pixels = np.load(str(folder / PIXELS_FILE), mmap_mode="r")
        if pixels.shape != (count, 3, h, w) or pixels.dtype != np.uint8:
            return None
        if verify and file_crc32(folder / PIXELS_FILE) != (meta.get("pixels_crc32"), meta.get("pixels_bytes")):
            log.warning("preprocessing cache %s is damaged (its pixels do not match the checksum recorded when it was "
                        "built): building it again", folder)
            return None
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return pixels, meta


def file_crc32(path: Path, chunk: int = 8 << 20) -> Tuple[int, int]:
    """(CRC-32, size) of a file, read in chunks.

    CRC-32, not SHA-256: the check guards against an entry damaged or overwritten in place (which
    would score the wrong pixels without a word), not against tampering, and zlib's CRC-32 runs at
    disk speed (2.4 GB/s on one x86 core, against 1.1 GB/s for SHA-256), so verifying a 1.35 GB
    COCO entry costs about what reading it from the disk costs.
    """
    crc, size = 0, 0
    with open(str(path), "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return crc, size


def _prune(cache_dir: Path, tag: str, keep: Path) -> None:
    """Remove the other entries of the same tag: their dataset, subset or spec has changed since."""
    for entry in cache_dir.iterdir():
        if entry == keep or not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            meta = json.loads((entry / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("tag") == tag:
            log.info("removing stale preprocessing cache %s", entry)
            shutil.rmtree(str(entry), ignore_errors=True)


def _remove_stale_tmp(cache_dir: Path) -> None:
    now = time.time()
    for entry in cache_dir.glob(".tmp-*"):
        try:
            if now - entry.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(str(entry), ignore_errors=True)
        except OSError:
            pass


def _worker_count(n: int, workers: Optional[int]) -> int:
    want = available_cores() if workers is None else max(1, int(workers))
    return max(1, min(want, int(math.ceil(n / 8.0))))  # a process per 8 images at least, else it costs more


def _chunks(n: int, workers: int) -> List[Tuple[int, int]]:
    size = max(1, min(_MAX_CHUNK, int(math.ceil(n / (workers * 4.0)))))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _worker_init(threads: int) -> None:
    """Set up a pool process: leave Ctrl-C to the parent, keep freed memory, its share of the cores for OpenCV."""
    # Ctrl-C goes to the whole process group; the parent alone handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_allocator()
    # OpenCV's own thread pool defaults to every core in each process: N processes would run N x cores threads.
    opencv().setNumThreads(threads)


def tune_allocator() -> None:
    """Have glibc keep freed memory in the heap (pool processes; benchmarks comparing with them)."""
    # A fresh process's glibc returns each image's temporaries (the decoded image alone is over
    # 0.5 MB) to the kernel and faults them back in for the next image. Raising the mmap and trim
    # thresholds keeps that memory in the heap.
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 128 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _work_chunk(npy: str, offset: int, paths: Sequence[str], start: int,
                spec: PreprocessSpec) -> List[Tuple[int, str, int, int]]:
    """Decode and preprocess paths into rows start.. of the .npy file; (index, failure reason or '', h, w) each."""
    h, w = spec.size
    row = 3 * h * w
    status = []
    # Plain positioned writes, not a writable memmap: flushing a shared mapping msyncs the whole
    # file, which serialises the workers; the parent fsyncs once at the end.
    with open(npy, "r+b") as f:
        for k, path in enumerate(paths):
            i = start + k
            try:
                image = decode_bgr(path)
            except MemoryError:
                raise
            except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for a corrupt file
                status.append((i, _decode_error(exc), 0, 0))
                continue
            f.seek(offset + i * row)
            f.write(rgb_planes(image, spec).tobytes())
            status.append((i, "", int(image.shape[0]), int(image.shape[1])))
    return status


def _run_workers(npy: Path, paths: Sequence[str], spec: PreprocessSpec, workers: Optional[int],
                 bar: Any) -> List[Tuple[int, str, int, int]]:
    """Fill the .npy file from paths, over a process pool when it pays; the per-image status."""
    opencv()  # a missing cv2 is one error here, not a decoding failure per image or a broken pool
    n_workers = _worker_count(len(paths), workers)
    chunks = _chunks(len(paths), n_workers)
    status: List[Tuple[int, str, int, int]] = []
    offset = int(np.load(str(npy), mmap_mode="r").offset)  # where the .npy header ends
    if n_workers == 1:
        for a, b in chunks:
            status.extend(_work_chunk(str(npy), offset, paths[a:b], a, spec))
            if bar is not None:
                bar.update(b - a)
        return status
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Not fork: the process already runs a target's threads (ONNX Runtime, CUDA), and forking a
    # threaded process can deadlock the child. forkserver forks from a clean single-threaded server.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["workloads.preprocess", "cv2"])  # imported once, not per worker
    else:
        ctx = multiprocessing.get_context("spawn")
    threads = max(1, available_cores() // n_workers)
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,))
    futures = {}
    try:
        futures = {pool.submit(_work_chunk, str(npy), offset, list(paths[a:b]), a, spec): b - a for a, b in chunks}
        for fut in as_completed(futures):
            status.extend(fut.result())
            if bar is not None:
                bar.update(futures[fut])
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
    return status
