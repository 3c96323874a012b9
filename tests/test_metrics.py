"""Scores: Top-k with the background offset on known logits, COCO mAP from pycocotools on known detections."""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import numpy as np
import pytest

from core.errors import DatasetError, ModelError
from tests.test_datasets import COCO_CATEGORIES, coco_annotation
from workloads.metrics import TopK, coco_map, label_offset, model_to_coco_ids, topk_classes

# ---------------------------------------------------------------- Top-k


def logits_for(best: List[List[int]], width: int) -> np.ndarray:
    """Rows whose outputs rank the given indices first, in that order, everything else below."""
    x = np.zeros((len(best), width), dtype=np.float32)
    for r, order in enumerate(best):
        for rank, idx in enumerate(order):
            x[r, idx] = 10.0 - rank
    return x


def test_label_offset_from_the_output_width() -> None:
    assert label_offset(1000) == 0 and label_offset(1001) == 1
    with pytest.raises(ModelError, match="must have 1000 or 1001 outputs"):
        label_offset(91)


def test_topk_on_known_logits_1000_classes() -> None:
    x = logits_for([[7, 3, 9, 1, 2], [0, 999, 5, 6, 8]], 1000)
    np.testing.assert_array_equal(topk_classes(x, 5), [[7, 3, 9, 1, 2], [0, 999, 5, 6, 8]])
    t = TopK()
    t.add(x, [7, 8])  # image 0: top-1; image 1: label 8 is 5th
    assert (t.count, t.top1, t.top5, t.offset) == (2, 1, 2, 0)
    assert t.percent() == (50.0, 100.0)


def test_topk_with_background_class_subtracts_one() -> None:
    # 1001 outputs: output k is class k - 1; output 0 (background) is never a right answer
    x = logits_for([[8, 4], [0, 1, 2, 3, 4, 5], [1000]], 1001)
    t = TopK()
    t.add(x, [7, 3, 999])
    np.testing.assert_array_equal(topk_classes(x, 2, offset=1)[:2], [[7, 3], [-1, 0]])
    # image 0: 8 -> class 7 (top-1); image 1: background first, classes 0..3 after, label 3 in the top 5
    assert (t.top1, t.top5, t.offset) == (2, 3, 1)
    missed = TopK()
    missed.add(logits_for([[1]], 1001), [1])  # output 1 is class 0, not class 1
    assert missed.top1 == 0


def test_topk_ties_and_nonfinite_outputs() -> None:
    x = np.zeros((1, 1000), dtype=np.float32)  # all tied: lower index first
    np.testing.assert_array_equal(topk_classes(x, 3), [[0, 1, 2]])
    y = np.zeros((2, 1000), dtype=np.float32)
    y[0, 4] = np.nan
    y[0, 6] = 1.0
    y[1, :] = np.inf
    y[1, 2] = np.nan
    t = TopK()
    t.add(y, [6, 0])
    assert topk_classes(y, 1)[0, 0] == 6 and t.top1 == 2 and t.nonfinite == 2
    with pytest.raises(ModelError, match="does not fit a batch of 3"):
        t.add(np.zeros((2, 1000)), [1, 2, 3])


# ---------------------------------------------------------------- COCO mAP

IMAGES = [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 200},
          {"id": 2, "file_name": "b.jpg", "width": 200, "height": 200},
          {"id": 3, "file_name": "c.jpg", "width": 200, "height": 200}]


def ground_truth() -> Dict[str, Any]:
    anns = [coco_annotation(1, 1, 1, [10, 10, 100, 100]), coco_annotation(2, 2, 1, [50, 40, 80, 60]),
            coco_annotation(3, 2, 3, [0, 100, 100, 100]), coco_annotation(4, 3, 3, [20, 20, 60, 90])]
    return {"images": copy.deepcopy(IMAGES), "annotations": anns, "categories": COCO_CATEGORIES}


def perfect(gt: Dict[str, Any], score: float = 0.9) -> List[Dict[str, Any]]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in gt["annotations"]]


def test_perfect_detections_score_one() -> None:
    gt = ground_truth()
    s = coco_map(gt, perfect(gt), [1, 2, 3])
    assert s.map == pytest.approx(1.0) and s.map50 == pytest.approx(1.0)
    assert (s.images, s.detections, s.dropped) == (3, 4, 0)
    assert "Average Precision" in s.summary
    # category 90 has no ground truth here: COCOeval leaves it out of the mean instead of scoring 0


def test_shifted_boxes_score_the_known_lower_value() -> None:
    gt = ground_truth()
    dets = perfect(gt)
    for d in dets:
        d["bbox"][0] += d["bbox"][2] * 23 / 100  # IoU (100 - 23) / (100 + 23) = 0.626: passes 0.50..0.60 only
    s = coco_map(gt, dets, [1, 2, 3])
    assert s.map50 == pytest.approx(1.0)
    assert s.map == pytest.approx(0.3)  # 3 of the 10 IoU thresholds


def test_missing_class_counts_as_zero_for_that_class() -> None:
    gt = ground_truth()
    only_people = [d for d in perfect(gt) if d["category_id"] == 1]
    s = coco_map(gt, only_people, [1, 2, 3])
    assert s.map == pytest.approx(0.5) and s.map50 == pytest.approx(0.5)  # person 1.0, car 0.0


def test_detection_of_an_absent_category_is_dropped_not_scored() -> None:
    gt = ground_truth()
    extra = {"image_id": 1, "category_id": 12, "bbox": [10, 10, 100, 100], "score": 0.99}  # 12: unused COCO id
    s = coco_map(gt, perfect(gt) + [extra], [1, 2, 3])
    assert s.dropped == 1 and s.detections == 4 and s.map == pytest.approx(1.0)


def test_only_the_scored_images_count() -> None:
    gt = ground_truth()
    dets = [d for d in perfect(gt) if d["image_id"] in (1, 2)]
    s = coco_map(gt, dets, [1, 2])  # image 3's car is not in the subset, so not missed
    assert s.map == pytest.approx(1.0) and s.images == 2
    with pytest.raises(DatasetError, match="image id 3, which is not among the scored images"):
        coco_map(gt, perfect(gt), [1, 2])


def test_no_detections_and_no_ground_truth() -> None:
    gt = ground_truth()
    assert coco_map(gt, [], [1, 2, 3]).map == 0.0
    empty = dict(gt, annotations=[])
    assert coco_map(empty, [], [1]).map is None
    s = coco_map(empty, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}], [1])
    assert s.map is None  # nothing to find: undefined, not 0


def test_model_class_ids_to_coco_category_ids() -> None:
    cats = [c["id"] for c in COCO_CATEGORIES]  # 1, 3, 90
    assert model_to_coco_ids(91, cats) == {1: 1, 3: 3, 90: 90}  # ids absent from the file map to nothing
    assert model_to_coco_ids(4, cats) == {1: 1, 2: 3, 3: 90}  # contiguous classes in category-id order
    with pytest.raises(ModelError, match="must have 91 classes"):
        model_to_coco_ids(10, cats)
