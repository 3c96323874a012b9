"""Preprocessing: each spec against its reference pipeline on random sizes, decoding, normalisation, the cache.

References: TF 1.x resize_bilinear by the numpy resampler that OpenCV replaced (kept in
bench/preprocess.py), MLPerf's pre_process_vgg written here from its definition, cv2.resize itself
for the OpenCV conventions, and brute-force loops for a few worked examples.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

import cv2
import numpy as np
import pytest

from core.errors import DatasetError, ModelError
from tests.test_datasets import write_jpeg
from workloads import get_workload
from workloads import preprocess as pre
from workloads.preprocess import PreprocessSpec, cached_preprocess, input_format

MOBILENET = get_workload("mobilenet").preprocess
RESNET = get_workload("resnet50").preprocess
SSD = get_workload("ssdmobilenet").preprocess
REPO = Path(__file__).resolve().parent.parent
# OpenCV 4.x rounds warpAffine's source positions to 1/32 pixel (module docstring of workloads/preprocess.py)
OPENCV_4 = int(cv2.__version__.split(".")[0]) < 5


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_preprocess", str(REPO / "bench" / "preprocess.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


NUMPY = _bench_module()  # the numpy implementation OpenCV replaced: numpy_tf1_resize is the TF 1.x reference

# ---------------------------------------------------------------- references


def tf_central_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    """tf.image.central_crop: offset int((n - n * fraction) / 2) on each side."""
    h, w = img.shape[:2]
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    return img[top:h - top, left:w - left]


def mlperf_pre_process_vgg(rgb: np.ndarray) -> np.ndarray:
    """MLPerf's pre_process_vgg up to the uint8 crop: resize_with_aspectratio (INTER_AREA), then center_crop."""
    # mlcommons/inference vision/classification_and_detection/python/dataset.py, for a 224x224x3 input:
    # the shorter side becomes int(100 * 224 / 87.5) = 256, the other int(256 * long / short).
    height, width = rgb.shape[:2]
    side = int(100.0 * 224 / 87.5)
    if height > width:
        new_w, new_h = side, int(side * height / width)
    else:
        new_h, new_w = side, int(side * width / height)
    if rgb.shape[:2] == (1, 1):  # OpenCV 4.5 refuses to resize 1x1; any resampling repeats the pixel
        img = np.broadcast_to(rgb, (new_h, new_w, 3))
    else:
        img = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    left, right = int((new_w - 224) / 2), int((new_w + 224) / 2)
    top, bottom = int((new_h - 224) / 2), int((new_h + 224) / 2)
    return img[top:bottom, left:right]


def random_sizes(n: int, seed: int, max_aspect: float = 4096.0) -> List[Tuple[int, int]]:
    """n image sizes from 1 to 4096 px a side, kept quick: half photo-sized, half small, one in 40 large."""
    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (1, 2), (4096, 3), (3, 4096), (2048, 4096)]
    while len(sizes) < n:
        u = rng.random()
        if u < 0.025:
            h, w = (int(math.exp(rng.uniform(0, math.log(4096)))) for _ in range(2))
        elif u < 0.5:
            h, w = (int(x) for x in rng.integers(100, 701, size=2))
        else:
            h, w = (int(math.exp(rng.uniform(0, math.log(600)))) for _ in range(2))
        sizes.append((h, w))
    return [s for s in sizes if max(s) / min(s) <= max_aspect][:n]


def photo(h: int, w: int, rng: Any) -> np.ndarray:
    """A photo-like image: a smooth random field plus texture (neighbours at most about 50 levels apart)."""
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(base + rng.integers(-24, 25, size=base.shape, dtype=np.int16), 0, 255).astype(np.uint8)


def noise(h: int, w: int, rng: Any) -> np.ndarray:
    """Random noise: neighbours up to 255 levels apart, the worst case for any resampler."""
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) if a.size else 0


def tf1_tolerance(img: np.ndarray) -> int:
    """One level; on OpenCV 4.x plus its rounding of source positions to 1/32 pixel (1/64 of a step, each axis)."""
    if not OPENCV_4:
        return 1
    i = img.astype(np.int16)
    step = max(int(np.abs(np.diff(i, axis=a)).max(initial=0)) for a in (0, 1))
    return 1 + int(math.ceil(2 * step / 64))


# ---------------------------------------------------------------- each spec against its reference, 400 random sizes


@pytest.mark.parametrize("content", ["photo", "noise"])
def test_tf1_bilinear_is_tf1_resize_bilinear(content: str) -> None:
    rng = np.random.default_rng(1)
    make = photo if content == "photo" else noise
    worst, shrunk, enlarged = 0, 0, 0
    for h, w in random_sizes(400, seed=2):
        out_h, out_w = (int(math.exp(rng.uniform(0, math.log(400)))) for _ in range(2))
        shrunk += out_h < h or out_w < w
        enlarged += out_h > h or out_w > w
        img = make(h, w, rng)
        spec = PreprocessSpec(name="t", size=(out_h, out_w), geometry="stretch", centers="tf1")
        worst = max(worst, max_diff(spec.pixels(img), NUMPY.numpy_tf1_resize(img, out_h, out_w)) - tf1_tolerance(img))
    assert shrunk > 100 and enlarged > 100
    assert worst <= 0


@pytest.mark.parametrize("spec,reference", [
    (MOBILENET, lambda img: NUMPY.numpy_tf1_resize(tf_central_crop(img, 0.875), 224, 224)),
    (SSD, lambda img: NUMPY.numpy_tf1_resize(img, 300, 300)),
], ids=["mobilenet", "ssdmobilenet"])
def test_tf_workloads_against_tf1_reference(spec: PreprocessSpec,
                                            reference: Callable[[np.ndarray], np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    worst, shrunk, enlarged = 0, 0, 0
    for h, w in random_sizes(400, seed=4):
        shrunk += h > spec.size[0] and w > spec.size[1]
        enlarged += h < spec.size[0] and w < spec.size[1]
        img = noise(h, w, rng)
        worst = max(worst, max_diff(spec.pixels(img), reference(img)) - tf1_tolerance(img))
    assert shrunk > 80 and enlarged > 80
    assert worst <= 0


def test_resnet50_is_mlperf_pre_process_vgg() -> None:
    rng = np.random.default_rng(5)
    worst = 0
    sizes = random_sizes(440, seed=6, max_aspect=64)  # 1 x 4096 would resize to 256 x 1,048,576 (as MLPerf does)
    assert len(sizes) >= 400 and sum(min(s) < 256 for s in sizes) > 80 and sum(min(s) > 256 for s in sizes) > 80
    for h, w in sizes:
        img = noise(h, w, rng)
        worst = max(worst, max_diff(RESNET.pixels(img), mlperf_pre_process_vgg(img)))
    assert worst <= 1


def test_issue_sizes_of_area_enlarging_are_opencvs() -> None:
    # Enlarging with INTER_AREA: the numpy resampler that OpenCV replaced was 249 levels off here.
    img = noise(135, 235, np.random.default_rng(7))
    assert max_diff(RESNET.pixels(img), mlperf_pre_process_vgg(img)) == 0
    gradient = np.repeat(np.repeat(np.linspace(0, 255, 200).astype(np.uint8)[None, :, None], 150, axis=0), 3, axis=2)
    assert max_diff(RESNET.pixels(gradient), mlperf_pre_process_vgg(gradient)) == 0


@pytest.mark.parametrize("geometry", ["central_crop", "stretch"])
@pytest.mark.parametrize("interpolation,flag", [("bilinear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)])
def test_opencv_conventions_are_cv2_resize(geometry: str, interpolation: str, flag: int) -> None:
    rng = np.random.default_rng(8)
    worst = 0
    for h, w in random_sizes(400, seed=9):
        out = (int(math.exp(rng.uniform(0, math.log(400)))), int(math.exp(rng.uniform(0, math.log(400)))))
        spec = PreprocessSpec(name="t", size=out, geometry=geometry, interpolation=interpolation,
                              centers="half_pixel", central_fraction=0.6)
        img = noise(h, w, rng)
        src = tf_central_crop(img, 0.6) if geometry == "central_crop" else img
        want = np.broadcast_to(src, out + (3,)) if src.shape[:2] == (1, 1) else \
            cv2.resize(src, (out[1], out[0]), interpolation=flag)  # OpenCV 4.5 refuses to resize 1x1
        worst = max(worst, max_diff(spec.pixels(img), want))
    assert worst <= 1


@pytest.mark.parametrize("interpolation,flag", [("bilinear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)])
def test_shorter_side_crop_resamples_only_what_it_keeps_with_cv2_resizes_pixels(interpolation: str, flag: int) -> None:
    # _resize_leading cuts the source after what the crop reads: the pixels must be cv2.resize's, bit for bit.
    rng = np.random.default_rng(12)
    cut = 0
    for h, w in random_sizes(400, seed=13, max_aspect=8):
        side = int(rng.integers(2, 400))
        crop = (int(rng.integers(1, side + 1)), int(rng.integers(1, side + 1)))
        spec = PreprocessSpec(name="t", size=crop, geometry="shorter_side_crop", interpolation=interpolation,
                              shorter_side=side)
        img = noise(h, w, rng)
        full_h, full_w = pre._shorter_side_size(h, w, side)
        top, left = (full_h - crop[0]) // 2, (full_w - crop[1]) // 2
        if (h, w) == (1, 1):
            continue  # a plain copy of the pixel (test_solid_colour_stays_exact_at_any_size)
        want = cv2.resize(img, (full_w, full_h), interpolation=flag)[top:top + crop[0], left:left + crop[1]]
        np.testing.assert_array_equal(spec.pixels(img), want, err_msg="{}x{} side {} crop {}".format(h, w, side, crop))
        cut += pre._resize_leading(cv2, img, full_h, full_w, (top + crop[0], left + crop[1]), flag, False) is not None
    assert cut > 200  # the cut was taken on most sizes, not skipped


def test_area_shrinking_through_float32_gives_opencvs_uint8_pixels() -> None:
    # _resize's float32 route for fractional shrinking must give exactly cv2.resize's uint8 pixels.
    rng = np.random.default_rng(10)
    for _ in range(200):
        h, w = (int(x) for x in rng.integers(2, 800, 2))
        out = (int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1)))
        img = noise(h, w, rng)
        spec = PreprocessSpec(name="t", size=out, geometry="stretch", interpolation="area")
        np.testing.assert_array_equal(spec.pixels(img), cv2.resize(img, out[::-1], interpolation=cv2.INTER_AREA))


# ---------------------------------------------------------------- worked examples against brute force


def ref_bilinear_1d(n_in: int, n_out: int, centers: str) -> List[List[Tuple[int, float]]]:
    taps = []
    for o in range(n_out):
        if centers == "tf1":
            src = o * n_in / n_out
        else:
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        f = src - i0
        taps.append([(i0, 1 - f), (min(i0 + 1, n_in - 1), f)])
    return taps


def ref_area_1d(n_in: int, n_out: int) -> List[List[Tuple[int, float]]]:
    s = n_in / n_out
    taps = []
    for o in range(n_out):
        lo, hi = o * s, (o + 1) * s
        row = [(j, max(0.0, min(j + 1, hi) - max(j, lo)) / s) for j in range(n_in)]
        taps.append([(j, w) for j, w in row if w > 0])
    return taps


def ref_apply(img: np.ndarray, ty: List[List[Tuple[int, float]]], tx: List[List[Tuple[int, float]]]) -> np.ndarray:
    out = np.zeros((len(ty), len(tx), img.shape[2]))
    f = img.astype(np.float64)
    for y, row in enumerate(ty):
        line = sum(w * f[j] for j, w in row)
        for x, col in enumerate(tx):
            out[y, x] = sum(w * line[j] for j, w in col)
    return out


RNG = np.random.default_rng(0)

# cv2.resize(A, (w, h), interpolation=cv2.INTER_AREA) of A = arange(12).reshape(3, 4) * 20 + 5 (OpenCV 4.x/5.0)
CV2_AREA = {
    (5, 7): [[5, 10, 25, 35, 45, 60, 65], [32, 37, 52, 62, 71, 86, 92], [85, 90, 105, 115, 125, 140, 145],
             [138, 143, 158, 168, 178, 193, 198], [165, 170, 185, 195, 205, 220, 225]],  # enlarging: OpenCV's rule
    (2, 2): [[42, 82], [148, 188]],  # shrinking: area means
}


@pytest.mark.parametrize("size", sorted(CV2_AREA))
def test_area_agrees_with_opencv(size: Tuple[int, int]) -> None:
    a = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20 + 5)
    spec = PreprocessSpec(name="t", size=size, geometry="stretch", interpolation="area")
    got = spec.pixels(np.repeat(a[:, :, None], 3, axis=2))[:, :, 0].astype(int)
    assert np.abs(got - np.array(CV2_AREA[size])).max() <= 1  # OpenCV works in fixed point


def assert_pixels(got: np.ndarray, want_float: np.ndarray, tolerance: int = 1) -> None:
    assert got.dtype == np.uint8
    # within one level of the exact value rounded (OpenCV computes in fixed point or float32)
    assert np.abs(got.astype(np.float64) - np.rint(want_float)).max() <= tolerance


def test_mobilenet_is_tf_central_crop_then_tf1_bilinear() -> None:
    img = RNG.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
    # tf.image.central_crop(0.875): start int((375 - 328.125) / 2) = 23, size 329; width 31 and 438
    crop = img[23:23 + 329, 31:31 + 438]
    want = ref_apply(crop, ref_bilinear_1d(329, 224, "tf1"), ref_bilinear_1d(438, 224, "tf1"))
    assert_pixels(MOBILENET.pixels(img), want, tf1_tolerance(img))


def test_resnet_is_mlperf_shorter_side_area_then_centre_crop() -> None:
    assert pre._shorter_side_size(375, 500, 256) == (256, 341)
    assert pre._shorter_side_size(500, 375, 256) == (341, 256)
    assert pre._shorter_side_size(300, 300, 256) == (256, 256)
    img = RNG.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
    full = ref_apply(img, ref_area_1d(375, 256), ref_area_1d(500, 341))
    assert_pixels(RESNET.pixels(img), full[16:240, 58:282])  # MLPerf's int((341 - 224) / 2) = 58


def test_ssd_is_stretch_to_300_tf1_bilinear() -> None:
    img = RNG.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    want = ref_apply(img, ref_bilinear_1d(240, 300, "tf1"), ref_bilinear_1d(320, 300, "tf1"))
    assert_pixels(SSD.pixels(img), want, tf1_tolerance(img))


@pytest.mark.parametrize("spec", [MOBILENET, RESNET, SSD], ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (1, 1), (20, 900)])
def test_solid_colour_stays_exact_at_any_size(spec: PreprocessSpec, shape: Tuple[int, int]) -> None:
    img = np.empty(shape + (3,), dtype=np.uint8)
    img[...] = (200, 17, 90)
    out = spec.pixels(img)
    assert out.shape == spec.size + (3,)
    assert (out == np.array([200, 17, 90], dtype=np.uint8)).all()


def test_normalisation_values_layouts_and_dtypes() -> None:
    planes = np.zeros((2, 3, 2, 2), dtype=np.uint8)
    planes[0] = 0
    planes[1] = 255
    mob = MOBILENET.normalize(planes)
    assert mob.dtype == np.float32 and mob.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(mob[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(mob[1], 1.0, atol=1e-6)
    ssd = SSD.normalize(planes)
    np.testing.assert_allclose(ssd[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(ssd[1], 1.0, atol=1e-6)
    res = RESNET.normalize(planes)
    np.testing.assert_allclose(res[0, :, 0, 0], [-123.68, -116.78, -103.94], atol=1e-4)
    np.testing.assert_allclose(res[1, :, 0, 0], [131.32, 138.22, 151.06], atol=1e-4)
    nhwc = RESNET.normalize(planes, layout="NHWC")
    assert nhwc.shape == (2, 2, 2, 3) and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nhwc, res.transpose(0, 2, 3, 1))
    half = MOBILENET.normalize(planes, dtype="float16")
    assert half.dtype == np.float16 and float(half[1, 0, 0, 0]) == 1.0
    raw = SSD.normalize(planes, dtype="uint8", layout="NHWC")
    assert raw.dtype == np.uint8 and raw.shape == (2, 2, 2, 3) and raw[1].min() == 255
    # bit for bit the float32 arithmetic (x - mean) * scale, whichever steps normalize() fuses or skips
    planes = np.random.default_rng(14).integers(0, 256, size=(3, 3, 5, 7), dtype=np.uint8)
    for spec in (MOBILENET, RESNET, SSD):
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        want = (planes.astype(np.float32) - mean) * np.asarray(spec.scale, dtype=np.float32).reshape(1, 3, 1, 1)
        np.testing.assert_array_equal(spec.normalize(planes), want)
        np.testing.assert_array_equal(spec.normalize(planes, layout="NHWC"), want.transpose(0, 2, 3, 1))


def test_input_format_from_the_model_input() -> None:
    size = (224, 224)
    assert input_format(("batch", 3, 224, 224), "float32", size) == ("float32", "NCHW")
    assert input_format((1, 224, 224, 3), "uint8", size) == ("uint8", "NHWC")
    assert input_format(("n", "h", "w", 3), "uint8", size) == ("uint8", "NHWC")  # official TF exports
    assert input_format(("n", "c", "h", "w"), "float16", size) == ("float16", "NCHW")
    with pytest.raises(ModelError, match="input dtype int32 is not supported"):
        input_format((1, 3, 224, 224), "int32", size)
    with pytest.raises(ModelError, match=r"neither \[N, 3, 224, 224\] nor \[N, 224, 224, 3\]"):
        input_format((1, 3, 300, 300), "float32", size)
    with pytest.raises(ModelError, match="rank 4"):
        input_format((1, 150528), "float32", size)


def test_decode_converts_grey_cmyk_and_png(tmp_path: Path) -> None:
    from PIL import Image

    grey = tmp_path / "g.JPEG"
    Image.fromarray(np.full((10, 12), 77, dtype=np.uint8)).save(str(grey))
    cmyk = tmp_path / "c.JPEG"
    Image.new("CMYK", (12, 10), (0, 0, 0, 0)).save(str(cmyk))
    png = tmp_path / "p.JPEG"  # a PNG with a .JPEG name, as a few ImageNet files are
    Image.new("RGBA", (12, 10), (1, 2, 3, 255)).save(str(png), format="PNG")
    for path in (grey, cmyk, png):
        arr = pre.decode_rgb(path)
        assert arr.shape == (10, 12, 3) and arr.dtype == np.uint8
    assert (pre.decode_rgb(png) == (1, 2, 3)).all() and (pre.decode_bgr(png) == (3, 2, 1)).all()
    assert pre.preprocess_file(grey, MOBILENET).shape == (1, 3, 224, 224)


def test_opencv_decodes_the_same_pixels_as_pillow(tmp_path: Path) -> None:
    # cv2.imdecode (decode_bgr) and Pillow (the numpy path's decoder) run the same libjpeg-turbo arithmetic.
    from PIL import Image

    img = photo(77, 101, np.random.default_rng(11))
    paths = []
    for name, options in {"jpeg0": dict(subsampling=0), "jpeg1": dict(subsampling=1), "jpeg2": dict(subsampling=2),
                          "progressive": dict(progressive=True)}.items():  # 4:4:4, 4:2:2, 4:2:0, progressive
        paths.append(tmp_path / "{}.JPEG".format(name))
        Image.fromarray(img).save(str(paths[-1]), format="JPEG", quality=90, **options)
    paths.append(tmp_path / "png.img")
    Image.fromarray(img).save(str(paths[-1]), format="PNG")
    paths.append(tmp_path / "grey.JPEG")
    Image.fromarray(img[:, :, 0]).save(str(paths[-1]), quality=90)
    paths.append(tmp_path / "restarts.JPEG")
    paths[-1].write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])[1].tobytes())
    for name in ("411", "440"):  # the rarer chroma layouts, where this OpenCV can write them
        flag = getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_" + name, None)
        if flag is not None:
            paths.append(tmp_path / "s{}.JPEG".format(name))
            paths[-1].write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, flag])[1].tobytes())
    for path in paths:
        np.testing.assert_array_equal(pre.decode_rgb(path), NUMPY.pillow_rgb(path), err_msg=path.name)
    cmyk = tmp_path / "cmyk.JPEG"
    Image.fromarray(img).convert("CMYK").save(str(cmyk), quality=95)
    assert max_diff(pre.decode_rgb(cmyk), NUMPY.pillow_rgb(cmyk)) <= 1  # CMYK to RGB rounds differently


def test_truncated_jpeg_is_refused_by_every_opencv(tmp_path: Path, monkeypatch: Any) -> None:
    path = write_jpeg(tmp_path / "t.JPEG", 64, 48)
    data = path.read_bytes()
    assert not pre._truncated_jpeg(np.frombuffer(data, np.uint8))
    assert not pre._truncated_jpeg(np.frombuffer(data + b"\0\0", np.uint8))  # padding after the marker
    path.write_bytes(data[:len(data) // 2])
    assert pre._truncated_jpeg(np.fromfile(str(path), np.uint8))
    # OpenCV 4.x returns a truncated JPEG grey-filled; such a file must never reach cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(OSError, match="truncated"):
        pre.decode_bgr(path)


def test_missing_opencv_is_one_line_naming_the_package(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(DatasetError) as exc:
        pre.opencv()
    text = str(exc.value)
    assert "pip install -e '.[opencv]'" in text and "--system-site-packages" in text and "\n" not in text
    with pytest.raises(DatasetError) as exc:  # said once, not as a decoding failure of each image
        pre.preprocess_files([write_jpeg(tmp_path / "a.JPEG")], MOBILENET, workers=1)
    assert str(exc.value).startswith("preprocessing needs OpenCV")


def test_worker_processes_share_the_cores_with_opencv(tmp_path: Path, monkeypatch: Any) -> None:
    import concurrent.futures

    seen = {}
    real = concurrent.futures.ProcessPoolExecutor

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", recording)
    monkeypatch.setattr(pre, "available_cores", lambda: 6)
    paths = jpegs(tmp_path / "img", 16)
    cached_preprocess(paths, SSD, tmp_path / "cache", {}, "t", workers=2)
    assert seen["initargs"] == (3,)  # 6 cores, 2 processes: 3 OpenCV threads each
    cv = pre.opencv()
    before = cv.getNumThreads(), signal.getsignal(signal.SIGINT)
    try:
        pre._worker_init(1)  # what a pool process runs first, here in this process
        assert cv.getNumThreads() == 1
    finally:  # give back Ctrl-C too: processes started later by other tests inherit an ignored SIGINT
        cv.setNumThreads(before[0])
        signal.signal(signal.SIGINT, before[1])


# ---------------------------------------------------------------- cache


def jpegs(folder: Path, n: int, seed0: int = 0) -> List[Path]:
    return [write_jpeg(folder / "im{:03d}.JPEG".format(i), 50 + i, 40, seed=seed0 + i) for i in range(n)]


def entries(cache_dir: Path) -> List[Path]:
    return sorted(p for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_cache_miss_then_hit_with_the_same_pixels(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 6)
    cdir = tmp_path / "cache"
    first = cached_preprocess(paths, SSD, cdir, {"labels": "abc"}, "t")
    assert not first.hit and first.ok.all() and first.pixels.shape == (6, 3, 300, 300)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(first.pixels[i], SSD.pixels(pre.decode_rgb(p)).transpose(2, 0, 1))
    assert list(first.sizes[0]) == [40, 50]
    second = cached_preprocess(paths, SSD, cdir, {"labels": "abc"}, "t")
    assert second.hit and second.key == first.key and isinstance(second.pixels, np.memmap)
    np.testing.assert_array_equal(np.asarray(second.pixels), np.asarray(first.pixels))
    (entry,) = entries(cdir)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["dtype"] == "uint8" and meta["layout"] == "NCHW" and meta["spec"]["name"] == SSD.name


def test_cache_invalidated_by_spec_identity_subset_and_image_change(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 4)
    cdir = tmp_path / "cache"
    key = cached_preprocess(paths, MOBILENET, cdir, {"labels": "a"}, "t").key
    changed_spec = PreprocessSpec(**dict(MOBILENET.key(), version=MOBILENET.version + 1))
    changes = [
        (paths, changed_spec, {"labels": "a"}),  # preprocessing changed
        (paths, MOBILENET, {"labels": "b"}),  # dataset identity (label file hash) changed
        (paths[:3], MOBILENET, {"labels": "a"}),  # subset changed
    ]
    for ps, spec, ident in changes:
        assert pre.cache_key(ps, spec, ident) != key
    assert pre.cache_key(paths, MOBILENET, {"labels": "a"}) == key
    with pytest.MonkeyPatch.context() as mp:
        other = pre.opencv_version() + "-other"
        mp.setattr(pre, "opencv_version", lambda: other)  # OpenCV 4.x and 5.x resample differently
        assert pre.cache_key(paths, MOBILENET, {"labels": "a"}) != key
    write_jpeg(paths[1], 50, 40, seed=99)  # an image replaced in place
    os.utime(str(paths[1]), ns=(1, 1))
    again = cached_preprocess(paths, MOBILENET, cdir, {"labels": "a"}, "t")
    assert not again.hit and again.key != key
    assert len(entries(cdir)) == 1  # the stale entry of the same tag was removed
    other = cached_preprocess(paths[:2], MOBILENET, cdir, {"labels": "a"}, "other-subset")
    assert not other.hit and len(entries(cdir)) == 2  # another tag's entry is kept


def test_corrupt_jpegs_skipped_with_a_count(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 4)
    paths[1].write_bytes(b"not a jpeg at all")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:len(data) // 3])  # truncated
    got = cached_preprocess(paths, RESNET, tmp_path / "cache", {}, "t")
    assert [i for i, _ in got.failures] == [1, 2] and list(got.ok) == [True, False, False, True]
    assert "UnidentifiedImageError" in got.failures[0][1] and got.pixels[1].max() == 0
    hit = cached_preprocess(paths, RESNET, tmp_path / "cache", {}, "t")  # failures are remembered
    assert hit.hit and [i for i, _ in hit.failures] == [1, 2]


def test_all_corrupt_refused_and_nothing_left_in_the_cache(tmp_path: Path) -> None:
    bad = tmp_path / "a.JPEG"
    bad.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DatasetError, match="none of the 1 images could be decoded"):
        cached_preprocess([bad], MOBILENET, tmp_path / "cache", {}, "t")
    assert entries(tmp_path / "cache") == []


def test_interrupted_build_leaves_nothing_half_written(tmp_path: Path, monkeypatch: Any) -> None:
    paths = jpegs(tmp_path / "img", 3)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(pre, "_run_workers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cached_preprocess(paths, MOBILENET, tmp_path / "cache", {}, "t")
    assert entries(tmp_path / "cache") == []  # no entry, no temporary folder


def test_damaged_entry_is_rebuilt(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 2)
    first = cached_preprocess(paths, MOBILENET, tmp_path / "cache", {}, "t")
    with open(str(first.path / "pixels.npy"), "r+b") as f:
        f.truncate(1000)
    again = cached_preprocess(paths, MOBILENET, tmp_path / "cache", {}, "t")
    assert not again.hit and again.pixels.shape == (2, 3, 224, 224)


def test_process_pool_gives_the_same_pixels(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 20)
    paths[7].write_bytes(b"corrupt")
    serial = cached_preprocess(paths, MOBILENET, tmp_path / "c1", {}, "t", workers=1)
    pooled = cached_preprocess(paths, MOBILENET, tmp_path / "c2", {}, "t", workers=2)
    assert serial.workers == 1 and pooled.workers == 2
    np.testing.assert_array_equal(np.asarray(serial.pixels), np.asarray(pooled.pixels))
    assert serial.failures == pooled.failures and [i for i, _ in pooled.failures] == [7]
    batch = pre.preprocess_files(paths[:3], MOBILENET, workers=2)
    np.testing.assert_array_equal(batch, MOBILENET.normalize(np.asarray(serial.pixels[:3])))


def test_unwritable_cache_folder_is_one_line(tmp_path: Path) -> None:
    paths = jpegs(tmp_path / "img", 1)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(DatasetError) as exc:
        cached_preprocess(paths, MOBILENET, blocked / ".cache", {}, "t")
    assert "cannot write the preprocessing cache" in str(exc.value) and "\n" not in str(exc.value)


def test_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path: Path, caplog: Any) -> None:
    """pixels.npy overwritten in place with its header intact: a checksum mismatch, not a silent cache hit."""
    paths = jpegs(tmp_path / "img", 6)
    first = cached_preprocess(paths, MOBILENET, tmp_path / "cache", {"id": 1}, "t", workers=1)
    good = np.array(first.pixels)
    npy = first.path / pre.PIXELS_FILE
    data = bytearray(npy.read_bytes())
    header = len(data) - good.nbytes
    data[header + 1000:header + 2000] = bytes(1000)  # a block of pixels zeroed, the .npy header untouched
    npy.write_bytes(bytes(data))
    assert np.load(str(npy), mmap_mode="r").shape == good.shape  # still a valid array of the right shape
    caplog.set_level("WARNING")
    again = cached_preprocess(paths, MOBILENET, tmp_path / "cache", {"id": 1}, "t", workers=1)
    assert not again.hit and "is damaged" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.pixels), good)
    third = cached_preprocess(paths, MOBILENET, tmp_path / "cache", {"id": 1}, "t", workers=1)
    assert third.hit  # the rebuilt entry verifies
