"""SSD-MobileNet v1 post-processing: anchors, decoding, NMS against a brute-force reference, COCO output."""

from __future__ import annotations

import math
import time
from typing import List, Sequence, Tuple

import numpy as np
import pytest

from core.errors import ModelError
from workloads.ssd import anchors as anchors_mod
from workloads.ssd import postprocess as pp
from workloads.ssd.anchors import NUM_ANCHORS, ssd_anchors
from workloads.ssd.postprocess import (
    EXPORTED_GRAPH_SCORE_THRESHOLD,
    SCORE_THRESHOLD,
    Detections,
    decode_boxes,
    multiclass_nms,
    non_max_suppression,
    postprocess,
    to_coco_detections,
)

# ---------------------------------------------------------------- brute-force reference (pure Python)

Box = Sequence[float]


def ref_iou(a: Box, b: Box) -> float:
    """tf.image.non_max_suppression's IoU, written out."""
    ay1, ay2, ax1, ax2 = min(a[0], a[2]), max(a[0], a[2]), min(a[1], a[3]), max(a[1], a[3])
    by1, by2, bx1, bx2 = min(b[0], b[2]), max(b[0], b[2]), min(b[1], b[3]), max(b[1], b[3])
    area_a = (ay2 - ay1) * (ax2 - ax1)
    area_b = (by2 - by1) * (bx2 - bx1)
    if not (area_a > 0 and area_b > 0):
        return 0.0
    inter = max(min(ay2, by2) - max(ay1, by1), 0.0) * max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    return inter / (area_a + area_b - inter)


def ref_nms(boxes: List[Box], scores: List[float], iou_thr: float, max_out: int, score_thr: float) -> List[int]:
    cand = sorted((i for i in range(len(scores)) if scores[i] > score_thr), key=lambda i: (-scores[i], i))
    keep: List[int] = []
    for i in cand:
        if len(keep) >= max_out:
            break
        if all(not ref_iou(boxes[i], boxes[j]) > iou_thr for j in keep):
            keep.append(i)
    return keep


def ref_multiclass(boxes32: np.ndarray, scores32: np.ndarray, score_thr: float, iou_thr: float, max_per_class: int,
                   max_total: int, clip: bool) -> List[Tuple[float, int, int]]:
    """(score, class column, anchor) of the kept boxes: per-class NMS, then the best max_total."""
    if clip:
        boxes32 = np.clip(boxes32, 0.0, 1.0)
    boxes = boxes32.astype(np.float64).tolist()
    valid = [not clip or (b[2] - b[0]) * (b[3] - b[1]) > 0 for b in boxes]
    columns = scores32.astype(np.float64).T.tolist()
    merged: List[Tuple[float, int, int]] = []
    for k, col in enumerate(columns):
        col = [s if valid[i] else -math.inf for i, s in enumerate(col)]
        merged.extend((col[i], k, i) for i in ref_nms(boxes, col, iou_thr, max_per_class, score_thr))
    merged.sort(key=lambda t: -t[0])  # stable: ties stay in class order, then NMS order
    return merged[:max_total]


def as_triples(d: Detections) -> List[Tuple[float, int, int]]:
    return [(float(s), int(c) - 1, -1) for s, c in zip(d.scores, d.classes)]


def check_against_reference(boxes32: np.ndarray, scores32: np.ndarray, score_thr: float = SCORE_THRESHOLD,
                            iou_thr: float = 0.6, max_per_class: int = 100, max_total: int = 100,
                            clip: bool = True) -> Detections:
    got = multiclass_nms(boxes32, scores32, score_threshold=score_thr, iou_threshold=iou_thr,
                         max_per_class=max_per_class, max_total=max_total, clip=clip)
    want = ref_multiclass(boxes32, scores32, score_thr, iou_thr, max_per_class, max_total, clip)
    clipped = np.clip(boxes32, 0, 1) if clip else boxes32
    assert [(s, k) for s, k, _ in want] == [(s, k) for s, k, _ in as_triples(got)]
    np.testing.assert_array_equal(got.boxes, clipped[[i for _, _, i in want]].reshape(-1, 4))
    return got


def clustered_boxes(rng: np.random.Generator, clusters: int, per_cluster: int, jitter: float,
                    spread: float = 0.25) -> np.ndarray:
    """Boxes in tight groups (heavy suppression), some reaching outside the image."""
    centres = rng.uniform(-0.1, 1.1, size=(clusters, 2))
    sizes = rng.uniform(0.05, 0.5, size=(clusters, 2))
    c = np.repeat(centres, per_cluster, axis=0) + rng.normal(0, jitter, size=(clusters * per_cluster, 2))
    s = np.repeat(sizes, per_cluster, axis=0) * rng.uniform(1 - spread, 1 + spread, size=(clusters * per_cluster, 2))
    return np.concatenate([c - s / 2, c + s / 2], axis=1).astype(np.float32)


# ---------------------------------------------------------------- anchors


def test_anchor_count_and_layout() -> None:
    a = ssd_anchors()
    assert a.shape == (NUM_ANCHORS, 4) == (1917, 4) and a.dtype == np.float32
    assert not a.flags.writeable
    sizes = [19 * 19 * 3, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 6, 2 * 2 * 6, 1 * 1 * 6]
    assert sum(sizes) == 1917
    assert [len(s) for s in anchors_mod.layer_box_specs()] == [3, 6, 6, 6, 6, 6]
    # layer 0, location (0, 0): (0.1, 1.0), (0.2, 2.0), (0.2, 0.5), centred at 0.5/19
    c = 0.5 / 19
    np.testing.assert_allclose(a[0], [c, c, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(a[1], [c, c, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(a[2], [c, c, 0.2 * math.sqrt(2), 0.2 / math.sqrt(2)], rtol=1e-6)
    # row-major, x fastest: the next location is (y 0, x 1); location 19 starts row 1
    np.testing.assert_allclose(a[3, :2], [c, 1.5 / 19], rtol=1e-6)
    np.testing.assert_allclose(a[19 * 3, :2], [1.5 / 19, c], rtol=1e-6)
    # layer 1 (10x10, scale 0.35), location (0, 0): ratios 1, 2, 0.5, 3, 0.3333, then sqrt(0.35 * 0.5)
    first = 19 * 19 * 3
    np.testing.assert_allclose(a[first], [0.05, 0.05, 0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(a[first + 3, 2:], [0.35 / math.sqrt(3), 0.35 * math.sqrt(3)], rtol=1e-6)
    np.testing.assert_allclose(a[first + 4, 2:], [0.35 / math.sqrt(0.3333), 0.35 * math.sqrt(0.3333)], rtol=1e-6)
    s = math.sqrt(0.35 * 0.5)
    np.testing.assert_allclose(a[first + 5], [0.05, 0.05, s, s], rtol=1e-6)
    # last layer (1x1, scale 0.95): centre 0.5, interpolated box sqrt(0.95 * 1.0)
    np.testing.assert_allclose(a[-6], [0.5, 0.5, 0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(a[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], rtol=1e-6)


# ---------------------------------------------------------------- decoding


def test_decode_hand_computed() -> None:
    anchors = np.array([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1]], dtype=np.float32)
    enc = np.array([[1.0, -2.0, 5 * math.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    # ty = 0.1 -> yc = 0.1 * 0.2 + 0.5 = 0.52; tx = -0.2 -> xc = -0.2 * 0.4 + 0.5 = 0.42;
    # h = exp(log 2) * 0.2 = 0.4; w = exp(0) * 0.4 = 0.4
    out = decode_boxes(enc, anchors)
    np.testing.assert_allclose(out[0], [0.32, 0.22, 0.72, 0.62], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.2, 0.7, 0.3, 0.8], atol=1e-7)  # zero encoding: the anchor itself
    batched = decode_boxes(np.stack([enc, enc]), anchors)
    assert batched.shape == (2, 2, 4) and np.array_equal(batched[1], out)
    with pytest.raises(ModelError):
        decode_boxes(np.zeros((3, 4), np.float32), anchors)


def test_decode_default_anchors_and_scale_factors() -> None:
    a = ssd_anchors()
    out = decode_boxes(np.zeros((NUM_ANCHORS, 4), np.float32))
    np.testing.assert_allclose(out[:, 2] - out[:, 0], a[:, 2], atol=1e-6)
    one = decode_boxes(np.array([[0.0, 0.0, 1.0, 0.0]], np.float32), a[:1], scale_factors=(1, 1, 1, 1))
    np.testing.assert_allclose(one[0, 2] - one[0, 0], a[0, 2] * math.e, rtol=1e-6)


# ---------------------------------------------------------------- NMS against the reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_single_class_nms_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = clustered_boxes(rng, clusters=15, per_cluster=20, jitter=0.02)
    boxes[:5] = boxes[:5, [2, 3, 0, 1]]  # a few flipped boxes: TF orders their corners itself
    scores = rng.random(len(boxes)).astype(np.float32)
    scores[rng.integers(0, len(boxes), 10)] = 0.5  # ties
    for iou_thr, max_out, score_thr in [(0.6, 100, -math.inf), (0.3, 10, 0.2), (0.9, 1000, 0.0)]:
        got = non_max_suppression(boxes, scores, iou_thr, max_out, score_thr)
        want = ref_nms(boxes.astype(np.float64).tolist(), scores.astype(np.float64).tolist(), iou_thr, max_out,
                       score_thr)
        assert got.tolist() == want


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_multiclass_nms_matches_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if seed % 2:  # odd seeds take the other path: IoU per kept box instead of all same-class pairs at once
        monkeypatch.setattr(pp, "_MAX_PAIRS", 0)
    rng = np.random.default_rng(seed)
    boxes = clustered_boxes(rng, clusters=12, per_cluster=25, jitter=0.03)
    scores = rng.random((len(boxes), 7)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = 0.0
    scores[rng.integers(0, len(boxes), 20), rng.integers(0, 7, 20)] = 0.75  # ties across classes
    check_against_reference(boxes, scores)
    check_against_reference(boxes, scores, score_thr=0.5, iou_thr=0.4, clip=False)
    check_against_reference(boxes, scores, max_per_class=3, max_total=1000)  # per-class cap binds
    check_against_reference(boxes, scores, max_total=5)


def test_multiclass_nms_many_chunks_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tight clusters: almost every candidate is suppressed, so the 100th kept box lies deep in the
    # ranking and more than one chunk of candidates is needed.
    calls = []
    real = pp._greedy_chunk
    monkeypatch.setattr(pp, "_greedy_chunk", lambda idx, *a: calls.append(idx.size) or real(idx, *a))
    rng = np.random.default_rng(10)
    clusters = clustered_boxes(rng, clusters=20, per_cluster=100, jitter=0.002, spread=0.02)
    singles = clustered_boxes(rng, clusters=40, per_cluster=1, jitter=0.0)
    boxes = np.concatenate([clusters, singles])
    scores = rng.random((len(boxes), 4)).astype(np.float32)
    scores[len(clusters):] *= 0.5  # the lone boxes rank below half of all candidates
    got = check_against_reference(boxes, scores, max_total=100)
    assert len(got.scores) == 100 and len(calls) >= 2
    calls.clear()
    got = check_against_reference(boxes, scores, max_total=1000)
    assert 100 < len(got.scores) < 1000 and len(calls) >= 2  # the cap is never reached: every chunk is visited


def test_multiclass_nms_one_dominant_class_matches_reference() -> None:
    rng = np.random.default_rng(7)
    boxes = clustered_boxes(rng, clusters=40, per_cluster=60, jitter=0.01)
    scores = np.zeros((len(boxes), 3), np.float32)
    scores[:, 1] = rng.random(len(boxes))
    scores[:50, 2] = rng.random(50)
    check_against_reference(boxes, scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_postprocess_full_size_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    enc = rng.normal(0, 1, size=(1, NUM_ANCHORS, 4)).astype(np.float32)
    logits = rng.normal(-6, 1.5, size=(1, NUM_ANCHORS, 91))  # mostly low scores, as a trained model's
    scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
    (d,) = postprocess(enc, scores, score_threshold=0.05)
    want = ref_multiclass(decode_boxes(enc)[0], scores[0, :, 1:], 0.05, 0.6, 100, 100, True)
    assert [(s, k + 1) for s, k, _ in want] == list(zip(d.scores.tolist(), d.classes.tolist()))
    assert len(d.scores) == 100 and d.classes.min() >= 1 and d.classes.max() <= 90


# ---------------------------------------------------------------- edge cases and caps


def test_empty_when_nothing_passes_the_threshold() -> None:
    enc = np.zeros((2, NUM_ANCHORS, 4), np.float32)
    scores = np.full((2, NUM_ANCHORS, 91), 0.2, np.float32)
    scores[:, :, 0] = 0.99  # background only
    for d in postprocess(enc, scores, score_threshold=EXPORTED_GRAPH_SCORE_THRESHOLD):
        assert d.boxes.shape == (0, 4) and d.scores.shape == (0,) and d.classes.shape == (0,)
        assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.classes.dtype == np.int32
        assert to_coco_detections(d, 1, 640, 480) == []
    assert postprocess(enc[:0], scores[:0]) == []


def test_max_total_caps_and_orders_detections() -> None:
    rng = np.random.default_rng(3)
    enc = rng.normal(0, 1, size=(1, NUM_ANCHORS, 4)).astype(np.float32)
    scores = rng.random((1, NUM_ANCHORS, 91)).astype(np.float32)
    (d,) = postprocess(enc, scores)
    assert len(d.scores) == 100
    assert np.all(np.diff(d.scores) <= 0)
    (d10,) = postprocess(enc, scores, max_total=10)
    assert d10.scores.tolist() == d.scores[:10].tolist()
    (d1,) = postprocess(enc, scores, max_per_class=1, max_total=1000)
    assert len(d1.scores) == 90 and sorted(d1.classes.tolist()) == list(range(1, 91))
    # boxes are clipped to the image
    assert d.boxes.min() >= 0 and d.boxes.max() <= 1


def test_nan_scores_and_wild_encodings_are_ignored() -> None:
    rng = np.random.default_rng(5)
    enc = rng.normal(0, 1, size=(1, NUM_ANCHORS, 4)).astype(np.float32)
    enc[0, :10, 2:] = 1e4  # overflows exp(): an infinite box
    scores = rng.random((1, NUM_ANCHORS, 91)).astype(np.float32) * 0.5
    scores[0, 20:40, 5] = np.nan
    scores[0, 0, 7] = 0.99
    (d,) = postprocess(enc, scores)
    assert np.isfinite(d.scores).all() and np.isfinite(d.boxes).all()
    assert d.scores[0] == np.float32(0.99) and d.classes[0] == 7
    np.testing.assert_array_equal(d.boxes[0], [0, 0, 1, 1])  # clipped to the image
    scores[0, 50, 3] = np.inf  # a broken model: must still end, with that score first
    (d,) = postprocess(enc, scores)
    assert d.scores[0] == np.inf and d.classes[0] == 3 and len(d.scores) == 100


def test_shape_errors_are_model_errors() -> None:
    with pytest.raises(ModelError, match="SSD outputs"):
        postprocess(np.zeros((1, NUM_ANCHORS, 4)), np.zeros((1, NUM_ANCHORS)))
    with pytest.raises(ModelError):
        postprocess(np.zeros((1, 100, 4)), np.zeros((1, 100, 91)))  # 100 anchors: not this model


def test_full_candidate_set_is_fast() -> None:
    rng = np.random.default_rng(0)
    enc = rng.normal(0, 1, size=(8, NUM_ANCHORS, 4)).astype(np.float32)
    scores = rng.random((8, NUM_ANCHORS, 91)).astype(np.float32)  # all 172,530 candidates pass 1e-8
    postprocess(enc[:1], scores[:1])
    t0 = time.perf_counter()
    postprocess(enc, scores)
    assert time.perf_counter() - t0 < 2.0  # typically ~2 ms an image on a desktop core


# ---------------------------------------------------------------- COCO output


def test_to_coco_detections_pixels() -> None:
    d = Detections(boxes=np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), scores=np.array([0.75], np.float32),
                   classes=np.array([18], np.int32))
    (r,) = to_coco_detections(d, 42, width=640, height=480)
    assert r["image_id"] == 42 and r["category_id"] == 18 and isinstance(r["category_id"], int)
    np.testing.assert_allclose(r["bbox"], [0.2 * 640, 0.1 * 480, 0.4 * 640, 0.4 * 480], rtol=1e-6)
    assert r["score"] == pytest.approx(0.75) and isinstance(r["score"], float)
    assert all(isinstance(v, float) for v in r["bbox"])
