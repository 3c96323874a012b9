"""CUDA timing self-test as a benchmark: prints the self-test's table and keeps its JSON report.

The same measurements as `mlmark selftest` (targets/native/selftest.py): fixed CUDA-event cost,
timing accuracy against requested kernel durations, host overhead per inference and the waiting
thread's CPU share for blocking, spin-wait and sleep completion, concurrency scaling and CUDA-graph
agreement. The report goes to
Results/bench-cuda_selftest-<time>.json unless --json names another path.

    python bench/cuda_selftest.py [--quick] [--device N] [--json PATH]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the package.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from targets.native.selftest import run_selftest  # noqa: E402


def main(argv: "list[str] | None" = None) -> int:
    """The self-test with its JSON report kept under Results/ unless --json names a path."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--json" or a.startswith("--json=") for a in args):
        args += ["--json", str(REPO / "Results" / "bench-cuda_selftest-{}.json".format(time.strftime("%Y%m%d-%H%M%S")))]
    return run_selftest(args)


if __name__ == "__main__":
    sys.exit(main())
