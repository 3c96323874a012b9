"""The measurement queue: one measurement at a time, a bounded number waiting, and what became of each.

Concurrent measurements disturb each other's numbers, so one worker takes jobs in order. The bound
counts the jobs waiting and the uploads still arriving (each holds a place from its first byte, so
that neither the disk nor the queue can be filled by clients that all start at once); beyond it a
client is told to come back later, with an estimate from the recent measurements' durations.
Finished jobs are kept for their clients to collect, the oldest dropped beyond a bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Dict, Optional

log = logging.getLogger("mlmark.serve")

#: Finished jobs kept for their clients to collect.
KEEP_FINISHED = 1000
#: Retry-After when no measurement has finished yet to estimate from, in seconds.
DEFAULT_ESTIMATE_S = 30.0
MAX_RETRY_AFTER_S = 3600

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class QueueFull(Exception):
    """No place left: the client should retry after retry_after seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the queue is full")
        self.retry_after = retry_after


@dataclass
class Job:
    """One measurement: the task as the child runs it, and its outcome."""

    task: Dict[str, Any]  # {"target", "workload", "params"}, params.model the stored upload
    source: str
    model_sha256: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    result: Optional[Dict[str, Any]] = None
    system: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def to_dict(self, position: Optional[int] = None) -> Dict[str, Any]:
        """What GET /measurements/{id} answers."""
        out: Dict[str, Any] = {"id": self.id, "state": self.state, "source": self.source,
                               "model_sha256": self.model_sha256, "target": self.task.get("target"),
                               "workload": self.task.get("workload"),
                               "timing": {"created": self.created, "started": self.started, "finished": self.finished,
                                          "queued_s": _span(self.created, self.started),
                                          "run_s": _span(self.started, self.finished)}}
        if position is not None:
            out["position"] = position
        if self.state == DONE:
            out["result"], out["system"] = self.result, self.system
        if self.error is not None:
            out["error"] = self.error
        return out


def _span(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(b - a, 3) if a is not None and b is not None else None


class Reservation:
    """A place in the queue held by an upload that is still arriving; released unless submitted."""

    def __init__(self, queue: "JobQueue") -> None:
        self._queue = queue
        self.open = True

    def release(self) -> None:
        if self.open:
            self.open = False
            self._queue._reserved -= 1


class JobQueue:
    """Bounded FIFO of jobs with one worker; `run(job)` measures a job and fills in its outcome."""

    def __init__(self, bound: int, run: Callable[[Job], Awaitable[None]],
                 on_finished: Callable[[Job], None] = lambda job: None) -> None:
        self.bound = bound
        self._run = run
        self._on_finished = on_finished
        self._waiting: Deque[Job] = collections.deque()
        self._jobs: Dict[str, Job] = {}
        self._finished: Deque[str] = collections.deque()
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self.running: Optional[Job] = None
        self._durations: Deque[float] = collections.deque(maxlen=10)
        self.counts = {DONE: 0, FAILED: 0, CANCELLED: 0, "refused": 0}

    # -- places ---------------------------------------------------------------------------------

    def reserve(self) -> Reservation:
        """A place for an upload about to arrive; QueueFull beyond the bound."""
        if len(self._waiting) + self._reserved >= self.bound:
            self.counts["refused"] += 1
            raise QueueFull(self.retry_after())
        self._reserved += 1
        return Reservation(self)

    def refusal(self) -> Optional[int]:
        """Retry-After seconds if a new upload would be refused now (counted as refused), else None."""
        if len(self._waiting) + self._reserved < self.bound:
            return None
        self.counts["refused"] += 1
        return self.retry_after()

    def submit(self, reservation: Reservation, job: Job) -> int:
        """Queue the job in the place its upload held; its position (1: next)."""
        reservation.release()
        self._waiting.append(job)
        self._jobs[job.id] = job
        self._wakeup.set()
        return len(self._waiting)

    def retry_after(self) -> int:
        """Seconds until a place is likely to be free: the recent mean duration times the jobs ahead."""
        mean = sum(self._durations) / len(self._durations) if self._durations else DEFAULT_ESTIMATE_S
        ahead = len(self._waiting) + self._reserved + (1 if self.running else 0)
        return int(min(MAX_RETRY_AFTER_S, max(1.0, mean * max(1, ahead) / max(1, self.bound))))

    # -- jobs -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> Optional[int]:
        """1 for the next job to run, 0 for the running one, None once finished."""
        if job is self.running:
            return 0
        try:
            return self._waiting.index(job) + 1
        except ValueError:
            return None

    def cancel(self, job: Job) -> None:
        """Take a waiting job out of the queue, or ask the running one to stop (its child is ended)."""
        if job.state == QUEUED and job in self._waiting:
            self._waiting.remove(job)
            self._finish(job, CANCELLED, "cancelled by the client before it ran")
        elif job.state == RUNNING:
            job.cancel.set()

    def status(self) -> Dict[str, Any]:
        """What /health reports of the queue."""
        return {"waiting": len(self._waiting), "uploading": self._reserved, "running": 1 if self.running else 0,
                "bound": self.bound, "retry_after_s": self.retry_after(), "finished": dict(self.counts)}

    # -- the worker -----------------------------------------------------------------------------

    async def work(self) -> None:
        """Run jobs one at a time, for ever (cancelled when the server stops)."""
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            job = self._waiting.popleft()
            self.running, job.state, job.started = job, RUNNING, time.time()
            log.info("measurement %s: started (%s %s, %s)", job.id[:8], job.task.get("target"),
                     job.task.get("workload"), job.source)
            try:
                await self._run(job)
            except asyncio.CancelledError:
                self._finish(job, FAILED, "the server stopped during the measurement")
                raise
            except Exception as exc:  # a fault of the server's own code: this job fails, the server goes on
                log.exception("measurement %s: internal error", job.id[:8])
                self._finish(job, FAILED, "internal error of mlmark serve: {}: {}".format(type(exc).__name__, exc))
            else:
                if job.cancel.is_set():
                    self._finish(job, CANCELLED, "cancelled by the client while it ran")
                else:
                    self._finish(job, DONE if job.error is None else FAILED, job.error)
            finally:
                self.running = None

    def _finish(self, job: Job, state: str, error: Optional[str]) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        if state == DONE and job.started is not None:
            self._durations.append(job.finished - job.started)
        self.counts[state] += 1
        job.done.set()
        self._finished.append(job.id)
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)
        self._on_finished(job)
        log.info("measurement %s: %s%s", job.id[:8], state, ": " + error if error else "")
