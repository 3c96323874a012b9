"""utility/check_wheels.py without the package index: arguments, pyproject reading, the pip command, and the
parsing of pip's report and errors. pip itself is replaced where a test needs an answer from it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("check_wheels", str(REPO / "utility" / "check_wheels.py"))
cw = importlib.util.module_from_spec(_spec)
sys.modules["check_wheels"] = cw  # dataclasses look their module up by name
_spec.loader.exec_module(cw)  # type: ignore[union-attr]

JP46, JP5, JP6 = cw.JETPACKS

PYPROJECT = """
[project]
name = "x"
dependencies = ["numpy>=1.19", "onnxruntime>=1.12"]

[project.optional-dependencies]
test = ["pytest>=7"]
torch = ["torch>=1.10"]
opencv = ["opencv-python-headless>=4.5"]
"""


def _item(name: str, version: str, filename: str, requires: Sequence[str] = (), requested: bool = False,
          extras: Sequence[str] = ()) -> Dict[str, Any]:
    item: Dict[str, Any] = {"metadata": {"name": name, "version": version, "requires_dist": list(requires)},
                            "download_info": {"url": "https://files.example/packages/ab/" + filename},
                            "requested": requested}
    if extras:
        item["requested_extras"] = list(extras)
    return item


HOST_311 = {"python_version": "3.11", "python_full_version": "3.11.7", "platform_machine": "x86_64",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def test_the_supported_jetpacks() -> None:
    assert [(j.name, j.python, j.glibc) for j in cw.JETPACKS] == [
        ("4.6", "3.8", (2, 27)), ("5", "3.8", (2, 31)), ("6", "3.10", (2, 35))]


def test_platform_tags_run_from_the_boards_glibc_down_to_manylinux2014() -> None:
    tags = JP46.platforms()
    assert tags[0] == "manylinux_2_27_aarch64" and tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert len(tags) == 27 - 17 + 2 and "manylinux_2_28_aarch64" not in tags
    assert "manylinux_2_35_aarch64" in JP6.platforms() and "manylinux_2_36_aarch64" not in JP6.platforms()


def test_pip_command_is_a_binary_only_dry_run_for_the_board(tmp_path: Path) -> None:
    cmd = cw.pip_command("/usr/bin/python3.10", JP6, ["numpy>=1.19", "pytest>=7"], tmp_path / "r.json",
                         tmp_path / "t", "https://pypi.org/simple")
    assert cmd[:4] == ["/usr/bin/python3.10", "-m", "pip", "install"]
    assert {"--dry-run", "--only-binary=:all:"} <= set(cmd)
    pairs = list(zip(cmd, cmd[1:]))
    assert ("--python-version", "3.10") in pairs and ("--implementation", "cp") in pairs
    assert ("--report", str(tmp_path / "r.json")) in pairs and ("--target", str(tmp_path / "t")) in pairs
    assert [b for a, b in pairs if a == "--platform"] == JP6.platforms()
    assert cmd[-2:] == ["numpy>=1.19", "pytest>=7"]


def test_pip_runs_without_local_configuration(monkeypatch: Any) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/c.txt")
    env = cw.pip_environment()
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env
    assert env["PIP_CONFIG_FILE"] == cw.os.devnull


def test_requirements_come_from_pyproject_with_every_extra_but_torch(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    requirements, extras = cw.read_requirements(pyproject)
    assert extras == ["test", "opencv"]
    assert requirements == ["numpy>=1.19", "onnxruntime>=1.12", "pytest>=7", "opencv-python-headless>=4.5"]
    assert cw.read_requirements(pyproject, ["torch"]) == (["numpy>=1.19", "onnxruntime>=1.12", "torch>=1.10"],
                                                          ["torch"])
    assert cw.read_requirements(pyproject, []) == (["numpy>=1.19", "onnxruntime>=1.12"], [])


def test_the_projects_own_pyproject_reads() -> None:
    requirements, extras = cw.read_requirements(cw.PYPROJECT)
    assert "torch" not in extras and "test" in extras and any(r.startswith("onnxruntime") for r in requirements)


def test_an_unknown_extra_or_a_broken_pyproject_is_one_clear_error(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[project.optional-dependencies\] has no extra 'gpu' "
                                          r"\(it has: opencv, test, torch\)"):
        cw.read_requirements(pyproject, ["gpu"])
    pyproject.write_text("[project\n")
    with pytest.raises(ConfigError, match="pyproject.toml: not valid TOML"):
        cw.read_requirements(pyproject)
    with pytest.raises(ConfigError, match="cannot read it"):
        cw.read_requirements(tmp_path / "missing.toml")


def test_report_parsing_and_the_glibc_each_wheel_needs() -> None:
    report = {"install": [
        _item("onnxruntime", "1.19.2", "onnxruntime-1.19.2-cp38-cp38-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"),
        _item("numpy", "1.24.4", "numpy-1.24.4-cp38-cp38-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"),
        _item("protobuf", "5.29.6", "protobuf-5.29.6-cp38-abi3-manylinux2014_aarch64.whl"),
        _item("pytest", "8.3.5", "pytest-8.3.5-py3-none-any.whl"),
    ]}
    wheels = cw.parse_report(report)
    assert [(w.name, w.version, w.glibc, w.platform) for w in wheels] == [
        ("onnxruntime", "1.19.2", (2, 27), "glibc 2.27"), ("numpy", "1.24.4", (2, 17), "glibc 2.17"),
        ("protobuf", "5.29.6", (2, 17), "glibc 2.17"), ("pytest", "8.3.5", None, "any")]


TOP_LEVEL = """WARNING: Retry? no
ERROR: Could not find a version that satisfies the requirement pycocotools<2.0.7 (from versions: 2.0.7, 2.0.8)
ERROR: No matching distribution found for pycocotools<2.0.7
"""
TRANSITIVE = """ERROR: Could not find a version that satisfies the requirement psycopg2>=2.8 (from dj-thing) (from versions: none)
ERROR: No matching distribution found for psycopg2>=2.8
"""
NETWORK = """WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/numpy/
ERROR: Could not find a version that satisfies the requirement numpy>=1.19 (from versions: none)
ERROR: No matching distribution found for numpy>=1.19
"""
CONFLICT = """ERROR: Cannot install a==1 and b==2 because these package versions have conflicting dependencies.

The conflict is caused by:
    a 1 depends on c<2
    b 2 depends on c>=2
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""
REQUIRES_PYTHON = "ERROR: Package 'onnx' requires a different Python: 3.8.0 not in '>=3.9'\n"


def test_pip_failures_name_the_package_and_who_needs_it() -> None:
    f = cw.parse_failure(TOP_LEVEL)
    assert (f.package, f.parent, f.versions) == ("pycocotools<2.0.7", "", "2.0.7, 2.0.8")
    assert "WARNING" not in f.detail
    f = cw.parse_failure(TRANSITIVE)
    assert (f.package, f.parent, f.versions) == ("psycopg2>=2.8", "dj-thing", "none")
    f = cw.parse_failure(REQUIRES_PYTHON)
    assert f.package == "onnx"
    f = cw.parse_failure(CONFLICT)
    assert f.package == "" and "a 1 depends on c<2" in f.detail
    with pytest.raises(cw.CheckError, match="could not be reached"):
        cw.parse_failure(NETWORK)


def test_markers_are_evaluated_again_for_the_board() -> None:
    report = {"environment": HOST_311, "install": [
        _item("pytest", "8.3.5", "pytest-8.3.5-py3-none-any.whl", requested=True, requires=[
            'tomli>=1; python_version < "3.11"', "pluggy<2,>=1.5", 'colorama; sys_platform == "win32"']),
        _item("pluggy", "1.5.0", "pluggy-1.5.0-py3-none-any.whl"),
        _item("thing", "1.0", "thing-1.0-py3-none-any.whl", requested=True, extras=["fast"], requires=[
            'x86helper; platform_machine == "x86_64"', 'speedup>=2; extra == "fast"', "pluggy"]),
        _item("x86helper", "1.0", "x86helper-1.0-py3-none-any.whl"),
        _item("speedup", "2.0", "speedup-2.0-py3-none-any.whl"),
    ]}
    missing, host_only = cw._marker_requirements(report, JP46.marker_environment())
    assert missing == ["tomli>=1"]  # Python 3.8 needs it; the 3.11 that ran pip did not
    assert host_only == ["x86helper"]  # aarch64 does not
    missing, _ = cw._marker_requirements(report, dict(JP46.marker_environment(), python_version="3.11",
                                                      python_full_version="3.11.0"))
    assert missing == []


class _FakePip:
    """Stands in for resolve(): answers per requirement set from a table of what has no wheel."""

    def __init__(self, no_wheel: Sequence[str] = (), board_needs: Optional[Dict[str, str]] = None,
                 conflict: Sequence[str] = ()) -> None:
        self.no_wheel = set(no_wheel)
        self.board_needs = board_needs or {}
        self.conflict = set(conflict)
        self.calls: List[List[str]] = []

    def __call__(self, python: str, jetpack: Any, requirements: Sequence[str],
                 index_url: str) -> Tuple[Optional[Dict[str, Any]], Optional[Any]]:
        self.calls.append(list(requirements))
        names = [r.split(">")[0].split("<")[0].split("=")[0] for r in requirements]
        for name, req in zip(names, requirements):
            if name in self.no_wheel:
                return None, cw.Failure(req, "", "none", "ERROR: No matching distribution found for " + req)
        if self.conflict and self.conflict <= set(names):
            return None, cw.Failure("", "", "", CONFLICT)
        requires = ["{}; python_version < '3.9'".format(v) for k, v in self.board_needs.items() if k in names]
        items = [_item(n, "1.0", n + "-1.0-cp38-cp38-manylinux_2_17_aarch64.whl", requested=True, requires=requires)
                 for n in names]
        return {"environment": HOST_311, "install": items}, None


def test_check_names_every_requirement_that_would_need_compiling(monkeypatch: Any) -> None:
    pip = _FakePip(no_wheel=["pycocotools", "opencv"])
    monkeypatch.setattr(cw, "resolve", pip)
    outcome = cw.check(JP46, ["numpy>=1.19", "pycocotools>=2.0.6", "opencv>=4"], "py", "idx")
    assert not outcome.ok
    assert [f.package for f in outcome.failures] == ["pycocotools>=2.0.6", "opencv>=4"]
    assert pip.calls == [["numpy>=1.19", "pycocotools>=2.0.6", "opencv>=4"],
                         ["numpy>=1.19"], ["pycocotools>=2.0.6"], ["opencv>=4"]]
    text = "\n".join(cw.format_outcome(outcome, ["numpy>=1.19"], verbose=False))
    assert "JetPack 4.6 (Ubuntu 18.04, glibc 2.27, Python 3.8, aarch64): would need compiling:" in text
    assert "pycocotools>=2.0.6 (a requirement of the project): no version has a wheel for this board" in text


def test_check_reports_a_conflict_between_binary_only_versions(monkeypatch: Any) -> None:
    monkeypatch.setattr(cw, "resolve", _FakePip(conflict=["a", "b"]))
    outcome = cw.check(JP5, ["a", "b"], "py", "idx")
    assert [f.package for f in outcome.failures] == [""]
    text = "\n".join(cw.format_outcome(outcome, ["a", "b"], verbose=False))
    assert "no combination of versions with wheels fits" in text and "b 2 depends on c>=2" in text


def test_check_adds_what_the_boards_markers_need_and_resolves_again(monkeypatch: Any) -> None:
    pip = _FakePip(board_needs={"pytest": "tomli>=1"})
    monkeypatch.setattr(cw, "resolve", pip)
    outcome = cw.check(JP46, ["pytest>=7"], "py", "idx")
    assert outcome.ok and outcome.added == ["tomli>=1"]
    assert pip.calls == [["pytest>=7"], ["pytest>=7", "tomli>=1"]]
    assert [w.name for w in outcome.wheels] == ["pytest", "tomli"]
    text = "\n".join(cw.format_outcome(outcome, ["pytest>=7"], verbose=False))
    assert "every package has a wheel (2 packages)" in text and "added for the board's markers: tomli>=1" in text
    outcome = cw.check(JP6, ["pytest>=7"], "py", "idx")  # Python 3.10: the marker does not apply
    assert outcome.ok and outcome.added == []


def test_main_exit_statuses_and_output(monkeypatch: Any, capsys: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(cw, "interpreter_for", lambda jetpack: "py")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    monkeypatch.setattr(cw, "resolve", _FakePip())
    assert cw.main(["--pyproject", str(pyproject), "--jetpack", "6"]) == 0
    out = capsys.readouterr().out
    assert "JetPack 6 (Ubuntu 22.04, glibc 2.35, Python 3.10, aarch64): every package has a wheel" in out
    assert "JetPack 5" not in out
    monkeypatch.setattr(cw, "resolve", _FakePip(no_wheel=["onnxruntime"]))
    assert cw.main(["--pyproject", str(pyproject), "--extra", "test", "--requirement", "numpy<2"]) == 1
    out = capsys.readouterr().out
    assert out.count("would need compiling") == 3 and "numpy<2" in out.splitlines()[0]
    assert cw.main(["--pyproject", str(pyproject), "--extra", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("check_wheels: error: ") and "no extra 'gpu'" in err


def test_an_unknown_jetpack_is_refused_by_the_command_line() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "utility" / "check_wheels.py"), "--jetpack", "7"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: '7'" in proc.stderr and proc.stdout == ""
