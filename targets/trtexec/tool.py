"""The trtexec binary: where it is, which TensorRT and GPU it sees, and running it with its log kept.

Where: the task's params.trtexec, else `trtexec` on PATH, else /usr/src/tensorrt/bin/trtexec (where
JetPack and NVIDIA's Debian packages put it). Which TensorRT and GPU: a probe run that asks trtexec
to load an engine file that does not exist. Every release prints its device information and
"TensorRT version:" before it touches the engine, then fails in a second without building anything
(trtexec has no --version, and without a model or engine it stops before the device lines). The
probe is made once per binary and process.

A run writes trtexec's output (stdout and stderr, in order) to a log file as it comes: to
<name>.log.part while it runs, renamed to <name>.log when trtexec ends, however it ends.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from core.child import duration, run_child, signal_name
from core.errors import RunError, TargetUnavailable
from targets.trtexec.logparse import LogFormatError, TrtexecLog, parse_log
from targets.trtexec.releases import Release

log = logging.getLogger("mlmark.trtexec")

DEFAULT_PATH = Path("/usr/src/tensorrt/bin/trtexec")
POINT_AT_IT = "give its path as the task's params.trtexec, or put its folder on PATH"
_PROBE_TIMEOUT_S = 120.0


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(str(path), os.X_OK)


def locate(option: Optional[str], given_as: str = "params.trtexec") -> Path:
    """The trtexec binary a task runs; TargetUnavailable (one line: where it looked, how to point at it).

    given_as: how the user gave option (the task's params.trtexec, or crosscheck's --trtexec).
    """
    if option:
        given = Path(os.path.expanduser(option))
        if os.sep not in option and not given.exists():
            found = shutil.which(option)
            if found:
                return Path(found)
        if _executable(given):
            return given.absolute()
        why = "does not exist" if not given.exists() else "is not an executable file"
        raise TargetUnavailable("target trtexec: {} {} {}; {}".format(given_as, option, why, POINT_AT_IT))
    found = shutil.which("trtexec")
    if found:
        return Path(found)
    if _executable(DEFAULT_PATH):
        return DEFAULT_PATH
    raise TargetUnavailable("target trtexec: trtexec not found (looked at params.trtexec: not given; PATH; {}); "
                            "it comes with TensorRT (JetPack installs it in {}): {}".format(
                                DEFAULT_PATH, DEFAULT_PATH.parent, POINT_AT_IT))


@dataclass(frozen=True)
class Probe:
    """What a trtexec binary reports about itself and the GPU it runs on."""

    path: Path
    release: Release
    device: str
    compute_capability: Tuple[int, int]

    @property
    def version(self) -> str:
        return self.release.text


_PROBES: Dict[Tuple[str, float, int], Probe] = {}


def probe(path: Path) -> Probe:
    """TensorRT release and GPU of a trtexec binary (cached per binary); TargetUnavailable when it cannot tell."""
    st = path.stat()
    cache_key = (str(path), st.st_mtime, st.st_size)
    if cache_key not in _PROBES:
        _PROBES[cache_key] = _probe(path)
    return _PROBES[cache_key]


def _probe(path: Path) -> Probe:
    with tempfile.TemporaryDirectory(prefix="mlmark-trtexec-probe-") as work:
        absent = Path(work) / "no-such.engine"
        try:
            proc = subprocess.run([str(path), "--loadEngine={}".format(absent)], cwd=work, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TargetUnavailable("target trtexec: {} did not answer within {:.0f} s when asked for its TensorRT "
                                    "version and GPU".format(path, _PROBE_TIMEOUT_S)) from None
        except OSError as exc:
            raise TargetUnavailable("target trtexec: cannot run {}: {}; {}".format(path, exc.strerror or exc,
                                                                                  POINT_AT_IT)) from None
    text = proc.stdout.decode("utf-8", "replace")
    try:
        parsed = parse_log(text)
    except (LogFormatError, TargetUnavailable) as exc:
        raise TargetUnavailable("target trtexec: {}: {}".format(path, exc)) from None
    if parsed.device is None or parsed.compute_capability is None:
        tail = last_lines(text, 1)
        raise TargetUnavailable("target trtexec: {} (TensorRT {}) names no GPU{}".format(
            path, parsed.version, ": " + tail[0] if tail else ""))
    assert parsed.release is not None
    log.debug("trtexec %s: TensorRT %s on %s (compute capability %d.%d)", path, parsed.version, parsed.device,
              *parsed.compute_capability)
    return Probe(path=path, release=parsed.release, device=parsed.device,
                 compute_capability=parsed.compute_capability)


def last_lines(text: str, n: int) -> List[str]:
    """The last n non-empty lines (timestamps and severity left in: they say what the line is)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("&&&&")]
    return lines[-n:]


@dataclass
class ToolRun:
    """One trtexec run: its arguments, exit status, output and log file."""

    argv: List[str]
    returncode: int
    text: str
    log_path: Path
    seconds: float

    @property
    def killed_by(self) -> Optional[str]:
        """The signal's name when trtexec died of a signal."""
        return signal_name(-self.returncode) if self.returncode < 0 else None


def log_path(folder: Path, stem: str, what: str) -> Path:
    """folder/<stem>.<what>-<date>-<time>-<pid>.log: a new file for each run."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return folder / "{}.{}-{}-{}.log".format(stem, what, stamp, os.getpid())


def run(argv: Sequence[str], log_file: Path, label: str) -> ToolRun:
    """Run trtexec to its end, its output streamed to log_file; Ctrl-C stops it too."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    part = log_file.with_name(log_file.name + ".part")
    log.debug("%s: %s", label, " ".join(argv))
    with open(str(part), "w", encoding="utf-8") as sink:
        def on_line(line: str) -> None:
            sink.write(line + "\n")
            log.debug("%s", line)

        # Ctrl-C: SIGINT, on which trtexec stops as it does at a terminal.
        ended = run_child(argv, label, on_line, stop_signal=signal.SIGINT)
    os.replace(str(part), str(log_file))
    text = log_file.read_text(encoding="utf-8", errors="replace")
    return ToolRun(argv=list(argv), returncode=ended.returncode, text=text, log_path=log_file, seconds=ended.seconds)


def failure(run_: ToolRun, doing: str, parsed: Optional[TrtexecLog] = None) -> Optional[RunError]:
    """The one-line error for a run that did not pass (killed, or exit status not 0), else None."""
    took = duration(run_.seconds)
    if run_.killed_by:
        oom = " (most likely the out-of-memory killer)" if run_.returncode == -signal.SIGKILL else ""
        return RunError("target trtexec: trtexec was killed by {}{} after {} while {}; log: {}".format(
            run_.killed_by, oom, took, doing, run_.log_path))
    if run_.returncode != 0:
        errors = parsed.last_errors(3) if parsed is not None and parsed.errors else last_lines(run_.text, 3)
        return RunError("target trtexec: {} failed (trtexec exit status {} after {}): {}; log: {}".format(
            doing, run_.returncode, took, " | ".join(errors) or "no error message", run_.log_path))
    return None
