"""ResNet-50 v1.5 (He et al., 2016; torchvision's and MLPerf Inference's variant) with synthetic weights.

Layout (torchvision.models.resnet50):

- conv1 7x7 stride 2 pad 3, 64 filters, BN, ReLU (224 -> 112); maxpool 3x3 stride 2 pad 1 (-> 56).
- layer1..layer4: 3, 4, 6, 3 bottlenecks of widths 64, 128, 256, 512 and output 4 x width. A bottleneck
  is 1x1 (width) -> 3x3 (width) -> 1x1 (4 x width), each with BN, ReLU after the first two and after
  the residual sum. v1.5: a downsampling block (first of layer2..layer4) puts stride 2 in the 3x3 conv,
  not the first 1x1 as v1.0 does. The first block of every layer has a projection shortcut
  (1x1 conv with that stride, BN); the others add the identity. Sizes 56, 28, 14, 7.
- Global average pool, flatten, fc 2048 -> 1000 (Gemm, weight stored [1000, 2048]), raw logits.
- Batch norm (epsilon 1e-5) is folded into every conv's weights and bias. Each block's last BN gets a
  small gamma (as trained ResNets have, and as zero-gamma initialisation intends) so that the residual
  stream does not grow block after block with synthetic weights.

Interface: input `input` float32 [batch, 3, 224, 224] (NCHW), output `logits` float32 [batch, 1000].
Parameters: torchvision counts 25,557,032, with BN's gamma and beta as two per channel over 26,560
BN channels; folded, each BN channel becomes one conv bias, so this graph holds 25,557,032 - 26,560 =
25,530,472. About 4.09 G MACs.
"""

from __future__ import annotations

from typing import List, Tuple

import onnx

from workloads.models.graph import BUILDER_VERSION, GraphBuilder

GENERATOR_VERSION = "1+builder" + BUILDER_VERSION
WORKLOAD = "resnet50"
ARCHITECTURE = "ResNet-50 v1.5 (torchvision layout, stride 2 in the 3x3 conv, BN folded)"
NUM_CLASSES = 1000
INPUT_SIZE = 224
BN_EPSILON = 1e-5  # torchvision's BatchNorm2d default
EXPANSION = 4
# (blocks, width, stride of the first block) of layer1..layer4.
LAYERS: List[Tuple[int, int, int]] = [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]
RESIDUAL_GAMMA = 0.2  # mean gamma of each block's last BN; keeps the residual stream's scale steady


def _bottleneck(b: GraphBuilder, x: str, width: int, stride: int, name: str) -> str:
    out_channels = width * EXPANSION
    y = b.conv(x, width, 1, name + "/conv1", pad=0, act="relu")
    y = b.conv(y, width, 3, name + "/conv2", stride=stride, pad=1, act="relu")  # v1.5: the stride is here
    y = b.conv(y, out_channels, 1, name + "/conv3", pad=0, gamma_mean=RESIDUAL_GAMMA)
    if stride != 1 or b.shapes[x][0] != out_channels:
        x = b.conv(x, out_channels, 1, name + "/downsample", stride=stride, pad=0)
    return b.relu(b.add(y, x, name + "/add"), name + "/relu")


def build(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 v1.5 with 1000 classes and synthetic weights drawn from `seed`."""
    b = GraphBuilder("resnet50", seed, BN_EPSILON)
    x = b.input("input", 3, INPUT_SIZE, INPUT_SIZE)
    net = b.conv(x, 64, 7, "conv1", stride=2, pad=3, act="relu")
    net = b.max_pool(net, 3, 2, "maxpool", pad=1)
    for li, (blocks, width, stride) in enumerate(LAYERS, start=1):
        for bi in range(blocks):
            net = _bottleneck(b, net, width, stride if bi == 0 else 1, "layer{}/{}".format(li, bi))
    net = b.global_avg_pool(net, "avgpool")
    net = b.flatten(net, "flatten")
    b.gemm(net, 512 * EXPANSION, NUM_CLASSES, "fc", output="logits")
    metadata = {
        "workload": WORKLOAD,
        "architecture": ARCHITECTURE,
        "weights": "synthetic",
        "generator_version": "resnet50:" + GENERATOR_VERSION,
        "num_classes": str(NUM_CLASSES),
        "class_offset": "0",  # logit k is ImageNet class k; no background class
    }
    return b.finish("resnet50_v1.5", [("logits", ["batch", NUM_CLASSES])], metadata,
                    doc="ResNet-50 v1.5, torchvision layout, synthetic weights (seed {})".format(seed))
