"""Make a workload's INT8 calibration table and Q/DQ model from real images.

    python utility/calibrate.py --workload W [--images DIR] [--count 500] [--model FILE]
                                [--method entropy|percentile|minmax] [--table FILE] [-v]

Runs ONNX Runtime's calibrator (entropy by default) over the workload's own preprocessing of the
first N images of its dataset (the harness's order; --images takes the first N files of a folder
instead) and writes:

- utility/CalibrationTable_<workload>: TensorRT's calibration cache for every activation of that
  exact ONNX file, with utility/CalibrationTable_<workload>.json recording the model's SHA-256,
  the images, the method, the date and the onnxruntime version;
- <model>.qdq.onnx beside the model: the Q/DQ model with exactly the table's scales (what
  `precision: int8` runs on onnxruntime, and TensorRT 11 builds from).

Without images it refuses: a table made from random data is worthless. Errors are one line each
and exit status 2 (-v adds the traceback). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

if __name__ == "__main__":
    # Run as a script, Python puts utility/ first on sys.path; the project's packages live one up.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from core.console import EXIT_ERROR, guarded, setup_logging  # noqa: E402
from workloads import workload_names  # noqa: E402
from workloads.calibrate import DEFAULT_COUNT, DEFAULT_METHOD, METHODS  # noqa: E402

PROG = "calibrate"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Make a workload's INT8 calibration table "
                                     "(utility/CalibrationTable_<workload>) and Q/DQ model from real images.")
    parser.add_argument("-w", "--workload", required=True, choices=workload_names())
    parser.add_argument("--images", metavar="DIR", help="a folder of images to calibrate on, taken in sorted "
                        "file-name order (default: the workload's dataset, see datasets/README.md)")
    parser.add_argument("-n", "--count", type=int, default=DEFAULT_COUNT,
                        help="images to calibrate on: the first N (default {})".format(DEFAULT_COUNT))
    parser.add_argument("--model", metavar="FILE", help="calibrate this ONNX file (default: the workload's model, "
                        "as a task without 'model' resolves it)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help="calibration method (default {})".format(DEFAULT_METHOD))
    parser.add_argument("--table", metavar="FILE", help="write the table here instead of "
                        "utility/CalibrationTable_<workload>")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on errors")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.count < 1:
        print("{}: error: --count must be at least 1, got {}".format(PROG, args.count), file=sys.stderr)
        return EXIT_ERROR
    return guarded(PROG, args.verbose, lambda: _calibrate(args))


def _calibrate(args: argparse.Namespace) -> int:
    from workloads.calibrate import calibrate

    res = calibrate(args.workload, images=args.images, count=args.count, model=args.model, method=args.method,
                    table_out=args.table)
    a, rec = res.agreement, res.record
    print("{}: {} images ({}), {} calibration, {} tensors".format(
        args.workload, rec["images"]["used"], rec["images"].get("dataset") or rec["images"].get("folder"),
        args.method, len(res.table.scales)))
    print("table: {} ({})".format(res.table_path, res.table.header))
    print("Q/DQ model: {}".format(res.qdq_path))
    line = "Q/DQ arithmetic vs fp32 on the first {} images: cosine min {:.5f}, mean {:.5f}".format(
        a["images"], a["cosine_min"], a["cosine_mean"])
    if "top1_agreement" in a:
        line += ", top-1 agreement {:.1f} %".format(100.0 * a["top1_agreement"])
    print(line)
    if rec["model"]["weights"] == "synthetic":
        print("note: the model has synthetic weights: this table proves the pipeline, not int8 accuracy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
