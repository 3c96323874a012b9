"""The 1917 anchors of SSD-MobileNet v1 300x300, as the TensorFlow Object Detection API generates them.

What is matched (TF OD API `anchor_generators/multiple_grid_anchor_generator.py`, `create_ssd_anchors`,
with the `ssd_anchor_generator` block of `samples/configs/ssd_mobilenet_v1_coco.config` and of the
`pipeline.config` shipped in `ssd_mobilenet_v1_coco_2018_01_28.tar.gz`):

- num_layers 6, min_scale 0.2, max_scale 0.95; layer i has scale s_i = 0.2 + 0.15 * i
  (0.2, 0.35, 0.5, 0.65, 0.8, 0.95) and s_6 = 1.0 closes the list.
- Layer 0 (reduce_boxes_in_lowest_layer, the default): 3 boxes (scale, aspect ratio) =
  (0.1, 1.0), (s_0, 2.0), (s_0, 0.5).
- Layers 1..5: the config's aspect ratios in its order, 1.0, 2.0, 0.5, 3.0, 0.3333 (the config
  writes 0.3333, not 1/3), each at s_i, then the interpolated box (sqrt(s_i * s_{i+1}), 1.0).
- A box of scale s and aspect ratio a is h = s / sqrt(a), w = s * sqrt(a) (base anchor 1x1: the
  input is square, so TF's min(H, W) rescaling is a no-op).
- Centres: with no anchor_strides/anchor_offsets in the config, TF uses stride 1/n and offset
  stride/2 for an n x n feature map, so centres lie at (i + 0.5) / n in normalised coordinates.
- Feature maps 19, 10, 5, 3, 2, 1 (300x300 input); order: map by map, then row-major (y, x), then
  the boxes of one location in the order above. 19*19*3 + (100 + 25 + 9 + 4 + 1) * 6 = 1917.

TF builds the anchors in float32 as corners and the box coder converts them back to centre/size;
this module computes centre/size directly in float64 and rounds once to float32, so values agree
with TF's to float32 rounding (about 1e-7), far below anything that changes a decoded box.
"""

from __future__ import annotations

import functools
import math
from typing import List, Sequence, Tuple

import numpy as np

FEATURE_MAPS: Tuple[int, ...] = (19, 10, 5, 3, 2, 1)
NUM_LAYERS = 6
MIN_SCALE = 0.2
MAX_SCALE = 0.95
ASPECT_RATIOS: Tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
INTERPOLATED_ASPECT_RATIO = 1.0
NUM_ANCHORS = 1917


def layer_box_specs() -> List[List[Tuple[float, float]]]:
    """(scale, aspect ratio) of each box at one location, layer by layer."""
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (NUM_LAYERS - 1) for i in range(NUM_LAYERS)] + [1.0]
    specs = []
    for layer in range(NUM_LAYERS):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
        else:
            boxes = [(scale, ar) for ar in ASPECT_RATIOS]
            boxes.append((math.sqrt(scale * scale_next), INTERPOLATED_ASPECT_RATIO))
            specs.append(boxes)
    return specs


def _grid(size: int, specs: Sequence[Tuple[float, float]]) -> np.ndarray:
    """Anchors of one n x n feature map as (yc, xc, h, w), ordered (y, x, box)."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    hw = np.array([(s / math.sqrt(a), s * math.sqrt(a)) for s, a in specs], dtype=np.float64)
    out = np.empty((size, size, len(specs), 4), dtype=np.float64)
    out[..., 0] = centres[:, None, None]
    out[..., 1] = centres[None, :, None]
    out[..., 2] = hw[:, 0]
    out[..., 3] = hw[:, 1]
    return out.reshape(-1, 4)


@functools.lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    grids = [_grid(n, specs) for n, specs in zip(FEATURE_MAPS, layer_box_specs())]
    anchors = np.concatenate(grids).astype(np.float32)
    assert anchors.shape == (NUM_ANCHORS, 4), anchors.shape
    anchors.setflags(write=False)  # shared by every call: nobody may change it in place
    return anchors


def ssd_anchors() -> np.ndarray:
    """The 1917 anchors as float32 [1917, 4] (ycenter, xcenter, height, width), normalised to [0, 1]."""
    return _anchors()
