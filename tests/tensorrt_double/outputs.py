"""What the TensorRT test double's kernel writes into an engine's outputs (kernel.cu's output_value), in numpy.

The double computes nothing a model computes: each output element is a hash of its index, the output's
position and a seed taken from the first 64 bytes of input 0. A test that gets these values back has
proved that its input reached the GPU (copy, zero-copy, graph replay) and that the outputs came back from
the right buffers; no test can take them for a model's outputs.
"""

from __future__ import annotations

from typing import List

import numpy as np

SEED_BYTES = 64


def seed_of(input0: np.ndarray) -> int:
    """The kernel's seed: 0x5a, then seed * 31 + byte for each of input 0's first 64 bytes (uint32 arithmetic)."""
    seed = 0x5A
    for b in np.ascontiguousarray(input0).view(np.uint8).ravel()[:SEED_BYTES].tolist():
        seed = (seed * 31 + int(b)) & 0xFFFFFFFF
    return seed


def output_values(seed: int, count: int, k: int) -> np.ndarray:
    """Output k's float32 values for a seed (its `count` elements, flat)."""
    i = np.arange(count, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    h = (i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    h ^= np.uint64((seed * 40503) & 0xFFFFFFFF)
    h ^= np.uint64(((k + 1) * 2246822519) & 0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    return (-((h % np.uint64(2000)) + np.uint64(1)).astype(np.float32) / np.float32(4000.0)).astype(np.float32)


def expected_outputs(input0: np.ndarray, shapes: List[tuple]) -> List[np.ndarray]:
    """The float32 outputs the double writes for input 0, one per output shape, in the engine's output order."""
    seed = seed_of(input0)
    return [output_values(seed, int(np.prod(shape)), k).reshape(shape) for k, shape in enumerate(shapes)]
