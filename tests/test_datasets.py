"""Datasets in their real formats: label files, MLMark's subset, the devkit converter, COCO checks, missing files.

The builders here (make_imagenet, make_coco, write_jpeg) are shared by the other accuracy tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from core.errors import DatasetError
from core.fileio import sha256_file
from core.paths import REPO_ROOT
from workloads import datasets as ds
from workloads import get_workload
from workloads.datasets import coco, imagenet

# ---------------------------------------------------------------- builders


def write_jpeg(path: Path, width: int = 64, height: int = 48, seed: int = 0,
               color: Optional[Tuple[int, int, int]] = None) -> Path:
    """A small JPEG: a solid colour (for known predictions) or random texture."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if color is None:
        arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    else:
        arr = np.empty((height, width, 3), dtype=np.uint8)
        arr[...] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(str(path), quality=95)
    return path


def val_name(n: int) -> str:
    return "ILSVRC2012_val_{:08d}.JPEG".format(n)


CLASS_COLORS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}


def make_imagenet(root: Path, classes: Sequence[int] = (3, 17, 998), per_class: int = 6,
                  labels_at: str = "annotations/validation.txt", colored: bool = False,
                  skip_images: Iterable[str] = ()) -> Path:
    """root/ILSVRC2012 with images and a label file; class i of `classes` gets colour i when colored."""
    base = root / "ILSVRC2012"
    lines = []
    n = 0
    skip = set(skip_images)
    for ci, label in enumerate(classes):
        for k in range(per_class):
            n += 1
            name = val_name(n)
            lines.append("{} {}".format(name, label))
            if name not in skip:
                write_jpeg(base / "images" / name, 40 + 3 * k, 30 + 2 * ci, seed=n,
                           color=CLASS_COLORS[ci % 3] if colored else None)
    lines.reverse()  # the file's order must not matter
    (base / labels_at).parent.mkdir(parents=True, exist_ok=True)
    (base / labels_at).write_text("\n".join(lines) + "\n")
    return base


COCO_CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"},
                   {"id": 90, "name": "toothbrush", "supercategory": "indoor"}]


def coco_annotation(ann_id: int, image_id: int, category: int, bbox: Sequence[float]) -> Dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": list(bbox),
            "area": float(bbox[2] * bbox[3]), "iscrowd": 0}


def make_coco(root: Path, n_images: int = 4, sizes: Optional[List[Tuple[int, int]]] = None,
              skip_images: Iterable[str] = ()) -> Tuple[Path, Dict[str, Any]]:
    """root/COCO2017 with JPEGs and instances_val2017.json (one or two objects an image)."""
    base = root / "COCO2017"
    skip = set(skip_images)
    images, anns = [], []
    for i in range(n_images):
        w, h = sizes[i] if sizes else (80 + 8 * i, 60 + 4 * i)
        image_id = 1000 + 7 * i
        name = "{:012d}.jpg".format(image_id)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        if name not in skip:
            write_jpeg(base / "images" / name, w, h, seed=i)
        anns.append(coco_annotation(len(anns) + 1, image_id, 1, [5, 6, w / 2, h / 2]))
        if i % 2:
            anns.append(coco_annotation(len(anns) + 1, image_id, 3, [w / 3, h / 3, w / 2, h / 2]))
    data = {"info": {"description": "tiny"}, "images": images, "annotations": anns,
            "categories": COCO_CATEGORIES}
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / ds.COCO_ANNOTATIONS).write_text(json.dumps(data))
    return base, data


@pytest.fixture
def droot(tmp_path: Path, monkeypatch: Any) -> Path:
    """A private datasets folder ($MLMARK_DATASETS)."""
    d = tmp_path / "datasets"
    d.mkdir()
    monkeypatch.setenv("MLMARK_DATASETS", str(d))
    return d


MOBILENET = get_workload("mobilenet")
SSD = get_workload("ssdmobilenet")

# ---------------------------------------------------------------- label files


def test_label_file_parses_and_rejects_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "val.txt"
    good.write_text("# comment\nILSVRC2012_val_00000001.JPEG 65\n\nILSVRC2012_val_00000002.JPEG 0\n")
    assert imagenet.parse_label_file(good) == [("ILSVRC2012_val_00000001.JPEG", 65),
                                               ("ILSVRC2012_val_00000002.JPEG", 0)]
    cases = [
        ("a.JPEG 1 2\n", "line 1: expected '<image file> <class index>'"),
        ("a.JPEG x\n", "line 1: expected"),
        ("a.JPEG 1\nb.JPEG 1000\n", "line 2: class index 1000 is out of range 0..999"),
        ("a.JPEG -1\n", "class index -1 is out of range"),
        ("a.JPEG 1\na.JPEG 2\n", "line 2: a.JPEG is listed twice (first on line 1)"),
        ("/abs/a.JPEG 1\n", "must be a path relative to the images folder"),
        ("\n# nothing\n", "lists no image"),
    ]
    for text, want in cases:
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(DatasetError) as exc:
            imagenet.parse_label_file(bad)
        assert want in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(DatasetError, match="label file not found"):
        imagenet.parse_label_file(tmp_path / "none.txt")


def test_out_of_range_hint_names_the_converter(tmp_path: Path) -> None:
    bad = tmp_path / "devkit_ids.txt"
    bad.write_text("a.JPEG 1000\n")
    with pytest.raises(DatasetError, match="python -m workloads.datasets.imagenet --devkit"):
        imagenet.parse_label_file(bad)


def test_subset_is_first_five_per_class_sorted_then_prefix() -> None:
    entries = [("f{:02d}".format(i), i % 3) for i in range(30)][::-1]  # 10 per class, unsorted
    chosen = imagenet.select_subset(entries)
    assert len(chosen) == 15
    assert chosen == sorted(chosen)
    by_class = {c: [n for n, k in chosen if k == c] for c in range(3)}
    assert by_class[0] == ["f00", "f03", "f06", "f09", "f12"]
    assert by_class[2] == ["f02", "f05", "f08", "f11", "f14"]
    assert imagenet.select_subset(entries, 2) == sorted([("f00", 0), ("f03", 0), ("f01", 1), ("f04", 1),
                                                         ("f02", 2), ("f05", 2)])
    assert imagenet.select_subset(entries, max_images=4) == chosen[:4]
    assert len(imagenet.select_subset([("a", 1), ("b", 1), ("c", 2)])) == 3  # fewer than 5 in a class


# ---------------------------------------------------------------- devkit conversion


def _fake_devkit(tmp_path: Path) -> Tuple[Dict[int, str], Path, List[int]]:
    rng = np.random.default_rng(0)
    wnids = ["n{:08d}".format(1000000 + 37 * i) for i in range(1000)]
    order = rng.permutation(1000)  # the devkit's ID order is not the sorted order
    synsets = {i + 1: wnids[order[i]] for i in range(1000)}
    gt = [int(v) for v in rng.integers(1, 1001, size=40)]
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, gt)) + "\n")
    return synsets, data, gt


def test_devkit_ids_map_to_sorted_wnid_indices(tmp_path: Path) -> None:
    synsets, data, gt = _fake_devkit(tmp_path)
    table = tmp_path / "synsets.txt"  # '<ID> <WNID> words' form
    table.write_text("".join("{} {} some words\n".format(i, w) for i, w in sorted(synsets.items())))
    lines = imagenet.convert_devkit(data / "ILSVRC2012_validation_ground_truth.txt", table)
    ranked = sorted(synsets.values())
    assert len(lines) == len(gt)
    for n, (line, devkit_id) in enumerate(zip(lines, gt), start=1):
        name, index = line.split()
        assert name == val_name(n)
        assert ranked[int(index)] == synsets[devkit_id]
    # one WNID per line (line i = ID i) gives the same mapping
    plain = tmp_path / "plain.txt"
    plain.write_text("".join(w + "\n" for _, w in sorted(synsets.items())))
    assert imagenet.convert_devkit(data / "ILSVRC2012_validation_ground_truth.txt", plain) == lines


def test_devkit_cli_writes_a_label_file_the_parser_accepts(tmp_path: Path) -> None:
    synsets, data, gt = _fake_devkit(tmp_path)
    table = tmp_path / "synsets.txt"
    table.write_text("".join(w + "\n" for _, w in sorted(synsets.items())))
    out = tmp_path / "out" / "validation.txt"
    assert imagenet.main(["--devkit", str(data.parent), "--synsets", str(table), "-o", str(out)]) == 0
    assert len(imagenet.parse_label_file(out)) == len(gt)
    short = tmp_path / "short.txt"
    short.write_text("n00000001\n")
    assert imagenet.main(["--devkit", str(data.parent), "--synsets", str(short), "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_devkit_meta_mat_needs_scipy_or_reads_it(tmp_path: Path) -> None:
    synsets, data, _ = _fake_devkit(tmp_path)
    try:
        from scipy.io import savemat
    except ImportError:
        (data / "meta.mat").write_bytes(b"MATLAB 5.0")
        with pytest.raises(DatasetError, match="needs scipy"):
            imagenet.read_synsets(data / "meta.mat")
        return
    # meta.mat as the devkit has it: 1000 leaf synsets plus non-leaf ones with IDs above 1000
    rec = np.zeros(1002, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k, (i, w) in enumerate(sorted(synsets.items())):
        rec[k] = (i, w, 0)
    rec[1000] = (1001, "n99999998", 3)
    rec[1001] = (1002, "n99999999", 2)
    savemat(str(data / "meta.mat"), {"synsets": rec})
    assert imagenet.read_synsets(data / "meta.mat") == synsets


# ---------------------------------------------------------------- check_dataset


def one_line(exc: Any) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_folders_say_what_to_download_and_where(droot: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(MOBILENET)
    msg = one_line(exc)
    assert str(droot / "ILSVRC2012" / "images") in msg and "ILSVRC2012_img_val.tar" in msg and "ln -s" in msg
    (droot / "ILSVRC2012" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(MOBILENET)
    msg = one_line(exc)
    assert "annotations/validation.txt not found" in msg and "--devkit" in msg and "val.txt" in msg
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(SSD)
    assert "val2017.zip" in one_line(exc)
    (droot / "COCO2017" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(SSD)
    msg = one_line(exc)
    assert "instances_val2017.json not found" in msg and "annotations_trainval2017.zip" in msg


def test_imagenet_subset_identity_and_validity(droot: Path) -> None:
    base = make_imagenet(droot)
    sub = ds.check_dataset(MOBILENET)
    assert sub.dataset == "ILSVRC2012" and len(sub.samples) == 15 and not sub.missing
    assert [s.name for s in sub.samples] == sorted(s.name for s in sub.samples)
    assert {s.label for s in sub.samples} == {3, 17, 998}
    assert sub.identity["sha256"] == sha256_file(base / "annotations" / "validation.txt")
    assert sub.identity["file"] == "annotations/validation.txt"
    assert sub.mlmark_selection and not sub.is_mlmark_subset  # MLMark's rule, but 15 images, not 5000
    quick = ds.check_dataset(MOBILENET, images_per_class=2, max_images=4)
    assert len(quick.samples) == 4 and not quick.mlmark_selection
    assert quick.selection == {"images_per_class": 2, "max_images": 4}


def test_caffe_val_txt_is_accepted(droot: Path) -> None:
    make_imagenet(droot, labels_at="val.txt")
    assert ds.check_dataset(MOBILENET).identity["file"] == "val.txt"


def test_missing_images_counted_then_refused_above_threshold(droot: Path, monkeypatch: Any) -> None:
    make_imagenet(droot, skip_images=[val_name(2)])
    monkeypatch.setattr(ds, "MAX_MISSING_FRACTION", 0.1)  # 1 of 15 allowed
    sub = ds.check_dataset(MOBILENET)
    assert sub.missing == [val_name(2)] and len(sub.samples) == 14 and not sub.is_mlmark_subset
    monkeypatch.setattr(ds, "MAX_MISSING_FRACTION", 0.01)  # none allowed for 15 images
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(MOBILENET)
    msg = one_line(exc)
    assert "1 of the 15 images validation.txt lists for this task are missing" in msg and val_name(2) in msg


def test_label_file_out_of_range_is_one_line(droot: Path) -> None:
    base = make_imagenet(droot)
    with open(str(base / "annotations" / "validation.txt"), "a") as f:
        f.write("ILSVRC2012_val_00009999.JPEG 1000\n")
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(MOBILENET)
    assert "out of range 0..999" in one_line(exc)


def test_datasets_root_from_env(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLMARK_DATASETS", str(tmp_path / "elsewhere"))
    assert ds.datasets_root() == tmp_path / "elsewhere" and ds.cache_dir() == tmp_path / "elsewhere" / ".cache"
    monkeypatch.delenv("MLMARK_DATASETS")
    assert ds.datasets_root() == REPO_ROOT / "datasets"


# ---------------------------------------------------------------- COCO


def test_coco_subset_sorted_with_sizes_and_prefix(droot: Path) -> None:
    base, data = make_coco(droot, n_images=5)
    sub = ds.check_dataset(SSD)
    assert len(sub.samples) == 5 and sub.annotations["categories"] == COCO_CATEGORIES
    assert [s.name for s in sub.samples] == sorted(im["file_name"] for im in data["images"])
    first = sub.samples[0]
    assert (first.image_id, first.width, first.height) == (1000, 80, 60)
    assert sub.identity["sha256"] == sha256_file(base / ds.COCO_ANNOTATIONS)
    assert len(ds.check_dataset(SSD, max_images=2).samples) == 2
    with pytest.raises(DatasetError, match="images_per_class applies to ILSVRC2012"):
        ds.check_dataset(SSD, images_per_class=5)
    assert coco.category_ids(data) == [1, 3, 90]


@pytest.mark.parametrize("mutate, want", [
    (lambda d: [d], "the top level is a JSON list"),
    (lambda d: {k: v for k, v in d.items() if k != "annotations"}, "no 'annotations' list"),
    (lambda d: dict(d, images=[]), "'images' is empty"),
    (lambda d: dict(d, images=[{"id": 1, "file_name": "a.jpg"}]), "images[0] has no 'width'"),
    (lambda d: dict(d, annotations=[dict(d["annotations"][0], image_id=5)]), "refers to image id 5"),
    (lambda d: dict(d, annotations=[dict(d["annotations"][0], category_id=2)]), "category_id 2, which"),
    (lambda d: dict(d, annotations=[dict(d["annotations"][0], bbox=[1, 2, 3])]), "bbox must be [x, y, width"),
    (lambda d: dict(d, annotations=[{k: v for k, v in d["annotations"][0].items() if k != "area"}]),
     "has no 'area'"),
    (lambda d: dict(d, categories=[{"name": "x"}]), "categories[0] needs a positive integer id"),
])
def test_not_coco_format_is_one_line(droot: Path, mutate: Any, want: str) -> None:
    base, data = make_coco(droot, n_images=2)
    (base / ds.COCO_ANNOTATIONS).write_text(json.dumps(mutate(data)))
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(SSD)
    msg = one_line(exc)
    assert "not a COCO instances annotation file" in msg and want in msg


def test_annotation_file_that_is_not_json(droot: Path) -> None:
    base, _ = make_coco(droot, n_images=1)
    (base / ds.COCO_ANNOTATIONS).write_text("{not json")
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(SSD)
    assert "not JSON" in one_line(exc)


def test_coco_missing_images_refused(droot: Path) -> None:
    make_coco(droot, n_images=3, skip_images=["000000001007.jpg"])
    with pytest.raises(DatasetError) as exc:
        ds.check_dataset(SSD)
    assert "1 of the 3 images instances_val2017.json lists" in one_line(exc)
