"""MobileNet v1 1.0 224 (Howard et al., 2017) in TF-slim's layout, with deterministic synthetic weights.

Layout (tensorflow/models research/slim/nets/mobilenet_v1.py, depth multiplier 1.0):

- Conv2d_0: 3x3 stride 2, 32 filters, then 13 depthwise-separable blocks Conv2d_1..Conv2d_13, each a
  3x3 depthwise conv and a 1x1 pointwise conv, both followed by batch norm and ReLU6. Pointwise depths
  64, 128, 128, 256, 256, 512 (x6), 1024, 1024; stride 2 in the depthwise conv of blocks 2, 4, 6 and 12.
  Spatial sizes 224 -> 112 -> 56 -> 28 -> 14 -> 7.
- Padding is TF's SAME, written as explicit ONNX pads: stride-1 3x3 convs pad 1 on every side; a
  stride-2 3x3 conv on an even input pads 0 before and 1 after (TF puts the odd pixel at the end),
  which is what a TF-trained checkpoint expects and what tf2onnx emits.
- Batch norm (epsilon 0.001) is folded into each conv's weights and bias: the graph holds Conv + Clip.
- Logits: global average pool (TF-slim's 7x7 VALID AvgPool at 224), Conv2d_1c_1x1 (1x1 conv with
  bias, no BN, no activation) to 1001 classes, flattened to [batch, 1001]. Class 0 is TF-slim's
  background class; no softmax (raw logits). Dropout is an identity at inference and is omitted.

Interface: input `input` float32 [batch, 3, 224, 224] (NCHW), output `logits` float32 [batch, 1001].
About 4.2 M parameters and 569 M multiply-accumulates per image.

`mobilenet_v1_base` builds the backbone alone; the SSD generator reuses it at 300x300.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import onnx

from workloads.models.graph import BUILDER_VERSION, GraphBuilder

GENERATOR_VERSION = "1+builder" + BUILDER_VERSION
WORKLOAD = "mobilenet"
ARCHITECTURE = "MobileNet v1 1.0 224 (TF-slim layout, BN folded)"
NUM_CLASSES = 1001
INPUT_SIZE = 224
BN_EPSILON = 0.001  # TF-slim's mobilenet_v1_arg_scope

# (stride, depth) of Conv2d_0 and of each separable block Conv2d_1..Conv2d_13, as TF-slim's MOBILENETV1_CONV_DEFS.
CONV_DEFS: List[Tuple[int, int]] = [
    (2, 32),
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (2, 1024), (1, 1024),
]


def mobilenet_v1_base(b: GraphBuilder, x: str, final_block: int = 13, scope: str = "MobilenetV1") -> Dict[str, str]:
    """Conv2d_0 .. Conv2d_<final_block>_pointwise on tensor x; returns TF-slim's endpoint names -> tensors."""
    endpoints: Dict[str, str] = {}
    stride, depth = CONV_DEFS[0]
    net = b.conv(x, depth, 3, scope + "/Conv2d_0", stride=stride, act="relu6")
    endpoints["Conv2d_0"] = net
    for i in range(1, final_block + 1):
        stride, depth = CONV_DEFS[i]
        net = b.depthwise(net, 3, "{}/Conv2d_{}_depthwise".format(scope, i), stride=stride, act="relu6")
        endpoints["Conv2d_{}_depthwise".format(i)] = net
        net = b.conv(net, depth, 1, "{}/Conv2d_{}_pointwise".format(scope, i), act="relu6")
        endpoints["Conv2d_{}_pointwise".format(i)] = net
    return endpoints


def build(seed: int = 0) -> onnx.ModelProto:
    """MobileNet v1 1.0 224 with 1001 classes and synthetic weights drawn from `seed`."""
    b = GraphBuilder("mobilenet_v1", seed, BN_EPSILON)
    x = b.input("input", 3, INPUT_SIZE, INPUT_SIZE)
    net = mobilenet_v1_base(b, x)["Conv2d_13_pointwise"]
    net = b.global_avg_pool(net, "MobilenetV1/Logits/AvgPool_1a")
    net = b.conv(net, NUM_CLASSES, 1, "MobilenetV1/Logits/Conv2d_1c_1x1", bn=False)
    net = b.flatten(net, "logits")
    metadata = {
        "workload": WORKLOAD,
        "architecture": ARCHITECTURE,
        "weights": "synthetic",
        "generator_version": "mobilenet_v1:" + GENERATOR_VERSION,
        "num_classes": str(NUM_CLASSES),
        "class_offset": "1",  # logit k is ImageNet class k - 1; logit 0 is background
    }
    return b.finish("mobilenet_v1_1.0_224", [("logits", ["batch", NUM_CLASSES])], metadata,
                    doc="MobileNet v1 1.0 224, TF-slim layout, synthetic weights (seed {})".format(seed))
