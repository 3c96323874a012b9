"""The foundation package: atomic writes and locks, progress, the command-line guard, tensor specs and
the target option validators, and the layering rule that keeps packages importing one way."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Set

import pytest

from core.console import EXIT_INTERRUPTED, guarded
from core.errors import ConfigError, ModelError
from core.fileio import atomic_path, atomic_write_text, file_lock
from core.progress import elapsed, progress
from targets.options import OptionConflict, TargetOptions, boolean, choice, integer, option
from tests.conftest import REPO

# --- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_gives_normal_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("the writer failed half way")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_onto_a_folder_fails_and_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "d", "new")  # os.replace onto a directory fails after the write
    assert (tmp_path / "d").is_dir() and list((tmp_path / "d").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_path_replaces_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "engine"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the block ends
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["engine"]


# --- file locks ------------------------------------------------------------------------------------

_HOLD = """
import sys, time
from core.fileio import file_lock
with file_lock(sys.argv[1], exclusive=sys.argv[2] == "x"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(lock: Path, mode: str, seconds: float) -> "subprocess.Popen[str]":
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock), mode, str(seconds)], cwd=str(REPO),
                            stdout=subprocess.PIPE, universal_newlines=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_exclusive_lock_waits_for_the_other_process(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".x.lock"
    proc = _holder(lock, "x", 0.6)
    waited = []
    t0 = time.monotonic()
    with file_lock(lock, exclusive=True, on_wait=lambda: waited.append(True)):
        took = time.monotonic() - t0
    proc.wait()
    assert waited == [True] and took > 0.3


def test_shared_locks_do_not_wait_for_each_other(tmp_path: Path) -> None:
    lock = tmp_path / ".x.lock"
    proc = _holder(lock, "s", 0.6)
    waited = []
    with file_lock(lock, exclusive=False, on_wait=lambda: waited.append(True)):
        pass
    proc.wait()
    assert waited == [] and lock.exists()  # lock files stay


# --- progress --------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_quiet_off_a_terminal_and_drawn_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    with progress("x", 10) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
    shown = _Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    with progress("accuracy", 4) as bar:
        for _ in range(4):
            bar.update(1)
    text = shown.getvalue()
    assert "accuracy" in text and "4/4" in text and "100%" in text and "images/s" in text
    never = _Terminal()
    monkeypatch.setattr(sys, "stderr", never)
    with progress("x", 3, enabled=False) as bar:
        bar.update(3)
    assert never.getvalue() == ""


def test_elapsed_line_on_a_terminal_only_and_log_lines_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    with elapsed("building") as tick:
        tick(None)
        tick(lambda: None)
    assert quiet.getvalue() == ""
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    with elapsed("building") as tick:
        tick(None)
        tick(lambda: sys.stderr.write("a log line\n"))
    text = tty.getvalue()
    assert "building: 00:00 elapsed" in text and "a log line\n" in text
    assert text.index("a log line") > text.index("building")


# --- the command-line guard ------------------------------------------------------------------------


def test_guard_turns_a_user_error_into_one_line(capsys: pytest.CaptureFixture) -> None:
    def fail() -> int:
        raise ModelError("m.onnx: not an ONNX model")

    assert guarded("tool", 0, fail) == 2
    err = capsys.readouterr().err
    assert err == "tool: error: m.onnx: not an ONNX model\n"
    assert guarded("tool", 1, fail) == 2
    assert "Traceback" in capsys.readouterr().err  # -v


def test_guard_on_ctrl_c_and_success(capsys: pytest.CaptureFixture) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert guarded("tool", 0, interrupted, interrupted="nothing lost") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "tool: interrupted; nothing lost\n"
    assert guarded("tool", 0, lambda: 0) == 0
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: it keeps its traceback
        guarded("tool", 0, lambda: 1 // 0)


# --- target options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options(TargetOptions):
    mode: str = option("a", choice("a", "b"))
    fast: bool = option(False, boolean())
    threads: Optional[int] = option(None, integer(1, 8, allow_none=True))

    def __post_init__(self) -> None:
        if self.fast and self.mode == "b":
            raise OptionConflict("params.fast needs params.mode a")


def test_options_defaults_values_and_names() -> None:
    assert _Options.names() == ("mode", "fast", "threads")
    opts = _Options.parse({"fast": True, "batch": 4}, "c.json: task 1")  # common params are not its business
    assert (opts.mode, opts.fast, opts.threads) == ("a", True, None)
    assert opts.to_dict() == {"mode": "a", "fast": True, "threads": None}


@pytest.mark.parametrize("given, words", [
    ({"mode": "c"}, "c.json: task 1: unknown params.mode 'c' (allowed: a, b)"),
    ({"fast": 1}, "c.json: task 1: params.fast must be true or false, got 1"),
    ({"threads": 9}, "c.json: task 1: params.threads must be an integer from 1 to 8, got 9"),
    ({"threads": True}, "params.threads must be an integer"),
    ({"fast": True, "mode": "b"}, "c.json: task 1: params.fast needs params.mode a"),
])
def test_bad_options_are_one_line(given: Dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _Options.parse(given, "c.json: task 1")
    assert words in str(err.value) and "\n" not in str(err.value)


# --- layers ----------------------------------------------------------------------------------------

# Who may import whom, bottom to top (every import counts, also those inside functions).
ALLOWED: Dict[str, Set[str]] = {
    "core": set(),
    "system": {"core"},
    "precision": {"core"},
    "workloads": {"core", "precision", "system"},
    "targets": {"core", "precision", "system"},
    "harness": {"core", "precision", "system", "workloads", "targets"},
}


def _imports(package: Path) -> Set[str]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_packages_import_one_way_only() -> None:
    packages = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")
    assert packages == sorted(ALLOWED)  # a new package takes its place in the layers here
    for name in packages:
        wrong = (_imports(REPO / name) & set(ALLOWED)) - ALLOWED[name] - {name}
        assert not wrong, "{} must not import {}".format(name, ", ".join(sorted(wrong)))


def test_every_project_import_in_the_repository_resolves() -> None:
    """Imports of the project's own modules resolve everywhere, also in files CI never runs (GPU tests, benches)."""
    import importlib

    project = set(ALLOWED) | {"tests", "bench"}
    wrong = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or rel.parts[0] in ("build", "third_party"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [(node.module, [a.name for a in node.names])]
            elif isinstance(node, ast.Import):
                modules = [(a.name, []) for a in node.names]
            else:
                continue
            for module, names in modules:
                if module.split(".")[0] not in project:
                    continue
                try:
                    loaded = importlib.import_module(module)
                except ImportError as exc:
                    if exc.name and exc.name.split(".")[0] not in project:
                        continue  # an optional package missing here (torch, say): not this test's business
                    wrong.append("{}: {} ({})".format(rel, module, exc))
                    continue
                for name in names:
                    if not hasattr(loaded, name) and importlib.util.find_spec(module + "." + name) is None:
                        wrong.append("{}: {} has no {}".format(rel, module, name))
    assert not wrong, wrong
