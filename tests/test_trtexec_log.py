"""trtexec's logs and flags per release, without TensorRT.

Logs come from two sources: short literal excerpts written after each release's
samples/common/sampleReporting.cpp (exact figures to check), and whole runs of the stand-in
tests/trtexec_standin.py in each release's format (every line the target meets). The release
table's flags are checked against what each release's sampleOptions.cpp takes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from core.errors import TargetUnavailable
from targets.trtexec.logparse import LogFormatError, parse_log, read_log
from targets.trtexec.releases import Release, decode_version_number, fast_precisions, parse_version
from tests.conftest import REPO

STANDIN = REPO / "tests" / "trtexec_standin.py"
RELEASES = ["8.2.1", "8.4.3", "8.5.2", "8.6.1", "10.3.0", "10.13.0", "11.0.0", "11.1.0"]
STAMP = "[04/02/2024-10:11:12]"


def lines(*texts: str, severity: str = "I") -> str:
    return "\n".join("{} [{}] {}".format(STAMP, severity, t) for t in texts) + "\n"


def running(number: int) -> str:
    return "&&&& RUNNING TensorRT.trtexec [TensorRT v{}] # trtexec --loadEngine=x.engine\n".format(number)


SUMMARY_85 = [
    "=== Performance summary ===",
    "Throughput: 812.5 qps",
    "Latency: min = 1.15 ms, max = 2.5 ms, mean = 1.25 ms, median = 1.2 ms, percentile(90%) = 1.3 ms, "
    "percentile(95%) = 1.35 ms, percentile(99%) = 1.9 ms",
    "Enqueue Time: min = 0.01 ms, max = 0.05 ms, mean = 0.02 ms, median = 0.02 ms, percentile(90%) = 0.03 ms, "
    "percentile(95%) = 0.03 ms, percentile(99%) = 0.04 ms",
    "H2D Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(90%) = 0 ms, percentile(95%) = 0 ms, "
    "percentile(99%) = 0 ms",
    "GPU Compute Time: min = 1.15 ms, max = 2.5 ms, mean = 1.24 ms, median = 1.19 ms, percentile(90%) = 1.29 ms, "
    "percentile(95%) = 1.34 ms, percentile(99%) = 1.88 ms",
    "D2H Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(90%) = 0 ms, percentile(95%) = 0 ms, "
    "percentile(99%) = 0 ms",
    "Total Host Walltime: 3.00308 s",
    "Total GPU Compute Time: 3.02 s",
]
END = ["Explanations of the performance metrics are printed in the verbose logs.", ""]


def log_85(summary: Optional[List[str]] = None, version: str = "8.5.2", number: int = 8502) -> str:
    head = lines("=== Device Information ===", "Selected Device: Xavier", "Compute Capability: 7.2", "",
                 "TensorRT version: " + version, "Engine loaded in 0.0432 sec.", "Starting inference",
                 "Warmup completed 164 queries over 200 ms", "Timing trace has 2440 queries over 3.00308 s")
    warn = lines("* GPU compute time is unstable, with coefficient of variance = 4.3%.",
                 "  If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the "
                 "stability.", severity="W")
    tail = "&&&& PASSED TensorRT.trtexec [TensorRT v{}] # trtexec --loadEngine=x.engine\n".format(number)
    return running(number) + head + lines(*(summary or SUMMARY_85)) + warn + lines(*END) + tail


# --- versions and releases -----------------------------------------------------------------------


def test_versions_from_text_and_from_trtexecs_number() -> None:
    assert parse_version("8.6.1") == (8, 6, 1) and parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("8.5") == (8, 5, 0)
    assert decode_version_number(8201) == (8, 2, 1) and decode_version_number(8601) == (8, 6, 1)
    assert decode_version_number(100300) == (10, 3, 0) and decode_version_number(101300) == (10, 13, 0)
    assert decode_version_number(110100) == (11, 1, 0)
    with pytest.raises(TargetUnavailable, match="TensorRT 7.1.3 is older than 8.2"):
        Release.of("7.1.3")


@pytest.mark.parametrize("version, fmt", [("8.2.1", "8.2"), ("8.3.0", "8.2"), ("8.4.3", "8.4"), ("8.5.2", "8.5"),
                                          ("8.6.1", "8.6"), ("10.0.1", "10"), ("10.16.0", "10"), ("11.0.0", "11"),
                                          ("11.1.0", "11")])
def test_summary_format_per_release(version: str, fmt: str) -> None:
    assert Release.of(version).format == fmt


def test_flags_per_release() -> None:
    r82, r84, r85, r86, r103, r1012, r110 = (Release.of(v) for v in ("8.2.1", "8.4.3", "8.5.2", "8.6.1", "10.3.0",
                                                                      "10.12.0", "11.0.0"))
    assert r82.workspace_flag(512) == "--workspace=512" and r84.workspace_flag(512) == "--memPoolSize=workspace:512"
    assert r85.streams_flag(2) == "--streams=2" and r86.streams_flag(2) == "--infStreams=2"
    assert r85.skip_inference_flag == "--buildOnly" and r86.skip_inference_flag == "--skipInference"
    assert r82.percentile_flag == "--percentile=95" and r84.percentile_flag == "--percentile=95"
    assert r85.percentile_flag == "--percentile=90,95,99" and r110.percentile_flag == "--percentile=90,95,99"
    # The stable settings: opt-in flags before 11, defaults (switched off by --no... flags) from 11.
    old = r103.timing_flags(1024, 1000, 1, cuda_graph=True, transfers=False, spin_wait=True, avg_runs=10)
    assert old == ["--iterations=1024", "--duration=0", "--warmUp=1000", "--avgRuns=10", "--percentile=90,95,99",
                   "--infStreams=1", "--useSpinWait", "--useCudaGraph", "--noDataTransfers", "--separateProfileRun"]
    new = r110.timing_flags(1024, 1000, 1, cuda_graph=True, transfers=False, spin_wait=True, avg_runs=10)
    assert new == old[:6]
    assert r110.timing_flags(10, 0, 1, False, True, False, 10)[6:] == ["--noSpinWait", "--noCudaGraph",
                                                                      "--includeDataTransfers"]
    assert r82.timing_flags(10, 0, 2, False, True, False, 10)[4:] == ["--percentile=95", "--streams=2",
                                                                     "--separateProfileRun"]


def test_precision_flags_match_the_native_builders_choices() -> None:
    table = Path("/t/CalibrationTable_mobilenet")
    r82, r100, r103, r1012, r110 = (Release.of(v) for v in ("8.2.1", "10.0.1", "10.3.0", "10.12.0", "11.0.0"))
    assert r82.precision_flags("fp32", True, None) == []
    assert r82.precision_flags("fp16", False, None) == ["--fp16"]
    assert r82.precision_flags("int8", True, table) == ["--fp16", "--int8", "--calib=/t/CalibrationTable_mobilenet"]
    assert r82.precision_flags("int8", False, table) == ["--int8", "--calib=/t/CalibrationTable_mobilenet"]
    assert r100.precision_flags("int8", True, table)[-1].startswith("--calib=")  # implicit INT8 up to 10.0
    assert r103.precision_flags("int8", True, None) == ["--fp16", "--int8"]  # the Q/DQ model from 10.1
    with pytest.raises(ValueError, match="Q/DQ"):
        r103.precision_flags("int8", True, table)
    assert r1012.precision_flags("fp16", True, None) == ["--stronglyTyped"]  # the float16 model, strongly typed
    assert r1012.precision_flags("int8", True, None) == ["--stronglyTyped"]
    assert r110.precision_flags("fp16", True, None) == [] and r110.precision_flags("int8", True, None) == []
    assert Release.dla_flags(1, True) == ["--useDLACore=1", "--allowGPUFallback"]


def test_fast_precisions_by_compute_capability() -> None:
    assert fast_precisions((5, 3)) == (True, False)  # Nano
    assert fast_precisions((7, 2)) == (True, True) and fast_precisions((8, 7)) == (True, True)
    assert fast_precisions((6, 1)) == (False, True) and fast_precisions((5, 2)) == (False, False)


# --- literal excerpts --------------------------------------------------------------------------------


def test_85_summary_figures() -> None:
    log = parse_log(log_85())
    assert log.version == "8.5.2" and log.release is not None and log.release.format == "8.5"
    assert log.device == "Xavier" and log.compute_capability == (7, 2) and log.load_s == pytest.approx(0.0432)
    assert log.outcome == "PASSED" and log.command == "trtexec --loadEngine=x.engine"
    assert (log.warmup_queries, log.warmup_ms, log.timed_queries, log.timed_s) == (164, 200.0, 2440, 3.00308)
    assert log.throughput_qps == 812.5
    lat = log.statistics["latency"]
    assert (lat.min_ms, lat.max_ms, lat.mean_ms, lat.median_ms) == (1.15, 2.5, 1.25, 1.2)
    assert lat.percentiles_ms == {90.0: 1.3, 95.0: 1.35, 99.0: 1.9}
    assert log.statistics["gpu_compute"].median_ms == 1.19 and "end_to_end" not in log.statistics
    assert log.total_host_walltime_s == 3.00308 and log.total_gpu_compute_s == 3.02
    assert log.warnings == ["* GPU compute time is unstable, with coefficient of variance = 4.3%. If not already in "
                            "use, locking GPU clock frequency or adding --useSpinWait may improve the stability."]
    d = log.summary_dict()
    assert d["latency_ms"]["percentiles_ms"] == {"90": 1.3, "95": 1.35, "99": 1.9}
    assert d["throughput_qps"] == 812.5 and d["timing"] == {"queries": 2440, "seconds": 3.00308}


def test_82_single_percentile_and_end_to_end_line() -> None:
    summary = [
        "=== Performance summary ===",
        "Throughput: 95.3 qps",
        "Latency: min = 10.2 ms, max = 12.8 ms, mean = 10.5 ms, median = 10.4 ms, percentile(95%) = 11.1 ms",
        "End-to-End Host Latency: min = 10.3 ms, max = 21 ms, mean = 10.7 ms, median = 10.5 ms, percentile(95%) = 11.5 "
        "ms",
        "Enqueue Time: min = 1.1 ms, max = 2 ms, mean = 1.2 ms, median = 1.15 ms, percentile(95%) = 1.5 ms",
        "H2D Latency: min = 0.09 ms, max = 0.1 ms, mean = 0.09 ms, median = 0.09 ms, percentile(95%) = 0.1 ms",
        "GPU Compute Time: min = 10 ms, max = 12.5 ms, mean = 10.3 ms, median = 10.2 ms, percentile(95%) = 10.9 ms",
        "D2H Latency: min = 0.01 ms, max = 0.02 ms, mean = 0.01 ms, median = 0.01 ms, percentile(95%) = 0.02 ms",
        "Total Host Walltime: 3.02 s",
        "Total GPU Compute Time: 2.95 s",
    ]
    log = parse_log(log_85(summary, "8.2.1", 8201))
    assert log.release is not None and log.release.format == "8.2"
    assert log.statistics["latency"].percentiles_ms == {95.0: 11.1}
    assert log.statistics["end_to_end"].percentiles_ms == {95.0: 11.5}
    assert log.summary_dict()["end_to_end_ms"]["median_ms"] == 10.5


def test_cpp_float_forms_are_read_and_non_finite_values_not_kept() -> None:
    summary = list(SUMMARY_85)
    summary[1] = "Throughput: inf qps"
    summary[4] = ("H2D Latency: min = 1e-05 ms, max = 2.5e-05 ms, mean = 1.5e-05 ms, median = 1.4e-05 ms, "
                  "percentile(90%) = 2e-05 ms, percentile(95%) = 2.1e-05 ms, percentile(99%) = -nan ms")
    log = parse_log(log_85(summary))
    assert log.statistics["h2d"].min_ms == 1e-05 and math_isnan(log.statistics["h2d"].percentiles_ms[99.0])
    d = log.summary_dict()
    assert d["throughput_qps"] is None and d["h2d_ms"]["percentiles_ms"]["99"] is None


def math_isnan(x: float) -> bool:
    return x != x


def test_warnings_trtexecs_own_and_tensorrts_kept_apart() -> None:
    text = log_85() + lines("[TRT] Using an engine plan file across different models of devices is not recommended",
                            "* Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be "
                            "under-utilized.",
                            "  If not already in use, --useCudaGraph (utilize CUDA graphs where possible) may increase "
                            "the throughput.", severity="W")
    log = parse_log(text)
    assert log.tensorrt_warnings == ["Using an engine plan file across different models of devices is not recommended"]
    assert log.warnings[-1] == ("* Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be "
                                "under-utilized. If not already in use, --useCudaGraph (utilize CUDA graphs where "
                                "possible) may increase the throughput.")


def test_build_lines_of_10_and_errors() -> None:
    text = running(100300) + lines("=== Device Information ===", "Available Devices: ",
                                   '  Device 0: "NVIDIA Orin" UUID: GPU-1', "Selected Device: NVIDIA Orin",
                                   "Compute Capability: 8.7", "", "TensorRT version: 10.3.0",
                                   "Engine built in 41.5 sec.", "Created engine with size: 9.5 MiB")
    text += lines("[TRT] 1: [runtime.cpp::parsePlan::314] Error Code 1: Serialization", "Engine set up failed",
                  severity="E")
    log = parse_log(text)
    assert log.build_s == 41.5 and log.engine_mib == 9.5 and not log.has_summary and log.outcome is None
    assert log.last_errors(1) == ["Engine set up failed"] and log.errors[0].startswith("[TRT] 1:")
    assert log.build_dict()["compute_capability"] == "8.7"


# --- logs the parser must refuse, each in one line ------------------------------------------------


def _refused(text: str, **kwargs: Any) -> str:
    with pytest.raises(LogFormatError) as err:
        parse_log(text, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_82_log_with_a_list_of_percentiles_is_refused_naming_release_and_line() -> None:
    message = _refused(log_85(SUMMARY_85, "8.2.1", 8201))
    assert "TensorRT 8.2.1, summary format 8.2" in message and "has 3 percentiles where TensorRT 8.2.1 prints one" \
        in message and "Latency: min = 1.15 ms" in message and "line 13" in message


def test_end_to_end_line_in_a_later_release_is_not_understood() -> None:
    summary = SUMMARY_85[:3] + ["End-to-End Host Latency: " + SUMMARY_85[2].split(": ", 1)[1]] + SUMMARY_85[3:]
    message = _refused(log_85(summary))
    assert "(TensorRT 8.5.2, summary format 8.5): line 14 not understood" in message
    assert "End-to-End Host Latency" in message


@pytest.mark.parametrize("bad", [
    "Latency: min = 1.15 ms, max = 2.5 ms, average = 1.25 ms, median = 1.2 ms",
    "Latency: min = 1.15 ms, max = 2.5 ms, mean = 1.25 ms, median = 1.2 ms, percentile(95%) = 1.35 us",
    "Throughput: 812.5 images/s",
    "Total Host Walltime: 3 minutes",
    "Power: 12 W",
])
def test_a_changed_summary_line_is_refused(bad: str) -> None:
    summary = list(SUMMARY_85)
    key = bad.split(":")[0]
    index = next((i for i, s in enumerate(summary) if s.startswith(key + ":")), 3)
    summary[index] = bad
    message = _refused(log_85(summary))
    assert "TensorRT 8.5.2" in message and bad[:30] in message


def test_missing_summary_lines_and_unended_summary_are_refused() -> None:
    message = _refused(log_85([s for s in SUMMARY_85 if not s.startswith("D2H")]))
    assert "without its D2H Latency line(s)" in message
    text = log_85()
    text = text[:text.index("Explanations of the performance metrics")]
    assert "the performance summary does not end" in _refused(text[:text.rindex("\n") + 1])


def test_a_malformed_prolog_line_and_an_unknown_release_are_refused() -> None:
    text = log_85().replace("Timing trace has 2440 queries over 3.00308 s", "Timing trace has 2440 queries")
    assert "line 10 not understood" in _refused(text)
    assert "names the TensorRT release" in _refused(lines("Starting inference"))
    assert "is from TensorRT 8.5.2, not 10.3.0 as expected" in _refused(log_85(), release=Release.of("10.3.0"))


# --- whole logs of every release, written by the stand-in ---------------------------------------------


def standin(release: str, args: List[str], tmp_path: Path, env: Optional[Dict[str, str]] = None) -> Path:
    import os

    model = tmp_path / "m.onnx"
    model.write_bytes(b"not parsed by the stand-in")
    full_env = dict(os.environ, TRTEXEC_STANDIN_RELEASE=release)
    full_env.update(env or {})
    out = tmp_path / "trtexec-{}.log".format(release)
    proc = subprocess.run([sys.executable, str(STANDIN)] + args, env=full_env, capture_output=True, text=True)
    out.write_text(proc.stdout + proc.stderr)
    return out


@pytest.mark.parametrize("release", RELEASES)
def test_every_release_format_is_read(release: str, tmp_path: Path) -> None:
    r = Release.of(release)
    engine = tmp_path / "e.engine"
    build = standin(release, ["--onnx={}".format(tmp_path / "m.onnx"), "--saveEngine={}".format(engine),
                              "--shapes=input:4x3x224x224", r.skip_inference_flag], tmp_path)
    built = read_log(build)
    assert built.version == release and built.outcome == "PASSED" and built.build_s == 1.234
    assert built.device == "NVIDIA Orin" and built.compute_capability == (8, 7) and not built.has_summary
    assert (built.engine_mib is not None) == r.prints_engine_size
    flags = r.timing_flags(600, 100, 2, cuda_graph=False, transfers=True, spin_wait=True, avg_runs=1)
    run = standin(release, ["--loadEngine={}".format(engine), "--shapes=input:4x3x224x224"] + flags, tmp_path,
                  {"TRTEXEC_STANDIN_GPU_MS": "0.005"})
    log = read_log(run, r)
    text = run.read_text()
    qps = float(re.search(r"\] Throughput: (\S+) qps", text).group(1))  # type: ignore[union-attr]
    assert log.outcome == "PASSED" and log.has_summary and log.throughput_qps == qps
    assert log.timed_queries == 1200  # --iterations per stream, two streams
    assert set(log.statistics["latency"].percentiles_ms) == set(r.percentiles())
    assert ("end_to_end" in log.statistics) == r.end_to_end_line
    gpu = log.statistics["gpu_compute"]
    assert log.total_gpu_compute_s == pytest.approx(gpu.mean_ms * 1200 / 1000, rel=1e-4)
    assert gpu.min_ms <= gpu.median_ms <= gpu.percentiles_ms[95.0] <= gpu.max_ms
    # Enqueue-bound without CUDA graphs in the stand-in's timings: trtexec's own warning, advice joined.
    assert any(w.startswith("* Throughput may be bound by Enqueue Time") and ("--noCudaGraph" in w) == r.at_least(11)
               for w in log.warnings)
    assert any("Multiple inference streams" in w for w in log.warnings) == r.at_least(8, 6)
    if r.at_least(10):
        assert "... Omitting 800 lines" in text  # 1200 trace lines at --avgRuns=1, only 2 x 200 printed


@pytest.mark.parametrize("release", ["8.2.1", "10.3.0"])
def test_standin_refuses_flags_its_release_lacks(release: str, tmp_path: Path) -> None:
    """The stand-in is only a fair test of the flag table if it refuses what its release refuses."""
    other = "--infStreams=2" if release == "8.2.1" else "--workspace=512"
    log = read_log(standin(release, ["--loadEngine=x.engine", other], tmp_path))
    assert log.outcome == "FAILED" and log.errors[0].startswith("Unknown option: " + other.split("=")[0])
