"""Accuracy scores: Top-1/Top-5 with the background-class offset, and COCO mAP with pycocotools' COCOeval.

Classification. A model's output width says how its classes are numbered: 1000 outputs are the
dataset's class indices 0..999; 1001 outputs (TF-slim's MobileNet and ResNet) put a background
class at 0, so output k is class k - 1, and a background prediction is never right. Ties rank the
lower output first; a non-finite output never ranks above a finite one.

Detection. COCOeval over the scored images only: mAP@[.5:.95] (IoU 0.50 to 0.95 in steps of 0.05,
101-point interpolated precision, up to 100 detections an image, all areas) is `stats[0]` and
mAP@.5 `stats[1]`, as fractions. Category ids: SSD-MobileNet's class k is COCO category id k
(1..90, the 91-id space; 80 ids are used). `model_to_coco_ids` maps model classes to the annotation
file's category ids (identity for a 91-class model, the sorted list for an 81-class one), and
detections of a class with no category in the file are dropped and counted, never scored.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core.errors import DatasetError, ModelError

IMAGENET_CLASSES = 1000


def label_offset(num_outputs: int, num_classes: int = IMAGENET_CLASSES) -> int:
    """How many leading outputs are not dataset classes: 1 for a background class (1001), else 0."""
    if num_outputs == num_classes:
        return 0
    if num_outputs == num_classes + 1:
        return 1
    raise ModelError("a classifier for {} classes must have {} or {} outputs (with a background class), "
                     "this one has {}".format(num_classes, num_classes, num_classes + 1, num_outputs))


def topk_classes(logits: np.ndarray, k: int = 5, offset: int = 0) -> np.ndarray:
    """The k best dataset class indices per row [N, k], best first (-1 = the background class)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ModelError("classifier output must be [batch, classes], got shape {}".format(list(x.shape)))
    x = np.where(np.isfinite(x), x, -np.inf)  # NaN would otherwise sort first under negation
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    return order - offset


class TopK:
    """Running Top-1 and Top-5 counts over batches."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES) -> None:
        self.num_classes = num_classes
        self.count = 0
        self.top1 = 0
        self.top5 = 0
        self.nonfinite = 0  # images whose output had NaN or inf (an fp16/int8 overflow, usually)
        self.offset: Optional[int] = None

    def add(self, logits: np.ndarray, labels: Sequence[int]) -> None:
        """Score one batch of outputs [N, 1000 or 1001] against N labels (0..999)."""
        logits = np.asarray(logits)
        labels = np.asarray(labels, dtype=np.int64)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ModelError("classifier output of shape {} does not fit a batch of {} images".format(
                list(logits.shape), labels.shape[0]))
        self.offset = label_offset(logits.shape[1], self.num_classes)
        top = topk_classes(logits, 5, self.offset)
        self.top1 += int(np.count_nonzero(top[:, 0] == labels))
        self.top5 += int(np.count_nonzero((top == labels[:, None]).any(axis=1)))
        self.nonfinite += int(np.count_nonzero(~np.isfinite(logits).all(axis=1)))
        self.count += labels.shape[0]

    def percent(self) -> Tuple[float, float]:
        """(Top-1, Top-5) in percent."""
        if not self.count:
            return float("nan"), float("nan")
        return 100.0 * self.top1 / self.count, 100.0 * self.top5 / self.count


# ---------------------------------------------------------------------- COCO


def model_to_coco_ids(num_model_classes: int, categories: Sequence[int]) -> Dict[int, int]:
    """Model class id (0 = background) -> the annotation file's category id, for the classes that have one."""
    cats = sorted(categories)
    if num_model_classes == 91:  # class k is COCO id k; the 10 unused ids (and any absent ones) map to nothing
        present = set(cats)
        return {k: k for k in range(1, 91) if k in present}
    if num_model_classes == len(cats) + 1:  # contiguous classes 1..80 in category-id order
        return {k + 1: c for k, c in enumerate(cats)}
    raise ModelError("a COCO detector must have 91 classes (ids 1..90 with background) or {} (contiguous), "
                     "this one has {}".format(len(cats) + 1, num_model_classes))


@dataclass
class CocoScore:
    """COCOeval's result over the scored images."""

    map: Optional[float]  # mAP@[.5:.95], fraction; None when the images hold no ground-truth object
    map50: Optional[float]  # mAP@.5, fraction
    images: int
    detections: int  # detections scored
    dropped: int  # detections whose category is not in the annotation file
    summary: str  # COCOeval's printed summary


def _pycocotools() -> Tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DatasetError("COCO mAP needs pycocotools (pip install pycocotools)") from None
    return COCO, COCOeval


def coco_map(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]],
             image_ids: Sequence[int]) -> CocoScore:
    """COCOeval bbox mAP of detections ({image_id, category_id, bbox [x, y, w, h], score}) on image_ids only."""
    COCO, COCOeval = _pycocotools()
    ids = sorted(set(int(i) for i in image_ids))
    if not ids:
        raise DatasetError("no images to score")
    known_ids = set(ids)
    cats = {c["id"] for c in ground_truth["categories"]}
    kept: List[Dict[str, Any]] = []
    dropped = 0
    for d in detections:
        if d["category_id"] not in cats:
            dropped += 1
            continue
        if d["image_id"] not in known_ids:
            raise DatasetError("a detection refers to image id {}, which is not among the scored images".format(
                d["image_id"]))
        kept.append({"image_id": d["image_id"], "category_id": d["category_id"],
                     "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = copy.copy(dict(ground_truth))  # createIndex does not modify the lists
        gt.createIndex()
        n_objects = len(gt.getAnnIds(imgIds=ids, iscrowd=False))
        if not kept:
            # loadRes cannot take an empty list; with no detection every AP is 0 (or undefined without objects)
            value = 0.0 if n_objects else None
            return CocoScore(map=value, map50=value, images=len(ids), detections=0, dropped=dropped,
                             summary="no detections")
        dt = gt.loadRes(kept)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:2]]
    map_, map50 = [None if (v < 0 or math.isnan(v)) else v for v in stats]  # -1: no ground truth at all
    return CocoScore(map=map_, map50=map50, images=len(ids), detections=len(kept), dropped=dropped,
                     summary=out.getvalue().strip())
