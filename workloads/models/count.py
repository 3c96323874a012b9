"""Parameter and multiply-accumulate counts of an ONNX model, read from the graph.

Parameters: elements of every initializer (and Constant node) that holds weights, i.e. of a floating
(or 8-bit quantised) type and rank >= 1. Integer shape/axes operands and scalars (ReLU6 bounds,
quantisation scales) are not weights and are not counted.

MACs: Conv (grouped and depthwise included: each output element costs (C_in / group) x kernel area),
Gemm and MatMul, from ONNX shape inference with the batch dimension fixed. Elementwise ops, pooling
and data movement are ignored, as published MAC figures ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import onnx
from onnx import TensorProto

# Element types that hold shapes, indices or flags rather than weights.
_NOT_WEIGHTS = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.UINT16, TensorProto.UINT32,
                TensorProto.UINT64, TensorProto.BOOL, TensorProto.STRING, TensorProto.UNDEFINED}
# Initializers at least this large stand in for themselves as graph inputs during shape inference,
# so that inference does not copy the weights; smaller ones (shape operands) keep their values.
_LIGHT_THRESHOLD = 64


@dataclass(frozen=True)
class ModelCounts:
    """Size and cost of a model: weights, and multiply-accumulates for one batch of `batch` inputs."""

    parameters: int
    macs: int
    batch: int = 1

    @property
    def macs_per_input(self) -> float:
        """MACs per image."""
        return self.macs / self.batch


def _numel(dims: List[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _is_weight(tensor: onnx.TensorProto) -> bool:
    return tensor.data_type not in _NOT_WEIGHTS and len(tensor.dims) >= 1


def count_parameters(model: onnx.ModelProto) -> int:
    """Weight elements: floating-point (or int8/uint8) initializers and Constant values of rank >= 1."""
    total = sum(_numel(list(t.dims)) for t in model.graph.initializer if _is_weight(t))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and _is_weight(attr.t):
                    total += _numel(list(attr.t.dims))
    return total


def _shape_model(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A weight-free copy whose symbolic batch is fixed, for shape inference."""
    graph = onnx.GraphProto()
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    declared = {v.name for v in model.graph.input}
    graph.input.extend(model.graph.input)
    for t in model.graph.initializer:
        if _numel(list(t.dims)) < _LIGHT_THRESHOLD or t.data_type in _NOT_WEIGHTS:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for v in graph.input:
        if v.name in declared and v.type.HasField("tensor_type"):
            dims = v.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_value = batch  # replaces the symbolic name (a protobuf oneof)
    light = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    light.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
    return onnx.shape_inference.infer_shapes(light)


def _static_shapes(model: onnx.ModelProto) -> Dict[str, List[int]]:
    shapes: Dict[str, List[int]] = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = [d.dim_value for d in t.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul nodes for one batch of `batch` inputs."""
    inferred = _shape_model(model, batch)
    shapes = _static_shapes(inferred)

    def shape(name: str, node: onnx.NodeProto) -> List[int]:
        found: Optional[List[int]] = shapes.get(name)
        if found is None:
            raise ValueError("count_macs: no static shape for {} of {} node {!r}".format(name, node.op_type, node.name))
        return found

    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            # weight [C_out, C_in / group, k...]: each output element takes prod(weight dims[1:]) MACs
            total += _numel(shape(node.output[0], node)) * _numel(shape(node.input[1], node)[1:])
        elif node.op_type == "Gemm":
            a = shape(node.input[0], node)
            k = a[0] if _attr(node, "transA", 0) else a[1]
            total += _numel(shape(node.output[0], node)) * k
        elif node.op_type == "MatMul":
            total += _numel(shape(node.output[0], node)) * shape(node.input[0], node)[-1]
    return total


def count_model(model: onnx.ModelProto, batch: int = 1) -> ModelCounts:
    """Parameters and MACs of a model in one call."""
    return ModelCounts(parameters=count_parameters(model), macs=count_macs(model, batch), batch=batch)
