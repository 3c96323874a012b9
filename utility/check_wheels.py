"""Resolve the project's dependencies for each supported JetPack from binary wheels only, and name any that would
need compiling on the board.

    python utility/check_wheels.py [--jetpack 4.6 5 6] [--extra NAME ...] [--index-url URL] [-v]

Run it before changing a dependency's lower or upper bound in pyproject.toml. For each JetPack (aarch64; Python
3.8 on glibc 2.27 and 2.31, Python 3.10 on glibc 2.35) it asks pip for a dry-run install with
`--only-binary=:all:` and that board's platform tags, so nothing is downloaded but metadata. It needs the
package index, so it is not part of the tests. Local pip configuration (a find-links folder, a constraints
file) is ignored: the question is what the index offers.

pip evaluates environment markers (`; python_version < "3.11"`) for the interpreter it runs under, not for
--python-version, so each JetPack is resolved with a Python of its version where one is found (PATH, then
pyenv); otherwise with this one, and the markers are evaluated again for the board afterwards: a dependency
the board needs that was left out is added and the resolution repeated. Versions chosen under another
Python's markers may still differ from a board's (a release that requires numpy 2 only on Python 3.9+ is
then passed over), and the output says so.

Exit status: 0 when every JetPack resolves from wheels, 1 when a package would need compiling, 2 when the
check could not run (no pip with --report, index unreachable, bad pyproject.toml).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":
    # Run as a script, Python puts utility/ first on sys.path; the project's packages live one up.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from core.console import guarded  # noqa: E402
from core.errors import ConfigError, MLMarkError  # noqa: E402

PROG = "check_wheels"
EXIT_NEEDS_COMPILING = 1
REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
DEFAULT_INDEX = "https://pypi.org/simple"
# Extras left out by default, and why.
EXCLUDED_EXTRAS = {"torch": "a Jetson's PyTorch is NVIDIA's wheel for its JetPack, not PyPI's CPU-only one"}
MIN_PIP = (22, 2)  # `pip install --dry-run --report`
MAX_PASSES = 4  # resolutions per JetPack when markers add dependencies
OLDEST_MANYLINUX_MINOR = 17  # manylinux2014 = manylinux_2_17, the oldest tag built for aarch64


class CheckError(MLMarkError):
    """The check could not run: no usable pip, index unreachable, or pip failed in an unrecognized way."""


@dataclass(frozen=True)
class JetPack:
    """A supported JetPack as far as wheels care: its Ubuntu, glibc and Python."""

    name: str
    ubuntu: str
    glibc: Tuple[int, int]
    python: str

    @property
    def label(self) -> str:
        return "JetPack {} (Ubuntu {}, glibc {}.{}, Python {}, aarch64)".format(
            self.name, self.ubuntu, self.glibc[0], self.glibc[1], self.python)

    def platforms(self) -> List[str]:
        """Every manylinux tag a wheel for this board may carry: pip does not expand manylinux_2_x to older ones."""
        tags = ["manylinux_2_{}_aarch64".format(minor)
                for minor in range(self.glibc[1], OLDEST_MANYLINUX_MINOR - 1, -1)]
        return tags + ["manylinux2014_aarch64"]

    def marker_environment(self) -> Dict[str, str]:
        """PEP 508 marker values on this board's CPython."""
        return {"python_version": self.python, "python_full_version": self.python + ".0",
                "platform_machine": "aarch64", "platform_system": "Linux", "sys_platform": "linux",
                "os_name": "posix", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "implementation_version": self.python + ".0"}


JETPACKS = (
    JetPack("4.6", "18.04", (2, 27), "3.8"),  # with Ubuntu's python3.8 package; its own python3 is 3.6
    JetPack("5", "20.04", (2, 31), "3.8"),
    JetPack("6", "22.04", (2, 35), "3.10"),
)


_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_")
_LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}


@dataclass(frozen=True)
class Wheel:
    """One package of a resolution and the wheel pip would install."""

    name: str
    version: str
    filename: str

    @property
    def glibc(self) -> Optional[Tuple[int, int]]:
        """The oldest glibc the wheel runs on (the least of its manylinux tags); None for a pure-Python wheel."""
        tags = self.filename[:-len(".whl")].split("-")[-1].split(".") if self.filename.endswith(".whl") else []
        found = []
        for tag in tags:
            match = _MANYLINUX.match(tag)
            if match:
                found.append((int(match.group(1)), int(match.group(2))))
            elif tag.split("_")[0] in _LEGACY_MANYLINUX:
                found.append(_LEGACY_MANYLINUX[tag.split("_")[0]])
        return min(found) if found else None

    @property
    def platform(self) -> str:
        """'glibc 2.27' for a binary wheel, 'any' for a pure-Python one."""
        glibc = self.glibc
        return "glibc {}.{}".format(*glibc) if glibc else "any"


@dataclass(frozen=True)
class Failure:
    """Why pip found no binary-only resolution."""

    package: str  # the requirement pip could not satisfy, or "" for a conflict
    parent: str  # the package that requires it, "" for a requirement of the project
    versions: str  # versions with a wheel for the board, as pip lists them ("none" when none)
    detail: str  # pip's own lines


@dataclass
class Outcome:
    """What one JetPack's check found."""

    jetpack: JetPack
    interpreter: str
    wheels: List[Wheel] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    added: List[str] = field(default_factory=list)  # requirements added for the board's markers
    host_only: List[str] = field(default_factory=list)  # resolved only because of this machine's markers

    @property
    def ok(self) -> bool:
        return not self.failures


def _optional_and_required(pyproject: Path) -> Tuple[List[str], Dict[str, List[str]]]:
    """[project] dependencies and optional-dependencies of pyproject.toml."""
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise CheckError("reading pyproject.toml needs Python 3.11 or the tomli package (pip install tomli)")
    try:
        with open(str(pyproject), "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("{}: cannot read it: {}".format(pyproject, exc.strerror or exc))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("{}: not valid TOML: {}".format(pyproject, exc))
    project = data.get("project", {})
    return list(project.get("dependencies", [])), dict(project.get("optional-dependencies", {}))


def read_requirements(pyproject: Path, extras: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """The project's dependencies plus those of its extras (default: all but EXCLUDED_EXTRAS), and the extras."""
    requirements, optional = _optional_and_required(pyproject)
    if extras is None:
        extras = [name for name in optional if name not in EXCLUDED_EXTRAS]
    for extra in extras:
        if extra not in optional:
            raise ConfigError("{}: [project.optional-dependencies] has no extra '{}' (it has: {})".format(
                pyproject, extra, ", ".join(sorted(optional)) or "none"))
        requirements.extend(optional[extra])
    return requirements, list(extras)


def pip_command(python: str, jetpack: JetPack, requirements: Sequence[str], report: Path, target_dir: Path,
                index_url: str) -> List[str]:
    """A binary-only dry-run install for the board that writes pip's JSON report."""
    cmd = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
           "--target", str(target_dir),  # pip takes platform options only with --target
           "--only-binary=:all:", "--implementation", "cp", "--python-version", jetpack.python,
           "--index-url", index_url]
    for platform in jetpack.platforms():
        cmd += ["--platform", platform]
    return cmd + list(requirements)


def pip_environment() -> Dict[str, str]:
    """This process's environment without pip's settings, and with no pip configuration file read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def parse_report(report: Dict[str, Any]) -> List[Wheel]:
    """The packages of a pip --report and their wheels."""
    wheels = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        url = item.get("download_info", {}).get("url", "")
        wheels.append(Wheel(meta.get("name", "?"), meta.get("version", "?"), url.rsplit("/", 1)[-1]))
    return wheels


_NOT_FOUND = re.compile(r"Could not find a version that satisfies the requirement (?P<req>.+?)"
                        r"(?: \(from (?P<parent>[^)]+)\))? \(from versions: (?P<versions>[^)]*)\)")
_REQUIRES_PYTHON = re.compile(r"Package '(?P<package>[^']+)' requires a different Python")
_NETWORK = ("NewConnectionError", "Max retries exceeded", "Could not fetch URL", "ProxyError",
            "Temporary failure in name resolution", "ConnectTimeout")


def parse_failure(output: str) -> Failure:
    """What pip's error output says could not be satisfied; CheckError where it says the index was unreachable."""
    if any(marker in output for marker in _NETWORK):
        raise CheckError("the package index could not be reached: " + _first_error(output))
    detail = "\n".join(line for line in output.splitlines() if line.strip() and "WARNING:" not in line)
    match = _NOT_FOUND.search(output)
    if match:
        return Failure(match.group("req").strip(), (match.group("parent") or "").strip(),
                       match.group("versions").strip() or "none", detail)
    match = _REQUIRES_PYTHON.search(output)
    if match:
        return Failure(match.group("package"), "", "", detail)
    return Failure("", "", "", detail)


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("ERROR:"):
            return line[len("ERROR:"):].strip()
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "pip gave no message"


def _marker_requirements(report: Dict[str, Any], env: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """Dependencies the board's markers select that the report left out, and packages only this machine's did."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    items = report.get("install", [])
    resolved = {canonicalize_name(i.get("metadata", {}).get("name", "")) for i in items}
    host_env = report.get("environment", {})
    missing: Dict[str, str] = {}
    host_only = set()
    needed = {canonicalize_name(i.get("metadata", {}).get("name", "")) for i in items if i.get("requested")}
    for item in items:
        extras = [""] + list(item.get("requested_extras") or [])
        for text in item.get("metadata", {}).get("requires_dist") or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            name = canonicalize_name(req.name)
            if req.marker is None:
                needed.add(name)
                continue
            on_board = any(req.marker.evaluate(dict(env, extra=e)) for e in extras)
            here = any(req.marker.evaluate(dict(host_env, extra=e)) for e in extras) if host_env else on_board
            if on_board:
                needed.add(name)
                if name not in resolved:
                    missing[name] = "{}{}".format(req.name, "[{}]".format(",".join(sorted(req.extras)))
                                                  if req.extras else "") + str(req.specifier)
            elif here:
                host_only.add(name)
    return list(missing.values()), sorted(host_only - needed)


def resolve(python: str, jetpack: JetPack, requirements: Sequence[str],
            index_url: str) -> Tuple[Optional[Dict[str, Any]], Optional[Failure]]:
    """One binary-only resolution: pip's report, or why there is none."""
    with tempfile.TemporaryDirectory(prefix="mlmark-wheels-") as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = pip_command(python, jetpack, requirements, report_path, Path(tmp) / "target", index_url)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=pip_environment(), cwd=tmp)
        if proc.returncode == 0 and report_path.is_file():
            return json.loads(report_path.read_text(encoding="utf-8")), None
        failure = parse_failure(proc.stdout)
        if not failure.package and "ResolutionImpossible" not in proc.stdout and "conflict" not in proc.stdout:
            raise CheckError("pip failed for {}: {}".format(jetpack.label, _first_error(proc.stdout)))
        return None, failure


def check(jetpack: JetPack, requirements: Sequence[str], python: str, index_url: str) -> Outcome:
    """Resolve one JetPack; on failure, each requirement alone, to name every one that needs compiling."""
    outcome = Outcome(jetpack, python)
    wanted = list(requirements)
    for _ in range(MAX_PASSES):
        report, failure = resolve(python, jetpack, wanted, index_url)
        if report is None:
            break
        missing, outcome.host_only = _marker_requirements(report, jetpack.marker_environment())
        if not missing:
            outcome.wheels = parse_report(report)
            return outcome
        outcome.added.extend(missing)
        wanted.extend(missing)
    else:
        raise CheckError("{}: the board's markers kept adding dependencies after {} resolutions: {}".format(
            jetpack.label, MAX_PASSES, ", ".join(outcome.added)))
    for requirement in wanted:
        alone, why = resolve(python, jetpack, [requirement], index_url)
        if alone is None and why is not None:
            outcome.failures.append(why)
    if not outcome.failures:  # each resolves alone: their binary-only versions conflict
        outcome.failures.append(failure or Failure("", "", "", "pip found no resolution"))
    return outcome


def _pip_version(python: str) -> Optional[Tuple[int, int]]:
    try:
        out = subprocess.run([python, "-m", "pip", "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, env=pip_environment(), timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"pip (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_interpreter(version: str) -> Optional[str]:
    """A Python of this X.Y with a pip that has --report: on PATH, then pyenv's installs."""
    candidates = [shutil.which("python" + version) or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/{}.*/bin/python{}".format(version, version))))
    for candidate in candidates:
        if candidate and (_pip_version(candidate) or (0, 0)) >= MIN_PIP:
            return candidate
    return None


def interpreter_for(jetpack: JetPack) -> str:
    """The interpreter to run pip under for this JetPack: one of its Python version, else this one."""
    found = find_interpreter(jetpack.python)
    if found:
        return found
    if (_pip_version(sys.executable) or (0, 0)) < MIN_PIP:
        raise CheckError("no Python {} with pip >= {}.{} was found, and this Python's pip ({}) has no "
                         "--report; upgrade it: {} -m pip install -U pip".format(
                             jetpack.python, MIN_PIP[0], MIN_PIP[1], sys.executable, sys.executable))
    return sys.executable


def format_outcome(outcome: Outcome, requirements: Sequence[str], verbose: bool) -> List[str]:
    """The lines printed for one JetPack."""
    jp = outcome.jetpack
    lines = []
    if outcome.ok:
        lines.append("{}: every package has a wheel ({} packages)".format(jp.label, len(outcome.wheels)))
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        top = {canonicalize_name(Requirement(r).name) for r in requirements}
        shown = outcome.wheels if verbose else [w for w in outcome.wheels if canonicalize_name(w.name) in top]
        width = max([len(w.name) for w in shown] + [4])
        for w in shown:
            lines.append("    {:<{}} {:<12} {}".format(w.name, width, w.version, w.platform))
        if not verbose and len(shown) < len(outcome.wheels):
            lines.append("    ... and {} dependencies (-v lists them)".format(len(outcome.wheels) - len(shown)))
        binary = [w for w in outcome.wheels if w.glibc]
        if binary:
            newest = max(binary, key=lambda w: w.glibc or (0, 0))
            lines.append("    the newest glibc these wheels need: {}.{} ({})".format(
                newest.glibc[0], newest.glibc[1], newest.name))  # type: ignore[index]
    else:
        lines.append("{}: would need compiling:".format(jp.label))
        for f in outcome.failures:
            if f.package:
                where = "required by {}".format(f.parent) if f.parent else "a requirement of the project"
                versions = "no version has a wheel for this board" if f.versions == "none" else \
                    "versions with a wheel for this board: {}".format(_shorten(f.versions))
                lines.append("    {} ({}): {}".format(f.package, where, versions))
            else:
                lines.append("    no combination of versions with wheels fits; pip says:")
                lines.extend("      " + line for line in f.detail.splitlines())
    if outcome.added:
        lines.append("    added for the board's markers: {}".format(", ".join(outcome.added)))
    if outcome.host_only and verbose:
        lines.append("    resolved only for this machine's markers: {}".format(", ".join(outcome.host_only)))
    if outcome.interpreter == sys.executable and sys.version_info[:2] != tuple(int(x) for x in jp.python.split(".")):
        lines.append("    (resolved by {}: no Python {} was found, so pip applied Python {}.{}'s markers; versions "
                     "may differ from a board's)".format(outcome.interpreter, jp.python, *sys.version_info[:2]))
    else:
        lines.append("    (resolved by {})".format(outcome.interpreter))
    return lines


def _shorten(versions: str, keep: int = 3) -> str:
    """pip's list of versions, its middle left out when long."""
    parts = [v.strip() for v in versions.split(",")]
    if len(parts) <= 2 * keep:
        return ", ".join(parts)
    return "{}, ..., {} ({} versions)".format(", ".join(parts[:keep]), ", ".join(parts[-keep:]), len(parts))


def _parser() -> argparse.ArgumentParser:
    names = [jp.name for jp in JETPACKS]
    parser = argparse.ArgumentParser(prog=PROG, description="Resolve the project's dependencies for each supported "
                                     "JetPack from binary wheels only, and name any that would need compiling.")
    parser.add_argument("--jetpack", nargs="+", choices=names, default=names, metavar="VERSION",
                        help="JetPack releases to check (default: all of {})".format(", ".join(names)))
    parser.add_argument("--extra", nargs="+", metavar="NAME",
                        help="extras of pyproject.toml to include (default: all but {})".format(
                            ", ".join("{} ({})".format(k, v) for k, v in EXCLUDED_EXTRAS.items())))
    parser.add_argument("--requirement", nargs="+", default=[], metavar="REQ",
                        help="more requirements, e.g. --extra test --requirement 'numpy<2' for what "
                        "utility/setup_venv.sh installs beside JetPack's OpenCV")
    parser.add_argument("--index-url", default=DEFAULT_INDEX, help="package index (default: %(default)s)")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every package; tracebacks on errors")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    return guarded(PROG, args.verbose, lambda: _check(args), interrupted="nothing was changed")


def _check(args: argparse.Namespace) -> int:
    requirements, extras = read_requirements(args.pyproject, args.extra)
    requirements += args.requirement
    print("{}{}: {}".format(args.pyproject.name, " with extras " + ", ".join(extras) if extras else "",
                            ", ".join(requirements)))
    status = 0
    for jetpack in JETPACKS:
        if jetpack.name not in args.jetpack:
            continue
        outcome = check(jetpack, requirements, interpreter_for(jetpack), args.index_url)
        print("\n".join(format_outcome(outcome, requirements, args.verbose)), flush=True)
        if not outcome.ok:
            status = EXIT_NEEDS_COMPILING
    return status


if __name__ == "__main__":
    sys.exit(main())
