"""Accuracy mode: run a workload's dataset subset through a target and score it (Top-1/Top-5 or COCO mAP).

The images come preprocessed from the cache (workloads/preprocess.py, built on first use), are
normalised into the model's dtype and layout batch by batch, and go through the target as in a
timed run: stage, run on slot 0, to_host. The last batch is padded to the task's batch size by
repeating its last image (engines are built for a fixed batch) and the padded outputs are dropped.
Concurrency does not change what a model computes, so accuracy uses one slot; `iterations` and
warm-up do not apply either. Both are recorded in the result's target_info.

SSD-MobileNet's detections come from the shared numpy post-processing (workloads/ssd/) unless the
target does it on the device (`Session.postprocess_on_target`); such a session must then provide
`detections(outputs) -> list of workloads.ssd.postprocess.Detections`, one per image, agreeing
with the shared implementation.

Scores: `top1` in % with extra score `top5`; `mAP` (COCO mAP@[.5:.95]) in %, that is COCOeval's
fraction x 100 as MLMark reports it, with extra score `mAP@.5`. A score is a valid MLMark score
only over MLMark's whole subset (5 images per class of ILSVRC2012, all 5,000 of COCO val2017)
with no image missing or undecodable. Synthetic weights score near chance, and the result says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from harness.errors import DatasetError, ModelError, RunError
from harness.results import TaskResult
from workloads.datasets import Subset, cache_dir, check_dataset
from workloads.preprocess import CachedImages, cached_preprocess, input_format
from workloads.progress import Progress
from workloads.scoring import TopK, coco_map, model_to_coco_ids

log = logging.getLogger("mlmark.accuracy")

SYNTHETIC_NOTE = {
    "classification": "synthetic weights: accuracy near chance (0.1 % top-1, 0.5 % top-5) is expected",
    "detection": "synthetic weights: mAP near 0 is expected",
}


def run_accuracy(pt: Any, session: Any, base: Dict[str, Any]) -> TaskResult:
    """Score the task's model on its dataset subset; base holds the result fields the runner fills in."""
    p, workload, source = pt.task.params, pt.workload, pt.task.source
    try:
        subset = check_dataset(workload, p.images_per_class, p.max_images)
    except DatasetError as exc:
        raise DatasetError("{}: {}".format(source, exc)) from None
    spec = workload.preprocess
    if spec is None:
        raise DatasetError("{}: workload {} defines no preprocessing".format(source, workload.name))
    inputs = session.input_specs()
    if len(inputs) != 1:
        raise ModelError("{}: {} expects one image input, the model has {}".format(
            source, pt.model.path, [i.name for i in inputs]))
    dtype, layout = input_format(inputs[0].shape, inputs[0].dtype, spec.size, str(pt.model.path))

    tag = "{}-{}-{}".format(subset.dataset, spec.name, "-".join(
        "{}{}".format(k, v) for k, v in sorted(subset.selection.items()) if v is not None) or "all")
    identity = dict(subset.identity, selection=subset.selection)
    try:
        cache = cached_preprocess([s.path for s in subset.samples], spec, cache_dir(), identity, tag,
                                  label="{} preprocessing".format(workload.name))
    except DatasetError as exc:
        raise DatasetError("{}: {}".format(source, exc)) from None
    for i, why in cache.failures[:5]:
        log.warning("%s: skipped %s: cannot decode (%s)", source, subset.samples[i].name, why)

    scorer = _Classifier(pt, session) if workload.kind == "classification" else _Detector(pt, session, subset)
    t0 = time.perf_counter()
    batches = _feed(session, inputs[0].name, cache, subset, spec, dtype, layout, p.batch, scorer,
                    "{} accuracy".format(workload.name))
    wall = time.perf_counter() - t0
    n_scored = int(np.count_nonzero(cache.ok))
    log.info("%s: %d images through the model in %.1f s (%.1f images/s)", source, n_scored, wall,
             n_scored / max(wall, 1e-9))

    notes: List[str] = []
    valid = subset.is_mlmark_subset and not cache.failures
    if not subset.is_mlmark_subset:
        notes.append(_subset_note(subset, n_scored))
    if subset.missing:
        notes.append("{} listed images missing, skipped".format(len(subset.missing)))
    if cache.failures:
        notes.append("{} images could not be decoded, skipped".format(len(cache.failures)))
    info: Dict[str, Any] = {
        "dataset": subset.dataset, "images": n_scored, "selection": subset.selection,
        "mlmark_subset": subset.is_mlmark_subset, "identity": subset.identity,
        "missing_skipped": len(subset.missing), "undecodable_skipped": len(cache.failures),
        "preprocess": spec.describe(), "input": {"name": inputs[0].name, "dtype": dtype, "layout": layout},
        "cache": {"path": str(cache.path), "hit": cache.hit, "seconds": round(cache.seconds, 3),
                  "workers": cache.workers},
        "slots": "slot 0 only: accuracy does not depend on concurrency ({})".format(p.concurrency),
        "ignored_params": "iterations and warm-up do not apply to accuracy",
        "batches": batches, "images_per_s": round(n_scored / max(wall, 1e-9), 2),
    }
    if workload.kind == "detection":
        # Boxes are scaled back with the annotation file's image size; say so if the files disagree.
        mismatched = [subset.samples[i].name for i in np.flatnonzero(cache.ok)
                      if tuple(cache.sizes[i]) != (subset.samples[i].height, subset.samples[i].width)]
        info["size_mismatches"] = len(mismatched)
        if mismatched:
            log.warning("%s: %d images differ in size from the annotation file (first: %s)", source,
                        len(mismatched), mismatched[0])
            notes.append("{} images differ in size from the annotation file: not the annotated images".format(
                len(mismatched)))
            valid = False
    metric, score, units, extra = scorer.finish(notes, info)
    if pt.model.weights == "synthetic":
        notes.append(SYNTHETIC_NOTE[workload.kind])
    result_base = dict(base)
    result_base["target_info"] = dict(base.get("target_info") or {}, accuracy=info)
    return TaskResult(metric=metric, score=score, units=units, valid=valid, notes=notes, extra_scores=extra,
                      wall_s=wall, iterations=batches, **result_base)


def _subset_note(subset: Subset, scored: int) -> str:
    want = ("5 images per class of ILSVRC2012" if subset.dataset == "ILSVRC2012"
            else "all images of COCO val2017")
    return "{} images scored, not MLMark's 5000 ({})".format(scored, want)


def _feed(session: Any, input_name: str, cache: CachedImages, subset: Subset, spec: Any, dtype: str, layout: str,
          batch: int, scorer: Any, label: str) -> int:
    """Run every decoded image through slot 0 in batches of `batch`; returns the number of batches."""
    ok = np.flatnonzero(cache.ok)
    contiguous = ok.size == cache.ok.size
    n_batches = 0
    with Progress(label, int(ok.size)) as bar:
        for start in range(0, ok.size, batch):
            idx = ok[start:start + batch]
            planes = cache.pixels[start:start + idx.size] if contiguous else cache.pixels[idx]
            x = spec.normalize(np.asarray(planes), dtype, layout)
            if idx.size < batch:  # pad with copies of the last image; their outputs are dropped
                x = np.concatenate([x, np.repeat(x[-1:], batch - idx.size, axis=0)])
            outputs = session.run(0, session.stage({input_name: x}))
            scorer.add(outputs, [subset.samples[i] for i in idx], batch)
            n_batches += 1
            bar.update(int(idx.size))
    return n_batches


class _Classifier:
    """Top-1/Top-5 over the batches."""

    def __init__(self, pt: Any, session: Any) -> None:
        self.pt, self.session = pt, session
        self.names = session.output_names()
        self.index: Optional[int] = None
        self.topk = TopK()

    def _pick(self, outputs: Sequence[np.ndarray], batch: int) -> int:
        widths = self.pt.workload.num_classes
        for i, out in enumerate(outputs):
            if out.ndim == 2 and out.shape[0] == batch and out.shape[1] in widths:
                return i
        raise ModelError("{}: {} expects an output [{}, {}], the model gave {}".format(
            self.pt.task.source, self.pt.workload.name, batch, " or ".join(map(str, widths)),
            [(n, list(o.shape)) for n, o in zip(self.names, outputs)]))

    def add(self, raw: Any, samples: Sequence[Any], batch: int) -> None:
        outputs = [np.asarray(o) for o in self.session.to_host(raw)]
        if self.index is None:
            self.index = self._pick(outputs, batch)
        logits = outputs[self.index]
        if logits.ndim != 2 or logits.shape[0] != batch:
            raise ModelError("{}: output {} has shape {}, expected [{}, classes]".format(
                self.pt.task.source, self.names[self.index], list(logits.shape), batch))
        self.topk.add(logits[:len(samples)], [s.label for s in samples])

    def finish(self, notes: List[str], info: Dict[str, Any]) -> Any:
        top1, top5 = self.topk.percent()
        info["label_offset"] = self.topk.offset
        info["output"] = self.names[self.index] if self.index is not None else None
        if self.topk.nonfinite:
            notes.append("{} images gave non-finite outputs (overflow?)".format(self.topk.nonfinite))
        return "top1", top1, "%", {"top5": top5}


class _Detector:
    """Box decoding and NMS (shared numpy or the target's own), then COCO detections for COCOeval."""

    def __init__(self, pt: Any, session: Any, subset: Subset) -> None:
        self.pt, self.session, self.subset = pt, session, subset
        self.names = session.output_names()
        self.detections: List[Dict[str, Any]] = []
        self.image_ids: List[int] = []
        self.on_target = session.postprocess_on_target
        if self.on_target and not callable(getattr(session, "detections", None)):
            raise RunError("{}: target {} post-processes SSD on the device ({}) but offers no detections() for "
                           "accuracy".format(pt.task.source, pt.task.target, self.on_target))
        classes = pt.workload.num_classes[0]
        for spec in pt.model.outputs:
            if spec.name == "scores" and len(spec.shape) == 3 and isinstance(spec.shape[2], int):
                classes = spec.shape[2]
        self.category = model_to_coco_ids(classes, [c["id"] for c in subset.annotations["categories"]])

    def add(self, raw: Any, samples: Sequence[Any], batch: int) -> None:
        from workloads.ssd.postprocess import to_coco_detections

        if self.on_target:
            dets = self.session.detections(raw)
        else:
            dets = self.pt.workload.postprocess(self.session.to_host(raw), self.names)
        if len(dets) != batch:
            raise ModelError("{}: post-processing gave {} images' detections for a batch of {}".format(
                self.pt.task.source, len(dets), batch))
        for det, sample in zip(dets, samples):
            for d in to_coco_detections(det, sample.image_id, sample.width, sample.height):
                d["category_id"] = self.category.get(d["category_id"], d["category_id"])
                self.detections.append(d)
            self.image_ids.append(sample.image_id)

    def finish(self, notes: List[str], info: Dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        score = coco_map(self.subset.annotations, self.detections, self.image_ids)
        log.info("COCO evaluation of %d detections on %d images in %.1f s", score.detections, score.images,
                 time.perf_counter() - t0)
        log.debug("%s", score.summary)
        info["detections"] = score.detections
        info["detections_dropped_unknown_category"] = score.dropped
        info["postprocess"] = self.on_target or "host (workloads/ssd, numpy)"
        if score.map is None:
            notes.append("the scored images hold no ground-truth object: mAP undefined")
        pct = (lambda v: None if v is None else 100.0 * v)
        return "mAP", pct(score.map), "%", {"mAP@.5": pct(score.map50)} if score.map50 is not None else {}
