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
