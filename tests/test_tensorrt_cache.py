"""The TensorRT engine cache without TensorRT: keys, sidecars, staleness, locking, atomic installation and
the build child's process handling.

No engine here is a TensorRT engine: the cache is tested with builder callables that write plain bytes
(the cache never looks inside an engine), and the build child's handling with plain Python children
that sleep, exit or report an error.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, List

import pytest

from core.errors import ModelError, RunError, TargetUnavailable
from core.fileio import sha256_file
from targets.tensorrt import build_worker
from targets.tensorrt.build_worker import BuildRequest, build_in_child, run_build_process
from targets.tensorrt.engine_cache import SCHEMA, BuildOutcome, EngineCache, EngineKey, stale_reason

KEY = EngineKey(workload="mobilenet", model_sha256="ab" * 32, precision="fp16", batch=8, tensorrt_version="8.2.1",
                tensorrt_header_version="8.2.1", gpu_name="NVIDIA Tegra X1", compute_capability=(5, 3),
                workspace_mb=512)
INT8 = replace(KEY, precision="int8", tensorrt_version="8.5.2", tensorrt_header_version="8.5.2",
               gpu_name="Xavier", compute_capability=(7, 2), calibration_kind="table", calibration_sha256="cd" * 32)


class WritesBytes:
    """A builder that writes the given bytes as the engine file and counts its calls (no TensorRT)."""

    def __init__(self, data: bytes = b"engine bytes", layers: Any = None) -> None:
        self.data, self.layers, self.calls = data, layers, 0

    def __call__(self, key: EngineKey, path: Path) -> BuildOutcome:
        self.calls += 1
        path.write_bytes(self.data + str(self.calls).encode())
        return BuildOutcome(build_s=0.5, layers=self.layers, record={"builder": {"workspace_mb": key.workspace_mb}})


def files(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir())


# --- keys and sidecars --------------------------------------------------------------------------


def test_file_name_holds_workload_model_precision_batch_tensorrt_and_sm() -> None:
    assert KEY.file_stem() == "mobilenet-abababababab-fp16-b8-trt8.2.1-sm53"
    assert INT8.file_stem() == "mobilenet-abababababab-int8-b8-trt8.5.2-sm72"
    stems = {replace(KEY, **change).file_stem() for change in (
        {}, {"precision": "fp32"}, {"batch": 16}, {"tensorrt_version": "8.5.2"}, {"compute_capability": (7, 2)},
        {"model_sha256": "ef" * 32}, {"workload": "resnet50"})}
    assert len(stems) == 7
    # Odd characters in a version string cannot escape the folder or break the name.
    odd = replace(KEY, tensorrt_version="10.3/../x y")
    assert "/" not in odd.file_stem() and " " not in odd.file_stem()
    cache = EngineCache(Path("/e"))
    assert cache.engine_path(KEY) == Path("/e/mobilenet-abababababab-fp16-b8-trt8.2.1-sm53.engine")
    assert cache.sidecar_path(KEY).name.endswith(".engine.json")
    assert cache.timing_cache_path(KEY).name == "timing-trt8.2.1-sm53.cache"
    assert KEY.fp32_reference().precision == "fp32" and INT8.fp32_reference().calibration_sha256 is None


def test_sidecar_records_what_the_engine_was_built_from_and_for(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    layers = [{"name": "conv1", "type": "CaskConvolution", "precision": "int8"}]
    engine = cache.ensure(INT8, WritesBytes(layers=layers))
    meta = json.loads(cache.sidecar_path(INT8).read_text())
    assert meta["schema"] == SCHEMA and meta["engine"] == engine.path.name
    assert meta["workload"] == "mobilenet" and meta["model_sha256"] == "ab" * 32
    assert meta["precision"] == "int8" and meta["batch"] == 8
    assert meta["tensorrt_version"] == "8.5.2" and meta["tensorrt_header_version"] == "8.5.2"
    assert meta["gpu_name"] == "Xavier" and meta["compute_capability"] == "7.2"
    assert meta["calibration_kind"] == "table" and meta["calibration_sha256"] == "cd" * 32
    assert meta["built"] and meta["build_s"] == 0.5 and meta["layers"] == layers
    assert meta["engine_bytes"] == engine.path.stat().st_size == engine.engine_bytes
    assert meta["engine_sha256"] == sha256_file(engine.path)
    assert meta["workspace_mb"] == 512 and meta["builder"] == {"workspace_mb": 512}
    assert engine.status == "built: it is not built yet"


# --- stale decisions ----------------------------------------------------------------------------


def _built(tmp_path: Path, key: EngineKey = KEY) -> Any:
    cache = EngineCache(tmp_path)
    builder = WritesBytes()
    cache.ensure(key, builder)
    return cache, builder


def test_a_current_engine_is_reused(tmp_path: Path) -> None:
    cache, builder = _built(tmp_path)
    again = cache.ensure(KEY, builder)
    assert builder.calls == 1 and again.status == "cached"
    assert cache.lookup(KEY) is not None


@pytest.mark.parametrize("change, words", [
    ({"tensorrt_version": "8.5.2"}, "built by TensorRT 8.2.1; this is TensorRT 8.5.2"),
    ({"tensorrt_header_version": "8.5.2"}, "compiled against TensorRT 8.2.1 headers"),
    ({"gpu_name": "Orin"}, "built on NVIDIA Tegra X1; this GPU is Orin"),
    ({"compute_capability": (8, 7)}, "compute capability 5.3; this GPU has 8.7"),
    ({"model_sha256": "ef" * 32}, "built from a model with SHA-256 abababababab...; the model is now efefefefefef"),
    ({"calibration_kind": "table", "calibration_sha256": "99" * 32}, "built with calibration None; now table"),
    ({"workspace_mb": 1024}, "built with workspace_mb 512; the task asks 1024"),
    ({"batch": 4}, "built for batch 8, not 4"),
])
def test_sidecar_from_another_tensorrt_gpu_model_or_table_is_stale(tmp_path: Path, change: Any, words: str) -> None:
    cache, _ = _built(tmp_path)
    meta = json.loads(cache.sidecar_path(KEY).read_text())
    assert stale_reason(meta, KEY, cache.engine_path(KEY)) is None
    assert words in str(stale_reason(meta, replace(KEY, **change), cache.engine_path(KEY)))


def test_dla_engines_have_their_own_name_and_older_sidecars_stay_current(tmp_path: Path) -> None:
    dla = replace(KEY, dla_core=1)
    assert dla.file_stem() == KEY.file_stem() + "-dla1" and dla.fp32_reference().dla_core is None
    cache, _ = _built(tmp_path)
    meta = json.loads(cache.sidecar_path(KEY).read_text())
    assert meta["dla_core"] is None
    del meta["dla_core"]  # a sidecar written before the field existed: a GPU engine, still current
    assert stale_reason(meta, KEY, cache.engine_path(KEY)) is None
    assert "built for DLA core None; the task asks 1" in str(stale_reason(meta, dla, cache.engine_path(KEY)))


def test_table_sha_change_is_stale(tmp_path: Path) -> None:
    cache, _ = _built(tmp_path, INT8)
    meta = json.loads(cache.sidecar_path(INT8).read_text())
    why = stale_reason(meta, replace(INT8, calibration_sha256="ee" * 32), cache.engine_path(INT8))
    assert "calibration data of SHA-256 cdcdcdcdcdcd...; it is now eeeeeeeeeeee..." in str(why)


def _foreign(cache: EngineCache, key: EngineKey, other: EngineKey) -> None:
    """Put an engine built for `other` where `key`'s engine belongs (copied from another board, say)."""
    other_cache = EngineCache(cache.directory / "other")
    other_cache.ensure(other, WritesBytes(b"foreign"))
    cache.engine_path(key).write_bytes(other_cache.engine_path(other).read_bytes())
    cache.sidecar_path(key).write_text(other_cache.sidecar_path(other).read_text())


@pytest.mark.parametrize("change, words", [
    ({"tensorrt_version": "8.5.2"}, "TensorRT 8.5.2; this is TensorRT 8.2.1"),
    ({"gpu_name": "NVIDIA GeForce RTX 3080"}, "built on NVIDIA GeForce RTX 3080"),
    ({"model_sha256": "ab" * 6 + "ff" * 26}, "built from a model"),
])
def test_foreign_engine_in_place_is_rebuilt_not_used(tmp_path: Path, change: Any, words: str) -> None:
    cache = EngineCache(tmp_path)
    _foreign(cache, KEY, replace(KEY, **change))
    found, why = cache.check(KEY)
    assert found is None and words in why
    builder = WritesBytes(b"rebuilt")
    engine = cache.ensure(KEY, builder)
    assert builder.calls == 1 and engine.status.startswith("built: " + why[:20])
    assert engine.path.read_bytes() == b"rebuilt1" and cache.check(KEY)[0] is not None


@pytest.mark.parametrize("damage, words", [
    ("truncate", "the engine file has 6 bytes, its sidecar says 13 (truncated or replaced)"),
    ("modify", "SHA-256 differs from its sidecar's"),
    ("remove_engine", "the engine file is missing"),
    ("remove_sidecar", "its sidecar is missing"),
    ("corrupt_sidecar", "its sidecar is not valid JSON (corrupt)"),
    ("schema", "its sidecar has schema 'mlmark-engine/0'"),
    ("lacks_field", "its sidecar lacks field 'tensorrt_version'"),
    ("not_object", "its sidecar is not a JSON object"),
])
def test_damaged_engine_or_sidecar_is_rebuilt(tmp_path: Path, damage: str, words: str) -> None:
    cache, builder = _built(tmp_path)
    engine, sidecar = cache.engine_path(KEY), cache.sidecar_path(KEY)
    meta = json.loads(sidecar.read_text())
    if damage == "truncate":
        engine.write_bytes(engine.read_bytes()[:6])
    elif damage == "modify":
        engine.write_bytes(engine.read_bytes()[::-1])
    elif damage == "remove_engine":
        engine.unlink()
    elif damage == "remove_sidecar":
        sidecar.unlink()
    elif damage == "corrupt_sidecar":
        sidecar.write_text(sidecar.read_text()[:40])
    elif damage == "schema":
        sidecar.write_text(json.dumps(dict(meta, schema="mlmark-engine/0")))
    elif damage == "lacks_field":
        del meta["tensorrt_version"]
        sidecar.write_text(json.dumps(meta))
    elif damage == "not_object":
        sidecar.write_text("[1, 2]")
    found, why = cache.check(KEY)
    assert found is None and words in why
    assert cache.lookup(KEY) is None
    with cache.open(KEY, builder) as opened:  # what the target deserializes: only ever a verified engine
        assert builder.calls == 2 and opened.status == "built: " + why
        assert stale_reason(json.loads(sidecar.read_text()), KEY, opened.path) is None


def test_failed_build_leaves_nothing_and_removes_the_stale_engine(tmp_path: Path) -> None:
    cache, _ = _built(tmp_path)
    stale = replace(KEY, workspace_mb=1024)  # same file name, other settings: stale

    def fails(key: EngineKey, path: Path) -> BuildOutcome:
        path.write_bytes(b"half an engi")
        raise RunError("the parser said no")

    with pytest.raises(RunError, match="the parser said no"):
        with cache.open(stale, fails):
            pytest.fail("a failed build must not be opened")
    assert [n for n in files(tmp_path) if not n.startswith(".") or n.endswith(".tmp")] == []

    def writes_nothing(key: EngineKey, path: Path) -> BuildOutcome:
        return BuildOutcome(build_s=1.0)

    with pytest.raises(RunError, match="reported success but wrote no engine"):
        cache.ensure(KEY, writes_nothing)
    assert [n for n in files(tmp_path) if not n.startswith(".")] == []


def test_interrupted_build_removes_its_temporary_file(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def interrupted(key: EngineKey, path: Path) -> BuildOutcome:
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.ensure(KEY, interrupted)
    assert [n for n in files(tmp_path) if n != ".{}.lock".format(KEY.file_stem())] == []


def test_orphaned_temporary_files_of_a_killed_parent_are_removed_by_the_next_build(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    orphan = tmp_path / ".{}.4242.deadbeef.tmp".format(KEY.file_stem())
    other = tmp_path / ".{}.4242.deadbeef.tmp".format(replace(KEY, batch=16).file_stem())
    orphan.write_bytes(b"x" * 100)
    other.write_bytes(b"y")
    cache.ensure(KEY, WritesBytes())
    assert not orphan.exists() and other.exists()  # another engine's build may still be writing that one


def test_forced_rebuild_builds_even_a_current_engine(tmp_path: Path) -> None:
    cache, builder = _built(tmp_path)
    engine = cache.ensure(KEY, builder, force=True)
    assert builder.calls == 2 and engine.status == "built: a rebuild was asked for (params.rebuild)"


# --- the lock: two processes, one build ----------------------------------------------------------


class _RacingCache(EngineCache):
    """Waits, after its first check, until the other process has checked too: both then see no engine,
    so both go for the build, and only the lock and the check after acquiring it keep it to one."""

    def __init__(self, folder: Path, barrier: Any) -> None:
        super().__init__(folder)
        self.barrier, self.first = barrier, True

    def check(self, key: EngineKey) -> Any:
        result = super().check(key)
        if self.first:
            self.first = False
            self.barrier.wait(timeout=30)
        return result


def _ask_for_engine(folder: str, counter: str, barrier: Any, out: Any) -> None:
    """In a separate process: ask the cache for KEY with a builder that is slow and counts its calls."""

    def slow_builder(key: EngineKey, path: Path) -> BuildOutcome:
        with open(counter, "a") as f:
            f.write("{}\n".format(os.getpid()))
        time.sleep(0.5)
        path.write_bytes(b"built by " + str(os.getpid()).encode())
        return BuildOutcome(build_s=0.5)

    engine = _RacingCache(Path(folder), barrier).ensure(KEY, slow_builder)
    out.put((engine.status, sha256_file(engine.path)))


def test_cache_lock_two_processes_asking_for_one_engine_build_it_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    counter = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_ask_for_engine, args=(str(tmp_path / "engines"), str(counter), barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(counter.read_text().split()) == 1
    statuses = sorted(status for status, _ in results)
    assert statuses[0].startswith("built: ") and statuses[1] == "cached (built by another process meanwhile)"
    assert results[0][1] == results[1][1]


# --- the build child -----------------------------------------------------------------------------


def test_killed_build_child_leaves_no_engine_and_one_line(tmp_path: Path) -> None:
    """A child killed with SIGKILL half way through writing (as the OOM killer does on a Nano)."""
    cache = EngineCache(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    sleeper = ("import sys, time\nf = open(sys.argv[1], 'wb')\nf.write(b'half an engine')\nf.flush()\n"
               "time.sleep(60)\n")

    def builder(key: EngineKey, path: Path) -> BuildOutcome:
        def kill_when_writing(proc: Any) -> None:
            def watch() -> None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not (path.exists() and path.stat().st_size):
                    time.sleep(0.02)
                os.kill(proc.pid, signal.SIGKILL)
            threading.Thread(target=watch, daemon=True).start()

        run_build_process([sys.executable, "-c", sleeper, str(path)], work / "report.json",
                          "tensorrt mobilenet fp16 batch 8", workspace_mb=key.workspace_mb, batch=key.batch,
                          on_start=kill_when_writing)
        pytest.fail("a killed build must raise")

    t0 = time.monotonic()
    with pytest.raises(RunError) as err:
        cache.ensure(KEY, builder)
    assert time.monotonic() - t0 < 30
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("tensorrt mobilenet fp16 batch 8: the engine build was killed (SIGKILL)")
    assert "out-of-memory" in message and "no engine was written" in message
    assert "params.workspace_mb (now 512)" in message and "params.batch (now 8)" in message
    assert files(tmp_path) == sorted([".{}.lock".format(KEY.file_stem()), "work"])


def test_error_reported_by_the_child_is_raised_as_its_class_in_one_line(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    child = ("import json, sys\njson.dump({'ok': False, 'error': 'ModelError', 'message': "
             "'ONNX parser: In node 3 (Conv): bad attribute\\nIn node 4: more'}, open(sys.argv[1], 'w'))\n"
             "sys.exit(3)\n")
    with pytest.raises(ModelError) as err:
        run_build_process([sys.executable, "-c", child, str(report)], report, "label", 512, 8)
    assert str(err.value) == "label: ONNX parser: In node 3 (Conv): bad attribute In node 4: more"
    crash = "import sys\nprint('something broke', file=sys.stderr)\nsys.exit(1)\n"
    with pytest.raises(RunError, match=r"^label: the engine build ended with exit status 1 after 0 s and no "
                                       r"report; its last message: something broke$"):
        run_build_process([sys.executable, "-c", crash], tmp_path / "none.json", "label", 512, 8)
    segv = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    with pytest.raises(RunError, match="died of SIGSEGV"):
        run_build_process([sys.executable, "-c", segv], tmp_path / "none.json", "label", 512, 8)


def test_child_log_lines_are_relogged_under_their_logger(tmp_path: Path, caplog: Any) -> None:
    report = tmp_path / "r.json"
    child = ("import json, logging, sys\nh = logging.StreamHandler(sys.stderr)\n"
             "h.setFormatter(logging.Formatter({!r}))\nlogging.getLogger().addHandler(h)\n"
             "logging.getLogger().setLevel(logging.INFO)\n"
             "logging.getLogger('mlmark.native').warning('builder: layer 12 of 80')\n"
             "json.dump({{'ok': True, 'build_s': 1.0, 'engine_bytes': 3, 'layers': None}}, open(sys.argv[1], 'w'))\n"
             ).format(build_worker.LINE_FORMAT)
    with caplog.at_level("INFO"):
        got = run_build_process([sys.executable, "-c", child, str(report)], report, "label", 512, 8)
    assert got["ok"] and got["engine_bytes"] == 3
    assert ("mlmark.native", 30, "builder: layer 12 of 80") in caplog.record_tuples


def test_build_worker_reports_a_missing_library_as_target_unavailable(tmp_path: Path) -> None:
    """The real worker module end to end, up to loading the library (there is none at that path)."""
    request = BuildRequest(onnx_path=str(tmp_path / "m.onnx"), engine_path=str(tmp_path / "e.tmp"), precision="fp16",
                           batch=1, library=str(tmp_path / "no-such-lib.so"))
    with pytest.raises(TargetUnavailable) as err:
        build_in_child(request, "tensorrt mobilenet fp16 batch 1", tmp_path)
    assert "no-such-lib.so does not exist" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "e.tmp").exists()
