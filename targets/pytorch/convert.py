"""ONNX file -> torch module, through onnx2torch, specialised to the session's fixed input shape.

The pytorch target runs the workload's own ONNX file, so that its scores compare the same network
and weights as every other target. onnx2torch (a maintained, pure-Python converter) maps each ONNX
node to a torch module in a torch.fx graph. Three passes around it make the result fit for timed
GPU runs, none of which changes the arithmetic:

1. Before conversion, shape arithmetic (Shape -> Gather -> Concat -> Reshape chains, as exporters
   write them) is evaluated on the host for the session's concrete input shape and replaced by
   constants, as TensorRT does when it builds an engine for fixed shapes.
2. Small integer constants that only feed shape operands (Reshape's shape, Slice's starts, Squeeze's
   axes, ...) stay in host memory: onnx2torch reads them as Python values on every call, which on a
   GPU tensor is a device synchronisation per node and makes CUDA-graph capture impossible.
3. Reshapes with a constant shape become plain `reshape` calls with a Python tuple, and the module
   always returns a tuple in the ONNX graph's output order.

When the module moves to a CUDA device in channels-last (move()), large convolutions add their bias
with torch's channels-last per-channel kernel rather than a broadcast add, bit for bit the same sum
(see ChannelsLastBiasConv2d for why).
"""

from __future__ import annotations

import logging
import operator
import sys
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from core.errors import TargetUnavailable
from core.specs import onnx_np_dtype

log = logging.getLogger("mlmark.pytorch")

TORCH_HINT = "pip install torch onnx2torch (or pip install 'mlmark[torch]'; on a Jetson, NVIDIA's torch wheel for " \
             "its JetPack, then pip install onnx2torch)"

# (op_type, input index) pairs whose operand is a shape, axes, indices into a shape or a count: read on the host.
_SHAPE_OPERANDS = {
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Squeeze", 1), ("Unsqueeze", 1),
    ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Pad", 1), ("Pad", 3), ("Split", 1),
    ("Resize", 3), ("Upsample", 1), ("TopK", 1), ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1),
    ("ReduceMin", 1), ("ReduceProd", 1), ("ReduceL2", 1), ("Range", 0), ("Range", 1), ("Range", 2),
    ("OneHot", 1), ("Pad", 2), ("Resize", 1), ("Resize", 2),
}
# Ops the shape folder evaluates when every input is known; only integer results are kept (shape math).
_FOLDABLE = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Add", "Sub", "Mul",
             "Div", "Identity", "Constant", "Neg", "Abs", "Max", "Min"}
_MAX_FOLDED_ELEMENTS = 64
# A convolution's bias moves to the channels-last kernel from this many output elements up; below it an
# elementwise pass is bound by launch latency, and a second op call would only add Python time in eager.
BIAS_KERNEL_MIN_ELEMENTS = 1 << 20


class ConversionError(ValueError):
    """The ONNX file cannot become a torch module (an op the converter lacks, or a converter failure).

    Deliberately not an MLMarkError: the harness then prefixes the task that hit it.
    """


@dataclass
class Converted:
    """A converted model: the module (not yet moved to a device) and what the target needs to run it."""

    module: Any  # torch.fx.GraphModule returning a tuple in output_names order
    input_names: List[str]
    output_names: List[str]
    host_buffers: Set[str] = field(default_factory=set)  # dotted buffer names that stay in host memory
    conv_outputs: Dict[str, int] = field(default_factory=dict)  # Conv2d with a bias (dotted name) -> output elements
    info: Dict[str, Any] = field(default_factory=dict)


def import_torch() -> Any:
    """torch, or TargetUnavailable naming the package to install."""
    try:
        import torch
    except ImportError:
        raise TargetUnavailable("target pytorch: the Python package torch is not installed ({})".format(
            TORCH_HINT)) from None
    return torch


_ONNX2TORCH: List[Tuple[Any, Optional[str]]] = []


def import_onnx2torch() -> Tuple[Any, Optional[str]]:
    """onnx2torch, and a note when torchvision had to be stood in for; TargetUnavailable if it is missing."""
    if not _ONNX2TORCH:
        _ONNX2TORCH.append(_import_onnx2torch())
    return _ONNX2TORCH[0]


def _import_onnx2torch() -> Tuple[Any, Optional[str]]:
    import_torch()
    try:
        import onnx2torch
        return onnx2torch, None
    except ImportError as exc:
        if getattr(exc, "name", "") and not str(exc.name).startswith("torchvision"):
            raise TargetUnavailable("target pytorch: the Python package onnx2torch is not installed "
                                    "(pip install onnx2torch)") from None
        why = "torchvision is not installed"
    except RuntimeError as exc:  # a torchvision built for another torch fails while registering its ops
        why = "torchvision does not load ({})".format(str(exc).splitlines()[0][:80])
    # onnx2torch imports torchvision only for its NonMaxSuppression and RoiAlign converters. Jetson's
    # torch wheels come without torchvision, so stand in for it while onnx2torch imports: only those
    # two ops are then unavailable, and _check_ops names them if a model uses them.
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    for k in saved:
        del sys.modules[k]
    stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def _missing(*_: Any, **__: Any) -> Any:
        raise ConversionError("this op needs torchvision, which {} (pip install torchvision)".format(why))

    ops.nms = ops.roi_align = ops.box_convert = _missing  # type: ignore[attr-defined]
    stub.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
    try:
        for k in [k for k in sys.modules if k == "onnx2torch" or k.startswith("onnx2torch.")]:
            del sys.modules[k]  # a half-finished import from the first attempt
        import onnx2torch
    except ImportError:
        raise TargetUnavailable("target pytorch: the Python package onnx2torch is not installed "
                                "(pip install onnx2torch)") from None
    finally:
        for k in ("torchvision", "torchvision.ops"):
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return onnx2torch, "{}: NonMaxSuppression and RoiAlign cannot be converted".format(why)


def onnx2torch_version() -> str:
    """The installed onnx2torch version, or 'unknown'."""
    try:
        from importlib import metadata
        return metadata.version("onnx2torch")
    except Exception:  # metadata missing in an unusual install
        return "unknown"


def convert_onnx(path: Path, input_shapes: Mapping[str, Sequence[int]]) -> Converted:
    """Convert the ONNX file at path for inputs of exactly input_shapes (name -> concrete shape)."""
    import onnx

    onnx2torch, torchvision_note = import_onnx2torch()
    t0 = time.perf_counter()
    model = onnx.load(str(path))
    initializer_names = {i.name for i in model.graph.initializer}
    input_names = [v.name for v in model.graph.input if v.name not in initializer_names]
    output_names = [v.name for v in model.graph.output]
    _check_ops(model, path)
    _set_input_shapes(model, input_shapes, input_names)
    static = _static_shapes(model)
    folded = _fold_shape_arithmetic(model, static)
    ops = Counter(n.op_type for n in model.graph.node)
    try:
        gm = onnx2torch.convert(model, attach_onnx_mapping=True)
    except ConversionError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConversionError("onnx2torch {} could not convert {}: {}".format(onnx2torch_version(), path.name,
                                                                              first)) from exc
    host = _host_operands(model)
    host_buffers, static_reshapes = _rewrite_graph(gm, host, output_names)
    conv_outputs = _conv_output_sizes(gm, static)
    info = {"converter": "onnx2torch {}".format(onnx2torch_version()),
            "conversion_s": round(time.perf_counter() - t0, 3),
            "onnx_ops": dict(sorted(ops.items())), "shape_nodes_folded": folded,
            "host_shape_operands": len(host_buffers), "static_reshapes": static_reshapes}
    if torchvision_note:
        info["converter_note"] = torchvision_note
    return Converted(module=gm, input_names=input_names, output_names=output_names, host_buffers=host_buffers,
                     conv_outputs=conv_outputs, info=info)


def unsupported_ops(model: Any) -> List[str]:
    """The model's ops onnx2torch has no converter for, as 'Op (domain d, opset n)' strings."""
    import_onnx2torch()
    import onnx2torch.node_converters.registry as registry

    opsets = {o.domain or "": o.version for o in model.opset_import}
    opsets.setdefault("ai.onnx", opsets.get("", 0))
    missing: List[str] = []
    seen: Set[Tuple[str, str]] = set()
    for node in model.graph.node:
        key = (node.domain or "", node.op_type)
        if key in seen:
            continue
        seen.add(key)
        version = opsets.get(node.domain or "", 0)
        try:
            registry.get_converter(operation_type=node.op_type, version=version, domain=node.domain or "")
        except NotImplementedError:
            where = "domain {}, ".format(node.domain) if node.domain not in ("", "ai.onnx") else ""
            missing.append("{} ({}opset {})".format(node.op_type, where, version))
    return missing


def _check_ops(model: Any, path: Path) -> None:
    missing = unsupported_ops(model)
    if missing:
        raise ConversionError("{}: ONNX op{} {} {} not supported by onnx2torch {}; run this model with another "
                              "target".format(path.name, "s" if len(missing) > 1 else "", ", ".join(missing),
                                              "are" if len(missing) > 1 else "is", onnx2torch_version()))


def _set_input_shapes(model: Any, input_shapes: Mapping[str, Sequence[int]], input_names: Sequence[str]) -> None:
    for value in model.graph.input:
        if value.name not in input_names or value.name not in input_shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = list(input_shapes[value.name])
        if len(dims) != len(shape):
            raise ConversionError("input {} has rank {}, the session feeds rank {}".format(
                value.name, len(dims), len(shape)))
        for d, n in zip(dims, shape):
            d.Clear()
            d.dim_value = int(n)


def _static_shapes(model: Any) -> Dict[str, Tuple[int, ...]]:
    """Every value's shape that ONNX shape inference finds fully known (empty if inference fails)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference feeds optimisations only; without it they are skipped
        return {}
    static: Dict[str, Tuple[int, ...]] = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            static[v.name] = tuple(d.dim_value for d in dims)
    return static


def _fold_shape_arithmetic(model: Any, static: Mapping[str, Tuple[int, ...]]) -> int:
    """Evaluate integer shape arithmetic on the host for the now-static input shapes; returns nodes folded."""
    import onnx
    from onnx import numpy_helper

    if not static:
        return 0
    known: Dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and _numel(init.dims) <= \
                _MAX_FOLDED_ELEMENTS:
            known[init.name] = numpy_helper.to_array(init)
    graph_outputs = {v.name for v in model.graph.output}
    keep = []
    folded = 0
    new_constants: Dict[str, np.ndarray] = {}
    for node in model.graph.node:
        value = _evaluate(node, known, static) if node.op_type in _FOLDABLE else None
        if value is not None and not (set(node.output) & graph_outputs):
            known[node.output[0]] = value
            new_constants[node.output[0]] = value
            folded += 1
        else:
            keep.append(node)
    if not folded:
        return 0
    consumed = {i for n in keep for i in n.input}
    del model.graph.node[:]
    model.graph.node.extend(keep)
    for name, value in new_constants.items():
        if name in consumed:
            model.graph.initializer.append(numpy_helper.from_array(value, name))
    return folded


def _numel(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _evaluate(node: Any, known: Mapping[str, np.ndarray], static: Mapping[str, Tuple[int, ...]]) -> Optional[
        np.ndarray]:
    """The node's single integer output when it can be computed on the host, else None."""
    from onnx import helper

    if len(node.output) != 1:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Shape":
        shape = static.get(node.input[0])
        if shape is None:
            return None
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return np.array(shape[start:end], dtype=np.int64)
    if op == "Size":
        shape = static.get(node.input[0])
        return None if shape is None else np.array(_numel(shape), dtype=np.int64)
    if op == "Constant":
        if "value" in attrs:
            from onnx import numpy_helper
            value = numpy_helper.to_array(attrs["value"])
        elif "value_int" in attrs or "value_ints" in attrs:
            value = np.array(attrs.get("value_int", attrs.get("value_ints")), dtype=np.int64)
        else:
            return None
        return value if value.dtype.kind in "iu" and value.size <= _MAX_FOLDED_ELEMENTS else None
    args = [i for i in node.input if i]
    if not args or any(a not in known for a in args):
        return None
    xs = [known[a] for a in args]
    try:
        if op == "Gather":
            out = np.take(xs[0], xs[1], axis=attrs.get("axis", 0))
        elif op == "Unsqueeze":
            axes = list(attrs.get("axes", xs[1] if len(xs) > 1 else []))
            out = xs[0]
            rank = out.ndim + len(axes)
            for a in sorted(int(a) % rank for a in axes):
                out = np.expand_dims(out, a)
        elif op == "Squeeze":
            axes = attrs.get("axes", xs[1] if len(xs) > 1 else None)
            out = np.squeeze(xs[0], axis=None if axes is None else tuple(int(a) for a in axes))
        elif op == "Concat":
            out = np.concatenate([np.atleast_1d(x) for x in xs], axis=attrs.get("axis", 0))
        elif op == "Slice":
            if "starts" in attrs:  # opset < 10 keeps them as attributes
                starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
            else:
                starts, ends = xs[1], xs[2]
                axes = xs[3] if len(xs) > 3 else None
                steps = xs[4] if len(xs) > 4 else None
            index = [slice(None)] * xs[0].ndim
            axes = list(range(len(starts))) if axes is None else list(axes)
            for k, a in enumerate(axes):
                step = int(steps[k]) if steps is not None else 1
                index[int(a)] = slice(int(starts[k]), int(ends[k]), step)
            out = xs[0][tuple(index)]
        elif op == "Cast":
            dtype = onnx_np_dtype(attrs["to"])
            if np.dtype(dtype).kind not in "iu":
                return None
            out = xs[0].astype(dtype)
        elif op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide,
                  "Max": np.maximum, "Min": np.minimum}[op]
            out = xs[0]
            for x in xs[1:]:
                out = fn(out, x)
        elif op == "Neg":
            out = -xs[0]
        elif op == "Abs":
            out = np.abs(xs[0])
        elif op == "Identity":
            out = xs[0]
        else:
            return None
    except (ValueError, IndexError, TypeError, KeyError):
        return None
    out = np.asarray(out)
    if out.dtype.kind not in "iu" or out.size > _MAX_FOLDED_ELEMENTS:
        return None
    return out


def _host_operands(model: Any) -> Set[str]:
    """Small initializers whose every consumer reads them as a shape-like operand (host values)."""
    small = {i.name for i in model.graph.initializer if _numel(i.dims) <= _MAX_FOLDED_ELEMENTS}
    uses: Dict[str, List[Tuple[str, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in small:
                uses.setdefault(name, []).append((node.op_type, k))
    return {name for name, u in uses.items() if all(use in _SHAPE_OPERANDS for use in u)}


def _rewrite_graph(gm: Any, host: Set[str], output_names: Sequence[str]) -> Tuple[Set[str], int]:
    """Passes 2 and 3 on the fx graph; returns the host-side buffer names and the reshapes made static."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    produced: Dict[str, Tuple[Any, int, int]] = {}  # onnx value -> (fx node, output index, output count)
    buffer_of: Dict[Any, str] = {}  # get_attr fx node -> onnx initializer name
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        mapping = getattr(modules.get(node.target), "onnx_mapping", None)
        if mapping is None:
            continue
        for k, name in enumerate(mapping.outputs):
            produced[name] = (node, k, len(mapping.outputs))
        for arg, name in zip(node.args, mapping.inputs):
            if getattr(arg, "op", None) == "get_attr":
                buffer_of[arg] = name
    host_buffers = {n.target for n, name in buffer_of.items() if name in host}

    static_reshapes = 0
    for node in list(graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if type(module).__name__ != "OnnxReshape" or len(node.args) != 2 or node.kwargs:
            continue
        shape_node = node.args[1]
        if getattr(shape_node, "op", None) != "get_attr" or shape_node.target not in host_buffers:
            continue
        shape = tuple(int(v) for v in _get_attr(gm, shape_node.target).tolist())
        gm.add_submodule(node.target, _static_reshape_module(shape))
        node.args = (node.args[0],)
        static_reshapes += 1

    output_node = next(n for n in graph.nodes if n.op == "output")
    results = []
    with graph.inserting_before(output_node):
        for name in output_names:
            if name not in produced:
                raise ConversionError("graph output {} is not computed by any node".format(name))
            fx_node, index, count = produced[name]
            results.append(graph.call_function(operator.getitem, (fx_node, index)) if count > 1 else fx_node)
    output_node.args = (tuple(results),)
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return {t for t in host_buffers if _has_attr(gm, t)}, static_reshapes


def _get_attr(gm: Any, dotted: str) -> Any:
    obj = gm
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _has_attr(gm: Any, dotted: str) -> bool:
    try:
        _get_attr(gm, dotted)
        return True
    except AttributeError:
        return False


_STATIC_RESHAPE: List[Any] = []


def _static_reshape_module(shape: Tuple[int, ...]) -> Any:
    """A module reshaping to a constant ONNX shape (0 = keep that input dimension, -1 = inferred)."""
    if not _STATIC_RESHAPE:  # defined on first use so that importing this file needs no torch
        import torch

        class StaticReshape(torch.nn.Module):
            """Reshape to a shape fixed at conversion, with ONNX's meaning of 0."""

            def __init__(self, target: Tuple[int, ...]) -> None:
                super().__init__()
                self.target = target
                self.copies = any(d == 0 for d in target)

            def forward(self, x: Any) -> Any:
                if self.copies:
                    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(self.target)])
                return x.reshape(self.target)

        _STATIC_RESHAPE.append(StaticReshape)
    return _STATIC_RESHAPE[0](shape)


def _conv_output_sizes(gm: Any, static: Mapping[str, Tuple[int, ...]]) -> Dict[str, int]:
    """Each Conv2d with a bias whose output shape is known: dotted module name -> output element count."""
    import torch

    sizes: Dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        mapping = getattr(module, "onnx_mapping", None)
        shape = static.get(mapping.outputs[0]) if mapping is not None and mapping.outputs else None
        # onnx2torch emits a Conv2d, or Sequential(pad, Conv2d) for asymmetric pads.
        name, conv = node.target, module
        if isinstance(module, torch.nn.Sequential) and len(module) and isinstance(module[-1], torch.nn.Conv2d):
            name, conv = "{}.{}".format(node.target, len(module) - 1), module[-1]
        if shape is not None and type(conv) is torch.nn.Conv2d and conv.bias is not None and \
                conv.padding_mode == "zeros":
            sizes[name] = _numel(shape)
    return sizes


def fold_same_pads(converted: "Converted") -> int:
    """TF-style SAME padding of a 3x3 stride-2 convolution as the convolution's own padding; returns how many.

    On an even input TF pads 0 before and 1 after, and onnx2torch runs that as a separate zero pad
    (a full copy of the activation) before a padding-0 convolution. The same sums come from one
    convolution with a 4x4 kernel whose first row and column are zero and a symmetric padding of 1:
    window i then covers input pixels 2i-1 .. 2i+2, of which the zero taps drop 2i-1.
    """
    import torch

    gm = converted.module
    folded = 0
    for name, module in list(gm.named_modules()):
        if not (isinstance(module, torch.nn.Sequential) and len(module) == 2):
            continue
        pad, conv = module[0], module[1]
        if (type(pad).__name__ != "OnnxPadStatic" or getattr(pad, "mode", "") != "constant"
                or float(getattr(pad, "constant_value", 0.0)) != 0.0 or list(getattr(pad, "pads", [])) != [0, 1, 0, 1]
                or type(conv) is not torch.nn.Conv2d or conv.kernel_size != (3, 3) or conv.stride != (2, 2)
                or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.padding_mode != "zeros"):
            continue
        wide = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 4, stride=2, padding=1, groups=conv.groups,
                               bias=conv.bias is not None)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, :, 1:, 1:] = conv.weight
            if conv.bias is not None:
                wide.bias.copy_(conv.bias)
        if hasattr(module, "onnx_mapping"):
            wide.onnx_mapping = module.onnx_mapping
        owner_path, _, leaf = name.rpartition(".")
        owner = _get_attr(gm, owner_path) if owner_path else gm
        setattr(owner, leaf, wide)
        if name + ".1" in converted.conv_outputs:  # the bias kernel finds the convolution under its new name
            converted.conv_outputs[name] = converted.conv_outputs.pop(name + ".1")
        folded += 1
    return folded


_BIAS_CONV: List[Any] = []


def _bias_conv_class() -> Any:
    """Conv2d whose bias is added by torch's channels-last batch-norm kernel (defined on first use)."""
    if not _BIAS_CONV:
        import torch

        class ChannelsLastBiasConv2d(torch.nn.Module):
            """conv2d without bias, then batch_norm_elemt with mean 0, inverse std 1 and no scale.

            The kernel computes 1 * (y - 0) * 1 + bias in float and rounds once: bit for bit what
            conv2d's own bias add (add_ of a [1, C, 1, 1] view) computes. It is the kernel that
            torchvision's BatchNorm2d runs in channels-last, and it reads the bias per channel,
            where add_ of a broadcast operand falls back to TensorIterator's non-vectorized
            path: on an H100 that bias add made ResNet-50 at batch 256 fp16 about 12% slower than
            torchvision's model with BN unfolded.
            """

            def __init__(self, conv: Any, zeros: Any, ones: Any) -> None:
                super().__init__()
                self.weight, self.bias = conv.weight, conv.bias
                self.stride, self.padding, self.dilation, self.groups = (conv.stride, conv.padding, conv.dilation,
                                                                         conv.groups)
                # float32 statistics, as the kernel reads them (not buffers: .half() must leave them alone)
                self.zeros, self.ones = zeros, ones

            def forward(self, x: Any) -> Any:
                y = torch.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
                return torch.batch_norm_elemt(y, None, self.bias, self.zeros, self.ones, 0.0)

        _BIAS_CONV.append(ChannelsLastBiasConv2d)
    return _BIAS_CONV[0]


def _channels_last_bias(gm: Any, conv_outputs: Mapping[str, int], device: Any) -> int:
    """Swap large biased Conv2d modules for ChannelsLastBiasConv2d; returns how many were swapped."""
    import torch

    cls = _bias_conv_class()
    stats: Dict[int, Tuple[Any, Any]] = {}
    swapped = 0
    for name, elements in conv_outputs.items():
        if elements < BIAS_KERNEL_MIN_ELEMENTS:
            continue
        conv = _get_attr(gm, name)
        if type(conv) is not torch.nn.Conv2d:  # swapped by an earlier move()
            continue
        c = conv.out_channels
        if c not in stats:
            stats[c] = (torch.zeros(c, device=device, dtype=torch.float32),
                        torch.ones(c, device=device, dtype=torch.float32))
        replacement = cls(conv, *stats[c])
        if hasattr(conv, "onnx_mapping"):
            replacement.onnx_mapping = conv.onnx_mapping
        owner_path, _, leaf = name.rpartition(".")
        owner = _get_attr(gm, owner_path) if owner_path else gm
        setattr(owner, leaf, replacement)
        swapped += 1
    return swapped


def move(converted: Converted, device: Any, dtype: Any, channels_last: bool,
         bias_kernel: bool = False) -> Tuple[Any, int]:
    """Put the module on device in dtype (host-side shape operands stay on the CPU); returns it and casts retargeted.

    bias_kernel (CUDA and channels_last only; not for torch.compile, which fuses the bias itself):
    convolutions with an output of at least BIAS_KERNEL_MIN_ELEMENTS elements add their bias with
    the channels-last per-channel kernel instead of a broadcast add_, with bit-identical results;
    converted.info["conv_bias_kernel"] says how many.
    """
    import torch

    gm = converted.module
    gm.eval()
    for p in gm.parameters():
        p.requires_grad_(False)
    gm.to(device)
    if dtype != torch.float32:
        gm.to(dtype)  # floating parameters and buffers only; integer operands keep their type
    if channels_last:
        gm.to(memory_format=torch.channels_last)
    for dotted in converted.host_buffers:
        owner_path, _, leaf = dotted.rpartition(".")
        owner = _get_attr(gm, owner_path) if owner_path else gm
        setattr(owner, leaf, getattr(owner, leaf).cpu())
    retargeted = 0
    if dtype != torch.float32:
        # A Cast to float32 inside the graph (after an integer input, say) would otherwise take the
        # activations back to float32 and collide with fp16/bf16 weights: cast to the run precision.
        for m in gm.modules():
            if type(m).__name__ == "OnnxCast" and getattr(m, "torch_dtype", None) == torch.float32:
                m.torch_dtype = dtype
                retargeted += 1
    if bias_kernel and channels_last and torch.device(device).type == "cuda":
        converted.info["conv_bias_kernel"] = "{} of {} biased convolutions".format(
            _channels_last_bias(gm, converted.conv_outputs, device), len(converted.conv_outputs))
    converted.info["inlined_modules"] = inline_modules(gm)
    return gm, retargeted


def inline_modules(gm: Any) -> int:
    """The graph's convolutions, activations and pads as calls of the torch functions their modules call.

    Why: in eager mode at small batches the GPU waits for Python, and a module call costs several
    Python frames (__call__, forward, _conv_forward) and an attribute lookup through Module.__getattr__
    that fx's generated forward makes for every module it calls; a plain function call costs one. The
    arithmetic is the same calls on the same tensors. A ReLU6 or ReLU right after a convolution runs
    in place (hardtanh_), as a hand-written ReLU6(inplace=True) does, when nothing else reads the
    convolution's output. Returns the number of modules inlined; modules of other kinds stay.
    """
    import torch
    import torch.nn.functional as F

    graph = gm.graph
    registered: Dict[int, str] = {}

    def tensor(value: Any) -> Any:
        """A get_attr node for a module's tensor, registered once on the root under a plain name."""
        if value is None:
            return None
        if id(value) not in registered:
            name = "_inlined_{}".format(len(registered))
            if isinstance(value, torch.nn.Parameter):
                gm.register_parameter(name, value)
            else:
                gm.register_buffer(name, value, persistent=False)
            registered[id(value)] = name
        return graph.get_attr(registered[id(value)])

    def fresh(node: Any) -> bool:
        """True when node's value is a new tensor that only its one user reads (safe to overwrite)."""
        return len(node.users) == 1 and node.op == "call_function" and node.target in (
            torch.conv2d, torch.batch_norm_elemt)

    def call(module: Any, x: Any) -> Optional[Any]:
        """Nodes computing module(x) with functions, or None for a module kept as it is."""
        kind = type(module)
        if kind is torch.nn.Conv2d and module.padding_mode == "zeros":
            return graph.call_function(torch.conv2d, (x, tensor(module.weight), tensor(module.bias), module.stride,
                                                      module.padding, module.dilation, module.groups))
        if kind.__name__ == "ChannelsLastBiasConv2d":
            y = graph.call_function(torch.conv2d, (x, tensor(module.weight), None, module.stride, module.padding,
                                                   module.dilation, module.groups))
            return graph.call_function(torch.batch_norm_elemt, (y, None, tensor(module.bias), tensor(module.zeros),
                                                                tensor(module.ones), 0.0))
        if kind in (torch.nn.ReLU6, torch.nn.Hardtanh):
            low, high = (0.0, 6.0) if kind is torch.nn.ReLU6 else (module.min_val, module.max_val)
            return graph.call_function(F.hardtanh, (x, low, high, fresh(x)))
        if kind is torch.nn.ReLU:
            return graph.call_function(F.relu, (x, fresh(x)))
        if kind.__name__ == "OnnxPadStatic" and getattr(module, "mode", "") == "constant":
            return graph.call_function(F.pad, (x, list(module.pads), "constant", float(module.constant_value)))
        if kind is torch.nn.Sequential and len(module):
            out = x
            for child in module:
                out = call(child, out)
                if out is None:
                    return None
            return out
        return None

    inlined = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        with graph.inserting_before(node):
            new = call(gm.get_submodule(node.target), node.args[0])
        if new is None:
            continue
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        inlined += 1
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return inlined
