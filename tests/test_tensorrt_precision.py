"""The precision check's decisions, on layer records and engine sizes (no TensorRT, no GPU).

The layer records are hand-written in the shape targets.native.tensorrt returns them: name, type,
precision, and the inspector's JSON for the layer ("raw", in IEngineInspector's kDETAILED format:
LayerType, ParameterType, Inputs/Outputs with Format/Datatype strings). They describe MobileNet v1 as
TensorRT lays it out (a reformat of the input, 27 convolutions, pooling, the classifier, softmax), not
the output of any particular TensorRT run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from core.errors import RunError
from targets.tensorrt import precision_check as pc

FORMAT = {"fp32": "Row major linear FP32", "fp16": "Channel major FP16 format where channel % 8 == 0",
          "int8": "Thirty-two wide channel vectorized row major Int8 format"}


def layer(name: str, kind: str, inp: str, out: str, parameter_type: Optional[str] = None,
          precision: Optional[str] = "auto") -> Dict[str, Any]:
    raw = {"Name": name, "LayerType": kind,
           "Inputs": [{"Name": name + ":in", "Location": "Device", "Format/Datatype": FORMAT[inp]}],
           "Outputs": [{"Name": name + ":out", "Location": "Device", "Format/Datatype": FORMAT[out]}]}
    if parameter_type:
        raw["ParameterType"] = parameter_type
    if precision == "auto":
        precision = inp if inp == out else "mixed"
    return {"name": name, "type": kind, "precision": precision, "raw": raw}


def mobilenet(conv: str, first: Optional[str] = None, depthwise: Optional[str] = None,
              other: str = "fp32") -> List[Dict[str, Any]]:
    """MobileNet v1's layers with the given compute precision (first conv and depthwise ones may differ)."""
    first = first or conv
    layers = [layer("Reformatting CopyNode for Input Tensor 0 to conv1", "Reformat", "fp32", first),
              layer("conv1 + relu", "CaskConvolution", first, conv, "Convolution")]
    for i in range(1, 14):
        dw = depthwise or conv
        layers.append(layer("conv_dw_{} + relu".format(i), "CaskConvolution", conv, dw, "Convolution"))
        layers.append(layer("conv_pw_{} + relu".format(i), "CaskGemmConvolution", dw, conv, "Convolution"))
    layers += [layer("pool", "CaskPooling", conv, conv, "Pooling"),
               layer("fc", "CaskFullyConnected", conv, conv, "FullyConnected"),
               layer("Reformatting CopyNode for Output Tensor 0 to fc", "Reformat", conv, other),
               layer("softmax", "Softmax", other, other)]
    return layers


def test_compute_layers_are_convolutions_and_fully_connected_only() -> None:
    layers = mobilenet("fp16")
    compute = [rec["name"] for rec in layers if pc.is_compute_layer(rec)]
    assert len(compute) == 28 and "fc" in compute and "conv1 + relu" in compute
    assert not any("Reformat" in n or n in ("pool", "softmax") for n in compute)
    # A record whose type is empty is classified by the inspector's ParameterType.
    bare = dict(layer("c", "", "fp16", "fp16", "Convolution"), type="")
    assert pc.is_compute_layer(bare)
    assert not pc.is_compute_layer({"name": "m", "type": "Myelin", "precision": "fp16"})


def test_good_fp16_engine_passes() -> None:
    d = pc.check_layers("fp16", mobilenet("fp16"))
    assert d.passed is True and d.method == "layers" and d.value == 1.0
    assert d.counts == {"fp16": 28}
    assert d.detail.startswith("fp16 in 28 of 28 compute layers (100 %")


def test_fp32_fallback_engine_of_issue_3160_fails() -> None:
    d = pc.check_layers("fp16", mobilenet("fp32"))
    assert d.passed is False and d.value == 0.0 and d.counts == {"fp32": 28}
    assert "fp16 in 0 of 28 compute layers (0 %, at least 50 % required; 28 fp32)" == d.detail


def test_layers_that_legitimately_stay_fp32_are_ignored() -> None:
    # Reformats, pooling and softmax in fp32 do not count against an fp16 engine.
    layers = mobilenet("fp16", other="fp32")
    for rec in layers:
        if not pc.is_compute_layer(rec):
            rec["precision"] = "fp32"
    assert pc.check_layers("fp16", layers).value == 1.0


def test_int8_engine_keeping_first_and_depthwise_convolutions_wider_passes_at_the_threshold() -> None:
    # First conv (3 input channels) in fp16, all 13 depthwise convolutions in fp16: 14 of 28 in int8.
    layers = mobilenet("int8", first="fp16", depthwise="fp16")
    d = pc.check_layers("int8", layers)
    assert d.passed is True and d.value == pytest.approx(0.5)
    # One more compute layer in fp16 and it no longer holds.
    fc = next(rec for rec in layers if rec["name"] == "fc")
    fc.update(layer("fc", "CaskFullyConnected", "fp16", "fp16", "FullyConnected"))
    assert pc.check_layers("int8", layers).passed is False


def test_mixed_layer_counts_in_the_precision_it_reads() -> None:
    boundary = layer("conv_pw_13", "CaskGemmConvolution", "int8", "fp16", "Convolution")
    assert boundary["precision"] == "mixed"
    assert pc.runs_in(boundary, "int8") and not pc.runs_in(boundary, "fp16")
    no_raw = dict(boundary, raw=None)
    assert not pc.runs_in(no_raw, "int8")  # without the formats a mixed layer is not given the benefit
    as_text = dict(boundary, raw='{"Inputs": [{"Format/Datatype": "Int8"}]}')
    assert pc.runs_in(as_text, "int8")


def test_mixed_layer_reads_input_precisions_from_the_record_first() -> None:
    boundary = layer("conv_pw_13", "CaskGemmConvolution", "int8", "fp16", "Convolution")
    listed = dict(boundary, raw=None, input_precisions=["int8"], output_precisions=["fp16"])
    assert pc.runs_in(listed, "int8")
    assert not pc.runs_in(dict(listed, input_precisions=["fp16"]), "int8")


@pytest.mark.parametrize("layers, why", [
    (None, "the engine inspector gave no layer information"),
    ([], "the engine inspector gave no layer information"),
    ([dict(rec, precision=None) for rec in mobilenet("fp16")], "no compute layer with a known precision among 32"),
    ([{"name": "{ForeignNode[conv1...fc]}", "type": "Myelin", "precision": "fp16"}], "no compute layer"),
])
def test_release_that_cannot_tell_leaves_it_to_the_size_rule(layers: Any, why: str) -> None:
    d = pc.check_layers("fp16", layers)
    assert d.passed is None and d.method == "undetermined" and why in d.detail
    assert pc.needs_fp32_reference("fp16", layers)
    assert not pc.needs_fp32_reference("fp16", mobilenet("fp16"))


@pytest.mark.parametrize("precision, fp32_mb, mb, passed", [
    ("fp16", 17.0, 17.2, False),  # fallback: as large as the fp32 engine
    ("fp16", 17.0, 9.0, True),  # ratio 1.89
    ("fp16", 15.0, 10.0, True),  # exactly 1.5
    ("fp16", 14.9, 10.0, False),
    ("int8", 17.0, 9.0, False),  # an fp16-sized "int8" engine
    ("int8", 20.0, 10.0, True),  # exactly 2.0
    ("int8", 17.0, 5.2, True),
])
def test_size_rule(precision: str, fp32_mb: float, mb: float, passed: bool) -> None:
    d = pc.check_size(precision, int(mb * 1e6), int(fp32_mb * 1e6))
    assert d.passed is passed and d.method == "engine size"
    assert d.threshold == {"fp16": 1.5, "int8": 2.0}[precision]
    assert d.value == pytest.approx(fp32_mb / mb)


def test_decide_prefers_layers_and_falls_back_to_size() -> None:
    assert pc.decide("fp32", None, 1).method == "not needed"
    # Layers say fallback; a size that looks fine does not overrule them.
    assert pc.decide("fp16", mobilenet("fp32"), 5_000_000, 17_000_000).passed is False
    unknown = [dict(rec, precision=None) for rec in mobilenet("fp16")]
    d = pc.decide("fp16", unknown, 9_000_000, 17_000_000)
    assert d.method == "engine size" and d.passed is True and "no compute layer" in d.detail
    assert pc.decide("fp16", unknown, 9_000_000).passed is None


class Builds:
    """Recorded outcomes of successive builds: (layers, engine bytes) each."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes, self.n, self.reference_calls = list(outcomes), 0, 0

    def once(self) -> Any:
        self.n += 1
        return self.outcomes[self.n - 1]

    def fp32_bytes(self) -> int:
        self.reference_calls += 1
        return 17_000_000


def test_rebuilds_until_the_precision_holds() -> None:
    b = Builds((mobilenet("fp32"), 17_000_000), (mobilenet("fp32"), 17_000_000), (mobilenet("fp16"), 9_000_000))
    d, attempts = pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "tensorrt mobilenet fp16")
    assert d.passed and attempts == 3 and b.n == 3 and b.reference_calls == 0


def test_fails_in_one_line_when_it_never_holds() -> None:
    b = Builds(*[(mobilenet("fp32"), 17_000_000)] * 3)
    with pytest.raises(RunError) as err:
        pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "tensorrt mobilenet fp16 batch 8")
    message = str(err.value)
    assert b.n == 3 and "\n" not in message
    assert message.startswith("tensorrt mobilenet fp16 batch 8: asked for fp16, but 3 build(s) of TensorRT fell "
                              "back to a wider precision, the last with fp16 in 0 of 28 compute layers")
    assert "NVIDIA/TensorRT issue 3160" in message and "params.precision_retries (now 2)" in message
    assert "nothing was cached" in message


def test_zero_retries_builds_once() -> None:
    b = Builds((mobilenet("fp32"), 17_000_000), (mobilenet("fp16"), 9_000_000))
    with pytest.raises(RunError, match="1 build"):
        pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 0, "x")
    assert b.n == 1


def test_size_rule_needs_the_fp32_engine_once_across_rebuilds() -> None:
    unknown = [dict(rec, precision=None) for rec in mobilenet("fp16")]
    b = Builds((unknown, 17_100_000), (unknown, 16_900_000), (unknown, 9_100_000))
    d, attempts = pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "x")
    assert d.passed and d.method == "engine size" and attempts == 3 and b.reference_calls == 1


def test_without_a_size_reference_only_the_layers_decide() -> None:
    """DLA engines: no fp32 reference is built; layers that cannot tell leave the check undetermined."""
    unknown = [dict(rec, precision=None) for rec in mobilenet("fp16")]
    d, attempts = pc.build_until_precision_holds("fp16", Builds((unknown, 17_000_000)).once, None, 2, "x")
    assert d.passed is None and d.method == "undetermined" and attempts == 1
    b = Builds((mobilenet("fp32"), 17_000_000), (mobilenet("fp16"), 9_000_000))
    d, attempts = pc.build_until_precision_holds("fp16", b.once, None, 2, "x")
    assert d.passed and attempts == 2


def test_fp32_needs_no_check_and_no_reference() -> None:
    b = Builds((None, 17_000_000))
    d, attempts = pc.build_until_precision_holds("fp32", b.once, b.fp32_bytes, 2, "x")
    assert d.method == "not needed" and attempts == 1 and b.reference_calls == 0


def test_sidecar_records_without_raw_json_are_still_classified() -> None:
    from targets.tensorrt.target import sidecar_layers

    kept = sidecar_layers(mobilenet("int8", first="fp16"))
    assert kept is not None and all("raw" not in rec for rec in kept)
    assert pc.precision_counts(kept) == pc.precision_counts(mobilenet("int8", first="fp16"))
    bare = {"name": "c", "type": "", "parameter_type": "Convolution", "precision": "fp16"}
    assert pc.is_compute_layer(bare)


@pytest.mark.parametrize("conv, first, depthwise, requested, passed", [
    ("fp16", None, None, "fp16", True),
    ("fp32", None, None, "fp16", False),
    ("int8", "fp16", "fp16", "int8", True),
    ("fp16", None, None, "int8", False),
])
def test_decisions_on_inspector_json_as_the_native_module_reads_it(conv: str, first: Optional[str],
                                                                    depthwise: Optional[str], requested: str,
                                                                    passed: bool) -> None:
    """The inspector's JSON text -> targets.native.tensorrt.normalize_layers -> the precision check."""
    import json

    from targets.native.tensorrt import normalize_layers

    text = json.dumps({"Layers": [rec["raw"] for rec in mobilenet(conv, first=first, depthwise=depthwise)],
                       "Bindings": ["input", "logits"]})
    layers = normalize_layers(text)
    assert layers is not None and len(layers) == 32
    d = pc.check_layers(requested, layers)
    assert d.method == "layers" and d.passed is passed
    assert sum(d.counts.values()) == 28


# --- the size rule beside the layers (params.size_check fp32-engine / onnx) ---------------------------


def test_size_rule_beside_the_layers_catches_wide_weights_the_layers_miss() -> None:
    # Every compute layer reports fp16, but the engine is as large as the fp32 one: its weights stayed wide.
    d = pc.decide("fp16", mobilenet("fp16"), 16_800_000, 17_000_000, size_check="fp32-engine")
    assert d.passed is False and d.method == "layers and engine size" and d.reference == "fp32 engine"
    assert d.detail.startswith("fp32 engine 17.0 MB / fp16 engine 16.8 MB = 1.01 (at least 1.5 required); fp16 in "
                               "28 of 28 compute layers")
    # The same engine under the default rule: the layers decide alone and pass it.
    assert pc.decide("fp16", mobilenet("fp16"), 16_800_000, 17_000_000).passed is True


@pytest.mark.parametrize("layers, engine_mb, reference_mb, passed", [
    (mobilenet("fp16"), 9.0, 17.0, True),  # both hold
    (mobilenet("fp32"), 9.0, 17.0, False),  # the layers fail: the size does not overrule them
    (mobilenet("fp16"), 16.0, 17.0, False),  # the size fails
    ([dict(rec, precision=None) for rec in mobilenet("fp16")], 9.0, 17.0, True),  # layers cannot tell: size decides
    (mobilenet("fp16"), 9.0, None, True),  # no usable reference: the layers decide
    ([dict(rec, precision=None) for rec in mobilenet("fp16")], 9.0, None, None),  # neither can tell
])
def test_both_rules_fail_when_either_fails(layers: Any, engine_mb: float, reference_mb: Optional[float],
                                           passed: Optional[bool]) -> None:
    ref = int(reference_mb * 1e6) if reference_mb is not None else None
    d = pc.decide("fp16", layers, int(engine_mb * 1e6), ref, size_check="onnx")
    assert d.passed is passed and d.reference == "ONNX model"


def test_size_check_asks_the_reference_once_even_when_the_layers_pass() -> None:
    b = Builds((mobilenet("fp16"), 16_900_000), (mobilenet("fp16"), 9_000_000))
    d, attempts = pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "x", size_check="fp32-engine")
    assert d.passed and attempts == 2 and b.reference_calls == 1 and d.method == "layers and engine size"
    b = Builds((mobilenet("fp16"), 16_900_000))
    d, attempts = pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "x")  # the default rule
    assert d.passed and attempts == 1 and b.reference_calls == 0


def test_size_check_failing_every_build_is_one_line_naming_the_size() -> None:
    b = Builds(*[(mobilenet("fp16"), 16_900_000)] * 3)
    with pytest.raises(RunError) as err:
        pc.build_until_precision_holds("fp16", b.once, b.fp32_bytes, 2, "trtexec mobilenet fp16 batch 1",
                                       size_check="fp32-engine")
    message = str(err.value)
    assert "\n" not in message and b.n == 3
    assert "3 build(s) of TensorRT fell back to a wider precision, the last with fp32 engine 17.0 MB / fp16 engine " \
           "16.9 MB = 1.01 (at least 1.5 required)" in message


def test_size_check_without_a_reference_leaves_the_layers_alone() -> None:
    """A DLA engine (no reference): size_check cannot apply, the layers decide as before."""
    b = Builds((mobilenet("fp16"), 16_900_000))
    d, _ = pc.build_until_precision_holds("fp16", b.once, None, 2, "x", size_check="fp32-engine")
    assert d.passed and d.method == "layers"


def test_a_cached_engine_is_rechecked_only_under_a_stricter_rule() -> None:
    calls: List[int] = []

    def reference() -> int:
        calls.append(1)
        return 17_000_000

    layers = mobilenet("fp16")
    by_layers = pc.decide("fp16", layers, 16_900_000).to_dict()
    meta = {"precision_check": by_layers, "layers": layers, "engine_bytes": 16_900_000}
    assert pc.recheck_cached("fp16", meta, "fallback", reference) is None and not calls
    again = pc.recheck_cached("fp16", meta, "fp32-engine", reference)
    assert again is not None and again.passed is False and len(calls) == 1
    both = pc.decide("fp16", layers, 9_000_000, 17_000_000, size_check="fp32-engine").to_dict()
    assert pc.covers(both, "fp32-engine") and pc.covers(both, "fallback") and not pc.covers(both, "onnx")
    assert pc.recheck_cached("fp16", dict(meta, precision_check=both), "fp32-engine", reference) is None
    assert pc.recheck_cached("fp32", meta, "fp32-engine", reference) is None  # fp32 needs no check


def test_onnx_reference_is_the_file_size_of_a_float32_model_only(tmp_path: Any) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.conftest import write_tiny_classifier

    fp32 = write_tiny_classifier(tmp_path / "tiny.onnx")
    assert pc.onnx_fp32_bytes(fp32) == fp32.stat().st_size
    model = onnx.load(str(fp32))
    for init in model.graph.initializer:  # the same model with float16 weights: no fp32 reference
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    half = tmp_path / "half.onnx"
    onnx.save(model, str(half))
    assert pc.onnx_fp32_bytes(half) is None
    empty = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(empty, str(tmp_path / "noweights.onnx"))
    assert pc.onnx_fp32_bytes(tmp_path / "noweights.onnx") is None
    d = pc.check_size("fp16", 9_000, None, "ONNX model")
    assert d.passed is None and "ONNX model gives no fp32 size" in d.detail


def test_size_reference_is_the_onnx_file_or_the_fp32_engine_built_when_first_asked_for(tmp_path: Any) -> None:
    from targets.tensorrt.engine_cache import EngineKey
    from tests.conftest import write_tiny_classifier

    model = write_tiny_classifier(tmp_path / "tiny.onnx")
    key = EngineKey(workload="mobilenet", model_sha256="0" * 64, precision="fp16", batch=4, tensorrt_version="10.3.0",
                    tensorrt_header_version="10.3.0", gpu_name="H200", compute_capability=(9, 0))
    made: List[str] = []

    class Cache:
        def ensure(self, k: Any, builder: Any) -> Any:
            made.append("{}:{}".format(k.precision, builder))
            return type("Engine", (), {"engine_bytes": 1234})()

    def builder() -> str:
        made.append("builder")
        return "fp32 builder"

    assert pc.size_reference("onnx", model, Cache(), key, builder)() == model.stat().st_size
    reference = pc.size_reference("fp32-engine", model, Cache(), key, builder)
    assert made == []  # nothing built until the rule asks
    assert reference() == 1234 and made == ["builder", "fp32:fp32 builder"]
