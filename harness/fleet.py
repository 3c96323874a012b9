"""`mlmark fleet -c CONFIG --hosts nano=HOST:PORT xavier=HOST:PORT ...`: one config on several boards, one table.

Every task of the config runs on every board through its `mlmark serve`: the boards in parallel,
the tasks on each board in order (one board's measurements never overlap, and the server would
queue them anyway). Tasks and models are checked here before anything is sent, and every board must
answer its health check (and take the token) before the first task starts. Each board's results go
to their own Results/<time>-<board>.json, written after each task, with the board's system section;
a task a board refuses or fails is recorded as failed there and the board goes on with the next.
At the end, one `mlmark compare` table across the boards (harness.compare, a device column naming
each board), written as CSV and chart beside the results as compare does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.errors import ConfigError, RunError
from core.paths import results_dir

log = logging.getLogger("mlmark.fleet")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


@dataclass
class Board:
    """One board of the fleet: its name, its server, its results file, the measurement in flight."""

    name: str
    host: str
    port: int
    client: Any = None
    out: Optional[Path] = None
    record: Any = None
    current: Optional[str] = None  # the id of the measurement in flight
    failures: List[str] = field(default_factory=list)


def parse_hosts(items: Sequence[str], default_port: int) -> List[Board]:
    """name=HOST[:PORT] ... -> boards; ConfigError naming the item that is not one."""
    from harness.measure import parse_address

    boards: List[Board] = []
    for item in items:
        name, sep, address = item.partition("=")
        if not sep or not _NAME.match(name):
            raise ConfigError("fleet: --hosts {!r}: give NAME=HOST:PORT, NAME of letters, digits, '.', '_' or '-' "
                              "(e.g. orin=192.168.1.20:{})".format(item, default_port))
        if any(b.name == name for b in boards):
            raise ConfigError("fleet: --hosts names board {!r} twice".format(name))
        host, port, _ = parse_address(address, default_port)
        boards.append(Board(name=name, host=host, port=port))
    if not boards:
        raise ConfigError("fleet: --hosts names no board")
    return boards


def _parser() -> argparse.ArgumentParser:
    from harness.compare import DEFAULT_IMAGES
    from harness.serve import DEFAULT_PORT, TOKEN_ENV

    parser = argparse.ArgumentParser(prog="mlmark fleet", description="Run every task of a config on every board "
                                     "(each running mlmark serve), save each board's results, and print one "
                                     "comparison table across the boards.")
    parser.add_argument("-c", "--config", nargs="+", required=True, metavar="CONFIG", help="config files")
    parser.add_argument("--hosts", nargs="+", required=True, metavar="NAME=HOST:PORT",
                        help="the boards, e.g. nano=10.0.0.5:{} orin=10.0.0.7:{}".format(DEFAULT_PORT, DEFAULT_PORT))
    parser.add_argument("--token", default=None, help="the servers' token (default: ${})".format(TOKEN_ENV))
    parser.add_argument("--queue-wait", type=float, default=0.0, metavar="SECONDS",
                        help="when a board's queue is full, retry for this long (default 0: that task fails)")
    parser.add_argument("-r", "--results-dir", type=Path, default=results_dir(),
                        help="where result files go (default: Results/)")
    parser.add_argument("-b", "--baseline", default=None, metavar="ROW|KEY=VALUE,...",
                        help="the table's baseline row, as mlmark compare takes it (e.g. 'device=nano')")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="N for the 'time for N images' column")
    parser.add_argument("--no-files", action="store_true", help="print the table only; write no CSV or chart")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging and tracebacks")
    return parser


def run_fleet(argv: Sequence[str]) -> int:
    """`mlmark fleet`: the config on every board; the comparison table; exit status 2 if any task failed."""
    from harness.config import expand_config_args, load_configs
    from harness.measure import local_check, session, token_from
    from harness.serve import DEFAULT_PORT

    args = _parser().parse_args(list(argv))
    if args.images < 1:
        raise ConfigError("fleet: --images must be a positive integer, got {}".format(args.images))
    paths = expand_config_args(args.config)
    tasks = load_configs(paths)
    boards = parse_hosts(args.hosts, DEFAULT_PORT)
    models: Dict[Tuple[str, Optional[str], bool], Any] = {}
    for task in tasks:  # every task and model checked here before anything is sent
        models[_model_key(task)] = local_check(_sent(task), Path(task.params.model) if task.params.model else None,
                                               task.source)
    token = token_from(args.token)

    async def fleet() -> None:
        async with session() as http:
            await _open(boards, token, http, [str(p) for p in paths], args.results_dir)
            await asyncio.gather(*(_board(b, tasks, models, args.queue_wait) for b in boards))

    try:
        asyncio.run(fleet())
    except KeyboardInterrupt:
        _stop(boards, token)
        raise
    return _report(boards, tasks, args)


def _model_key(task: Any) -> Tuple[str, Optional[str], bool]:
    """Tasks with equal keys send the same file (int8 ones the Q/DQ model)."""
    return task.workload, task.params.model, task.params.precision == "int8"


def _sent(task: Any) -> Dict[str, Any]:
    """The task as sent to a server: its params as a config writes them, without the model (that is the upload)."""
    params = task.params.to_config()
    params.pop("model", None)
    return {"target": task.target, "workload": task.workload, "params": params}


async def _open(boards: Sequence[Board], token: Optional[str], http: Any, configs: List[str],
                folder: Path) -> None:
    """Every board's health check and system section, then its results file; RunError naming every board that
    did not answer."""
    from harness import results as res
    from harness.measure import ServerClient

    for b in boards:
        b.client = ServerClient(b.host, b.port, token, http)
    checks = await asyncio.gather(*(b.client.health() for b in boards), return_exceptions=True)
    down = ["{}: {}".format(b.name, exc) for b, exc in zip(boards, checks) if isinstance(exc, BaseException)]
    if down:
        raise RunError("fleet: not every board is ready; nothing was run: {}".format("; ".join(down)))
    systems = await asyncio.gather(*(b.client.system() for b in boards))
    for b, system in zip(boards, systems):
        b.out = res.claim_result_path(folder, name=b.name)
        b.record = res.RunRecord(started=res.now(), config_files=configs,
                                 system=dict(system, served_by=b.client.address, board=b.name))
        res.save(b.record, b.out)


async def _board(b: Board, tasks: Sequence[Any], models: Dict[Tuple[str, Optional[str], bool], Any],
                 queue_wait: float) -> None:
    """The tasks on one board, in order; each result (or failure) saved as it comes."""
    from harness import results as res
    from harness.measure import Unreachable, task_result
    from harness.report import sig3

    for i, task in enumerate(tasks):
        model = models[_model_key(task)]
        started = res.now()
        log.info("%s: %s: %s", b.name, task.source, task.label)
        try:
            b.current = await b.client.submit(_sent(task), model.path, task.source, queue_wait)
            answer = await b.client.wait(b.current)
            b.current = None
            result = task_result(answer, b.client.address, model)
        except RunError as exc:
            b.current = None
            said = str(exc) if task.source in str(exc) else "{}: {}".format(task.source, exc)
            b.failures.append("{}: {}".format(b.name, said))
            b.record.failed.append(dict(source=task.source, target=task.target, workload=task.workload,
                                        params=task.params.to_dict(), error=str(exc), started=started,
                                        finished=res.now()))
            log.warning("%s: %s: failed: %s", b.name, task.source, exc)
            if isinstance(exc, Unreachable):  # the board is gone: its other tasks would only wait for it
                b.record.not_run = [t.source for t in tasks[i + 1:]]
                res.save(b.record, b.out)
                return
        else:
            b.record.tasks.append(result)
            log.info("%s: %s: %s %s %s", b.name, task.source, result.metric, sig3(result.score), result.units)
        res.save(b.record, b.out)


def _stop(boards: Sequence[Board], token: Optional[str]) -> None:
    """After Ctrl-C: cancel what is in flight on each board, and record the runs as interrupted."""
    from harness import results as res
    from harness.measure import cancel_remote

    for b in boards:
        if b.current:
            cancel_remote(b.host, b.port, token, b.current)
        if b.record is not None and b.out is not None:
            b.record.interrupted = True
            res.save(b.record, b.out)


def _report(boards: Sequence[Board], tasks: Sequence[Any], args: argparse.Namespace) -> int:
    """The comparison table across boards (harness.compare), the failures, where the files are."""
    from harness.compare import Comparison, apply_baselines, build_rows, format_comparison, load_results, write_outputs

    with_results = [b for b in boards if b.record.tasks]
    lines = []
    if with_results:
        rows, notes = build_rows(load_results([b.out for b in with_results if b.out is not None]))
        board_of = {b.out.name: b.name for b in with_results if b.out is not None}
        for r in rows:
            r.device = "{}: {}".format(board_of.get(r.file, "?"), r.device)
        if rows:
            comparison = Comparison(rows=rows, images=args.images, notes=apply_baselines(rows, args.baseline) + notes)
            print(format_comparison(comparison))
            if not args.no_files:
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                folder = Path(args.results_dir)
                lines += write_outputs(comparison, folder / "fleet-{}.csv".format(stamp),
                                       folder / "fleet-{}.png".format(stamp), png_required=False)
    failures = [f for b in boards for f in b.failures]
    lines += ["failed: {}".format(f) for f in failures]
    lines += ["results: {} ({})".format(b.out, b.name) for b in boards]
    print("\n" + "\n".join(lines))
    if failures:
        raise RunError("fleet: {} of {} measurement(s) failed (listed above)".format(
            len(failures), len(tasks) * len(boards)))
    return 0
