"""A small NCHW ONNX graph builder shared by the synthetic-weight generators.

The builder tracks every 4-D tensor's (channels, height, width), so convolutions know their fan-in and
TF-style SAME padding can be turned into explicit pads. Weights come from one numpy Generator seeded from
(model key, seed) and drawn in graph order, so a model is a pure function of its seed.

Initialisation: He-normal (variance gain / fan_in, gain 2 before a ReLU, 1 before a linear output),
which keeps the second moment of activations roughly constant layer after layer. Convolutions that a
trained network follows with batch normalisation get a synthetic BN (gamma, beta, moving mean and
variance) folded into their weights and bias with `fold_batch_norm`, exactly as a deployed graph
carries it: no BatchNormalization node is left.

Files use opset 13 and IR version 7 (ONNX 1.8), which onnxruntime 1.12+ and TensorRT 8.2's parser load.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7
# Bump when a change here alters the bytes of any generated model; every GENERATOR_VERSION includes it.
BUILDER_VERSION = "1"
BATCH_DIM = "batch"

Pad = Union[str, int, Sequence[int]]  # "same" (TF), "valid", a symmetric int, or ONNX pads [t, l, b, r]


def model_rng(model_key: str, seed: int) -> np.random.Generator:
    """The Generator for one model: distinct streams per architecture, reproducible per seed."""
    if seed < 0:
        raise ValueError("seed must be >= 0, got {}".format(seed))
    return np.random.default_rng([int(seed), zlib.crc32(model_key.encode("utf-8"))])


def tf_same_pads(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's SAME padding along one axis: output ceil(size / stride), any odd pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def fold_batch_norm(weight: np.ndarray, bias: Optional[np.ndarray], gamma: np.ndarray, beta: np.ndarray,
                    mean: np.ndarray, var: np.ndarray, eps: float) -> Tuple[np.ndarray, np.ndarray]:
    """Fold y = gamma * (conv(x) + bias - mean) / sqrt(var + eps) + beta into a conv's weight and bias."""
    scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
    w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    b = np.zeros_like(mean) if bias is None else bias
    return w.astype(np.float32), (beta + (b - mean) * scale).astype(np.float32)


class GraphBuilder:
    """Appends nodes and deterministic weights; tensors are referred to by name."""

    def __init__(self, model_key: str, seed: int, bn_epsilon: float) -> None:
        self.model_key = model_key
        self.seed = seed
        self.bn_epsilon = bn_epsilon
        self.rng = model_rng(model_key, seed)
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.shapes: Dict[str, Tuple[int, int, int]] = {}  # NCHW tensors: (C, H, W)
        self._names: Set[str] = set()
        self._relu6_bounds: Optional[Tuple[str, str]] = None

    # -- bookkeeping -------------------------------------------------------------------------------

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError("duplicate name in graph: " + name)
        self._names.add(name)
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add a constant tensor (weights, or a shape operand) and return its name."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), self._claim(name)))
        return name

    def _node(self, op: str, inputs: Sequence[str], name: str, out_shape: Optional[Tuple[int, int, int]] = None,
              **attrs: Any) -> str:
        out = self._claim(name)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        if out_shape is not None:
            self.shapes[out] = out_shape
        return out

    def input(self, name: str, channels: int, height: int, width: int) -> str:
        """A float32 NCHW graph input with a symbolic batch dimension."""
        self.inputs.append(helper.make_tensor_value_info(
            self._claim(name), TensorProto.FLOAT, [BATCH_DIM, channels, height, width]))
        self.shapes[name] = (channels, height, width)
        return name

    def _pads(self, pad: Pad, h: int, w: int, kernel: int, stride: int) -> List[int]:
        if pad == "same":
            (top, bottom), (left, right) = tf_same_pads(h, kernel, stride), tf_same_pads(w, kernel, stride)
            return [top, left, bottom, right]
        if pad == "valid":
            return [0, 0, 0, 0]
        if isinstance(pad, int):
            return [pad] * 4
        if isinstance(pad, str):
            raise ValueError("unknown padding {!r} (use 'same', 'valid', an int or 4 pads)".format(pad))
        pads = [int(p) for p in pad]
        if len(pads) != 4:
            raise ValueError("pads must be [top, left, bottom, right], got {}".format(pad))
        return pads

    @staticmethod
    def _out_size(size: int, kernel: int, stride: int, begin: int, end: int) -> int:
        return (size + begin + end - kernel) // stride + 1

    # -- weights -----------------------------------------------------------------------------------

    def he_normal(self, shape: Sequence[int], fan_in: int, gain: float) -> np.ndarray:
        """Normal weights with variance gain / fan_in (float32)."""
        std = np.float32(np.sqrt(gain / fan_in))
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * std

    def synthetic_bn(self, channels: int,
                     gamma_mean: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Plausible per-channel (gamma, beta, moving mean, moving variance) of a trained BN layer."""
        gamma = self.rng.uniform(0.75, 1.25, channels).astype(np.float32) * np.float32(gamma_mean)
        beta = self.rng.normal(0.0, 0.1, channels).astype(np.float32)
        mean = self.rng.normal(0.0, 0.1, channels).astype(np.float32)
        var = self.rng.uniform(0.75, 1.25, channels).astype(np.float32)
        return gamma, beta, mean, var

    # -- layers ------------------------------------------------------------------------------------

    def conv(self, x: str, out_channels: int, kernel: int, name: str, stride: int = 1, pad: Pad = "same",
             group: int = 1, act: Optional[str] = None, bn: bool = True, gain: Optional[float] = None,
             gamma_mean: float = 1.0, bias: Optional[np.ndarray] = None) -> str:
        """Conv2d (+ folded BN) (+ ReLU or ReLU6); `bias` fixes the bias of a conv without BN."""
        c, h, w = self.shapes[x]
        if c % group or out_channels % group:
            raise ValueError("{}: channels {} -> {} not divisible by group {}".format(name, c, out_channels, group))
        fan_in = (c // group) * kernel * kernel
        weight = self.he_normal((out_channels, c // group, kernel, kernel), fan_in,
                                gain if gain is not None else (2.0 if act else 1.0))
        if bn:
            gamma, beta, mean, var = self.synthetic_bn(out_channels, gamma_mean)
            weight, b = fold_batch_norm(weight, None, gamma, beta, mean, var, self.bn_epsilon)
        elif bias is not None:
            b = np.asarray(bias, dtype=np.float32).reshape(out_channels)
        else:
            b = self.rng.normal(0.0, 0.05, out_channels).astype(np.float32)
        pads = self._pads(pad, h, w, kernel, stride)
        oh = self._out_size(h, kernel, stride, pads[0], pads[2])
        ow = self._out_size(w, kernel, stride, pads[1], pads[3])
        wname = self.initializer(name + "/weights", weight)
        bname = self.initializer(name + "/biases", b)
        attrs: Dict[str, Any] = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads,
                                     dilations=[1, 1])
        if group != 1:
            attrs["group"] = group
        y = self._node("Conv", [x, wname, bname], name + "/Conv2D", (out_channels, oh, ow), **attrs)
        return self.activation(y, act, name)

    def depthwise(self, x: str, kernel: int, name: str, stride: int = 1, pad: Pad = "same",
                  act: Optional[str] = None, bn: bool = True) -> str:
        """Depthwise Conv2d (one filter per channel, depth multiplier 1) (+ folded BN) (+ activation)."""
        c = self.shapes[x][0]
        return self.conv(x, c, kernel, name, stride=stride, pad=pad, group=c, act=act, bn=bn)

    def activation(self, x: str, act: Optional[str], name: str) -> str:
        """Apply None, "relu" or "relu6" (Clip 0..6, with shared scalar bounds)."""
        if act is None:
            return x
        if act == "relu":
            return self.relu(x, name + "/Relu")
        if act == "relu6":
            if self._relu6_bounds is None:
                self._relu6_bounds = (self.initializer("relu6/min", np.array(0.0, dtype=np.float32)),
                                      self.initializer("relu6/max", np.array(6.0, dtype=np.float32)))
            return self._node("Clip", [x, *self._relu6_bounds], name + "/Relu6", self.shapes.get(x))
        raise ValueError("unknown activation " + act)

    def relu(self, x: str, name: str) -> str:
        """Elementwise ReLU."""
        return self._node("Relu", [x], name, self.shapes.get(x))

    def add(self, a: str, b: str, name: str) -> str:
        """Elementwise sum of two tensors of one shape."""
        if self.shapes.get(a) != self.shapes.get(b):
            raise ValueError("{}: cannot add {} and {}".format(name, self.shapes.get(a), self.shapes.get(b)))
        return self._node("Add", [a, b], name, self.shapes.get(a))

    def max_pool(self, x: str, kernel: int, stride: int, name: str, pad: Pad = 0) -> str:
        """MaxPool2d."""
        c, h, w = self.shapes[x]
        pads = self._pads(pad, h, w, kernel, stride)
        shape = (c, self._out_size(h, kernel, stride, pads[0], pads[2]),
                 self._out_size(w, kernel, stride, pads[1], pads[3]))
        return self._node("MaxPool", [x], name, shape, kernel_shape=[kernel, kernel], strides=[stride, stride],
                          pads=pads)

    def global_avg_pool(self, x: str, name: str) -> str:
        """Mean over H and W, kept as [N, C, 1, 1]."""
        return self._node("GlobalAveragePool", [x], name, (self.shapes[x][0], 1, 1))

    def flatten(self, x: str, name: str) -> str:
        """[N, ...] -> [N, prod(...)]; the batch dimension stays symbolic."""
        return self._node("Flatten", [x], name, axis=1)

    def gemm(self, x: str, in_features: int, out_features: int, name: str, gain: float = 1.0,
             output: Optional[str] = None) -> str:
        """Fully connected layer y = x W^T + b with W stored [out, in] (transB=1); `output` names y."""
        weight = self.he_normal((out_features, in_features), in_features, gain)
        b = self.rng.normal(0.0, 0.05, out_features).astype(np.float32)
        wname = self.initializer(name + "/weights", weight)
        bname = self.initializer(name + "/biases", b)
        return self._node("Gemm", [x, wname, bname], output or name + "/Gemm", transB=1)

    def transpose(self, x: str, perm: Sequence[int], name: str) -> str:
        """Permute axes."""
        return self._node("Transpose", [x], name, perm=list(perm))

    def reshape(self, x: str, shape: Sequence[int], name: str) -> str:
        """Reshape to `shape` (0 copies the input's dimension, -1 is inferred); the shape is an int64 constant."""
        target = self.initializer(name + "/shape", np.array(list(shape), dtype=np.int64))
        return self._node("Reshape", [x, target], name)

    def concat(self, xs: Sequence[str], axis: int, name: str) -> str:
        """Concatenate along `axis`."""
        return self._node("Concat", list(xs), name, axis=axis)

    def sigmoid(self, x: str, name: str) -> str:
        """Elementwise logistic function."""
        return self._node("Sigmoid", [x], name, self.shapes.get(x))

    # -- model -------------------------------------------------------------------------------------

    def finish(self, graph_name: str, outputs: Sequence[Tuple[str, Sequence[Union[int, str]]]],
               metadata: Dict[str, str], doc: str = "") -> onnx.ModelProto:
        """The ModelProto: opset 13, IR 7, float32 outputs of the given dims, metadata_props in key order."""
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(dims)) for n, dims in outputs]
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, outs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="mlmark", producer_version=BUILDER_VERSION, doc_string=doc)
        model.ir_version = IR_VERSION
        meta = dict(metadata)
        meta.setdefault("seed", str(self.seed))
        for key in sorted(meta):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(meta[key])
        return model
