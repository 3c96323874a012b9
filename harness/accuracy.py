"""Accuracy mode: run a workload's dataset subset through a target and have the workload's scorer score it.

The images come preprocessed from the cache (workloads/preprocess.py, built on first use), are
normalised into the model's dtype and layout batch by batch, and go through the target as in a
timed run: stage, run on slot 0, to_host. The last batch is padded to the task's batch size by
repeating its last image (engines are built for a fixed batch) and the padded outputs are dropped.
Concurrency does not change what a model computes, so accuracy uses one slot; `iterations` and
warm-up do not apply either. Both are recorded in the result's target_info.

What is scored, and how, is the workload's (workloads/scorers.py: Top-1/Top-5, COCO mAP); this
module only feeds it. A score is a valid MLMark score only over MLMark's whole subset (5 images per
class of ILSVRC2012, all 5,000 of COCO val2017) with no image missing or undecodable, and when the
scorer finds nothing against it. Synthetic weights score near chance, and the result says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

import numpy as np

from core.errors import DatasetError, MLMarkError, ModelError
from core.progress import progress
from harness.results import TaskResult
from workloads.datasets import Subset, cache_dir, check_dataset
from workloads.preprocess import CachedImages, cached_preprocess, input_format
from workloads.scorers import Scorer

log = logging.getLogger("mlmark.accuracy")


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

    scorer = workload.scorer(subset, session.output_names(), pt.model.outputs)
    t0 = time.perf_counter()
    try:
        batches = _feed(session, inputs[0].name, cache, subset, spec, dtype, layout, p.batch, scorer,
                        "{} accuracy".format(workload.name))
        wall = time.perf_counter() - t0
        score = scorer.finish()
    except MLMarkError as exc:  # the scorer's message, prefixed with the task it is about
        raise type(exc)("{}: {}".format(source, exc)) from None
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
    notes.extend(score.notes)
    info.update(score.info)
    if pt.model.weights == "synthetic":
        notes.append(scorer.synthetic_note)
    result_base = dict(base)
    result_base["target_info"] = dict(base.get("target_info") or {}, accuracy=info)
    return TaskResult(metric=score.metric, score=score.value, units=score.units, valid=valid and score.valid,
                      notes=notes, extra_scores=score.extra, wall_s=wall, iterations=batches, **result_base)


def _subset_note(subset: Subset, scored: int) -> str:
    want = ("5 images per class of ILSVRC2012" if subset.dataset == "ILSVRC2012"
            else "all images of COCO val2017")
    return "{} images scored, not MLMark's 5000 ({})".format(scored, want)


def _feed(session: Any, input_name: str, cache: CachedImages, subset: Subset, spec: Any, dtype: str, layout: str,
          batch: int, scorer: Scorer, label: str) -> int:
    """Run every decoded image through slot 0 in batches of `batch`; returns the number of batches."""
    ok = np.flatnonzero(cache.ok)
    contiguous = ok.size == cache.ok.size
    n_batches = 0
    with progress(label, int(ok.size)) as bar:
        for start in range(0, ok.size, batch):
            idx = ok[start:start + batch]
            planes = cache.pixels[start:start + idx.size] if contiguous else cache.pixels[idx]
            x = spec.normalize(np.asarray(planes), dtype, layout)
            if idx.size < batch:  # pad with copies of the last image; their outputs are dropped
                x = np.concatenate([x, np.repeat(x[-1:], batch - idx.size, axis=0)])
            outputs = session.to_host(session.run(0, session.stage({input_name: x})))
            scorer.add(outputs, [subset.samples[i] for i in idx], [tuple(cache.sizes[i]) for i in idx])
            n_batches += 1
            bar.update(int(idx.size))
    return n_batches
