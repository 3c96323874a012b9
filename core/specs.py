"""Typed descriptions shared by workloads, targets and the harness: a model's tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Tuple, Union


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None or a string for a symbolic dimension) and numpy dtype of a model input or output."""

    name: str
    shape: Tuple[Any, ...]
    dtype: str

    def to_list(self) -> List[Any]:
        """[name, shape, dtype], as result files record it."""
        return [self.name, list(self.shape), self.dtype]


def onnx_np_dtype(elem_type: int) -> Any:
    """The numpy dtype of an ONNX tensor element type."""
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except AttributeError:  # onnx < 1.13
        return onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[elem_type]


def _spec(value_info: Any) -> TensorSpec:
    t = value_info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
    return TensorSpec(name=value_info.name, shape=dims, dtype=str(onnx_np_dtype(t.elem_type)))


def onnx_io(model: Union[Any, str, Path]) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """An ONNX model's (inputs, outputs); initializers that old exporters list as inputs are left out."""
    if isinstance(model, (str, Path)):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [_spec(v) for v in model.graph.output]
