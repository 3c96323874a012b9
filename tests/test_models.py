"""The synthetic-weight generators build the published architectures: checked graphs, counts, determinism, runs."""

from __future__ import annotations

import importlib
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from workloads import WORKLOADS  # noqa: E402
from workloads.models.count import count_macs, count_model, count_parameters  # noqa: E402
from workloads.models.graph import IR_VERSION, OPSET, tf_same_pads  # noqa: E402

# generator -> (workload, input size, {output: trailing dims})
SPECS: Dict[str, Tuple[str, int, Dict[str, Tuple[int, ...]]]] = {
    "mobilenet_v1": ("mobilenet", 224, {"logits": (1001,)}),
    "resnet50": ("resnet50", 224, {"logits": (1000,)}),
    "ssd_mobilenet_v1": ("ssdmobilenet", 300, {"boxes": (1917, 4), "scores": (1917, 91)}),
}
# generator -> (published parameters, tolerance, published MACs per image, tolerance)
PUBLISHED: Dict[str, Tuple[float, float, float, float]] = {
    "mobilenet_v1": (4.2e6, 0.02, 569e6, 0.02),
    "resnet50": (25.557032e6, 0.005, 4.1e9, 0.03),
    "ssd_mobilenet_v1": (6.8e6, 0.05, 0.0, 0.0),  # no single published MAC figure to hold it to
}


class Built:
    """One generator's model (seed 0), serialised once and shared by the tests of this module."""

    def __init__(self, generator: str) -> None:
        self.generator = generator
        self.module: Any = importlib.import_module("workloads.models." + generator)
        self.model = self.module.build(seed=0)
        self.data = self.model.SerializeToString()
        self.workload, self.size, self.outputs = SPECS[generator]


@pytest.fixture(scope="module", params=sorted(SPECS))
def built(request: Any) -> Iterator[Built]:
    yield Built(request.param)


def _session(data: bytes) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _dims(value_info: Any) -> Tuple[Any, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim)


def test_checker_interface_and_metadata(built: Built) -> None:
    onnx.checker.check_model(built.model)
    assert built.model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in built.model.opset_import] == [("", OPSET)]
    initializers = {t.name for t in built.model.graph.initializer}
    inputs = [v for v in built.model.graph.input if v.name not in initializers]
    assert [(v.name, _dims(v)) for v in inputs] == [("input", ("batch", 3, built.size, built.size))]
    assert {v.name: _dims(v) for v in built.model.graph.output} == {
        name: ("batch",) + dims for name, dims in built.outputs.items()}
    assert not [n.op_type for n in built.model.graph.node if n.op_type == "BatchNormalization"]  # folded
    meta = {p.key: p.value for p in built.model.metadata_props}
    assert meta["workload"] == built.workload
    assert meta["weights"] == "synthetic"
    assert meta["seed"] == "0"
    assert meta["architecture"]
    assert meta["generator_version"] == WORKLOADS[built.workload].generator_version()


def test_counts_match_published_architecture(built: Built) -> None:
    params, params_tol, macs, macs_tol = PUBLISHED[built.generator]
    counts = count_model(built.model)
    assert abs(counts.parameters / params - 1) <= params_tol, counts
    if macs:
        assert abs(counts.macs / macs - 1) <= macs_tol, counts
    if built.generator == "resnet50":
        # torchvision's 25,557,032 counts BN gamma and beta per channel; folded, one bias is left of the two
        bn_channels = sum(t.dims[0] for t in built.model.graph.initializer
                          if t.name.endswith("/biases") and not t.name.startswith("fc/"))
        assert counts.parameters + bn_channels == 25557032
    if built.generator == "ssd_mobilenet_v1":
        from workloads.ssd.anchors import NUM_ANCHORS

        assert built.module.NUM_ANCHORS == NUM_ANCHORS == 1917
        assert built.outputs["boxes"][0] == 1917


def test_generation_is_deterministic(built: Built) -> None:
    assert built.module.build(seed=0).SerializeToString() == built.data
    other = built.module.build(seed=1)
    base = {t.name: t for t in built.model.graph.initializer}
    assert [(t.name, list(t.dims)) for t in other.graph.initializer] == [
        (t.name, list(t.dims)) for t in built.model.graph.initializer]
    weights = [t for t in other.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) > 1]
    assert weights and all(t.raw_data != base[t.name].raw_data for t in weights)
    assert {p.key: p.value for p in other.metadata_props}["seed"] == "1"


def test_runs_in_onnxruntime_at_batch_2(built: Built) -> None:
    session = _session(built.data)
    x = np.random.default_rng(7).standard_normal((2, 3, built.size, built.size)).astype(np.float32)
    names = list(built.outputs)
    results = dict(zip(names, session.run(names, {"input": x})))
    for name, dims in built.outputs.items():
        y = results[name]
        assert y.shape == (2,) + dims and y.dtype == np.float32
        assert np.isfinite(y).all()
        assert 0.1 < float(y[0].std()) < 10 or name == "scores", (name, y[0].std())  # neither vanished nor exploded
        assert np.abs(y[0] - y[1]).max() > 1e-4  # the two images give different outputs
    if "scores" in results:
        scores = results["scores"]
        assert scores.min() >= 0.0 and scores.max() <= 1.0 and scores[..., 1:].std() > 1e-3


def test_ssd_outputs_are_in_anchor_order() -> None:
    from workloads.models import ssd_mobilenet_v1

    model = ssd_mobilenet_v1.build(seed=0)
    heads = ["BoxPredictor_{}/BoxEncodingPredictor/Conv2D".format(i) for i in range(6)]
    model.graph.output.extend(helper.make_empty_tensor_value_info(h) for h in heads)
    x = np.random.default_rng(3).standard_normal((1, 3, 300, 300)).astype(np.float32)
    boxes, *maps = _session(model.SerializeToString()).run(["boxes"] + heads, {"input": x})
    start = 0
    for conv, n, anchors in zip(maps, (19, 10, 5, 3, 2, 1), (3, 6, 6, 6, 6, 6)):
        assert conv.shape == (1, anchors * 4, n, n)
        # anchor index = start + (y * n + x) * anchors + a; channel a * 4 + k holds coordinate k
        expected = conv.reshape(anchors, 4, n, n).transpose(2, 3, 0, 1).reshape(-1, 4)
        np.testing.assert_array_equal(boxes[0, start:start + n * n * anchors], expected)
        start += n * n * anchors
    assert start == 1917


def test_tf_same_pads() -> None:
    assert tf_same_pads(224, 3, 2) == (0, 1)
    assert tf_same_pads(19, 3, 2) == (1, 1)
    assert [(-(-s // 2), tf_same_pads(s, 3, 2)) for s in (10, 5, 3, 2)] == [
        (5, (0, 1)), (3, (1, 1)), (2, (1, 1)), (1, (0, 1))]
    assert tf_same_pads(7, 3, 1) == (1, 1) and tf_same_pads(7, 1, 1) == (0, 0)


def test_counters_on_a_hand_made_graph() -> None:
    rng = np.random.default_rng(0)

    def init(name: str, shape: Tuple[int, ...]) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fb"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "mm"], ["y"]),
    ]
    inits = [init("w1", (8, 3, 3, 3)), init("b1", (8,)), init("w2", (8, 1, 3, 3)), init("fc", (10, 8 * 4 * 4)),
             init("fb", (10,)), init("mm", (10, 5)),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    assert count_parameters(model) == 8 * 27 + 8 + 8 * 9 + 10 * 128 + 10 + 50  # no scalars, no int64 shape
    per_image = 8 * 4 * 4 * 27 + 8 * 4 * 4 * 9 + 10 * 128 + 5 * 10
    assert count_macs(model) == per_image
    assert count_macs(model, batch=3) == 3 * per_image
    assert _dims(model.graph.input[0])[0] == "n"  # the caller's model is left as it was
