"""The accuracy datasets: where they live, what a task's subset of them is, and the check run before any task.

Layout under the datasets folder ($MLMARK_DATASETS, else <repo>/datasets; see datasets/README.md):

    ILSVRC2012/images/                      the 50,000 validation JPEGs (linked by the user)
    ILSVRC2012/annotations/validation.txt   `<file> <class index>` (MLMark's file, or Caffe's val.txt)
    COCO2017/images/                        the 5,000 val2017 JPEGs (linked by the user)
    COCO2017/annotations/instances_val2017.json
    .cache/                                 preprocessed images (workloads/preprocess.py)

`check_dataset` parses the label or annotation file, selects the task's subset and counts the
listed images that are missing; every problem is one line saying what to download and where to
put it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from core.errors import DatasetError
from core.fileio import sha256_file
from core.paths import datasets_root

MLMARK_IMAGES = 5000  # both of MLMark's accuracy subsets have 5,000 images
# Up to this fraction of the subset's images may be missing (skipped, and the score marked not
# valid); more means the images folder is the wrong one or incomplete, and the run is refused.
MAX_MISSING_FRACTION = 0.01

IMAGENET = "ILSVRC2012"
COCO = "COCO2017"
IMAGENET_LABELS = ("annotations/validation.txt", "val.txt")  # MLMark's place first, then Caffe's name
COCO_ANNOTATIONS = "annotations/instances_val2017.json"

_IMAGENET_GET = ("download ILSVRC2012_img_val.tar (6.3 GB, the validation images) from "
                 "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php, extract it and link the folder: "
                 "ln -s /path/to/val {} (see datasets/README.md)")
_IMAGENET_LABELS_GET = ("put MLMark's validation.txt or Caffe's val.txt (from caffe_ilsvrc12.tar.gz) there, or make "
                        "it from the devkit: python -m workloads.datasets.imagenet --devkit "
                        "ILSVRC2012_devkit_t12 -o {} (see datasets/README.md)")
_COCO_GET = ("download val2017.zip (1 GB) from http://images.cocodataset.org/zips/val2017.zip, unzip it and link "
             "the folder: ln -s /path/to/val2017 {} (see datasets/README.md)")
_COCO_ANN_GET = ("download annotations_trainval2017.zip from "
                 "http://images.cocodataset.org/annotations/annotations_trainval2017.zip and put its "
                 "annotations/instances_val2017.json there (see datasets/README.md)")


def cache_dir() -> Path:
    """Where preprocessed images are cached."""
    return datasets_root() / ".cache"


@dataclass(frozen=True)
class Sample:
    """One image of a subset."""

    name: str  # as the label or annotation file lists it, relative to images/
    path: Path
    label: int = -1  # ImageNet class index 0..999
    image_id: int = -1  # COCO image id
    width: int = 0  # COCO: the annotation file's size (boxes are scaled back to it)
    height: int = 0


@dataclass
class Subset:
    """The images a task scores, with the dataset's identity and how they were selected."""

    dataset: str
    root: Path
    samples: List[Sample]  # present images, in order
    missing: List[str]  # selected images that are not in images/ (skipped)
    selection: Dict[str, Any]  # images_per_class, max_images
    selected: int  # images the selection named (present or not)
    mlmark_selection: bool  # the selection is MLMark's own (5 per class, or all of COCO), not cut short
    identity: Dict[str, Any]  # the label or annotation file, relative path and SHA-256
    annotations: Optional[Dict[str, Any]] = field(default=None, repr=False)  # COCO ground truth

    @property
    def is_mlmark_subset(self) -> bool:
        """True when the images scored are exactly MLMark's 5,000."""
        return self.mlmark_selection and not self.missing and len(self.samples) == MLMARK_IMAGES

    def description(self) -> str:
        """One line: dataset, images, selection, label file hash."""
        sel = ", ".join("{} {}".format(k, v) for k, v in self.selection.items() if v is not None)
        return "{}: {} images ({}), {} sha256 {}".format(self.dataset, len(self.samples), sel or "all",
                                                         self.identity["file"], self.identity["sha256"][:16])


def dataset_of(workload: Any) -> str:
    """The dataset a workload is scored on."""
    name = getattr(workload, "dataset", "") or (IMAGENET if workload.kind == "classification" else COCO)
    if name not in (IMAGENET, COCO):
        raise DatasetError("workload {}: unknown dataset '{}'".format(workload.name, name))
    return name


_memo: Dict[Tuple[Any, ...], Subset] = {}


def check_dataset(workload: Any, images_per_class: Optional[int] = None,
                  max_images: Optional[int] = None) -> Subset:
    """The task's subset of the workload's dataset, checked; DatasetError (one line) if it cannot be scored."""
    name = dataset_of(workload)
    root = datasets_root() / name
    if name == IMAGENET:
        if not (root / "images").is_dir():
            raise DatasetError("{} not found: {}".format(root / "images", _IMAGENET_GET.format(root / "images")))
        labels = next((root / rel for rel in IMAGENET_LABELS if (root / rel).is_file()), None)
        if labels is None:
            want = root / IMAGENET_LABELS[0]
            raise DatasetError("{} not found: {}".format(want, _IMAGENET_LABELS_GET.format(want)))
        source = labels
    else:
        if not (root / "images").is_dir():
            raise DatasetError("{} not found: {}".format(root / "images", _COCO_GET.format(root / "images")))
        source = root / COCO_ANNOTATIONS
        if not source.is_file():
            raise DatasetError("{} not found: {}".format(source, _COCO_ANN_GET))
    st = source.stat()
    memo_key = (name, str(source), st.st_size, st.st_mtime_ns, images_per_class, max_images)
    if memo_key not in _memo:
        builder = _imagenet_subset if name == IMAGENET else _coco_subset
        _memo[memo_key] = builder(root, source, images_per_class, max_images)
    subset = _memo[memo_key]
    _check_missing(subset, source)
    return subset


def _identity(root: Path, source: Path) -> Dict[str, Any]:
    return {"dataset": root.name, "file": source.relative_to(root).as_posix(), "sha256": sha256_file(source)}


def _imagenet_subset(root: Path, labels: Path, images_per_class: Optional[int], max_images: Optional[int]) -> Subset:
    # imported here so that `python -m workloads.datasets.imagenet` does not find it already loaded
    from workloads.datasets import imagenet

    per_class = imagenet.IMAGES_PER_CLASS if images_per_class is None else images_per_class
    full = imagenet.select_subset(imagenet.parse_label_file(labels), per_class)
    chosen = full[:max_images] if max_images is not None else full
    images = root / "images"
    samples, missing = [], []
    for file_name, label in chosen:
        path = images / file_name
        if path.is_file():
            samples.append(Sample(name=file_name, path=path, label=label))
        else:
            missing.append(file_name)
    return Subset(dataset=IMAGENET, root=root, samples=samples, missing=missing,
                  selection={"images_per_class": per_class, "max_images": max_images}, selected=len(chosen),
                  mlmark_selection=per_class == imagenet.IMAGES_PER_CLASS and len(chosen) == len(full),
                  identity=_identity(root, labels))


def _coco_subset(root: Path, ann_path: Path, images_per_class: Optional[int], max_images: Optional[int]) -> Subset:
    from workloads.datasets import coco

    if images_per_class is not None:
        raise DatasetError("params.images_per_class applies to ILSVRC2012 workloads only; use max_images")
    data = coco.load_annotations(ann_path)
    chosen = coco.select_images(data, max_images)
    images = root / "images"
    samples, missing = [], []
    for img in chosen:
        path = images / img["file_name"]
        if path.is_file():
            samples.append(Sample(name=img["file_name"], path=path, image_id=img["id"], width=int(img["width"]),
                                  height=int(img["height"])))
        else:
            missing.append(img["file_name"])
    return Subset(dataset=COCO, root=root, samples=samples, missing=missing, selection={"max_images": max_images},
                  selected=len(chosen), mlmark_selection=max_images is None or max_images >= len(data["images"]),
                  identity=_identity(root, ann_path), annotations=data)


def _check_missing(subset: Subset, source: Path) -> None:
    n_missing = len(subset.missing)
    if not n_missing:
        return
    allowed = int(MAX_MISSING_FRACTION * subset.selected)
    if n_missing > allowed or not subset.samples:
        raise DatasetError("{} of the {} images {} lists for this task are missing from {} (first: {}); at most {} "
                           "may be missing: link the complete validation set there (see datasets/README.md)".format(
                               n_missing, subset.selected, source.name, subset.root / "images", subset.missing[0],
                               allowed))
