"""Download the official pretrained ONNX models into models/<workload>/pretrained.onnx, verified.

    python utility/get_models.py [--workload mobilenet resnet50 ssdmobilenet] [--force]
                                 [--source NAME] [--base-url URL] [--sha256 HEX] [--list] [-v]

Each model is checked against its published checksum before it is installed; a model with none
(see --list) needs --sha256. Errors are one line each and exit status 2 (-v adds the traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import List, Optional

if __name__ == "__main__":
    # Run as a script, Python puts utility/ first on sys.path; the project's packages live one up.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from core.console import EXIT_ERROR, EXIT_INTERRUPTED, guarded  # noqa: E402
from workloads import pretrained  # noqa: E402

PROG = "get_models"


def _parser() -> argparse.ArgumentParser:
    names = pretrained.manifest_workloads()
    parser = argparse.ArgumentParser(prog=PROG, description="Download the official pretrained ONNX models, verify "
                                     "their checksums and install them as models/<workload>/pretrained.onnx "
                                     "(models/ is $MLMARK_MODELS if set).")
    parser.add_argument("-w", "--workload", nargs="+", choices=names, default=names, metavar="WORKLOAD",
                        help="workloads to install (default: all of {})".format(", ".join(names)))
    parser.add_argument("-f", "--force", action="store_true", help="download again even if a verified copy is there")
    parser.add_argument("--source", help="a non-default source of the model (see --list)")
    parser.add_argument("--base-url", help="download from this mirror (a folder URL serving the same file names, "
                        "file:// works too); checksums are still verified")
    parser.add_argument("--sha256", help="the SHA-256 you checked yourself, for a model with no published checksum "
                        "(one workload at a time)")
    parser.add_argument("--list", action="store_true", help="list the known models and their checksums, and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    return parser


def _list() -> None:
    for e in pretrained.MANIFEST:
        check = "sha256 {}".format(e.sha256) if e.sha256 else ("md5 {}".format(e.md5) if e.md5 else
                                                                "no published checksum: needs --sha256")
        print("{:<13} {:<9}{} {}\n    {}\n    {}\n    checksum: {} ({})\n".format(
            e.workload, e.source, " (default)" if e.default else "", e.description, e.url, e.notes, check,
            e.checksum_origin))


def _install_one(workload: str, args: argparse.Namespace) -> int:
    path, existing = pretrained.install(workload, source=args.source, force=args.force, base_url=args.base_url,
                                        sha256=args.sha256, progress=not args.quiet)
    if existing is not None:
        print("{}: already installed at {} (sha256 {}); --force downloads it again".format(
            workload, path, existing["sha256"][:16]))
        return 0
    meta = json.loads((path.parent / pretrained.SIDECAR_NAME).read_text(encoding="utf-8"))
    print("{}: installed {} ({:.1f} MB, checked: {})".format(workload, path, meta["size"] / 1e6,
                                                              ", ".join(meta["verified"])))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.list:
        _list()
        return 0
    if args.sha256 and len(args.workload) != 1:
        print("{}: error: --sha256 names one file: give exactly one --workload".format(PROG), file=sys.stderr)
        return EXIT_ERROR
    status = 0
    for workload in dict.fromkeys(args.workload):  # each once, in the order given; an error does not stop the rest
        rc = guarded(PROG, args.verbose, functools.partial(_install_one, workload, args))
        if rc == EXIT_INTERRUPTED:
            return rc
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
