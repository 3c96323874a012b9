"""The three MLMark workloads. Each is data (see base.Workload); the differences are constants."""

from __future__ import annotations

from typing import Dict, List

from core.errors import ConfigError
from workloads.base import Workload
from workloads.preprocess import PreprocessSpec

# Each workload's preprocessing, documented in its card (workloads/cards/).
# TF-slim's inception_preprocessing.preprocess_for_eval, with which MobileNet v1 was evaluated:
# central crop of 87.5 % of each side, bilinear resize (TF 1.x sampling) to 224x224, [-1, 1].
MOBILENET_PREPROCESS = PreprocessSpec(
    name="tf-slim-inception-224", size=(224, 224), geometry="central_crop", central_fraction=0.875,
    interpolation="bilinear", centers="tf1", mean=(127.5, 127.5, 127.5), scale=(1 / 127.5, 1 / 127.5, 1 / 127.5),
    source="tensorflow/models research/slim/preprocessing/inception_preprocessing.py, preprocess_for_eval")
# MLPerf Inference's ResNet-50 v1.5 preprocessing (pre_process_vgg), which its reference model expects:
# shorter side to 256 keeping the aspect (area resampling), centre crop 224, minus the RGB means.
RESNET50_PREPROCESS = PreprocessSpec(
    name="mlperf-resnet50-224", size=(224, 224), geometry="shorter_side_crop", shorter_side=256,
    interpolation="area", centers="half_pixel", mean=(123.68, 116.78, 103.94), scale=(1.0, 1.0, 1.0),
    source="mlcommons/inference vision/classification_and_detection/python/dataset.py, pre_process_vgg")
# TF Object Detection API's ssd_mobilenet_v1_coco: fixed_shape_resizer 300x300 (bilinear, aspect not
# kept, TF 1.x sampling), then the feature extractor's (2 / 255) * x - 1.
SSD_PREPROCESS = PreprocessSpec(
    name="tf-od-api-ssd-300", size=(300, 300), geometry="stretch", interpolation="bilinear", centers="tf1",
    mean=(127.5, 127.5, 127.5), scale=(2 / 255, 2 / 255, 2 / 255),
    source="tensorflow/models research/object_detection: ssd_mobilenet_v1_coco.config image_resizer, "
           "models/ssd_mobilenet_v1_feature_extractor.py preprocess")

WORKLOADS: Dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(name="mobilenet", title="MobileNet v1 1.0 224 (ImageNet)", kind="classification",
                 input_hw=(224, 224), generator="mobilenet_v1", num_classes=(1001, 1000),
                 dataset="ILSVRC2012", preprocess=MOBILENET_PREPROCESS),
        Workload(name="resnet50", title="ResNet-50 v1.5 224 (ImageNet)", kind="classification",
                 input_hw=(224, 224), generator="resnet50", num_classes=(1000, 1001),
                 dataset="ILSVRC2012", preprocess=RESNET50_PREPROCESS),
        Workload(name="ssdmobilenet", title="SSD-MobileNet v1 300x300 (COCO)", kind="detection",
                 input_hw=(300, 300), generator="ssd_mobilenet_v1", num_classes=(91,), anchors=1917,
                 dataset="COCO2017", preprocess=SSD_PREPROCESS),
    )
}


def workload_names() -> List[str]:
    """Names accepted in a task's workload field."""
    return list(WORKLOADS)


def get_workload(name: str) -> Workload:
    """The workload registered under name."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ConfigError("unknown workload '{}' (allowed: {})".format(name, ", ".join(WORKLOADS))) from None
