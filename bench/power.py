"""Power sampler cost: the harness's timed loop with the sampler running against without, in the same run.

Turns of the two alternate (--turn-s seconds each, the order rotating) on one ONNX Runtime CPU
session, so background load hits both alike; a third turn without sampling (the control) shows how
far two identical loops differ on this machine, i.e. how small a cost the run can resolve. The sampler reads the first power source this machine
has (system.power.open_source); where it has none, it reads the INA3221 rails of a recorded Jetson
tree (tests/fixtures/sysfs/orin-nano): the same files-and-threads work, without a real sensor.
Goal: throughput with sampling >= 0.99 x without, judged on the median over pairs of adjacent turns
(a burst of background load that hits one turn moves the totals, not the median); the totals'
ratio, the control's median and the sampler thread's own CPU time are printed beside it.

    python bench/power.py [--workload mobilenet] [--batches 1 8] [--turns 40] [--turn-s 1.0]
                          [--rate 20] [--source auto|ina3221|nvml-energy|nvml-power|tegrastats] [--no-control]
                          [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from core.fileio import atomic_write_json
from harness.results import now
from harness.runner import load_request, timed_loop
from system.info import system_info
from system.power import DEFAULT_RATE_HZ, SOURCES, PowerSampler, Source, open_source
from targets import get_target
from workloads import get_workload
from workloads.model_store import resolve_model

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "sysfs" / "orin-nano"
GOAL = 0.99


def pick_source(name: str) -> Source:
    """The requested source, or the first this machine has, or the recorded Jetson tree's INA3221 rails."""
    source, reasons = open_source(only=None if name == "auto" else name)
    if source is None and name == "auto":
        source, more = open_source(str(FIXTURE), only="ina3221")
        reasons += more
        if source is not None:
            source.measures = "recorded Jetson tree {} (no power sensor on this machine)".format(FIXTURE)
    if source is None:
        raise SystemExit("no power source: " + "; ".join(reasons))
    return source


def bench(workload_name: str, batch: int, turns: int, turn_s: float, source: Source, rate: float,
          control: bool = True) -> Dict[str, Any]:
    workload = get_workload(workload_name)
    model = resolve_model(workload)
    session = get_target("onnxruntime").load(load_request(workload, model, "cpu", "fp32", batch))
    inputs = workload.make_inputs(session.input_specs(), batch)
    timed_loop(session, inputs, 5, 1)  # warm-up
    _, wall = timed_loop(session, inputs, 20, 1)
    # Turns of about turn_s seconds, so that each spans turn_s x rate samples whatever the model's speed.
    turn = max(3, int(round(turn_s * 20 / wall)))
    sampler = PowerSampler(source, rate)
    walls = {"off": 0.0, "on": 0.0, "control": 0.0}
    samples, busy, cpu = 0, 0.0, 0.0
    pair_ratios: List[float] = []
    control_ratios: List[float] = []
    errors: List[str] = []
    sides = ["off", "on", "control"] if control else ["off", "on"]
    for r in range(turns):
        pair = {}
        # Rotate the order so that no side always follows another.
        for who in sides[r % len(sides):] + sides[:r % len(sides)]:
            if who == "on":
                sampler.start()
            _, wall = timed_loop(session, inputs, turn, 1)
            if who == "on":
                window = sampler.stop()
                samples += len(window.samples)
                busy += window.busy_s
                cpu += window.thread_cpu_s
                errors += [window.error] if window.error else []
            walls[who] += wall
            pair[who] = wall
        pair_ratios.append(pair["off"] / pair["on"])  # fps on / fps off over the same number of iterations
        if control:
            control_ratios.append(pair["off"] / pair["control"])
    session.close()
    n = turn * turns
    off_fps, on_fps = n * batch / walls["off"], n * batch / walls["on"]
    ratio = statistics.median(pair_ratios)
    return {"workload": workload_name, "batch": batch, "iterations": n, "turn": turn, "turns": turns,
            "rate_hz": rate, "samples": samples, "achieved_hz": round(samples / walls["on"], 2), "off_fps": off_fps,
            "on_fps": on_fps, "total_ratio": on_fps / off_fps, "median_pair_ratio": ratio,
            "control_median_ratio": statistics.median(control_ratios) if control else None,
            "sampler_busy_pct": 100.0 * busy / walls["on"], "sampler_cpu_pct": 100.0 * cpu / walls["on"],
            "pass": ratio >= GOAL and not errors, "errors": sorted(set(errors))}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="mobilenet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--turns", type=int, default=40, help="turns of each side (default 40)")
    ap.add_argument("--turn-s", type=float, default=1.0, help="seconds a turn lasts (default 1)")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="sampling rate in Hz (default: the harness's)")
    ap.add_argument("--source", default="auto", choices=("auto",) + SOURCES)
    ap.add_argument("--no-control", action="store_true", help="leave out the control turns (a third faster)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    source = pick_source(args.source)
    try:
        rows = [bench(args.workload, b, args.turns, args.turn_s, source, args.rate, not args.no_control)
                for b in args.batches]
    finally:
        source.close()
    print("source: {} ({})".format(source.name, source.measures))
    print("{:<10} {:>5} {:>6} {:>7} {:>8} {:>7} {:>10} {:>10} {:>8} {:>8} {:>8}  {}".format(
        "workload", "batch", "iters", "rate", "samples", "cpu", "off fps", "on fps", "total", "median", "control",
        "goal (median >= {})".format(GOAL)))
    for r in rows:
        ctl = "{:8.4f}".format(r["control_median_ratio"]) if r["control_median_ratio"] is not None else "       -"
        print("{workload:<10} {batch:>5} {iterations:>6} {rate_hz:>5.0f}Hz {samples:>8} {sampler_cpu_pct:>6.3f}% "
              "{off_fps:>10.1f} {on_fps:>10.1f} {total_ratio:>8.4f} {median_pair_ratio:>8.4f} {ctl}  {ok}".format(
                  ok="met" if r["pass"] else "NOT met", ctl=ctl, **r))
        for e in r["errors"]:
            print("  sampler error: {}".format(e))
    print("median: fps with sampling / without, over adjacent turns; control: the same for two turns without "
          "sampling (1 +- what this machine can resolve); cpu: the sampler thread's CPU time / wall time")
    out = args.out or REPO / "Results" / "bench-power-{}.json".format(time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "power", "date": now(), "system": system_info(),
                            "source": source.describe(), "rows": rows})
    print("\nwritten: {}".format(out))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
