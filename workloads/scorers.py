"""Accuracy scorers: how each workload turns its model's outputs on dataset images into its score.

The harness feeds batches of outputs with the samples they belong to and asks for the score at
the end; it never knows whether a workload classifies or detects. A workload picks its scorer
(`Workload.scorer`); a new accuracy metric is added here, as a score or an extra score, and the
harness records and prints it like any other.

- `TopKScorer`: Top-1 (the score) and Top-5 (an extra score), in %, for ImageNet classifiers.
- `CocoScorer`: SSD box decoding and NMS (workloads/ssd), then COCO mAP@[.5:.95] (the score) and
  mAP@.5 (an extra score), in % (COCOeval's fraction x 100, as MLMark reports it).
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from core.errors import ModelError
from core.specs import TensorSpec
from workloads.metrics import TopK, coco_map, model_to_coco_ids

log = logging.getLogger("mlmark.accuracy")


@dataclass
class Score:
    """What a scorer found: the score, extra scores, and what the result should say about them."""

    metric: str
    value: Optional[float]
    units: str
    extra: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)  # goes into the result's target_info.accuracy
    valid: bool = True  # False when something makes the score not MLMark's (images not the annotated ones)


class Scorer(abc.ABC):
    """Accumulates a model's outputs over a dataset's images, then gives the score."""

    #: what the score means when the model has synthetic weights
    synthetic_note: str = ""

    @abc.abstractmethod
    def add(self, outputs: Sequence[np.ndarray], samples: Sequence[Any], sizes: Sequence[Tuple[int, int]]) -> None:
        """One batch: the model's outputs (host arrays, in output_names order; rows past len(samples) are
        padding), the samples they belong to and each image's decoded (height, width)."""

    @abc.abstractmethod
    def finish(self) -> Score:
        """The score over every batch added."""


class TopKScorer(Scorer):
    """Top-1/Top-5 over the batches, taking the first output of shape [batch, classes]."""

    synthetic_note = "synthetic weights: accuracy near chance (0.1 % top-1, 0.5 % top-5) is expected"

    def __init__(self, workload_name: str, widths: Sequence[int], output_names: Sequence[str]) -> None:
        self.workload_name, self.widths, self.names = workload_name, tuple(widths), list(output_names)
        self.index: Optional[int] = None
        self.topk = TopK()

    def _pick(self, outputs: Sequence[np.ndarray], batch: int) -> int:
        for i, out in enumerate(outputs):
            if out.ndim == 2 and out.shape[0] == batch and out.shape[1] in self.widths:
                return i
        raise ModelError("{} expects an output [{}, {}], the model gave {}".format(
            self.workload_name, batch, " or ".join(map(str, self.widths)),
            [(n, list(o.shape)) for n, o in zip(self.names, outputs)]))

    def add(self, outputs: Sequence[np.ndarray], samples: Sequence[Any], sizes: Sequence[Tuple[int, int]]) -> None:
        outputs = [np.asarray(o) for o in outputs]
        batch = outputs[0].shape[0] if outputs and outputs[0].ndim else len(samples)
        if self.index is None:
            self.index = self._pick(outputs, batch)
        logits = outputs[self.index]
        if logits.ndim != 2 or logits.shape[0] != batch:
            raise ModelError("output {} has shape {}, expected [{}, classes]".format(
                self.names[self.index], list(logits.shape), batch))
        self.topk.add(logits[:len(samples)], [s.label for s in samples])

    def finish(self) -> Score:
        top1, top5 = self.topk.percent()
        notes = []
        if self.topk.nonfinite:
            notes.append("{} images gave non-finite outputs (overflow?)".format(self.topk.nonfinite))
        info = {"label_offset": self.topk.offset,
                "output": self.names[self.index] if self.index is not None else None}
        return Score(metric="top1", value=top1, units="%", extra={"top5": top5}, notes=notes, info=info)


class CocoScorer(Scorer):
    """SSD post-processing on the host (workloads/ssd, numpy), then COCO detections for COCOeval."""

    synthetic_note = "synthetic weights: mAP near 0 is expected"

    def __init__(self, annotations: Dict[str, Any], classes: int, output_names: Sequence[str],
                 postprocess: Callable[[Sequence[np.ndarray], Sequence[str]], Any]) -> None:
        self.annotations = annotations
        self.names = list(output_names)
        self.postprocess = postprocess
        self.category = model_to_coco_ids(classes, [c["id"] for c in annotations["categories"]])
        self.detections: List[Dict[str, Any]] = []
        self.image_ids: List[int] = []
        self.mismatched: List[str] = []

    def add(self, outputs: Sequence[np.ndarray], samples: Sequence[Any], sizes: Sequence[Tuple[int, int]]) -> None:
        from workloads.ssd.postprocess import to_coco_detections

        dets = self.postprocess(outputs, self.names)
        if len(dets) < len(samples):
            raise ModelError("post-processing gave {} images' detections for {} images".format(
                len(dets), len(samples)))
        for det, sample, size in zip(dets, samples, sizes):
            # Boxes are scaled back with the annotation file's image size: the decoded image must agree.
            if tuple(size) != (sample.height, sample.width):
                self.mismatched.append(sample.name)
            for d in to_coco_detections(det, sample.image_id, sample.width, sample.height):
                d["category_id"] = self.category.get(d["category_id"], d["category_id"])
                self.detections.append(d)
            self.image_ids.append(sample.image_id)

    def finish(self) -> Score:
        t0 = time.perf_counter()
        score = coco_map(self.annotations, self.detections, self.image_ids)
        log.info("COCO evaluation of %d detections on %d images in %.1f s", score.detections, score.images,
                 time.perf_counter() - t0)
        log.debug("%s", score.summary)
        notes: List[str] = []
        info: Dict[str, Any] = {"detections": score.detections, "detections_dropped_unknown_category": score.dropped,
                                "postprocess": "host (workloads/ssd, numpy)", "size_mismatches": len(self.mismatched)}
        if self.mismatched:
            log.warning("%d images differ in size from the annotation file (first: %s)", len(self.mismatched),
                        self.mismatched[0])
            notes.append("{} images differ in size from the annotation file: not the annotated images".format(
                len(self.mismatched)))
        if score.map is None:
            notes.append("the scored images hold no ground-truth object: mAP undefined")
        pct = (lambda v: None if v is None else 100.0 * v)
        extra = {"mAP@.5": pct(score.map50)} if score.map50 is not None else {}
        return Score(metric="mAP", value=pct(score.map), units="%", extra=extra, notes=notes, info=info,
                     valid=not self.mismatched)


def scores_output_classes(outputs: Sequence[TensorSpec], default: int) -> int:
    """The class count of a detector's `scores` output [batch, anchors, classes], else `default`."""
    for spec in outputs:
        if spec.name == "scores" and len(spec.shape) == 3 and isinstance(spec.shape[2], int):
            return spec.shape[2]
    return default
