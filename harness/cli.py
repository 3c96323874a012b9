"""Command line: `mlmark -c CONFIG...` (as MLMark's harness/mlmark.py), plus subcommands.

Every user error ends as one line and exit status 2; -v adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import List, Optional, Sequence

from harness import __version__
from harness.config import expand_config_args, load_configs
from harness.errors import MLMarkError

log = logging.getLogger("mlmark")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_INTERRUPTED = 130


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmark", description="Run MLMark benchmark tasks and print the score "
                                     "table. Subcommands: run (default), selftest, compare, crosscheck.")
    parser.add_argument("-c", "--config", nargs="+", required=True, metavar="CONFIG",
                        help="config files (JSON lists of tasks); shell globs accepted")
    parser.add_argument("-r", "--results-dir", type=Path, default=REPO_ROOT / "Results",
                        help="where result JSON/CSV files go (default: Results/)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and the score table only")
    parser.add_argument("--compare", action="store_true",
                        help="end with the speed-up comparison of this run's results (CSV and PNG beside them)")
    parser.add_argument("--skip-unavailable", action="store_true",
                        help="leave out, with a warning, tasks whose target, hardware or precision this machine "
                             "lacks (for comparison configs run on whatever is installed)")
    parser.add_argument("--version", action="version", version="mlmark " + __version__)
    return parser


def cmd_run(argv: Sequence[str]) -> int:
    """Validate every task, run them one by one, write results after each, print the score table."""
    args = _run_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    return _guard(args.verbose, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from harness import results as res
    from harness.report import format_table
    from harness.runner import prepare
    from harness.runner import run_tasks
    from harness.sysinfo import system_info

    paths = expand_config_args(args.config)
    tasks = load_configs(paths)
    prepared = prepare(tasks, skip_unavailable=args.skip_unavailable)
    log.info("%d task(s) validated", len(prepared))
    record = res.RunRecord(started=res.now(), config_files=[str(p) for p in paths], system=system_info())
    out = res.result_path(args.results_dir)
    try:
        run_tasks(prepared, record, out)
    except KeyboardInterrupt:
        record.interrupted = True
        if record.tasks:
            res.save(record, out)
        raise
    finally:
        if record.tasks:
            print(format_table(record.tasks))
            print("\nresults: {}".format(out))
    if args.compare:
        from harness.compare import report_for_run

        print("\n" + report_for_run(out))
    return 0


def _guard(verbose: int, fn) -> int:  # type: ignore[no-untyped-def]
    try:
        return fn()
    except MLMarkError as exc:
        if verbose:
            traceback.print_exc()
        print("mlmark: error: {}".format(exc), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("mlmark: interrupted; finished tasks are kept in the results file", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `mlmark` command and of harness/mlmark.py."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return cmd_run(argv[1:])
    if argv and argv[0] == "compare":
        from harness.compare import run_compare

        _setup_logging(1 if "-v" in argv else 0, False)
        return _guard(1 if "-v" in argv else 0, lambda: run_compare(argv[1:]))
    if argv and argv[0] == "crosscheck":
        from targets.trtexec.crosscheck import run_crosscheck

        _setup_logging(1 if "-v" in argv else 0, False)
        return _guard(1 if "-v" in argv else 0, lambda: run_crosscheck(argv[1:]))
    if argv and argv[0] == "selftest":
        from targets.native.selftest import run_selftest

        _setup_logging(1 if "-v" in argv else 0, False)
        return _guard(1 if "-v" in argv else 0, lambda: run_selftest(argv[1:]))
    return cmd_run(argv)


if __name__ == "__main__":
    sys.exit(main())
