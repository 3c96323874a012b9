"""Preprocessing: the resampler against brute force, each workload's geometry and normalisation, the cache."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, List, Tuple

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

# ---------------------------------------------------------------- brute-force references (pure Python loops)


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
IMG = RNG.integers(0, 256, size=(75, 100, 3), dtype=np.uint8)


@pytest.mark.parametrize("centers", ["tf1", "half_pixel"])
def test_bilinear_matches_brute_force(centers: str) -> None:
    for (h, w) in [(30, 40), (150, 220), (75, 100)]:  # shrink, enlarge, same size
        got = pre._resample(IMG, pre._taps(75, h, "bilinear", centers), pre._taps(100, w, "bilinear", centers))
        want = ref_apply(IMG, ref_bilinear_1d(75, h, centers), ref_bilinear_1d(100, w, centers))
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_area_matches_brute_force_and_block_means() -> None:
    got = pre._resample(IMG, pre._taps(75, 31, "area", ""), pre._taps(100, 43, "area", ""))
    np.testing.assert_allclose(got, ref_apply(IMG, ref_area_1d(75, 31), ref_area_1d(100, 43)), atol=1e-3)
    even = IMG[:74]
    blocks = even.reshape(37, 2, 50, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(pre._resample(even, pre._taps(74, 37, "area", ""), pre._taps(100, 50, "area", "")),
                               blocks, atol=1e-3)


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


def assert_pixels(got: np.ndarray, want_float: np.ndarray) -> None:
    assert got.dtype == np.uint8
    # the exact value rounded to the nearest level (float32 arithmetic may go either way at a .5)
    assert np.abs(got.astype(np.float64) - want_float).max() <= 0.5 + 1e-3


def test_mobilenet_is_tf_central_crop_then_tf1_bilinear() -> None:
    img = RNG.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
    # tf.image.central_crop(0.875): start int((375 - 328.125) / 2) = 23, size 329; width 31 and 438
    crop = img[23:23 + 329, 31:31 + 438]
    want = ref_apply(crop, ref_bilinear_1d(329, 224, "tf1"), ref_bilinear_1d(438, 224, "tf1"))
    assert_pixels(MOBILENET.pixels(img), want)


def test_resnet_is_mlperf_shorter_side_area_then_centre_crop() -> None:
    assert pre._shorter_side_size(375, 500, 256) == (256, 341)
    assert pre._shorter_side_size(500, 375, 256) == (341, 256)
    assert pre._shorter_side_size(300, 300, 256) == (256, 256)
    img = RNG.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
    full = ref_apply(img, ref_area_1d(375, 256), ref_area_1d(500, 341))
    assert_pixels(RESNET.pixels(img), full[16:240, 58:282])  # MLPerf's int((341 - 224) / 2) = 58


def test_ssd_is_stretch_to_300_tf1_bilinear() -> None:
    img = RNG.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    assert_pixels(SSD.pixels(img), ref_apply(img, ref_bilinear_1d(240, 300, "tf1"), ref_bilinear_1d(320, 300, "tf1")))


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
    assert pre.preprocess_file(grey, MOBILENET).shape == (1, 3, 224, 224)


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
