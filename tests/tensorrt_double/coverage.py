"""Line coverage of the tensorrt target by its tests on the TensorRT test double (needs an NVIDIA GPU).

    MLMARK_CUDA_ARCHS=90 python -m tests.tensorrt_double.coverage [--json PATH] [--no-build] [--keep] [-- PYTEST ARGS]

Builds the double and a native library compiled with --coverage for each release the tests use (8.2, 8.6,
10.3), runs the GPU tests and the TensorRT CPU tests under coverage.py (child processes too: engine builds
run in one) and then prints:

- targets/tensorrt/*.py: coverage.py's line coverage;
- cpp_environment/src/tensorrt/*.cpp: gcov's, the releases merged: each release compiles only its own path,
  so a line counts once, as covered when any release's build ran it;

with the lines that never ran, and writes the figures as JSON. Exit status 0 when both reach 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from tests.tensorrt_double import build as dbuild

REPO = dbuild.REPO
OUT = dbuild.DEFAULT_OUT / "coverage"
TARGET = 90.0
PY_SOURCES = REPO / "targets" / "tensorrt"
CPP_SOURCES = REPO / "cpp_environment" / "src" / "tensorrt"
TESTS = ["tests/test_tensorrt_double_gpu.py", "tests/test_tensorrt_target.py", "tests/test_tensorrt_cache.py",
         "tests/test_tensorrt_precision.py", "tests/test_tensorrt_selftest.py"]
RELEASES = ("10.3", "8.6", "8.2")


def _ranges(lines: Sequence[int]) -> str:
    """1,2,3,7 -> '1-3, 7'."""
    spans: List[List[int]] = []
    for n in sorted(lines):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else "{}-{}".format(a, b) for a, b in spans)


def run_tests(pytest_args: Sequence[str]) -> int:
    """The tests under coverage.py, with every Python process started by them measured too."""
    site = OUT / "site"
    site.mkdir(parents=True, exist_ok=True)
    # Python runs sitecustomize at startup: with COVERAGE_PROCESS_START set, it starts coverage in the test run and
    # in each process the tests start (engine-build children, the command line).
    (site / "sitecustomize.py").write_text("import coverage\ncoverage.process_startup()\n")
    rc = OUT / "coveragerc"
    rc.write_text("[run]\nparallel = True\nconcurrency = thread\ndata_file = {}\nsource =\n    {}\n".format(
        OUT / ".coverage", PY_SOURCES))
    env = dict(os.environ, MLMARK_GPU_TESTS="1", MLMARK_TRT_DOUBLE_COVERAGE="1", COVERAGE_PROCESS_START=str(rc))
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                                   if p])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + (list(pytest_args) or TESTS)
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=str(REPO), env=env).returncode


def python_coverage() -> Tuple[float, Dict[str, Dict[str, object]]]:
    """Combined line coverage of targets/tensorrt/*.py, and per file its statements and missing lines."""
    import coverage

    cov = coverage.Coverage(data_file=str(OUT / ".coverage"), config_file=str(OUT / "coveragerc"))
    cov.load()  # what earlier parts combined (--keep); nothing when starting afresh
    try:
        cov.combine(data_paths=[str(OUT)])
    except Exception as exc:  # noqa: BLE001 - coverage's NoDataError (its module moved between versions)
        if type(exc).__name__ != "NoDataError":
            raise
    cov.save()
    files: Dict[str, Dict[str, object]] = {}
    total = covered = 0
    for path in sorted(PY_SOURCES.glob("*.py")):
        _, statements, _, missing, _ = cov.analysis2(str(path))
        files[path.name] = {"lines": len(statements), "covered": len(statements) - len(missing),
                            "missing": _ranges(missing)}
        total += len(statements)
        covered += len(statements) - len(missing)
    return (100.0 * covered / total if total else 0.0), files


def _gcov(objects: Path, work: Path) -> Dict[str, Tuple[Set[int], Set[int]]]:
    """(executable lines, executed lines) per source file of src/tensorrt, from one build's gcov data."""
    out: Dict[str, Tuple[Set[int], Set[int]]] = {}
    notes = sorted(objects.glob("*.cpp.gcno"))
    if not notes:
        return out
    for stale in work.glob("*.gcov"):
        stale.unlink()
    # With no .gcda (the file never ran in this build) gcov reports every line as not executed.
    subprocess.run(["gcov", "-p"] + [str(n) for n in notes], cwd=str(work), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    for report in work.glob("*.gcov"):
        lines = report.read_text(errors="replace").splitlines()
        source = lines[0].split("Source:", 1)[-1] if lines else ""
        if Path(source).parent.resolve() != CPP_SOURCES.resolve() or not source.endswith(".cpp"):
            continue
        executable, executed = set(), set()
        for line in lines[1:]:
            m = re.match(r"\s*([^:]+):\s*(\d+):", line)
            if not m:
                continue
            count, number = m.group(1).strip(), int(m.group(2))
            if count == "-" or number == 0:
                continue
            executable.add(number)
            if count not in ("#####", "=====") and not count.startswith("$"):
                executed.add(number)
        out[Path(source).name] = (executable, executed)
    return out


def cpp_coverage(root: Path = dbuild.DEFAULT_OUT) -> Tuple[float, Dict[str, Dict[str, object]]]:
    """Line coverage of src/tensorrt/*.cpp, the releases' coverage builds under root merged."""
    merged: Dict[str, Tuple[Set[int], Set[int]]] = {}
    builds: List[str] = []
    with tempfile.TemporaryDirectory(prefix="mlmark-gcov-") as tmp:
        for release in RELEASES:
            objects = root / "native-{}-coverage".format(release) / "CMakeFiles" / "mlmark_native.dir" / "src" / "tensorrt"
            found = _gcov(objects, Path(tmp))
            if found:
                builds.append(release)
            for name, (executable, executed) in found.items():
                old = merged.get(name, (set(), set()))
                merged[name] = (old[0] | executable, old[1] | executed)
    files: Dict[str, Dict[str, object]] = {}
    total = covered = 0
    for name, (executable, executed) in sorted(merged.items()):
        files[name] = {"lines": len(executable), "covered": len(executed & executable),
                       "missing": _ranges(sorted(executable - executed))}
        total += len(executable)
        covered += len(executed & executable)
    if not builds:
        raise SystemExit("no coverage build under {}: run the tests first".format(root))
    return (100.0 * covered / total if total else 0.0), files


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: List[str] = []
    if "--" in args:
        pytest_args = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    parser = argparse.ArgumentParser(prog="python -m tests.tensorrt_double.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=OUT / "coverage.json")
    parser.add_argument("--no-build", action="store_true", help="use the coverage builds as they are")
    parser.add_argument("--keep", action="store_true",
                        help="add to the data of earlier runs instead of starting afresh (tests run in several parts)")
    parser.add_argument("--report-only", action="store_true", help="report the data of earlier runs, run nothing")
    opts = parser.parse_args(args)
    if not shutil.which("gcov"):
        print("coverage: gcov (from the system's gcc) is needed", file=sys.stderr)
        return 2
    if not opts.report_only:
        if OUT.exists() and not opts.keep:
            shutil.rmtree(str(OUT))
        OUT.mkdir(parents=True, exist_ok=True)
        for release in RELEASES:
            if not opts.no_build:
                print("building the TensorRT test double and a --coverage native library for {}".format(release),
                      flush=True)
                dbuild.build_double(release, coverage=True)
            if not opts.keep:
                for stale in (dbuild.DEFAULT_OUT / "native-{}-coverage".format(release)).rglob("*.gcda"):
                    stale.unlink()
        status = run_tests(pytest_args)
        print("tests exited with status {}".format(status), flush=True)
    py_total, py_files = python_coverage()
    cpp_total, cpp_files = cpp_coverage()
    print("\nLine coverage by the tests on the TensorRT test double (target {:.0f} %)".format(TARGET))
    row = "  {:<50} {:>6} {:>8} {:>7}  {}"
    print(row.format("file", "lines", "covered", "%", "lines never run"))
    for folder, files in (("targets/tensorrt/", py_files), ("cpp_environment/src/tensorrt/", cpp_files)):
        for name, f in files.items():
            lines, covered = int(str(f["lines"])), int(str(f["covered"]))
            print(row.format(folder + name, lines, covered,
                             "{:.1f}".format(100.0 * covered / lines if lines else 100.0), f["missing"]))
    print("\ntargets/tensorrt/*.py                  {:.1f} %".format(py_total))
    print("cpp_environment/src/tensorrt/*.cpp     {:.1f} %  (releases 8.2, 8.6 and 10.3 merged)".format(cpp_total))
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps({"python_percent": py_total, "cpp_percent": cpp_total, "target_percent": TARGET,
                                     "python": py_files, "cpp": cpp_files}, indent=1))
    print("written to {}".format(opts.json))
    return 0 if py_total >= TARGET and cpp_total >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
