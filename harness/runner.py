"""The load generator: prepares every task, then warms up, times and scores each one.

Targets only load models and run batches; warm-up, the timed loop, statistics, run rules and
scores live here, identical for every target.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core.errors import DatasetError, MLMarkError, ModelError, RunError, TargetUnavailable, UnsupportedTask
from core.stats import LatencyStats, summarize
from harness.config import MIN_VALID_ITERATIONS, Task
from harness.report import sig3
from precision.table import stale_table_warning
from system import power as power_sampling
from system import state as machine_state
from system import state_warning
from targets import get_target
from targets.base import LoadRequest, Session, Target, ToolSummary
from workloads import get_workload
from workloads.base import Workload
from workloads.model_store import ModelFile, resolve_model

log = logging.getLogger("mlmark.run")

_clock = time.perf_counter


@dataclass
class PreparedTask:
    """A validated task with its target, workload and model resolved."""

    task: Task
    target: Target
    workload: Workload
    model: ModelFile


@dataclass
class Measurement:
    """Raw timings of one task's timed loop; statistics and scores are derived from these."""

    iterations: int
    batch: int
    concurrency: int
    wall_s: float
    latencies_s: List[float]
    warmup_iterations: int
    warmup_s: float
    #: when the target timed its own loop (Session.timed_run): its GPU compute times and loop settings
    timed_by_target: bool = False
    gpu_s: Optional[List[float]] = None
    native_info: Dict[str, Any] = field(default_factory=dict)
    #: when an external tool ran and summarized the loop (Session.summary_run): its figures, scored as given
    summary: Optional[ToolSummary] = None
    #: power samples over the timed loop (system.power.Window), when a sampler was given
    power: Any = None

    @property
    def throughput_fps(self) -> float:
        if self.summary is not None:
            return self.summary.throughput_fps
        return self.iterations * self.batch / self.wall_s

    def latency_stats(self) -> LatencyStats:
        if self.summary is not None:
            return LatencyStats(**self.summary.latency_ms)  # type: ignore[arg-type]  # None where not printed
        return summarize(self.latencies_s)

    @property
    def valid(self) -> bool:
        return self.iterations >= MIN_VALID_ITERATIONS


def prepare(tasks: Sequence[Task], skip_unavailable: bool = False) -> List[PreparedTask]:
    """Check every task against its target and resolve its model before any measurement starts.

    skip_unavailable: a task whose target cannot run on this machine (not installed, no GPU, no
    TensorRT) or lacks its hardware or precision here is left out with a warning instead of
    stopping the run; at least one task must remain.
    """
    targets: Dict[str, Target] = {}
    unavailable: Dict[str, TargetUnavailable] = {}
    models: Dict[Tuple[str, Optional[str]], ModelFile] = {}
    warned: set = set()
    prepared = []
    for task in tasks:
        p = task.params
        if task.target not in targets and task.target not in unavailable:
            target = get_target(task.target, task.source)
            try:
                target.check_installed()
            except TargetUnavailable as exc:
                if not skip_unavailable:
                    raise
                unavailable[task.target] = exc
            else:
                targets[task.target] = target
        if task.target in unavailable:
            log.warning("%s: skipped: %s", task.source, unavailable[task.target])
            continue
        target = targets[task.target]
        try:
            target.validate_options(p.options, task.source)
        except TargetUnavailable as exc:  # per task: trtexec's binary comes from the task's options
            if not skip_unavailable:
                raise
            log.warning("%s: skipped: %s", task.source, exc)
            continue
        caps = target.capabilities()
        why = caps.refusal(p.hardware, p.precision, p.batch, p.concurrency, p.mode)
        if why and skip_unavailable and p.precision not in caps.precisions.get(p.hardware, ()):
            log.warning("%s: skipped: target %s cannot run it here: %s%s", task.source, task.target, why,
                        target.unsupported_hint(p.hardware))
            continue
        if why:
            raise UnsupportedTask("{}: target {} cannot run this task: {}{}; it supports {}".format(
                task.source, task.target, why, target.unsupported_hint(p.hardware), caps.describe()))
        workload = get_workload(task.workload)
        if p.mode == "accuracy":
            from workloads.datasets import check_dataset

            try:  # before any task runs: a missing or malformed dataset is one line now, not after task 1
                check_dataset(workload, p.images_per_class, p.max_images)
            except DatasetError as exc:
                raise DatasetError("{}: {}".format(task.source, exc)) from None
        key = (task.workload, p.model)
        if key not in models:
            try:
                models[key] = resolve_model(workload, p.model)
            except ModelError as exc:
                raise ModelError("{}: {}".format(task.source, exc)) from None
        model = models[key]
        if p.precision == "int8" and key not in warned:
            warned.add(key)
            warning = stale_table_warning(task.workload, model.path, model.sha256)
            if warning:  # the target refuses it later; say why early, once per model
                log.warning("%s: %s", task.source, warning)
        batch_dim = model.inputs[0].shape[0]
        if isinstance(batch_dim, int) and batch_dim != p.batch:
            raise ModelError("{}: the model's batch dimension is fixed at {}, the task asks batch {}; "
                             "use a model with a dynamic batch dimension".format(task.source, batch_dim, p.batch))
        try:
            target.preflight(load_request(workload, model, p.hardware, p.precision, p.batch, p.concurrency, p.options))
        except MLMarkError as exc:
            raise type(exc)("{}: {}".format(task.source, exc)) from None
        prepared.append(PreparedTask(task=task, target=target, workload=workload, model=model))
    if not prepared and tasks:
        raise TargetUnavailable("none of the {} task(s) can run on this machine (see the warnings above)".format(
            len(tasks)))
    return prepared


def load(pt: PreparedTask) -> Session:
    """Have the task's target load its model."""
    p = pt.task.params
    log.info("%s: loading %s on %s", pt.task.source, pt.model.path.name, pt.task.target)
    return pt.target.load(load_request(pt.workload, pt.model, p.hardware, p.precision, p.batch, p.concurrency,
                                       p.options))


def load_request(workload: Workload, model: ModelFile, hardware: str, precision: str, batch: int,
                 concurrency: int = 1, options: Optional[Mapping[str, Any]] = None) -> LoadRequest:
    """What a target needs to load `model` of `workload` (the one way benchmarks and the harness build it)."""
    return LoadRequest(model_path=model.path, workload=workload.name, hardware=hardware, precision=precision,
                       batch=batch, concurrency=concurrency, options=dict(options or {}),
                       input_shapes=workload.input_shapes(model.inputs, batch),
                       host_postprocess=workload.has_postprocess)


def host_postprocess(pt: PreparedTask, session: Session) -> Optional[Callable[[Sequence[np.ndarray]], Any]]:
    """The post-processing that belongs in the timed region (SSD box decoding and NMS), if the workload has one."""
    if not pt.workload.has_postprocess:
        return None
    names, to_host = session.output_names(), session.to_host
    return lambda outputs: pt.workload.postprocess(to_host(outputs), names)


@contextlib.contextmanager
def _sampling(power: Optional[power_sampling.PowerSampler], into: Dict[str, Any]) -> Iterator[None]:
    """Power sampling around exactly the timed loop (nothing when no sampler); the window goes into `into`."""
    if power is None:
        yield
        return
    power.start()
    try:
        yield
    finally:
        into["power"] = power.stop()


def measure(pt: PreparedTask, session: Session,
            power: Optional[power_sampling.PowerSampler] = None) -> Measurement:
    """Warm up, then run the timed iterations (sampling power during them when given a sampler); raw timings."""
    p = pt.task.params
    if session.has_summary_run:
        return measure_summary(pt, session)
    inputs = session.stage(pt.workload.make_inputs(session.input_specs(), p.batch))
    post = host_postprocess(pt, session)
    if session.has_timed_run and post is None:
        return measure_native(pt, session, power)
    warm_n, warm_s = run_loop(session, inputs, p.concurrency, post,
                              count=max(p.warmup_iterations, p.concurrency), seconds=p.warmup_s)
    log.info("%s: warm-up %d iterations in %.2f s; timing %d iterations", pt.task.source, warm_n, warm_s,
             p.iterations)
    sampled: Dict[str, Any] = {}
    with _sampling(power, sampled):
        latencies, wall = timed_loop(session, inputs, p.iterations, p.concurrency, post)
    return Measurement(iterations=p.iterations, batch=p.batch, concurrency=p.concurrency, wall_s=wall,
                       latencies_s=latencies, warmup_iterations=warm_n, warmup_s=warm_s, power=sampled.get("power"))


# Warm-up chunks of a target's own loop: long enough that the gaps between them do not matter, short
# enough that the warm-up ends close to its configured time.
_NATIVE_CHUNK_S = 0.25
_NATIVE_MAX_CHUNK = 1 << 20


def measure_native(pt: PreparedTask, session: Session,
                   power: Optional[power_sampling.PowerSampler] = None) -> Measurement:
    """Warm-up and timed loop run by the target's library (Session.timed_run) on the staged batch.

    The harness keeps the run rules: it decides the warm-up (chunks until both the warm-up seconds
    and iterations are reached) and derives every statistic and score from the raw times returned.
    """
    p = pt.task.params
    warm_n, warm_s = native_warmup(session, count=max(p.warmup_iterations, p.concurrency), seconds=p.warmup_s)
    log.info("%s: warm-up %d iterations in %.2f s; timing %d iterations in the target's loop", pt.task.source,
             warm_n, warm_s, p.iterations)
    sampled: Dict[str, Any] = {}
    with _sampling(power, sampled):
        timing = session.timed_run(p.iterations, 0)
    latencies = [float(t) for t in timing.latencies_s]
    if len(latencies) != p.iterations or not timing.wall_s > 0:
        raise RunError("{}: target {} returned {} latencies and wall time {} for {} iterations".format(
            pt.task.source, pt.task.target, len(latencies), timing.wall_s, p.iterations))
    gpu = [float(t) for t in timing.gpu_s] if timing.gpu_s is not None else None
    return Measurement(iterations=p.iterations, batch=p.batch, concurrency=p.concurrency, wall_s=float(timing.wall_s),
                       latencies_s=latencies, warmup_iterations=warm_n, warmup_s=warm_s, timed_by_target=True,
                       gpu_s=gpu, native_info=dict(timing.info), power=sampled.get("power"))


def measure_summary(pt: PreparedTask, session: Session) -> Measurement:
    """Warm-up, timed loop and statistics of an external tool the target drives (Session.summary_run).

    The tool warms up in its own process and prints statistics, not per-inference times: the
    harness passes its warm-up and iteration count and takes the tool's figures as the scores.
    """
    p = pt.task.params
    s = session.summary_run(p.iterations, max(p.warmup_iterations, p.concurrency), p.warmup_s)
    if not s.iterations > 0 or not s.wall_s > 0 or not s.throughput_fps > 0 or s.latency_ms.get("p95_ms") is None:
        raise RunError("{}: target {} returned {} iterations, wall time {}, throughput {} and p95 {}".format(
            pt.task.source, pt.task.target, s.iterations, s.wall_s, s.throughput_fps, s.latency_ms.get("p95_ms")))
    log.info("%s: %d timed iterations after %d warm-up iterations in %.2f s, timed and summarized by the target's "
             "tool", pt.task.source, s.iterations, s.warmup_iterations, s.warmup_s)
    return Measurement(iterations=s.iterations, batch=p.batch, concurrency=p.concurrency, wall_s=s.wall_s,
                       latencies_s=[], warmup_iterations=s.warmup_iterations, warmup_s=s.warmup_s,
                       timed_by_target=True, native_info=dict(s.info), summary=s)


def native_warmup(session: Session, count: int, seconds: float) -> Tuple[int, float]:
    """Untimed chunks of the target's loop until at least `count` iterations ran and `seconds` passed."""
    start = _clock()
    done = 0
    chunk = max(1, min(count, 16))
    while True:
        t0 = _clock()
        session.timed_run(chunk, 0)
        now = _clock()
        done += chunk
        left_n, left_s = count - done, seconds - (now - start)
        if left_n <= 0 and left_s <= 0:
            return done, now - start
        per_iteration = max((now - t0) / chunk, 1e-9)
        by_time = int(min(_NATIVE_CHUNK_S, max(left_s, 0.0)) / per_iteration)
        chunk = max(1, min(max(left_n, by_time), _NATIVE_MAX_CHUNK))


def timed_loop(session: Session, inputs: Any, iterations: int, concurrency: int,
               post: Optional[Callable[[Sequence[np.ndarray]], Any]] = None) -> Tuple[List[float], float]:
    """Run `iterations` batches over `concurrency` slots; per-inference times and loop wall time (s)."""
    if concurrency == 1:
        # The plain loop: nothing between two inferences but two clock reads and a list store.
        run, clock = session.run, _clock
        latencies = [0.0] * iterations
        start = clock()
        for i in range(iterations):
            t0 = clock()
            out = run(0, inputs)
            if post is not None:
                post(out)
            latencies[i] = clock() - t0
        return latencies, clock() - start
    per_slot: List[List[float]] = [[] for _ in range(concurrency)]
    wall = _threaded(session, inputs, concurrency, post, count=iterations, seconds=None, record=per_slot)
    return [t for slot in per_slot for t in slot], wall


def run_loop(session: Session, inputs: Any, concurrency: int,
             post: Optional[Callable[[Sequence[np.ndarray]], Any]], count: int, seconds: float) -> Tuple[int, float]:
    """Untimed iterations until at least `count` ran and `seconds` passed (warm-up); returns both."""
    done = [0] * concurrency
    wall = _threaded(session, inputs, concurrency, post, count=count, seconds=seconds, record=None, done=done)
    return sum(done), wall


def _threaded(session: Session, inputs: Any, concurrency: int,
              post: Optional[Callable[[Sequence[np.ndarray]], Any]], count: int, seconds: Optional[float],
              record: Optional[List[List[float]]], done: Optional[List[int]] = None) -> float:
    """One thread per slot, sharing an iteration counter; returns the wall time from release to last finish."""
    counter = itertools.count()
    stop = threading.Event()
    errors: List[BaseException] = []
    deadline = [0.0]
    barrier = threading.Barrier(concurrency + 1)

    def worker(slot: int) -> None:
        run, clock = session.run, _clock
        times = record[slot] if record is not None else None
        try:
            barrier.wait()
            while not stop.is_set():
                i = next(counter)
                if i >= count and (seconds is None or clock() >= deadline[0]):
                    break
                t0 = clock()
                out = run(slot, inputs)
                if post is not None:
                    post(out)
                if times is not None:
                    times.append(clock() - t0)
                if done is not None:
                    done[slot] += 1
        except BaseException as exc:  # surfaced in the main thread with the target's message
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(concurrency)]
    for t in threads:
        t.start()
    start = _clock()
    deadline[0] = start + (seconds or 0.0)
    try:
        barrier.wait()
        for t in threads:
            while t.is_alive():
                t.join(0.1)  # short joins keep Ctrl-C responsive
    except KeyboardInterrupt:
        # Stop the slots and wait for the inferences in flight: a process that exits while a target's
        # threads are inside its library can abort ("terminate called without an active exception").
        stop.set()
        barrier.abort()
        _join_all(threads)
        raise
    wall = _clock() - start
    if errors:
        raise errors[0]
    return wall


def _join_all(threads: Sequence[threading.Thread]) -> None:
    """Wait for every thread to end, even through a second Ctrl-C (the slots stop after one inference)."""
    for t in threads:
        while t.is_alive():
            try:
                t.join(0.1)
            except KeyboardInterrupt:
                log.warning("stopping: waiting for the inferences in flight to finish")


@contextlib.contextmanager
def _target_errors(pt: PreparedTask, doing: str) -> Iterator[None]:
    """Turn a target library's own exception into one line naming the task."""
    try:
        yield
    except (MLMarkError, KeyboardInterrupt):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunError("{}: target {} failed while {}: {}".format(pt.task.source, pt.task.target, doing,
                                                                  first)) from exc


def open_power(prepared: Sequence[PreparedTask], record: Any) -> Optional[power_sampling.PowerSampler]:
    """Record the machine's state once (warning once when a Jetson is not set for maximum performance),
    then open the run's power sampler and measure the idle baseline, before any model is loaded."""
    state = machine_state()
    warning = state_warning(state)
    if warning:
        log.warning("%s", warning)
        state["warning"] = warning
    record.system["state"] = state
    if all(pt.task.params.mode == "accuracy" for pt in prepared):
        return None
    sampler, info = power_sampling.open_for_run()
    record.system["power"] = info
    if sampler is None:
        log.info("power: not measured (%s)", "; ".join(info.get("unavailable", [])))
    else:
        log.info("power: %s at %g Hz, idle %s W", info["source"], info["rate_hz"], sig3(info["idle"].get("average_w")))
    return sampler


def run_tasks(prepared: Sequence[PreparedTask], record: Any, out: Any) -> None:
    """Run each task and rewrite the results file after each one, so a later failure loses nothing.

    A task that fails is recorded with its error (never a score) and the tasks after it as not run,
    then its error is raised; Ctrl-C or SIGTERM records the run as interrupted, this task and the
    later ones as not run.
    """

    power = open_power(prepared, record)
    idle_w = ((record.system.get("power") or {}).get("idle") or {}).get("average_w")
    try:
        _run_tasks(prepared, record, out, power, idle_w)
    finally:
        if power is not None:
            power.source.close()


def _run_tasks(prepared: Sequence[PreparedTask], record: Any, out: Any,
               power: Optional[power_sampling.PowerSampler], idle_w: Optional[float]) -> None:
    from harness import results as res

    for i, pt in enumerate(prepared):
        task = pt.task
        log.info("%s: %s", task.source, task.label)
        started = res.now()
        try:
            result = run_task(pt, started, power, idle_w)
        except MLMarkError as exc:
            record.failed.append(dict(source=task.source, target=task.target, workload=task.workload,
                                      params=task.params.to_dict(), error=str(exc), started=started,
                                      finished=res.now()))
            record.not_run = [p.task.source for p in prepared[i + 1:]]
            res.save(record, out)
            raise
        except KeyboardInterrupt:
            record.interrupted = True
            record.not_run = [p.task.source for p in prepared[i:]]
            res.save(record, out)
            raise
        record.tasks.append(result)
        res.save(record, out)
        log.info("%s: %s %s %s", task.source, result.metric, sig3(result.score), result.units)


def run_task(pt: PreparedTask, started: str, power: Optional[power_sampling.PowerSampler] = None,
             idle_w: Optional[float] = None) -> Any:
    """Load the task's model, measure or score it (sampling power over the timed loop when given a sampler),
    and return its TaskResult with the machine's state before and after."""
    from harness import results as res
    from harness.performance import performance_result

    task, p = pt.task, pt.task.params
    before = machine_state()
    with _target_errors(pt, "loading the model"):
        session = load(pt)
    with session, _target_errors(pt, "running"):
        post = "host (harness, numpy)" if pt.workload.has_postprocess else None
        base = dict(source=task.source, target=task.target, workload=task.workload, params=p.to_dict(),
                    model=pt.model.to_dict(), target_info=dict(session.info), versions=pt.target.versions(),
                    postprocess=post, started=started)
        if p.mode == "accuracy":
            from harness.accuracy import run_accuracy

            result = run_accuracy(pt, session, base)
        else:
            m = measure(pt, session, power)
            result = performance_result(base, p, m)
            if m.timed_by_target:
                result.target_info["timed_loop"] = "the target's own library (no Python per inference)"
                result.target_info.update(m.native_info)
                if m.gpu_s:
                    result.target_info["gpu_compute_ms"] = summarize(m.gpu_s).to_dict()
            if m.power is not None:
                result.power = power_sampling.summarize(m.power, inferences=m.iterations * m.batch, wall_s=m.wall_s,
                                                        idle_w=idle_w)
    if session.invalid_reason:  # e.g. a target's test double: never a valid score, whatever was measured
        result.valid = False
        result.notes.append(session.invalid_reason)
    result.system_state = {"before": before, "after": machine_state()}
    result.finished = res.now()
    return result
