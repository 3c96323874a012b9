"""A workload owns its model architecture, its input data, its post-processing and its scorer."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from core.errors import ModelError
from core.specs import TensorSpec
from workloads.preprocess import PreprocessSpec

CARDS_DIR = Path(__file__).resolve().parent / "cards"


@dataclass(frozen=True)
class Workload:
    """One of MLMark's workloads: mobilenet, resnet50 or ssdmobilenet."""

    name: str
    title: str
    kind: str  # "classification" or "detection"
    input_hw: Tuple[int, int]
    generator: str  # module under workloads.models that builds the synthetic-weight ONNX
    num_classes: Tuple[int, ...]  # accepted output widths (1001 = with TF's background class)
    anchors: int = 0  # detection only
    dataset: str = ""  # what accuracy mode scores on: "ILSVRC2012" or "COCO2017"
    preprocess: Optional[PreprocessSpec] = None  # the one input pipeline of accuracy runs and calibration

    @property
    def card(self) -> Path:
        """The model card: architecture, weights, preprocessing and where post-processing runs."""
        return CARDS_DIR / "{}.md".format(self.name)

    def _generator_module(self) -> Any:
        return importlib.import_module("workloads.models." + self.generator)

    def generator_version(self) -> str:
        """Changes whenever the synthetic model's bytes would change."""
        return "{}:{}".format(self.generator, self._generator_module().GENERATOR_VERSION)

    def build_synthetic(self, seed: int = 0) -> Any:
        """The architecture as an onnx.ModelProto with deterministic synthetic weights."""
        return self._generator_module().build(seed=seed)

    @property
    def per_class_subsets(self) -> bool:
        """True when accuracy subsets can be chosen per class (params.images_per_class): ImageNet."""
        return self.dataset == "ILSVRC2012"

    def input_shapes(self, specs: Sequence[TensorSpec], batch: int) -> Dict[str, Tuple[int, ...]]:
        """Each input's shape at `batch`, symbolic dimensions filled with this workload's image size."""
        return {spec.name: tuple([batch] + [d if isinstance(d, int) else self._fill_dim(spec, i)
                                            for i, d in enumerate(spec.shape[1:], start=1)])
                for spec in specs}

    def make_inputs(self, specs: Sequence[TensorSpec], batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
        """A deterministic random batch for throughput and latency runs (never zeros: they can run faster)."""
        rng = np.random.default_rng(seed)
        arrays = {}
        shapes = self.input_shapes(specs, batch)
        for spec in specs:
            shape = shapes[spec.name]
            if np.dtype(spec.dtype).kind == "u":
                arrays[spec.name] = rng.integers(0, 256, size=shape, dtype=spec.dtype)
            else:
                arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        return arrays

    def _fill_dim(self, spec: TensorSpec, axis: int) -> int:
        # A symbolic non-batch dimension: NCHW models get C=3 then H, W; NHWC the other way round.
        h, w = self.input_hw
        nchw = isinstance(spec.shape[1], int) and spec.shape[1] == 3
        return {1: 3 if nchw else h, 2: h if nchw else w, 3: w if nchw else 3}[axis]

    def check_io(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], model: str) -> None:
        """Refuse a model whose inputs or outputs do not fit this workload (a score would be another network's)."""
        h, w = self.input_hw
        want = "one input [batch, 3, {h}, {w}] (NCHW) or [batch, {h}, {w}, 3] (NHWC) of float32, float16 or " \
               "uint8".format(h=h, w=w)
        if len(inputs) != 1:
            raise ModelError("{}: {} expects {}, the model has {} inputs {}".format(
                model, self.name, want, len(inputs), [(s.name, _dims(s.shape)) for s in inputs]))
        shape, dtype = tuple(inputs[0].shape), inputs[0].dtype
        fits = lambda d, n: not isinstance(d, int) or d == n  # noqa: E731 (a symbolic dimension takes any size)
        nchw = len(shape) == 4 and fits(shape[1], 3) and fits(shape[2], h) and fits(shape[3], w)
        nhwc = len(shape) == 4 and fits(shape[3], 3) and fits(shape[1], h) and fits(shape[2], w)
        if not (nchw or nhwc) or dtype not in ("float32", "float16", "uint8"):
            raise ModelError("{}: {} expects {}, the model's input {} is {} {}".format(
                model, self.name, want, inputs[0].name, _dims(shape), dtype))
        if self.kind == "classification":
            if len(outputs) < 1 or len(outputs[0].shape) != 2 or outputs[0].shape[1] not in self.num_classes:
                raise ModelError("{}: {} expects output 0 of shape [batch, {}], the model has {}".format(
                    model, self.name, " or ".join(map(str, self.num_classes)),
                    [(s.name, list(s.shape)) for s in outputs]))
        else:
            shapes = {s.name: tuple(s.shape) for s in outputs}
            boxes, scores = shapes.get("boxes"), shapes.get("scores")
            if (boxes is None or scores is None or len(boxes) != 3 or boxes[1:] != (self.anchors, 4)
                    or len(scores) != 3 or scores[1] != self.anchors or scores[2] not in self.num_classes):
                raise ModelError("{}: {} expects outputs boxes [batch, {}, 4] and scores [batch, {}, {}], "
                                 "the model has {}".format(model, self.name, self.anchors, self.anchors,
                                                           self.num_classes[0], sorted(shapes.items())))

    @property
    def has_postprocess(self) -> bool:
        """True when post-processing belongs to the score and to the timed region (SSD: box decoding and NMS)."""
        return self.kind == "detection"

    def postprocess(self, outputs: Sequence[np.ndarray], names: Sequence[str]) -> Optional[List[Any]]:
        """Host-side post-processing that belongs to the score (SSD: box decoding and NMS); None if none."""
        if not self.has_postprocess:
            return None
        from workloads.ssd.postprocess import postprocess  # numpy-only, imported when first needed

        by_name = dict(zip(names, outputs))
        return postprocess(by_name["boxes"], by_name["scores"])

    def scorer(self, subset: Any, output_names: Sequence[str], outputs: Sequence[TensorSpec]) -> Any:
        """The accuracy scorer for a model with these outputs on `subset` of this workload's dataset."""
        from workloads.scorers import CocoScorer, TopKScorer, scores_output_classes

        if self.kind == "classification":
            return TopKScorer(self.name, self.num_classes, output_names)
        return CocoScorer(subset.annotations, scores_output_classes(outputs, self.num_classes[0]), output_names,
                          self.postprocess)


def _dims(shape: Sequence[Any]) -> str:
    """[batch, 3, 224, 224]: a shape as error lines show it, symbolic dimensions by name."""
    return "[{}]".format(", ".join(str(d) if d is not None else "?" for d in shape))
