"""Command line: `mlmark -c CONFIG...` (as MLMark's harness/mlmark.py), plus subcommands.

Every user error ends as one line and exit status 2; -v adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from core import __version__
from core.console import guarded, interruption, setup_logging, sigterm_as_interrupt
from core.paths import results_dir
from harness.config import expand_config_args, load_configs

log = logging.getLogger("mlmark")

PROG = "mlmark"


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmark", description="Run MLMark benchmark tasks and print the score "
                                     "table. Subcommands: run (default), selftest, compare, crosscheck, serve, "
                                     "measure, fleet.")
    parser.add_argument("-c", "--config", nargs="+", required=True, metavar="CONFIG",
                        help="config files (JSON lists of tasks); shell globs accepted")
    parser.add_argument("-r", "--results-dir", type=Path, default=results_dir(),
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
    setup_logging(args.verbose, args.quiet)
    return guarded(PROG, args.verbose, lambda: _run(args), interrupted="no task had run; nothing was written")


def _run(args: argparse.Namespace) -> int:
    from harness import results as res
    from harness.runner import prepare, run_tasks
    from system.info import system_info

    paths = expand_config_args(args.config)
    tasks = load_configs(paths)
    with sigterm_as_interrupt():
        prepared = prepare(tasks, skip_unavailable=args.skip_unavailable)
        log.info("%d task(s) validated", len(prepared))
        out = res.claim_result_path(args.results_dir)  # one line now if the folder cannot be written
        record = res.RunRecord(started=res.now(), config_files=[str(p) for p in paths], system=system_info())
        try:
            res.save(record, out)
            run_tasks(prepared, record, out)
        except KeyboardInterrupt as exc:
            status, word = interruption(exc)
            kept = ("finished tasks are kept in {}".format(out) if record.tasks else
                    "no task had finished; {} records the {} run".format(out, word))
            print("{}: {}; {}".format(PROG, word, kept), file=sys.stderr)
            return status
        finally:
            _print_outcome(record, out)
    if args.compare:
        from harness.compare import report_for_run

        print("\n" + report_for_run(out))
    return 0


def _print_outcome(record: Any, out: Path) -> None:
    """The score table of what finished, what failed and what did not run, and where the results are."""
    from harness.report import format_table

    lines = [format_table(record.tasks)] if record.tasks else []
    lines += ["{}: failed (no score): {}".format(f["source"], f["error"]) for f in record.failed]
    if record.not_run:
        lines.append("not run: {}".format(", ".join(record.not_run)))
    print("\n".join(lines + ["", "results: {}".format(out)]).lstrip("\n"))


def _subcommand(argv: Sequence[str], fn: Callable[[Sequence[str]], int],
                interrupted: str = "nothing half-written was left behind") -> int:
    verbose = 1 if "-v" in argv else 0
    setup_logging(verbose)
    return guarded(PROG, verbose, lambda: fn(argv), interrupted=interrupted)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `mlmark` command and of harness/mlmark.py."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return cmd_run(argv[1:])
    if argv and argv[0] == "compare":
        from harness.compare import run_compare

        return _subcommand(argv[1:], run_compare)
    if argv and argv[0] == "crosscheck":
        from harness.crosscheck import run_crosscheck

        return _subcommand(argv[1:], run_crosscheck)
    if argv and argv[0] == "serve":
        from harness.serve.app import run_serve

        return _subcommand(argv[1:], run_serve, interrupted="the server stopped")
    if argv and argv[0] == "measure":
        from harness.measure import run_measure

        return _subcommand(argv[1:], run_measure, interrupted="the measurement was cancelled on the server")
    if argv and argv[0] == "fleet":
        from harness.fleet import run_fleet

        return _subcommand(argv[1:], run_fleet, interrupted="measurements in flight were cancelled on the boards; "
                           "finished ones are kept in the results files")
    if argv and argv[0] == "selftest":
        if "--tensorrt" in argv[1:]:
            from harness.trt_selftest import main as tensorrt_selftest

            return _subcommand([a for a in argv[1:] if a != "--tensorrt"], tensorrt_selftest)
        from targets.native.selftest import run_selftest

        return _subcommand(argv[1:], run_selftest)
    return cmd_run(argv)


if __name__ == "__main__":
    sys.exit(main())
