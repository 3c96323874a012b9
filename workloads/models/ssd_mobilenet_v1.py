"""SSD-MobileNet v1 300x300 (TF Object Detection API's ssd_mobilenet_v1_coco) with synthetic weights.

Layout (samples/configs/ssd_mobilenet_v1_coco.config; models/ssd_mobilenet_v1_feature_extractor.py;
models/feature_map_generators.py; predictors/convolutional_box_predictor.py):

- Backbone: MobileNet v1 1.0 (workloads/models/mobilenet_v1.py) up to Conv2d_13_pointwise, on a
  300x300 input: 150, 75, 38, 19, 10. Feature maps are Conv2d_11_pointwise (19x19x512) and
  Conv2d_13_pointwise (10x10x1024).
- Extra feature maps (layer_depth 512, 256, 256, 128), each a 1x1 conv to half the depth then a
  3x3 stride-2 conv, both with BN and ReLU6: 10 -> 5 -> 3 -> 2 -> 1. TF's names are kept, e.g.
  Conv2d_13_pointwise_1_Conv2d_2_1x1_256 and Conv2d_13_pointwise_2_Conv2d_2_3x3_s2_512.
- Box predictor (convolutional_box_predictor, kernel_size 1, no layers before the predictor): per
  feature map a 1x1 conv to anchors x 4 box encodings and a 1x1 conv to anchors x 91 class logits,
  both with bias and no BN or activation. Anchors per location: 3 on the 19x19 map, 6 on the others.
- BN (epsilon 0.001) is folded into the conv weights and biases.

Padding: TF's SAME, written as explicit ONNX pads [top, left, bottom, right]. A 3x3 stride-2 conv pads
(0, 1) on an even input (300, 150, 38, 10, 2) and (1, 1) on an odd one (75, 19, 5, 3), which gives TF's
sizes 150, 75, 38, 19, 10 and 5, 3, 2, 1; stride-1 3x3 convs pad 1; 1x1 convs pad 0.

Outputs (the graph stops where the TF OD API's post-processor starts; TF's score converter, a
sigmoid, is included):

- `boxes` float32 [batch, 1917, 4]: raw box encodings in TF's order (ty, tx, th, tw), to be decoded by
  the faster_rcnn box coder (scale factors 10, 10, 5, 5) against the anchor of the same index.
- `scores` float32 [batch, 1917, 91]: sigmoid class scores; column 0 is background, column k is COCO
  category id k (TF's 90-id label map).

Anchor order (that of TF's multiple_grid_anchor_generator, and of workloads/ssd/anchors.py): feature
map by feature map (19, 10, 5, 3, 2, 1), then row-major over the map (y, then x), then the anchor index
within a location. Each predictor's NCHW output [N, A*K, H, W] is transposed to [N, H, W, A*K] and
reshaped to [N, H*W*A, K], exactly TF's NHWC reshape, so channel a*K + k is anchor a's k-th value.
19*19*3 + (10*10 + 5*5 + 3*3 + 2*2 + 1*1)*6 = 1083 + 600 + 150 + 54 + 24 + 6 = 1917.

Synthetic weights: the class predictor's biases use a detector-like prior (foreground probability 0.01,
as focal-loss initialisation does), so most scores are small and few are high, as with a trained model;
post-processing cost on the synthetic model is then representative rather than pathological.
About 6.8 M parameters.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import onnx

from workloads.models.graph import BUILDER_VERSION, GraphBuilder
from workloads.models.mobilenet_v1 import mobilenet_v1_base

GENERATOR_VERSION = "1+builder" + BUILDER_VERSION
WORKLOAD = "ssdmobilenet"
ARCHITECTURE = "SSD-MobileNet v1 300x300 (TF OD API ssd_mobilenet_v1_coco layout, BN folded)"
INPUT_SIZE = 300
NUM_CLASSES = 91  # background + COCO's 90 category ids
BOX_CODE_SIZE = 4
BN_EPSILON = 0.001
# (from_layer, layer_depth) of TF's feature_map_layout; "" = an extra layer on the previous map.
FEATURE_MAP_LAYOUT: List[Tuple[str, int]] = [
    ("Conv2d_11_pointwise", -1), ("Conv2d_13_pointwise", -1), ("", 512), ("", 256), ("", 256), ("", 128),
]
ANCHORS_PER_LOCATION: Tuple[int, ...] = (3, 6, 6, 6, 6, 6)
FEATURE_MAP_SIZES: Tuple[int, ...] = (19, 10, 5, 3, 2, 1)
NUM_ANCHORS = sum(n * n * a for n, a in zip(FEATURE_MAP_SIZES, ANCHORS_PER_LOCATION))  # 1917
BOX_ENCODING_ORDER = "ty,tx,th,tw"
ANCHOR_ORDER = "feature map (19,10,5,3,2,1), then y, then x, then anchor within location"
FOREGROUND_PRIOR = 0.01


def _feature_maps(b: GraphBuilder, x: str) -> List[str]:
    """TF's multi_resolution_feature_maps over the MobileNet v1 backbone."""
    endpoints = mobilenet_v1_base(b, x, scope="FeatureExtractor/MobilenetV1")
    maps: List[str] = []
    base = ""
    for index, (from_layer, depth) in enumerate(FEATURE_MAP_LAYOUT):
        if from_layer:
            base = from_layer
            maps.append(endpoints[from_layer])
            continue
        prefix = "FeatureExtractor/MobilenetV1/{}".format(base)
        net = b.conv(maps[-1], depth // 2, 1, "{}_1_Conv2d_{}_1x1_{}".format(prefix, index, depth // 2),
                     act="relu6")
        net = b.conv(net, depth, 3, "{}_2_Conv2d_{}_3x3_s2_{}".format(prefix, index, depth), stride=2,
                     act="relu6")
        maps.append(net)
    return maps


def _predict(b: GraphBuilder, feature: str, anchors: int, width: int, name: str, bias: np.ndarray) -> str:
    """1x1 prediction conv, then NCHW [N, A*K, H, W] -> [N, H*W*A, K] in TF's (y, x, anchor) order."""
    y = b.conv(feature, anchors * width, 1, name, pad=0, bn=False, bias=bias)
    y = b.transpose(y, [0, 2, 3, 1], name + "/transpose")
    return b.reshape(y, [0, -1, width], name + "/Reshape")


def build(seed: int = 0) -> onnx.ModelProto:
    """SSD-MobileNet v1 300x300, 91 classes, 1917 anchors, with synthetic weights drawn from `seed`."""
    b = GraphBuilder("ssd_mobilenet_v1", seed, BN_EPSILON)
    x = b.input("input", 3, INPUT_SIZE, INPUT_SIZE)
    maps = _feature_maps(b, x)
    for fmap, size in zip(maps, FEATURE_MAP_SIZES):
        if b.shapes[fmap][1:] != (size, size):
            raise AssertionError("feature map {} is {}, expected {}x{}".format(fmap, b.shapes[fmap], size, size))
    prior = math.log((1.0 - FOREGROUND_PRIOR) / FOREGROUND_PRIOR)
    class_bias = np.full(NUM_CLASSES, -prior, dtype=np.float32)
    class_bias[0] = prior  # background likely everywhere
    boxes, classes = [], []
    for i, (fmap, anchors) in enumerate(zip(maps, ANCHORS_PER_LOCATION)):
        scope = "BoxPredictor_{}".format(i)
        box_bias = b.rng.normal(0.0, 0.05, anchors * BOX_CODE_SIZE).astype(np.float32)
        cls_bias = np.tile(class_bias, anchors) + b.rng.normal(0.0, 0.05, anchors * NUM_CLASSES).astype(np.float32)
        boxes.append(_predict(b, fmap, anchors, BOX_CODE_SIZE, scope + "/BoxEncodingPredictor", box_bias))
        classes.append(_predict(b, fmap, anchors, NUM_CLASSES, scope + "/ClassPredictor", cls_bias))
    b.concat(boxes, 1, "boxes")
    logits = b.concat(classes, 1, "concat_1")
    b.sigmoid(logits, "scores")
    metadata = {
        "workload": WORKLOAD,
        "architecture": ARCHITECTURE,
        "weights": "synthetic",
        "generator_version": "ssd_mobilenet_v1:" + GENERATOR_VERSION,
        "num_classes": str(NUM_CLASSES),
        "num_anchors": str(NUM_ANCHORS),
        "box_encoding": BOX_ENCODING_ORDER,
        "box_coder_scale": "10,10,5,5",
        "anchor_order": ANCHOR_ORDER,
        "score_converter": "sigmoid",
    }
    return b.finish("ssd_mobilenet_v1_coco_300", [("boxes", ["batch", NUM_ANCHORS, BOX_CODE_SIZE]),
                                                  ("scores", ["batch", NUM_ANCHORS, NUM_CLASSES])],
                    metadata, doc="SSD-MobileNet v1 300x300 (COCO, 91 classes, 1917 anchors), synthetic weights "
                                  "(seed {}); boxes are (ty, tx, th, tw)".format(seed))
