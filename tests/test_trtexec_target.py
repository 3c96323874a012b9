"""The trtexec target end to end with a stand-in trtexec (tests/trtexec_standin.py), without TensorRT or a GPU.

The stand-in prints each release's output, takes only that release's flags and writes the engine,
layer information and profile it is asked for, so these tests check what the target asks of
trtexec and what it makes of the answers: engines in the shared cache, precision checks from the
layer information, scores from the summary, and one-line errors for a failed build, a killed
trtexec, a missing binary and a log that cannot be read.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from core.errors import ConfigError, ModelError, RunError, TargetUnavailable, UnsupportedTask
from targets import get_target, target_names
from targets.base import LoadRequest
from targets.tensorrt.engine_cache import BuildOutcome, EngineCache, EngineKey
from targets.trtexec import tool
from targets.trtexec.logparse import LogFormatError
from targets.trtexec.target import TrtexecOptions, TrtexecSession, TrtexecTarget, shapes_flag
from workloads import get_workload

Make = Callable[..., Path]  # the standin_trtexec fixture: release -> binary
SOURCE = "t.json: task 1"


def calls(trtexec_env: Path, kind: str = "") -> List[List[str]]:
    """trtexec's argument lists so far, without the probes; kind 'build' or 'run' to keep one kind."""
    path = trtexec_env / "calls.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    out = [a for a in out if not any(x.endswith("no-such.engine") for x in a)]
    if kind == "build":
        out = [a for a in out if any(x.startswith("--onnx=") for x in a)]
    elif kind == "run":
        out = [a for a in out if any(x.startswith("--loadEngine=") for x in a)]
    return out


def load(binary: Path, tiny_model: Path, precision: str = "fp16", batch: int = 8, hardware: str = "gpu",
         concurrency: int = 1, workload: str = "mobilenet", **options: Any) -> Tuple[TrtexecTarget, TrtexecSession]:
    target = TrtexecTarget()
    opts: Dict[str, Any] = dict(trtexec=str(binary), **options)
    target.validate_options(opts, SOURCE)
    session = target.load(LoadRequest(model_path=tiny_model, workload=workload, hardware=hardware, precision=precision,
                                      batch=batch, concurrency=concurrency, options=opts,
                                      host_postprocess=get_workload(workload).has_postprocess))
    assert isinstance(session, TrtexecSession)
    return target, session


def printed(log_path: str, pattern: str) -> str:
    m = re.search(pattern, Path(log_path).read_text())
    assert m, pattern
    return m.group(1)


# --- registration, options, finding the binary ----------------------------------------------------------


def test_registered_with_its_options() -> None:
    assert "trtexec" in target_names() and isinstance(get_target("trtexec"), TrtexecTarget)
    assert set(TrtexecTarget().option_names) == set(TrtexecOptions.names())
    assert TrtexecOptions().cuda_graph is True and TrtexecOptions().transfers is False
    assert TrtexecOptions().spin_wait is True


@pytest.mark.parametrize("options, words", [
    ({"cuda_graph": "yes"}, "params.cuda_graph must be true or false, got 'yes'"),
    ({"avg_runs": 0}, "params.avg_runs must be an integer from 1 to"),
    ({"workspace_mb": 1.5}, "params.workspace_mb must be an integer"),
    ({"dla_core": 16}, "params.dla_core must be an integer from 0 to 15"),
    ({"trtexec": 3}, "params.trtexec must be the path of the trtexec binary"),
])
def test_bad_option_is_one_clear_line(options: Dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrtexecTarget().validate_options(options, SOURCE)
    assert str(err.value).startswith(SOURCE + ": ") and words in str(err.value) and "\n" not in str(err.value)


def test_missing_binary_names_where_it_looked_and_how_to_point_at_it(trtexec_env: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PATH", str(trtexec_env / "empty"))
    monkeypatch.setattr(tool, "DEFAULT_PATH", trtexec_env / "usr-src" / "trtexec")
    with pytest.raises(TargetUnavailable) as err:
        TrtexecTarget().validate_options({}, SOURCE)
    message = str(err.value)
    assert message.startswith(SOURCE + ": target trtexec: trtexec not found (looked at params.trtexec: not given; "
                              "PATH; {})".format(trtexec_env / "usr-src" / "trtexec"))
    assert "give its path as the task's params.trtexec, or put its folder on PATH" in message and "\n" not in message
    with pytest.raises(TargetUnavailable, match=r"params.trtexec /no/such/trtexec does not exist; give its path"):
        TrtexecTarget().validate_options({"trtexec": "/no/such/trtexec"}, SOURCE)
    not_exec = trtexec_env / "trtexec.txt"
    not_exec.write_text("")
    with pytest.raises(TargetUnavailable, match="is not an executable file"):
        TrtexecTarget().validate_options({"trtexec": str(not_exec)}, SOURCE)


def test_binary_found_on_path_and_at_the_default_place(trtexec_env: Path, standin_trtexec: Make,
                                                       monkeypatch: Any) -> None:
    binary = standin_trtexec("8.6.1")
    monkeypatch.setenv("PATH", str(binary.parent))
    assert tool.locate(None) == binary
    monkeypatch.setenv("PATH", str(trtexec_env / "empty"))
    monkeypatch.setattr(tool, "DEFAULT_PATH", binary)
    assert tool.locate(None) == binary


def test_probe_reads_release_and_gpu_and_refuses_a_machine_without_one(trtexec_env: Path, standin_trtexec: Make,
                                                                       monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_GPU", "Xavier")
    monkeypatch.setenv("TRTEXEC_STANDIN_CC", "7.2")
    p = tool.probe(standin_trtexec("8.5.2"))
    assert (p.version, p.device, p.compute_capability) == ("8.5.2", "Xavier", (7, 2))
    monkeypatch.setenv("TRTEXEC_STANDIN_FAIL", "nogpu")
    for release, last in (("8.2.1", "Cuda failure: no CUDA-capable device is detected"),  # cudaCheck aborts
                          ("10.3.0", "Cannot find any available devices (GPUs)!")):
        with pytest.raises(TargetUnavailable) as err:
            tool.probe(standin_trtexec(release))
        assert "(TensorRT {}) names no GPU".format(release) in str(err.value) and last in str(err.value)
        assert "\n" not in str(err.value)


def test_capabilities_follow_the_probed_gpu(trtexec_env: Path, standin_trtexec: Make, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_GPU", "NVIDIA Tegra X1")
    monkeypatch.setenv("TRTEXEC_STANDIN_CC", "5.3")
    target = TrtexecTarget()
    target.validate_options({"trtexec": str(standin_trtexec("8.2.1"))}, SOURCE)
    caps = target.capabilities()
    assert caps.precisions == {"gpu": ("fp32", "fp16")} and caps.modes == ("throughput", "latency")
    assert target.versions()["tensorrt"] == "8.2.1"
    tool._PROBES.clear()
    monkeypatch.setenv("TRTEXEC_STANDIN_CC", "8.7")
    target.validate_options({"trtexec": str(standin_trtexec("10.3.0"))}, SOURCE)
    assert target.capabilities().precisions == {"gpu": ("fp32", "fp16", "int8"), "dla": ("fp16", "int8")}


# --- build: the shared cache, its flags, the precision check ----------------------------------------------


@pytest.mark.parametrize("release", ["8.2.1", "8.4.3", "8.5.2", "8.6.1", "10.3.0", "10.13.0", "11.0.0"])
def test_throughput_end_to_end_in_every_release(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                                release: str) -> None:
    _, session = load(standin_trtexec(release), tiny_model, precision="fp16", batch=8)
    summary = session.summary_run(1024, 1, 0.5)
    (build,), (run,) = calls(trtexec_env, "build"), calls(trtexec_env, "run")
    v = tuple(int(x) for x in release.split("."))
    # Build flags of the release.
    assert "--profilingVerbosity=detailed" in build and "--shapes=input:8x3x224x224" in build
    assert any(a.startswith("--exportLayerInfo=") for a in build) and any(a.startswith("--timingCacheFile=")
                                                                        for a in build)
    assert ("--workspace=1024" in build) == (release == "8.2.1")
    assert ("--memPoolSize=workspace:1024" in build) == (release != "8.2.1")
    assert ("--buildOnly" in build) == (v < (8, 6)) and ("--skipInference" in build) == (v >= (8, 6))
    assert ("--fp16" in build) == (release in ("8.2.1", "8.4.3", "8.5.2", "8.6.1", "10.3.0"))
    assert ("--stronglyTyped" in build) == (release == "10.13.0")
    # Run flags of the release, and the figures taken from its log.
    assert "--iterations=1024" in run and "--duration=0" in run and "--warmUp=500" in run
    assert ("--useCudaGraph" in run) == (release != "11.0.0") and ("--noDataTransfers" in run) == (release != "11.0.0")
    qps = float(printed(summary.info["trtexec_log"], r"\] Throughput: (\S+) qps"))
    assert summary.throughput_fps == pytest.approx(qps * 8) and summary.iterations == 1024
    assert summary.wall_s == float(printed(summary.info["trtexec_log"], r"Total Host Walltime: (\S+) s"))
    assert summary.info["scores_from"]["throughput_fps"].startswith("trtexec 'Throughput: {:g} qps' x batch 8".format(
        qps))
    assert summary.info["trtexec_summary"]["tensorrt"] == release and summary.info["gpu_compute_ms"]["median_ms"] > 0
    assert Path(summary.info["trtexec_log"]).parent == trtexec_env / "engines" / "logs"


def test_latency_is_trtexecs_95th_percentile_at_batch_1(trtexec_env: Path, standin_trtexec: Make,
                                                        tiny_model: Path) -> None:
    for release in ("8.2.1", "8.6.1"):
        _, session = load(standin_trtexec(release), tiny_model, precision="fp32", batch=1)
        summary = session.summary_run(1024, 1, 0.2)
        p95 = float(printed(summary.info["trtexec_log"], r"\] Latency: .*percentile\(95%\) = (\S+) ms"))
        assert summary.latency_ms["p95_ms"] == p95 and summary.latency_ms["samples"] == 1024
        assert (summary.latency_ms["p90_ms"] is None) == (release == "8.2.1")  # 8.2 prints one percentile
        assert summary.latency_ms["std_ms"] is None  # trtexec prints none
        assert "percentile(95%) = {:g} ms".format(p95) in summary.info["scores_from"]["latency_ms"]
        assert run_flags(trtexec_env)[-1].count("--percentile=95") == (1 if release == "8.2.1" else 0)


def run_flags(trtexec_env: Path) -> List[str]:
    return [" ".join(a) for a in calls(trtexec_env, "run")]


def test_concurrency_is_trtexecs_streams_sharing_the_iterations(trtexec_env: Path, standin_trtexec: Make,
                                                                tiny_model: Path) -> None:
    _, session = load(standin_trtexec("8.5.2"), tiny_model, precision="fp32", batch=2, concurrency=2)
    summary = session.summary_run(1000, 2, 0.1)
    (run,) = calls(trtexec_env, "run")
    assert "--streams=2" in run and "--iterations=500" in run and summary.iterations == 1000


def test_layer_information_goes_to_the_sidecar_and_result(trtexec_env: Path, standin_trtexec: Make,
                                                          tiny_model: Path) -> None:
    _, session = load(standin_trtexec("8.6.1"), tiny_model, precision="fp16", batch=4)
    engine = session.info["engine"]
    meta = json.loads(Path(engine["path"] + ".json").read_text())
    assert meta["builder"]["tool"] == "trtexec" and meta["builder"]["log"] == engine["build_log"]
    assert meta["layer_count"] == 6 and len(meta["layers"]) == 6 and engine["layer_count"] == 6
    assert {layer["name"]: layer["precision"] for layer in meta["layers"]}["conv1"] == "fp16"
    assert meta["precision_check"]["method"] == "layers" and meta["precision_check"]["passed"] is True
    assert engine["layer_precisions"] == {"fp16": 4}  # convolutions and the matrix multiply: compute layers
    assert meta["trtexec_build"]["build_s"] == 1.234 and meta["build_s"] == 1.234
    assert (trtexec_env / "engines" / "timing-trt8.6.1-sm87.cache").is_file()


def test_a_build_that_falls_back_to_fp32_is_rebuilt(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                                    monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_FALLBACK", "1")
    _, session = load(standin_trtexec("10.3.0"), tiny_model, precision="fp16", batch=4)
    meta = json.loads(Path(session.info["engine"]["path"] + ".json").read_text())
    assert meta["build_attempts"] == 2 and meta["precision_check"]["passed"] is True
    assert len(calls(trtexec_env, "build")) == 2


def test_a_build_that_never_holds_its_precision_fails_and_caches_nothing(trtexec_env: Path, standin_trtexec: Make,
                                                                         tiny_model: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_FALLBACK", "9")
    with pytest.raises(RunError) as err:
        load(standin_trtexec("10.3.0"), tiny_model, precision="fp16", batch=4, precision_retries=1)
    assert "asked for fp16, but 2 build(s) of TensorRT fell back" in str(err.value)
    assert not list((trtexec_env / "engines").glob("*.engine"))


def test_the_engine_is_shared_with_the_tensorrt_target(trtexec_env: Path, standin_trtexec: Make,
                                                       tiny_model: Path) -> None:
    """Same key both ways: the tensorrt target finds trtexec's engine, and trtexec runs one built natively."""
    from core.fileio import sha256_file

    _, session = load(standin_trtexec("10.3.0"), tiny_model, precision="fp32", batch=8)
    cache = EngineCache()
    # The key the tensorrt target builds from its native library's answers on the same board.
    native_key = EngineKey(workload="mobilenet", model_sha256=sha256_file(tiny_model), precision="fp32", batch=8,
                           tensorrt_version="10.3.0", tensorrt_header_version="10.3.0", gpu_name="NVIDIA Orin",
                           compute_capability=(8, 7), workspace_mb=1024)
    assert cache.check(native_key)[0] is not None and session.key == native_key
    # An engine the native library built (written here in the stand-in's format) is run, not rebuilt.
    other = replace(native_key, batch=2)

    def native_build(key: EngineKey, path: Path) -> BuildOutcome:
        header = {"standin_engine": 1, "release": "10.3.0", "precision": "fp32", "batch": 2, "gpu": "NVIDIA Orin"}
        path.write_bytes(json.dumps(header).encode() + b"\n" + b"\0" * 100)
        return BuildOutcome(build_s=1.0, layers=None, record={"builder": {"workspace_mb": 1024}})

    cache.ensure(other, native_build)
    before = len(calls(trtexec_env, "build"))
    _, session2 = load(standin_trtexec("10.3.0"), tiny_model, precision="fp32", batch=2)
    assert len(calls(trtexec_env, "build")) == before
    assert session2.info["engine"]["built_by"] == "tensorrt (native library)"
    assert session2.summary_run(1024, 1, 0.1).throughput_fps > 0


def test_fp16_on_strongly_typed_releases_builds_the_float16_model(trtexec_env: Path, standin_trtexec: Make,
                                                                  tiny_model: Path) -> None:
    _, session = load(standin_trtexec("11.0.0"), tiny_model, precision="fp16", batch=4)
    (build,) = calls(trtexec_env, "build")
    onnx = next(a for a in build if a.startswith("--onnx="))
    assert onnx.endswith(".fp16.onnx") and str(trtexec_env / "engines" / "onnx") in onnx
    assert "--fp16" not in build and "--stronglyTyped" not in build  # 11: strongly typed always, no such flags
    assert session.key.fp16_model_sha256 == session.info["fp16_model"]["fp16_sha256"]


def test_dla_engines_are_built_and_run_on_the_dla_core(trtexec_env: Path, standin_trtexec: Make,
                                                       tiny_model: Path) -> None:
    _, session = load(standin_trtexec("8.5.2"), tiny_model, precision="fp16", batch=4, hardware="dla",
                      dla_core=1)
    assert session.key.dla_core == 1 and session.info["engine"]["path"].endswith("-dla1.engine")
    session.summary_run(1024, 1, 0.1)
    (build,), (run,) = calls(trtexec_env, "build"), calls(trtexec_env, "run")
    assert "--useDLACore=1" in build and "--allowGPUFallback" in build
    assert "--useDLACore=1" in run and "--allowGPUFallback" not in run


def test_shapes_only_for_a_symbolic_batch(tmp_path: Path) -> None:
    from core.specs import TensorSpec

    assert shapes_flag([TensorSpec("in:0", ("n", 3, 8, 8), "float32")], 4, tmp_path) == "--shapes='in:0':4x3x8x8"
    assert shapes_flag([TensorSpec("x", (4, 3, 8, 8), "float32")], 4, tmp_path) is None
    with pytest.raises(ModelError, match="fixed batch of 4"):
        shapes_flag([TensorSpec("x", (4, 3, 8, 8), "float32")], 8, tmp_path)
    with pytest.raises(ModelError, match="symbolic dimension 2 besides the batch"):
        shapes_flag([TensorSpec("x", ("n", 3, "h", 8), "float32")], 8, tmp_path)


def test_detection_workloads_are_refused(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path) -> None:
    with pytest.raises(UnsupportedTask, match="ssdmobilenet's MLMark score includes box decoding and NMS"):
        load(standin_trtexec("10.3.0"), tiny_model, workload="ssdmobilenet")


# --- failures: one line each, never a score -------------------------------------------------------------


def test_a_failed_build_gives_its_last_errors_and_the_log(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                                          monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_FAIL", "build")
    with pytest.raises(RunError) as err:
        load(standin_trtexec("8.6.1"), tiny_model)
    message = str(err.value)
    assert "\n" not in message and message.startswith("target trtexec: building the engine for trtexec mobilenet "
                                                      "fp16 batch 8 failed (trtexec exit status 1 after ")
    assert ("Building engine failed | Failed to create engine from model or file. | Engine set up failed; log: "
            in message)
    log_file = Path(message.rsplit("; log: ", 1)[1])
    assert log_file.is_file() and "Error Code 4" in log_file.read_text()
    assert not list((trtexec_env / "engines").glob("*.engine")) and not list((trtexec_env / "engines").glob(".*.tmp"))


@pytest.mark.parametrize("when", ["kill-build", "kill-run"])
def test_a_killed_trtexec_is_one_line_with_its_log(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                                   monkeypatch: Any, when: str) -> None:
    binary = standin_trtexec("10.3.0")
    if when == "kill-run":
        _, session = load(binary, tiny_model)
    monkeypatch.setenv("TRTEXEC_STANDIN_FAIL", when)
    with pytest.raises(RunError) as err:
        if when == "kill-build":
            load(binary, tiny_model)
        else:
            session.summary_run(1024, 1, 0.1)
    message = str(err.value)
    doing = "building the engine" if when == "kill-build" else "running engine mobilenet-"
    assert ("trtexec was killed by SIGKILL (most likely the out-of-memory killer)" in message and doing in message
            and "; log: " in message and "\n" not in message)
    assert Path(message.rsplit("; log: ", 1)[1]).is_file()
    if when == "kill-build":
        assert not list((trtexec_env / "engines").glob("*.engine"))


def test_a_failed_run_is_an_error_not_a_score(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                              monkeypatch: Any) -> None:
    _, session = load(standin_trtexec("8.4.3"), tiny_model)
    monkeypatch.setenv("TRTEXEC_STANDIN_FAIL", "run")
    with pytest.raises(RunError, match=r"running engine .* failed \(trtexec exit status 1 .*illegal memory access.*"
                                       r"Error occurred during inference; log: "):
        session.summary_run(1024, 1, 0.1)


def test_an_unreadable_log_names_the_release_and_the_line(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path,
                                                          monkeypatch: Any) -> None:
    _, session = load(standin_trtexec("10.3.0"), tiny_model)
    monkeypatch.setenv("TRTEXEC_STANDIN_FAIL", "garble")
    with pytest.raises(LogFormatError) as err:
        session.summary_run(1024, 1, 0.1)
    message = str(err.value)
    assert "\n" not in message and "(TensorRT 10.3.0, summary format 10): line " in message
    assert "not understood" in message and "Latency: min = " in message and "average = " in message


def test_profile_is_written_beside_the_log_on_request(trtexec_env: Path, standin_trtexec: Make,
                                                      tiny_model: Path) -> None:
    _, session = load(standin_trtexec("8.2.1"), tiny_model, profile=True)
    summary = session.summary_run(1024, 1, 0.1)
    profile = summary.info["trtexec_profile"]
    assert Path(profile["path"]).is_file() and profile["layers"] == 5 and profile["slowest"][0]["name"] == "conv1"
    (run,) = calls(trtexec_env, "run")
    assert "--separateProfileRun" in run and any(a.startswith("--exportProfile=") for a in run)


def test_rebuild_builds_once_per_run(trtexec_env: Path, standin_trtexec: Make, tiny_model: Path) -> None:
    from targets.trtexec import target as target_module

    binary = standin_trtexec("10.3.0")
    load(binary, tiny_model, precision="fp32", batch=2)
    target_module._REBUILT.clear()
    load(binary, tiny_model, precision="fp32", batch=2, rebuild=True)
    load(binary, tiny_model, precision="fp32", batch=2, rebuild=True)
    assert len(calls(trtexec_env, "build")) == 2


# --- the size rule beside the layers (params.size_check) ---------------------------------------------------


def test_size_check_rebuilds_an_engine_whose_weights_stayed_wide(trtexec_env: Path, standin_trtexec: Make,
                                                                 tiny_model: Path, monkeypatch: Any) -> None:
    """Layers all fp16 but an fp32-sized engine: the default rule passes it, size_check fp32-engine rebuilds it."""
    monkeypatch.setenv("TRTEXEC_STANDIN_WIDE", "1")
    _, session = load(standin_trtexec("10.3.0"), tiny_model, precision="fp16", batch=4, size_check="fp32-engine")
    meta = json.loads(Path(session.info["engine"]["path"] + ".json").read_text())
    check = meta["precision_check"]
    assert meta["build_attempts"] == 2 and check["passed"] is True and check["method"] == "layers and engine size"
    assert check["reference"] == "fp32 engine" and check["value"] == pytest.approx(2.0)
    builds = calls(trtexec_env, "build")
    assert [("--fp16" in b) for b in builds] == [True, False, True]  # fp16, the fp32 reference, fp16 again
    assert list((trtexec_env / "engines").glob("*-fp32-b4-*.engine"))


def test_size_check_that_never_holds_fails_in_one_line_and_gives_no_score(trtexec_env: Path, standin_trtexec: Make,
                                                                           tiny_model: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_WIDE", "9")
    with pytest.raises(RunError) as err:
        load(standin_trtexec("10.3.0"), tiny_model, precision="fp16", batch=4, size_check="onnx", precision_retries=1)
    message = str(err.value)
    assert "asked for fp16, but 2 build(s) of TensorRT fell back to a wider precision, the last with ONNX model" \
           in message and "(at least 1.5 required); fp16 in 4 of 4 compute layers" in message
    assert not list((trtexec_env / "engines").glob("*fp16*.engine"))
    assert not any("--fp16" not in b for b in calls(trtexec_env, "build"))  # onnx: no fp32 reference built


def test_a_cached_engine_is_rechecked_when_a_task_asks_the_size_rule(trtexec_env: Path, standin_trtexec: Make,
                                                                     tiny_model: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TRTEXEC_STANDIN_WIDE", "1")
    binary = standin_trtexec("10.3.0")
    _, first = load(binary, tiny_model, precision="fp16", batch=4)  # the default rule caches the wide engine
    assert first.info["engine"]["status"].startswith("built")
    _, again = load(binary, tiny_model, precision="fp16", batch=4)
    assert again.info["engine"]["status"] == "cached" and "precision_recheck" not in again.info["engine"]
    _, strict = load(binary, tiny_model, precision="fp16", batch=4, size_check="fp32-engine")
    assert "fails the engine-size rule of params.size_check" in strict.info["engine"]["status"]
    assert strict.info["engine"]["precision_check"]["method"] == "layers and engine size"
    _, cached = load(binary, tiny_model, precision="fp16", batch=4, size_check="fp32-engine")
    assert cached.info["engine"]["status"] == "cached" and "precision_recheck" not in cached.info["engine"]
    assert len([b for b in calls(trtexec_env, "build") if "--fp16" in b]) == 2


def test_a_cached_engine_that_passes_the_recheck_is_kept_and_the_recheck_recorded(
        trtexec_env: Path, standin_trtexec: Make, tiny_model: Path) -> None:
    binary = standin_trtexec("8.6.1")
    load(binary, tiny_model, precision="fp16", batch=1)
    _, strict = load(binary, tiny_model, precision="fp16", batch=1, size_check="onnx")
    engine = strict.info["engine"]
    assert engine["status"] == "cached" and engine["precision_check"]["method"] == "layers"
    recheck = engine["precision_recheck"]
    assert recheck["passed"] is True and recheck["reference"] == "ONNX model" and recheck["threshold"] == 1.5
    assert len(calls(trtexec_env, "build")) == 1
