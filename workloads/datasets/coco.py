"""COCO 2017 validation set: loading and checking an instances annotation file, the image list, category ids.

`instances_val2017.json` (from annotations_trainval2017.zip) lists 5,000 images and 80
categories whose ids run 1..90 with gaps (the 91-id space of the original COCO paper, 0 unused).
SSD-MobileNet's class k is COCO category id k, so detections keep their ids; a detection whose id
is not among the annotation file's categories is dropped by the scorer (see workloads/metrics.py).

MLMark scores all images of the file; `max_images` takes the first images in file-name order for
quick runs.
"""

from __future__ import annotations

import json
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Optional

from core.errors import DatasetError

MLMARK_IMAGES = 5000  # val2017


def load_annotations(path: Path) -> Dict[str, Any]:
    """Read and check a COCO instances annotation file (segmentations dropped); DatasetError on a problem."""
    path = Path(path)
    try:
        with open(str(path), "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise DatasetError("{}: annotation file not found".format(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError("{}: cannot read the annotation file ({})".format(path, exc)) from None
    except ValueError as exc:
        raise DatasetError("{}: not JSON ({})".format(path, str(exc).splitlines()[0][:120])) from None
    check_coco(data, str(path))
    for ann in data["annotations"]:
        # Box mAP never reads the polygons, which are most of the file's memory once parsed.
        ann.pop("segmentation", None)
    return data


def check_coco(data: Any, name: str = "annotations") -> None:
    """Raise DatasetError unless data is a COCO instances annotation object that COCOeval can score."""
    def bad(what: str) -> DatasetError:
        return DatasetError("{}: not a COCO instances annotation file: {}".format(name, what))

    if not isinstance(data, dict):
        raise bad("the top level is a JSON {}, expected an object with images, annotations and categories".format(
            type(data).__name__))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise bad("no '{}' list".format(key))
    if not data["images"]:
        raise bad("'images' is empty")
    if not data["categories"]:
        raise bad("'categories' is empty")
    image_ids = set()
    for n, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise bad("images[{}] is not an object".format(n))
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise bad("images[{}] has no '{}'".format(n, key))
        if not _is_int(img["id"]) or not isinstance(img["file_name"], str) or not img["file_name"]:
            raise bad("images[{}] needs an integer id and a file_name".format(n))
        if not (_is_number(img["width"]) and _is_number(img["height"]) and img["width"] > 0 and img["height"] > 0):
            raise bad("images[{}] ({}) needs a positive width and height".format(n, img["file_name"]))
        if img["id"] in image_ids:
            raise bad("image id {} appears twice".format(img["id"]))
        image_ids.add(img["id"])
    cat_ids = set()
    for n, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or cat["id"] < 1:
            raise bad("categories[{}] needs a positive integer id".format(n))
        cat_ids.add(cat["id"])
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise bad("annotations[{}] is not an object".format(n))
        for key in ("id", "image_id", "category_id", "bbox", "area", "iscrowd"):
            if key not in ann:
                raise bad("annotations[{}] has no '{}'".format(n, key))
        if ann["image_id"] not in image_ids:
            raise bad("annotations[{}] refers to image id {}, which 'images' does not list".format(n, ann["image_id"]))
        if ann["category_id"] not in cat_ids:
            raise bad("annotations[{}] has category_id {}, which 'categories' does not list".format(
                n, ann["category_id"]))
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
                and box[2] >= 0 and box[3] >= 0):
            raise bad("annotations[{}] bbox must be [x, y, width, height], got {}".format(n, json.dumps(box)[:60]))
        if not _is_number(ann["area"]) or ann["iscrowd"] not in (0, 1):
            raise bad("annotations[{}] needs a numeric area and iscrowd 0 or 1".format(n))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def select_images(data: Dict[str, Any], max_images: Optional[int] = None) -> List[Dict[str, Any]]:
    """The images to score, in file-name order: all of them (MLMark), or the first max_images."""
    images = sorted(data["images"], key=lambda im: im["file_name"])
    return images[:max_images] if max_images is not None else images


def category_ids(data: Dict[str, Any]) -> List[int]:
    """The annotation file's category ids, sorted (80 ids within 1..90 for COCO 2017)."""
    return sorted(c["id"] for c in data["categories"])
