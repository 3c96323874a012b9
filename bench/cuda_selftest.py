"""CUDA timing self-test as a benchmark: prints the self-test's table and keeps its JSON report.

The same measurements as `mlmark selftest` (targets/native/selftest.py): fixed CUDA-event cost,
timing accuracy against requested kernel durations, host overhead per inference and the waiting
thread's CPU share for blocking, spin-wait and sleep completion, concurrency scaling and CUDA-graph
agreement. The report goes to
Results/cuda_selftest-<time>.json unless --json names another path.

    python bench/cuda_selftest.py [--quick] [--device N] [--json PATH]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the package.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.errors import MLMarkError  # noqa: E402
from harness.fileio import atomic_write_json  # noqa: E402
from targets.native.selftest import build_parser, exit_status, format_report, measure_from_args  # noqa: E402


def main(argv: "list[str] | None" = None) -> int:
    """Run the self-test, print the table, write the JSON report; exit status as the self-test's."""
    args = build_parser(prog="bench/cuda_selftest.py").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = measure_from_args(args)
    except MLMarkError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else REPO / "Results" / "cuda_selftest-{}.json".format(
        time.strftime("%Y%m%d-%H%M%S"))
    atomic_write_json(out, report)
    print(format_report(report))
    print("report written to {}".format(out))
    return exit_status(report)


if __name__ == "__main__":
    sys.exit(main())
