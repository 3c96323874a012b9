"""Harness overhead: the harness's timed loop against a plain loop over the same ONNX Runtime session.

The two loops take turns (harness, plain, plain, harness, ...; one inference a turn by default) on
the same session and input, at batch 1 and 8, so that bursts of background load on a small machine
hit both alike: p95 is decided by the slowest few percent of inferences. Goal: harness/plain
throughput >= 0.98 and p95 within 2 %.

    python bench/overhead.py [--workload mobilenet] [--iterations 1500] [--turn 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

from core.fileio import atomic_write_json
from core.stats import summarize
from harness.results import now
from harness.runner import load_request, timed_loop
from system.info import system_info
from targets import get_target
from workloads import get_workload
from workloads.model_store import resolve_model


def plain_loop(sess, names: List[str], feed: Dict, n: int) -> Tuple[List[float], float]:  # type: ignore[no-untyped-def]
    """What a user would write by hand: time each session.run with perf_counter."""
    lat = []
    clock = time.perf_counter
    start = clock()
    for _ in range(n):
        t0 = clock()
        sess.run(names, feed)
        lat.append(clock() - t0)
    return lat, clock() - start


def bench(workload_name: str, batch: int, iterations: int, turn: int) -> Dict:  # type: ignore[type-arg]
    workload = get_workload(workload_name)
    model = resolve_model(workload)
    target = get_target("onnxruntime")
    session = target.load(load_request(workload, model, "cpu", "fp32", batch))
    feed = workload.make_inputs(session.input_specs(), batch)
    raw = session.sessions[0]
    names = session.output_names()
    plain_loop(raw, names, feed, max(20, iterations // 20))  # warm-up
    h_lat: List[float] = []
    p_lat: List[float] = []
    h_wall = p_wall = 0.0
    pairs = max(1, iterations // turn)
    for r in range(pairs):
        # Alternate which goes first so that neither always follows the other.
        order = ("h", "p") if r % 2 == 0 else ("p", "h")
        for who in order:
            if who == "h":
                lat, wall = timed_loop(session, feed, turn, 1)
                h_lat += lat
                h_wall += wall
            else:
                lat, wall = plain_loop(raw, names, feed, turn)
                p_lat += lat
                p_wall += wall
    n = turn * pairs
    h_fps, p_fps = n * batch / h_wall, n * batch / p_wall
    h_p95, p_p95 = summarize(h_lat).p95_ms, summarize(p_lat).p95_ms
    session.close()
    return {"workload": workload_name, "batch": batch, "iterations": n, "harness_fps": h_fps, "plain_fps": p_fps,
            "fps_ratio": h_fps / p_fps, "harness_p95_ms": h_p95, "plain_p95_ms": p_p95,
            "p95_diff_pct": 100.0 * (h_p95 / p_p95 - 1.0),
            "pass": h_fps / p_fps >= 0.98 and abs(h_p95 / p_p95 - 1.0) <= 0.02,
            "thread_split": session.info["thread_split"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="mobilenet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iterations", type=int, default=1500, help="timed iterations per loop at batch 1 (half "
                    "of that at larger batches)")
    ap.add_argument("--turn", type=int, default=1, help="iterations a loop runs before the other takes its turn")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = [bench(args.workload, b, args.iterations if b == 1 else max(10, args.iterations // 2), args.turn)
            for b in args.batches]
    print("{:<10} {:>5} {:>6} {:>12} {:>12} {:>9} {:>12} {:>12} {:>9}  {}".format(
        "workload", "batch", "iters", "harness fps", "plain fps", "ratio", "harness p95", "plain p95", "p95 diff",
        "goal (>=0.98, +-2%)"))
    for r in rows:
        print("{workload:<10} {batch:>5} {iterations:>6} {harness_fps:>12.1f} {plain_fps:>12.1f} {fps_ratio:>9.4f} "
              "{harness_p95_ms:>10.3f}ms {plain_p95_ms:>10.3f}ms {p95_diff_pct:>+8.2f}%  {ok}".format(
                  ok="met" if r["pass"] else "NOT met", **r))
    out = args.out or Path(__file__).resolve().parent.parent / "Results" / "bench-overhead-{}.json".format(
        time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, {"bench": "overhead", "date": now(), "system": system_info(), "rows": rows})
    print("\nwritten: {}".format(out))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
