"""The quick start's setup: which Python `make` picks (utility/find_python.sh), what the venv sees on a Jetson
(utility/setup_venv.sh), `make jetson`'s CMake form, and the README's commands, configs and CI call.

The interpreters are stand-ins: tiny shell scripts on a PATH that holds nothing else, answering the scripts'
`-c` probes with a version (and, for the OpenCV probe, numpy's major version or a failure). The Jetson
decision reads etc/nv_tegra_release below MLMARK_SYSROOT, here a fixture folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
FIND_PYTHON = REPO / "utility" / "find_python.sh"
SETUP_VENV = REPO / "utility" / "setup_venv.sh"
SH = "/bin/sh"

UBUNTU = {"18.04": "python3.8", "20.04": "python3.8", "22.04": "python3.10"}  # JetPack 4.6, 5, 6


def _stand_in(bin_dir: Path, name: str, version: str, venv: bool = True, cv2_numpy: Optional[int] = None) -> Path:
    """An interpreter that reports `version` (failing where its venv module is missing) and imports cv2 or not."""
    cv2 = "echo {}; exit 0".format(cv2_numpy) if cv2_numpy is not None else "exit 1"
    path = bin_dir / name
    path.write_text('#!/bin/sh\ncase "$2" in *cv2*) {} ;; esac\necho {}\nexit {}\n'.format(
        cv2, version, 0 if venv else 1))
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The only folder on PATH: stand-ins go here, beside `sh` for scripts that call it."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "sh").symlink_to(SH)
    return d


def _root(tmp_path: Path, ubuntu: Optional[str] = "18.04", jetson: bool = False) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if ubuntu:
        (root / "etc" / "os-release").write_text('NAME="Ubuntu"\nVERSION_ID="{}"\nID=ubuntu\n'.format(ubuntu))
    if jetson:
        (root / "etc" / "nv_tegra_release").write_text("# R32 (release), REVISION: 7.1, BOARD: t210ref\n")
    return root


def _env(bin_dir: Path, root: Path) -> Dict[str, str]:
    return {"PATH": str(bin_dir), "HOME": str(bin_dir.parent), "MLMARK_SYSROOT": str(root)}


def _run(cmd: List[str], env: Dict[str, str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=str(cwd) if cwd else None, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)


def _find(bin_dir: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([SH, str(FIND_PYTHON)] + list(args), _env(bin_dir, root))


# --- which Python -------------------------------------------------------------------------------


def test_python3_new_enough_is_taken(bin_dir: Path, tmp_path: Path) -> None:
    python3 = _stand_in(bin_dir, "python3", "3.12")
    _stand_in(bin_dir, "python3.8", "3.8")
    proc = _find(bin_dir, _root(tmp_path))
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, str(python3), "")


def test_python3_too_old_falls_back_to_python3_8(bin_dir: Path, tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3", "3.6")
    python38 = _stand_in(bin_dir, "python3.8", "3.8")
    _stand_in(bin_dir, "python3.12", "3.12")
    proc = _find(bin_dir, _root(tmp_path))
    assert (proc.returncode, proc.stdout.strip()) == (0, str(python38))


def test_the_first_new_enough_version_is_taken_and_one_without_venv_is_passed_over(bin_dir: Path,
                                                                                   tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3", "3.10", venv=False)  # Ubuntu without python3.10-venv
    python312 = _stand_in(bin_dir, "python3.12", "3.12")
    proc = _find(bin_dir, _root(tmp_path))
    assert (proc.returncode, proc.stdout.strip()) == (0, str(python312))


@pytest.mark.parametrize("ubuntu", sorted(UBUNTU))
def test_none_present_prints_one_line_with_the_install_command(bin_dir: Path, tmp_path: Path, ubuntu: str) -> None:
    _stand_in(bin_dir, "python3", "3.6")
    proc = _find(bin_dir, _root(tmp_path, ubuntu))
    want = UBUNTU[ubuntu]
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "found: python3 3.6" in proc.stderr
    assert proc.stderr.rstrip().endswith("sudo apt install {0} {0}-venv {0}-dev".format(want))


def test_none_at_all_and_an_unknown_release(bin_dir: Path, tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3.10", "3.10", venv=False)
    proc = _find(bin_dir, _root(tmp_path, ubuntu=None))
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "python3.10 3.10 without its venv module" in proc.stderr
    assert "make PYTHON=/path/to/python3" in proc.stderr


def test_a_python_given_is_the_only_one_tried(bin_dir: Path, tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3.12", "3.12")
    old = _stand_in(bin_dir, "python3.7", "3.7")
    proc = _find(bin_dir, _root(tmp_path), str(old))
    assert proc.returncode == 1 and "found: {} 3.7".format(old) in proc.stderr


def test_make_with_no_usable_python_stops_before_creating_anything(bin_dir: Path, tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    project = tmp_path / "project"
    (project / "utility").mkdir(parents=True)
    for rel in ("Makefile", "pyproject.toml", "utility/find_python.sh", "utility/setup_venv.sh"):
        shutil.copy(str(REPO / rel), str(project / rel))
    before = sorted(p.name for p in project.rglob("*"))
    _stand_in(bin_dir, "python3", "3.6")
    for target in ("run", "test"):
        proc = _run([make, target], _env(bin_dir, _root(tmp_path, "18.04")), cwd=project)
        assert proc.returncode != 0
        ours = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
        assert ours == ["MLMark needs Python 3.8 or newer with its venv module (found: python3 3.6); install it "
                        "with: sudo apt install python3.8 python3.8-venv python3.8-dev"]
        assert sorted(p.name for p in project.rglob("*")) == before


# --- what the venv sees on a Jetson --------------------------------------------------------------


def _setup_dry_run(bin_dir: Path, root: Path, venv: Path) -> subprocess.CompletedProcess:
    return _run([SH, str(SETUP_VENV), "--dry-run", str(venv)], _env(bin_dir, root))


def _venv_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if " -m venv " in line]
    return line


def _install_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if "pip install -q -e" in line and not line.startswith("(")]
    return line


def test_jetson_whose_python_imports_jetpacks_cv2_sees_the_system(bin_dir: Path, tmp_path: Path) -> None:
    python3 = _stand_in(bin_dir, "python3", "3.10", cv2_numpy=1)  # JetPack 6: cv2 4.8 on numpy 1.21
    venv = tmp_path / "venv"
    proc = _setup_dry_run(bin_dir, _root(tmp_path, "22.04", jetson=True), venv)
    assert proc.returncode == 0, proc.stderr
    assert _venv_line(proc.stdout) == "{} -m venv --system-site-packages {}".format(python3, venv)
    assert _install_line(proc.stdout).endswith("-e .[test] numpy<2")  # no second cv2; numpy stays on 1.x
    assert "opencv" not in _install_line(proc.stdout)
    assert not venv.exists()


def test_jetson_whose_python_cannot_import_jetpacks_cv2_is_isolated(bin_dir: Path, tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3", "3.6", cv2_numpy=1)  # JetPack 4.6: cv2 is built for 3.6 ...
    python38 = _stand_in(bin_dir, "python3.8", "3.8")  # ... and Ubuntu's 3.8 cannot import it
    venv = tmp_path / "venv"
    proc = _setup_dry_run(bin_dir, _root(tmp_path, "18.04", jetson=True), venv)
    assert proc.returncode == 0, proc.stderr
    assert _venv_line(proc.stdout) == "{} -m venv {}".format(python38, venv)
    assert _install_line(proc.stdout).endswith("-e .[test,opencv]")
    assert "cannot import JetPack's OpenCV" in proc.stdout


def test_a_desktop_is_isolated_even_where_its_python_has_a_cv2(bin_dir: Path, tmp_path: Path) -> None:
    python3 = _stand_in(bin_dir, "python3", "3.12", cv2_numpy=2)  # apt's python3-opencv on a desktop
    venv = tmp_path / "venv"
    proc = _setup_dry_run(bin_dir, _root(tmp_path, "22.04", jetson=False), venv)
    assert proc.returncode == 0, proc.stderr
    assert _venv_line(proc.stdout) == "{} -m venv {}".format(python3, venv)
    assert _install_line(proc.stdout).endswith("-e .[test,opencv]")
    assert "Jetson" not in proc.stdout


def test_a_venv_of_another_python_is_recreated(bin_dir: Path, tmp_path: Path) -> None:
    python38 = _stand_in(bin_dir, "python3.8", "3.8")
    _stand_in(bin_dir, "python3", "3.6")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    _stand_in(venv / "bin", "python", "3.6")  # what `python3 -m venv` left on JetPack 4.6 before this
    proc = _setup_dry_run(bin_dir, _root(tmp_path), venv)
    assert _venv_line(proc.stdout) == "{} -m venv --clear {}".format(python38, venv)
    _stand_in(venv / "bin", "python", "3.8")
    proc = _setup_dry_run(bin_dir, _root(tmp_path), venv)
    assert _venv_line(proc.stdout) == "{} -m venv {}".format(python38, venv)


def test_setup_with_no_usable_python_creates_nothing(bin_dir: Path, tmp_path: Path) -> None:
    _stand_in(bin_dir, "python3", "3.6")
    venv = tmp_path / "venv"
    proc = _run([SH, str(SETUP_VENV), str(venv)], _env(bin_dir, _root(tmp_path, "20.04", jetson=True)))
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert not venv.exists()


# --- make jetson, the README and CI -------------------------------------------------------------


def test_make_jetson_builds_in_cmake_3_10_form_then_runs_the_tensorrt_selftest(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    proc = subprocess.run([make, "-n", "--no-print-directory", "jetson", "VENV={}".format(venv)], cwd=str(REPO),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.replace("\\\n", " ").splitlines()
    (build,) = [line for line in lines if "cmake" in line]
    assert build.startswith("mkdir -p build/cpp_environment && cd build/cpp_environment && cmake ../../cpp_environment")
    assert "cmake --build . -- -j" in build
    assert not re.search(r"\s-[SB]\s", build)  # CMake 3.10 has neither
    assert lines[-1] == "{}/bin/mlmark selftest --tensorrt".format(venv)


def _jetson_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Quick start on a Jetson")
    return text[start:text.index("\n## ", start + 1)]


def _blocks(text: str) -> List[List[str]]:
    return [[line for line in block.strip().splitlines()] for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_readme_jetson_quick_start_per_jetpack(bin_dir: Path, tmp_path: Path) -> None:
    blocks = _blocks(_jetson_section())
    assert len(blocks) == 3  # JetPack 4.6, 5, 6
    for ubuntu, block in zip(("18.04", "20.04", "22.04"), blocks):
        # What find_python.sh tells a user of that release to install is what the README has them type.
        proc = _find(bin_dir, _root(tmp_path, ubuntu))
        hint = proc.stderr.strip().split("install it with: ")[1]
        assert block[0] == "sudo apt update && " + hint + " cmake"
        commands = [line.split("#")[0].strip() for line in block]
        assert commands[1:5] == ["make run", "make jetson", "sudo nvpmodel -m 0 && sudo jetson_clocks",
                                 ". .venv/bin/activate"]
        assert re.fullmatch(r"python harness/mlmark.py -c config/trt-(nano|orin)-mobilenet-fp16.json", commands[5])


def test_every_config_the_readme_names_exists() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"config/[\w.-]+\.json", text))
    assert "config/trt-xavier-mobilenet-fp16.json" in named
    assert sorted(n for n in named if not (REPO / n).is_file()) == []


@pytest.mark.parametrize("board", ["nano", "xavier", "orin"])
def test_each_boards_first_score_config_is_its_throughput_then_its_latency_task(board: str) -> None:
    both = json.loads((REPO / "config" / "trt-{}-mobilenet-fp16.json".format(board)).read_text())
    parts = [json.loads((REPO / "config" / "trt-{}-mobilenet-fp16-{}.json".format(board, mode)).read_text())[0]
             for mode in ("throughput", "latency")]
    assert both == parts


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick = text[text.index("## Quick start\n"):text.index("## Quick start on a Jetson")]
    (readme_test,) = [line.split("#")[0].strip() for block in _blocks(quick) for line in block
                      if line.startswith("make test")]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [readme_test] == ["make test"]
    assert os.access(str(REPO / ".ci" / "run"), os.X_OK)
