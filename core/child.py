"""Child processes the user waits for (an engine build, trtexec): run to the end, their output relayed line
by line under an elapsed-time line, and never left running when the parent is interrupted."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

from core.progress import elapsed

# How long an interrupted child gets to stop by itself before it is killed.
GRACE_S = 5.0


@dataclass
class ChildResult:
    """How a child ended."""

    returncode: int  # negative: killed by that signal
    seconds: float

    @property
    def killed_by(self) -> Optional[str]:
        """The signal's name when the child died of a signal, else None."""
        return signal_name(-self.returncode) if self.returncode < 0 else None

    @property
    def took(self) -> str:
        """The run time as error lines say it."""
        return duration(self.seconds)


def run_child(argv: Sequence[str], label: str, on_line: Callable[[str], None], cwd: Optional[str] = None,
              env: Optional[Dict[str, str]] = None, stop_signal: int = signal.SIGTERM,
              on_start: Optional[Callable[["subprocess.Popen[str]"], None]] = None) -> ChildResult:
    """Run argv (stdout and stderr together) to its end; on_line(line) for each line of output, drawn above a
    `label: 01:23 elapsed` line on a terminal. An interruption (Ctrl-C) sends stop_signal, then kills after
    GRACE_S, and is raised once the child is gone."""
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, env=env, universal_newlines=True, errors="replace", bufsize=1)
    if on_start is not None:
        on_start(proc)
    with elapsed(label) as tick:
        def relay() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tick(lambda: on_line(line))

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                tick(None)
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if proc.poll() is None:  # interrupted: the child must not go on without its parent
                proc.send_signal(stop_signal)
                try:
                    proc.wait(timeout=GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(timeout=5.0)
    return ChildResult(returncode=proc.returncode, seconds=time.monotonic() - started)


def signal_name(number: int) -> str:
    """SIGKILL for 9, as error lines name a signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal {}".format(number)


def duration(seconds: float) -> str:
    """'42 s', or '3:05 min' from two minutes on."""
    s = int(round(seconds))
    return "{} s".format(s) if s < 120 else "{}:{:02d} min".format(s // 60, s % 60)
