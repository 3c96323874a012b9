"""SSD-MobileNet v1 post-processing in numpy: box decoding and class-wise NMS as the TF Object Detection API.

The network gives raw box encodings [batch, 1917, 4] (ty, tx, th, tw) and sigmoid class scores
[batch, 1917, 91] (column 0 background, column k the COCO category id k of TF's label map). Per
image this module does what the TF OD API's SSD post-processor does:

1. Decode each encoding against its anchor (FasterRcnnBoxCoder, scale factors 10, 10, 5, 5).
2. Clip the boxes to the image window [0, 1] and drop boxes left with no area (TF's clip_to_window,
   which its multiclass NMS applies when the SSD meta-architecture passes the image window; whether
   the 2018_01_28 export did is not verified: `clip=False` skips this step).
3. For every foreground class: keep the boxes whose score is strictly greater than the score
   threshold, then greedy NMS in score order, suppressing a box whose IoU with an already kept box
   of that class is strictly greater than the IoU threshold, at most `max_per_class` boxes.
4. Over all classes, the `max_total` best by score.

Thresholds. The TF OD API's config for training and evaluating ssd_mobilenet_v1_coco
(samples/configs/ssd_mobilenet_v1_coco.config) uses score threshold 1e-8, IoU 0.6, 100 per class
and 100 in all; the pipeline.config shipped with the exported ssd_mobilenet_v1_coco_2018_01_28 graph
(the graph MLPerf converted to ONNX) keeps IoU 0.6 and 100/100 but sets the score threshold to 0.3.
The defaults here are the evaluation values: COCO mAP ranks up to 100 detections per image by score
with no confidence cut-off, and a detection below 0.3 ranks after every detection of 0.3 or more,
in every image, so it can only add recall at the tail of its class's precision/recall curve. 1e-8
therefore gives the mAP the model is capable of; 0.3 (`EXPORTED_GRAPH_SCORE_THRESHOLD`) reproduces
the exported graph, with an equal or lower mAP.

Speed. 1917 x 90 scores above 1e-8 means up to 172,530 candidates. Per-class NMS followed by a
top-100 merge is the same as one greedy pass over all candidates in the order (score descending,
class, anchor), each candidate tested only against kept boxes of its own class, stopping at the
100th kept box: every later candidate scores no higher than the 100th and cannot enter the top 100.
So candidates are taken in chunks of the best few thousand (a score cut-off estimated from a
sample, then a sort of the chunk only), the IoU of every same-class pair in a chunk is computed at
once, and the loop runs over candidates only until 100 are kept: about 2 ms an image on one
desktop core whatever the threshold. Ties are broken by lower class, then lower anchor index (TF
leaves score ties unspecified).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from core.errors import ModelError
from workloads.ssd.anchors import ssd_anchors

SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)  # y, x, height, width (TF's faster_rcnn_box_coder)
SCORE_THRESHOLD = 1e-8  # TF OD API evaluation config; see the module docstring
EXPORTED_GRAPH_SCORE_THRESHOLD = 0.3  # what the exported 2018_01_28 frozen graph uses
IOU_THRESHOLD = 0.6
MAX_PER_CLASS = 100
MAX_TOTAL = 100  # COCO evaluation's maxDets
LABEL_OFFSET = 1  # score column k (k >= 1) is COCO category id k; column 0 is background
_FIRST_CHUNK = 2048  # candidates sorted at first; enough for 100 kept boxes in practice
_MAX_PAIRS = 1 << 18  # same-class pairs whose IoU is precomputed at once (about 10 MB of temporaries)


class Detections(NamedTuple):
    """One image's detections, best first."""

    boxes: np.ndarray  # float32 [N, 4]: ymin, xmin, ymax, xmax, normalised to [0, 1]
    scores: np.ndarray  # float32 [N]
    classes: np.ndarray  # int32 [N]: COCO category ids (1..90)


def decode_boxes(encodings: np.ndarray, anchors: Optional[np.ndarray] = None,
                 scale_factors: Sequence[float] = SCALE_FACTORS) -> np.ndarray:
    """Decode [..., A, 4] (ty, tx, th, tw) against [A, 4] (yc, xc, h, w) anchors into (ymin, xmin, ymax, xmax)."""
    anchors = ssd_anchors() if anchors is None else np.asarray(anchors, dtype=np.float32)
    enc = np.asarray(encodings, dtype=np.float32)
    if enc.ndim < 2 or enc.shape[-1] != 4 or enc.shape[-2] != anchors.shape[0]:
        raise ModelError("SSD box encodings of shape {} do not fit {} anchors (expected [..., {}, 4])".format(
            list(enc.shape), anchors.shape[0], anchors.shape[0]))
    sy, sx, sh, sw = (np.float32(s) for s in scale_factors)
    ya, xa, ha, wa = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    with np.errstate(over="ignore"):  # a wild encoding gives an infinite box, which NMS then ignores
        h = np.exp(enc[..., 2] / sh) * ha
        w = np.exp(enc[..., 3] / sw) * wa
    yc = enc[..., 0] / sy * ha + ya
    xc = enc[..., 1] / sx * wa + xa
    out = np.empty(enc.shape, dtype=np.float32)
    out[..., 0] = yc - h / 2
    out[..., 1] = xc - w / 2
    out[..., 2] = yc + h / 2
    out[..., 3] = xc + w / 2
    return out


class _Corners:
    """Box corners (float64) and areas, prepared once for many IoU queries."""

    __slots__ = ("y1", "x1", "y2", "x2", "area")

    def __init__(self, boxes: np.ndarray) -> None:
        b = np.asarray(boxes, dtype=np.float64)
        # TF orders each box's coordinates itself, so a flipped box still has its true extent
        self.y1 = np.minimum(b[:, 0], b[:, 2])
        self.y2 = np.maximum(b[:, 0], b[:, 2])
        self.x1 = np.minimum(b[:, 1], b[:, 3])
        self.x2 = np.maximum(b[:, 1], b[:, 3])
        self.area = (self.y2 - self.y1) * (self.x2 - self.x1)

    def iou(self, i: Any, js: np.ndarray) -> np.ndarray:
        """IoU of box i (or boxes i, element-wise) with boxes js; 0 where either box has no area, as TF."""
        ih = np.maximum(np.minimum(self.y2[i], self.y2[js]) - np.maximum(self.y1[i], self.y1[js]), 0.0)
        iw = np.maximum(np.minimum(self.x2[i], self.x2[js]) - np.maximum(self.x1[i], self.x1[js]), 0.0)
        inter = ih * iw
        area_i, area_j = self.area[i], self.area[js]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area_i + area_j - inter)
        return np.where((area_i > 0) & (area_j > 0), iou, 0.0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = IOU_THRESHOLD,
                        max_output: int = MAX_PER_CLASS, score_threshold: float = -np.inf) -> np.ndarray:
    """Single-class greedy NMS as tf.image.non_max_suppression: indices of the kept boxes, best first."""
    scores = np.asarray(scores)
    cand = np.flatnonzero(scores > score_threshold)
    order = cand[np.argsort(-scores[cand], kind="stable")]  # ties: lower index first
    corners = _Corners(boxes)
    keep: List[int] = []
    while order.size and len(keep) < max_output:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[~(corners.iou(i, rest) > iou_threshold)]  # NaN IoU suppresses nothing
    return np.asarray(keep, dtype=np.int64)


def multiclass_nms(boxes: np.ndarray, class_scores: np.ndarray, score_threshold: float = SCORE_THRESHOLD,
                   iou_threshold: float = IOU_THRESHOLD, max_per_class: int = MAX_PER_CLASS,
                   max_total: int = MAX_TOTAL, clip: bool = True, label_offset: int = LABEL_OFFSET) -> Detections:
    """Class-wise NMS of one image: boxes [A, 4] shared by all classes, class_scores [A, K] without background."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(class_scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise ModelError("SSD NMS needs boxes [A, 4] and scores [A, K], got {} and {}".format(
            list(boxes.shape), list(scores.shape)))
    num_classes = scores.shape[1]
    work = np.array(scores, dtype=np.float32, order="C")  # own copy: entries are masked below
    nan = np.isnan(work)
    if nan.any():
        work[nan] = -np.inf  # a NaN score is no candidate (and np.partition would rank it first)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
        no_area = ~((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)
        work[no_area] = -np.inf  # clip_to_window drops boxes that lie outside the image
    flat = work.reshape(-1)
    corners = _Corners(boxes)

    kept = _Kept(num_classes)
    upper: Optional[float] = None  # once set, candidates scoring >= upper have been processed
    chunk = max(_FIRST_CHUNK, 8 * max_total)
    while len(kept.box) < max_total:
        pool = flat if upper is None else np.where(flat < upper, flat, -np.inf)
        floor = _chunk_floor(pool, chunk, num_classes)
        last = not floor > score_threshold
        sel = np.flatnonzero(pool > score_threshold) if last else np.flatnonzero(pool >= floor)
        if sel.size:
            _greedy_chunk(sel, flat[sel], num_classes, corners, iou_threshold, max_per_class, max_total, kept)
        if last:
            break
        upper, chunk = floor, chunk * 4

    idx = np.asarray(kept.box, dtype=np.int64)
    return Detections(boxes=boxes[idx].astype(np.float32, copy=False),
                      scores=np.asarray(kept.score, dtype=np.float32),
                      classes=np.asarray(kept.cls, dtype=np.int32) + np.int32(label_offset))


class _Kept:
    """Boxes kept so far, in output order, and the count per class."""

    __slots__ = ("box", "cls", "score", "per_class")

    def __init__(self, num_classes: int) -> None:
        self.box: List[int] = []
        self.cls: List[int] = []
        self.score: List[float] = []
        self.per_class = [0] * num_classes


def _chunk_floor(pool: np.ndarray, size: int, num_classes: int) -> float:
    """A score v such that about `size` entries of pool are >= v (-inf when pool has no more than that)."""
    n = pool.size
    if size >= n:
        return -np.inf
    # Estimate from a sample of ~16k entries instead of partitioning all 172k (about 10x faster);
    # a stride coprime with the class count visits every class alike.
    stride = max(1, n // 16384)
    while math.gcd(stride, num_classes) != 1:
        stride += 1
    sample = pool[::stride]
    k = max(1, int(round(size * sample.size / n)))
    floor = float(np.partition(sample, sample.size - k)[sample.size - k])
    if np.count_nonzero(pool >= floor) > 4 * size:  # a skewed sample (or many ties): be exact
        floor = float(np.partition(pool, n - size)[n - size])
    return floor


def _greedy_chunk(flat_idx: np.ndarray, flat_scores: np.ndarray, num_classes: int, corners: _Corners,
                  iou_threshold: float, max_per_class: int, max_total: int, kept: _Kept) -> None:
    """One greedy pass over a chunk of candidates, all scoring below every candidate of earlier chunks."""
    box_all = flat_idx // num_classes
    cls_all = flat_idx % num_classes
    order = np.lexsort((box_all, cls_all, -flat_scores))  # score descending, then class, then anchor
    box, cls, score = box_all[order], cls_all[order], flat_scores[order]
    m = order.size
    suppressed = bytearray(m)
    if kept.box:  # boxes kept from earlier chunks suppress same-class candidates of this one
        pair_k, pair_c = np.nonzero(np.asarray(kept.cls)[:, None] == cls[None, :])
        if pair_k.size:
            hit = corners.iou(np.asarray(kept.box)[pair_k], box[pair_c]) > iou_threshold
            for q in pair_c[hit].tolist():
                suppressed[q] = 1
    # Positions of each class in the chunk, ascending (stable sort of the positions by class).
    by_class = np.argsort(cls, kind="stable")
    bounds = np.searchsorted(cls[by_class], np.arange(num_classes + 1))
    sizes = np.diff(bounds)
    n_pairs = int((sizes * (sizes - 1) // 2).sum())
    neighbours = _overlaps(by_class, bounds, sizes, n_pairs, box, corners, iou_threshold) \
        if n_pairs <= _MAX_PAIRS else None
    box_l, cls_l, score_l = box.tolist(), cls.tolist(), score.tolist()
    per_class = kept.per_class
    for pos in range(m):
        if suppressed[pos]:
            continue
        c = cls_l[pos]
        if per_class[c] >= max_per_class:
            continue
        per_class[c] += 1
        kept.box.append(box_l[pos])
        kept.cls.append(c)
        kept.score.append(score_l[pos])
        if len(kept.box) >= max_total:
            return
        if neighbours is not None:
            ptr, targets = neighbours
            for q in targets[ptr[pos]:ptr[pos + 1]]:
                suppressed[q] = 1
        else:  # one class dominates the chunk: IoU against its later members, one kept box at a time
            members = by_class[bounds[c]:bounds[c + 1]]
            later = members[np.searchsorted(members, pos, side="right"):]
            if later.size:
                for q in later[corners.iou(box_l[pos], box[later]) > iou_threshold].tolist():
                    suppressed[q] = 1


def _overlaps(by_class: np.ndarray, bounds: np.ndarray, sizes: np.ndarray, n_pairs: int, box: np.ndarray,
              corners: _Corners, iou_threshold: float) -> Tuple[List[int], List[int]]:
    """For each chunk position, the later same-class positions it would suppress (CSR: ptr, targets)."""
    m = by_class.size
    element = np.arange(m)
    n_later = np.repeat(bounds[1:], sizes) - element - 1  # later members of the same class
    first = np.repeat(element, n_later)
    second = np.arange(n_pairs) - np.repeat(np.cumsum(n_later) - n_later, n_later) + first + 1
    pa, pb = by_class[first], by_class[second]  # pa < pb: positions ascend within a class
    hit = corners.iou(box[pa], box[pb]) > iou_threshold
    pa, pb = pa[hit], pb[hit]
    o = np.argsort(pa, kind="stable")
    ptr = np.searchsorted(pa[o], np.arange(m + 1))
    return ptr.tolist(), pb[o].tolist()


def postprocess(boxes_enc: np.ndarray, scores: np.ndarray, score_threshold: float = SCORE_THRESHOLD,
                iou_threshold: float = IOU_THRESHOLD, max_per_class: int = MAX_PER_CLASS,
                max_total: int = MAX_TOTAL, clip: bool = True,
                anchors: Optional[np.ndarray] = None) -> List[Detections]:
    """Decode and NMS a batch: boxes_enc [B, A, 4], scores [B, A, 1 + K] (column 0 background) -> per image."""
    enc = np.asarray(boxes_enc)
    sc = np.asarray(scores)
    if enc.ndim != 3 or enc.shape[2] != 4 or sc.ndim != 3 or sc.shape[:2] != enc.shape[:2] or sc.shape[2] < 2:
        raise ModelError("SSD outputs must be boxes [batch, anchors, 4] and scores [batch, anchors, classes], "
                         "got {} and {}".format(list(enc.shape), list(sc.shape)))
    decoded = decode_boxes(enc, anchors)
    return [multiclass_nms(decoded[i], sc[i, :, 1:], score_threshold=score_threshold,
                           iou_threshold=iou_threshold, max_per_class=max_per_class, max_total=max_total,
                           clip=clip)
            for i in range(enc.shape[0])]


def to_coco_detections(dets: Detections, image_id: Any, width: float, height: float) -> List[Dict[str, Any]]:
    """COCO result entries ({image_id, category_id, bbox [x, y, w, h] in pixels, score}) for one image."""
    b = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    x = b[:, 1] * width
    y = b[:, 0] * height
    w = (b[:, 3] - b[:, 1]) * width
    h = (b[:, 2] - b[:, 0]) * height
    return [{"image_id": image_id, "category_id": int(c), "bbox": [float(x[k]), float(y[k]), float(w[k]),
                                                                   float(h[k])], "score": float(s)}
            for k, (c, s) in enumerate(zip(np.asarray(dets.classes).tolist(), np.asarray(dets.scores).tolist()))]
