"""`mlmark compare RESULTS...`: one speed-up table across targets, precisions and devices.

Every throughput or latency result of the given files becomes a row, labelled by the device it ran
on; each row's speed-up is its fps over its workload's baseline row (default: the slowest fp32 row
of the same workload). The table is printed, and written as CSV and as a bar chart (PNG, needs
matplotlib). "Time for N images" is derived from the measured throughput: N / fps seconds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.errors import ConfigError, MLMarkError
from core.fileio import atomic_write_text
from harness.measures import MEASURES, Measure, shown
from harness.report import INVALID_MARK, SYNTHETIC_MARK, sig3
from harness.results import RunRecord, TaskResult, load

DEFAULT_IMAGES = 500
# keys a --baseline KEY=VALUE filter may name, and the Row attribute each one matches
BASELINE_KEYS = {"target": "target", "precision": "precision", "prec": "precision", "hardware": "hardware",
                 "exec": "exec_mode", "exec_mode": "exec_mode", "batch": "batch", "concurrency": "concurrency",
                 "device": "device", "file": "file", "mode": "mode", "workload": "workload"}


@dataclass
class Row:
    """One performance result, ready to compare."""

    number: int  # 1-based, as printed; --baseline N names it
    file: str
    device: str
    target: str
    exec_mode: str
    workload: str
    hardware: str
    precision: str
    batch: int
    concurrency: int
    mode: str
    fps: float
    values: Dict[str, Optional[float]]  # every measure of harness/measures.py, by key
    valid: bool
    synthetic: bool
    speedup: Optional[float] = None
    is_baseline: bool = False

    @property
    def label(self) -> str:
        """Short name for the chart: device, target, execution mode, precision, batch."""
        parts = [self.target] + ([self.exec_mode] if self.exec_mode else []) + [self.precision, "b{}".format(self.batch)]
        if self.concurrency > 1:
            parts.append("c{}".format(self.concurrency))
        return "{} | {}".format(self.device, " ".join(parts))


@dataclass
class Comparison:
    """Rows with their speed-ups, and the footnotes that explain them."""

    rows: List[Row]
    images: int
    notes: List[str]


# -- reading results --------------------------------------------------------------------------------

def load_results(paths: Sequence[Path]) -> List[Tuple[Path, RunRecord]]:
    """Each file read with harness.results.load; a bad file is one ConfigError line."""
    records = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("compare: {}: result file not found".format(path))
        try:
            records.append((path, load(path)))
        except json.JSONDecodeError as exc:
            raise ConfigError("compare: {}: not a result file (malformed JSON at line {})".format(
                path, exc.lineno)) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError("compare: {}: not an mlmark result file ({})".format(
                path, str(exc).splitlines()[0][:120])) from None
    return records


def device_name(task: TaskResult, system: Dict[str, Any]) -> str:
    """The device a result ran on: the target's own report, else the system's GPU, board or CPU."""
    info = task.target_info or {}
    if info.get("device_name"):
        return str(info["device_name"])
    hardware = task.params.get("hardware", "")
    jetson = system.get("jetson") or {}
    if hardware in ("gpu", "dla"):
        gpus = system.get("gpus") or []
        name = jetson.get("model") or (gpus[0].get("name") if gpus else "") or "GPU"
        return name if hardware == "gpu" else "{} DLA".format(name)
    return str(system.get("cpu") or "CPU")


def build_rows(records: Sequence[Tuple[Path, RunRecord]]) -> Tuple[List[Row], List[str]]:
    """One row per throughput or latency result, grouped by workload in order of first appearance."""
    rows: List[Row] = []
    skipped = damaged = 0
    for path, record in records:
        for task in record.tasks:
            if task.metric not in ("throughput", "latency"):
                skipped += 1
                continue
            fps = task.throughput_fps
            if (not isinstance(task.params, dict) or not isinstance(task.model, dict)
                    or not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps)
                    or fps <= 0):
                damaged += 1  # a hand-edited or damaged file: its row would be a wrong number
                continue
            p = task.params
            rows.append(Row(number=0, file=path.name, device=device_name(task, record.system or {}),
                            target=task.target, exec_mode=str((task.target_info or {}).get("exec_mode", "")),
                            workload=task.workload, hardware=str(p.get("hardware", "")),
                            precision=str(p.get("precision", "")), batch=int(p.get("batch", 1)),
                            concurrency=int(p.get("concurrency", 1)), mode=str(p.get("mode", task.metric)),
                            fps=float(fps), values={m.key: m.value(task) for m in MEASURES},
                            valid=task.valid, synthetic=task.synthetic))
    order: Dict[str, int] = {}
    for r in rows:
        order.setdefault(r.workload, len(order))
    rows.sort(key=lambda r: order[r.workload])  # stable: file and task order kept within a workload
    for i, r in enumerate(rows, start=1):
        r.number = i
    notes = ["{} result(s) without a speed (accuracy) left out".format(skipped)] if skipped else []
    if damaged:
        notes.append("{} result(s) left out: params, model or throughput missing or not a positive number "
                     "(a damaged file?)".format(damaged))
    return rows, notes


# -- baselines and speed-ups ------------------------------------------------------------------------

def parse_baseline(spec: Optional[str]) -> Any:
    """None, a row number, or a dict of KEY=VALUE filters."""
    if spec is None or not spec.strip():
        return None
    spec = spec.strip()
    if spec.isdigit():
        return int(spec)
    filters: Dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in BASELINE_KEYS or not value.strip():
            raise ConfigError("compare: --baseline {!r}: give a row number or KEY=VALUE[,KEY=VALUE] with keys "
                              "{}".format(spec, ", ".join(sorted(set(BASELINE_KEYS)))))
        filters[BASELINE_KEYS[key]] = value.strip()
    return filters


def _matches(row: Row, filters: Dict[str, str]) -> bool:
    for attr, want in filters.items():
        have = str(getattr(row, attr))
        if attr in ("device", "file"):
            if want.lower() not in have.lower():
                return False
        elif have.lower() != want.lower():
            return False
    return True


def apply_baselines(rows: List[Row], spec: Optional[str] = None) -> List[str]:
    """Set each row's speed-up against its workload's baseline row; returns footnotes."""
    chosen = parse_baseline(spec)
    notes: List[str] = []
    if isinstance(chosen, int) and not 1 <= chosen <= len(rows):
        raise ConfigError("compare: --baseline {}: there are rows 1 to {}".format(chosen, len(rows)))
    if isinstance(chosen, dict) and not any(_matches(r, chosen) for r in rows):
        raise ConfigError("compare: --baseline {!r} matches no row".format(spec))
    workloads: Dict[str, List[Row]] = {}
    for r in rows:
        workloads.setdefault(r.workload, []).append(r)
    for workload, group in workloads.items():
        base: Optional[Row] = None
        if isinstance(chosen, int) and rows[chosen - 1].workload == workload:
            base = rows[chosen - 1]
        elif isinstance(chosen, dict):
            matching = [r for r in group if _matches(r, chosen)]
            if matching:
                base = min(matching, key=lambda r: r.fps)
            else:
                notes.append("{}: no row matches --baseline {!r}; the default baseline is used".format(workload, spec))
        if base is None:
            fp32 = [r for r in group if r.precision == "fp32"]
            base = min(fp32 or group, key=lambda r: r.fps)
            if not fp32:
                notes.append("{}: no fp32 row; baseline is the slowest row".format(workload))
        base.is_baseline = True
        for r in group:
            r.speedup = r.fps / base.fps
    return notes


def compare(paths: Sequence[Path], baseline: Optional[str] = None, images: int = DEFAULT_IMAGES) -> Comparison:
    """Load the result files and build the comparison."""
    rows, notes = build_rows(load_results(paths))
    if not rows:
        raise ConfigError("compare: no throughput or latency results in {}".format(", ".join(str(p) for p in paths)))
    notes = apply_baselines(rows, baseline) + notes
    return Comparison(rows=rows, images=images, notes=notes)


# -- output -----------------------------------------------------------------------------------------

def _measures(rows: Sequence[Row], where: str) -> Tuple[Measure, ...]:
    return shown(where, lambda m: any(r.values.get(m.key) is not None for r in rows))


def format_comparison(c: Comparison) -> str:
    """The speed-up table as text, with footnotes."""
    measures = _measures(c.rows, "compare_table")
    columns = (("#", "Device", "Target", "Exec", "Workload", "Prec", "Batch", "Conc.", "Mode")
               + tuple(m.header for m in measures) + ("{} img (s)".format(c.images), "Speed-up"))
    table = []
    for r in c.rows:
        marks = (SYNTHETIC_MARK if r.synthetic else "") + ("" if r.valid else INVALID_MARK)
        speed = sig3(r.speedup) + "x" if r.speedup is not None else "n/a"
        values = [sig3(r.values.get(m.key)) + (marks if m.key == "throughput_fps" else "") for m in measures]
        table.append([str(r.number), r.device, r.target, r.exec_mode or "-", r.workload, r.precision, str(r.batch),
                      str(r.concurrency), r.mode] + values + [sig3(c.images / r.fps),
                                                              speed + (" (baseline)" if r.is_baseline else "")])
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(columns)]
    right = {"#", "Batch", "Conc.", "{} img (s)".format(c.images)} | {m.header for m in measures}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if columns[i] in right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(columns), "  ".join("-" * w for w in widths)] + [fmt(row) for row in table]
    notes = ["Speed-up: fps over the baseline row of the same workload (default: its slowest fp32 row).",
             "{} img (s): time for {} images at the measured throughput ({} / fps), in seconds.".format(
                 c.images, c.images, c.images)]
    if any(r.values.get("fps_per_w") for r in c.rows):
        notes.append("W: average power over the timed loop; fps/W = images per joule; mJ/inf = energy per image. "
                     "A Jetson's board input includes CPU and memory, a GPU card's NVML power excludes the host.")
    if any(r.synthetic for r in c.rows):
        notes.append("{} synthetic weights: valid for speed only".format(SYNTHETIC_MARK))
    if any(not r.valid for r in c.rows):
        notes.append("{} not a valid MLMark score (fewer than 1024 timed iterations)".format(INVALID_MARK))
    notes += c.notes
    return "\n".join(lines + [""] + notes)


CSV_COLUMNS = ("row", "file", "device", "target", "exec_mode", "workload", "hardware", "precision", "batch",
               "concurrency", "mode")
CSV_TAIL = ("time_for_images_s", "images", "speedup", "baseline", "valid", "synthetic")


def comparison_csv(c: Comparison) -> str:
    """One CSV row per table row, full precision: the row, every measure (harness/measures.py), the speed-up."""
    measures = _measures(c.rows, "csv")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS + tuple(m.key for m in measures) + CSV_TAIL)
    for r in c.rows:
        writer.writerow([r.number, r.file, r.device, r.target, r.exec_mode, r.workload, r.hardware, r.precision,
                         r.batch, r.concurrency, r.mode] + [r.values.get(m.key) for m in measures]
                        + [c.images / r.fps, c.images, r.speedup, r.is_baseline, r.valid, r.synthetic])
    return buf.getvalue()


PLOTS = ("bars", "fps-w")


def _plot_fps_w(c: Comparison, path: Path, plt: Any) -> None:
    """fps against average power, one panel per workload: up and to the left is more efficient."""
    groups: Dict[str, List[Row]] = {}
    for r in c.rows:
        if r.values.get("average_w"):
            groups.setdefault(r.workload, []).append(r)
    if not groups:
        raise ConfigError("compare: --plot fps-w: no result has power measured")
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    for ax, (workload, group) in zip(axes[0], groups.items()):
        ax.scatter([r.values["average_w"] for r in group], [r.fps for r in group], color="#1f77b4")
        for r in group:
            ax.annotate("{} ({} fps/W)".format(r.label, sig3(r.values.get("fps_per_w"))), (r.values["average_w"], r.fps),
                        fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_title(workload, fontsize=10, loc="left")
        ax.set_xlabel("average power (W)")
        ax.set_ylabel("images per second")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    fig.suptitle("Throughput against power", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


def write_png(c: Comparison, path: Path, plot: str = "bars") -> None:
    """A horizontal bar chart of fps, one panel per workload, each bar labelled with its speed-up; or, with
    plot='fps-w', fps against average power."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("compare: the bar chart needs matplotlib (pip install matplotlib)") from None
    if plot == "fps-w":
        _plot_fps_w(c, path, plt)
        return
    groups: Dict[str, List[Row]] = {}
    for r in c.rows:
        groups.setdefault(r.workload, []).append(r)
    heights = [max(1.6, 0.45 * len(g) + 0.9) for g in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (workload, group) in zip(axes[:, 0], groups.items()):
        labels = [r.label for r in group][::-1]
        values = [r.fps for r in group][::-1]
        colors = ["#7f7f7f" if r.is_baseline else "#1f77b4" for r in group][::-1]
        bars = ax.barh(range(len(group)), values, color=colors)
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_title(workload, fontsize=10, loc="left")
        ax.set_xlabel("images per second")
        top = max(values)
        ax.set_xlim(0, top * 1.25)
        for bar, r in zip(bars, group[::-1]):
            ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                    "{} fps  {}x".format(sig3(r.fps), sig3(r.speedup or 0.0)), va="center", fontsize=8)
    fig.suptitle("Speed-up against the baseline (grey bar) of each workload", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


def write_outputs(c: Comparison, csv_path: Optional[Path], png_path: Optional[Path], png_required: bool,
                  plot: str = "bars") -> List[str]:
    """Write the CSV and the PNG; returns lines saying what was written (or why the chart was not)."""
    lines = []
    if csv_path is not None:
        try:
            atomic_write_text(csv_path, comparison_csv(c))
        except OSError as exc:
            raise ConfigError("compare: {}: cannot write the CSV ({})".format(
                csv_path, exc.strerror or type(exc).__name__)) from None
        lines.append("csv: {}".format(csv_path))
    if png_path is not None:
        try:
            try:
                write_png(c, png_path, plot)
            except OSError as exc:
                raise ConfigError("compare: {}: cannot write the chart ({})".format(
                    png_path, exc.strerror or type(exc).__name__)) from None
            lines.append("chart: {}".format(png_path))
        except MLMarkError as exc:
            if png_required:
                raise
            lines.append("chart: not written: {}".format(str(exc).replace("compare: ", "")))
    return lines


def report_for_run(result_path: Path, baseline: Optional[str] = None, images: int = DEFAULT_IMAGES) -> str:
    """The comparison ending a `-c ... --compare` run: text, with CSV and PNG beside the result file."""
    c = compare([result_path], baseline, images)
    stem = result_path.with_name(result_path.stem + "-compare")
    files = write_outputs(c, stem.with_suffix(".csv"), stem.with_suffix(".png"), png_required=False)
    return "\n".join([format_comparison(c), ""] + files)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmark compare", description="One speed-up table across result files: targets, precisions and "
        "devices side by side, as text, CSV and a bar chart (PNG).")
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULT", help="result files (Results/*.json)")
    parser.add_argument("-b", "--baseline", default=None, metavar="ROW|KEY=VALUE,...",
                        help="the baseline row: its number in the table, or filters such as "
                             "'target=pytorch,precision=fp32' (the slowest matching row of each workload); "
                             "default: the slowest fp32 row of each workload")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                        help="N for the 'time for N images' column (default {})".format(DEFAULT_IMAGES))
    parser.add_argument("--csv", type=Path, default=None, help="CSV file (default: Results/compare-<time>.csv)")
    parser.add_argument("--png", type=Path, default=None, help="bar chart (default: Results/compare-<time>.png)")
    parser.add_argument("--no-files", action="store_true", help="print the table only; write no CSV or PNG")
    parser.add_argument("--plot", choices=PLOTS, default="bars",
                        help="the chart: 'bars' (fps and speed-up, default) or 'fps-w' (fps against average power, "
                             "where measured)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks on errors")
    return parser


def run_compare(argv: Sequence[str]) -> int:
    """`mlmark compare RESULT...`: print the comparison and write its CSV and PNG; MLMarkError on bad input."""
    args = _parser().parse_args(list(argv))
    if args.images < 1:
        raise ConfigError("compare: --images must be a positive integer, got {}".format(args.images))
    c = compare(args.results, args.baseline, args.images)
    print(format_comparison(c))
    if not args.no_files:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(args.results[0]).resolve().parent
        csv_path = args.csv or folder / "compare-{}.csv".format(stamp)
        png_path = args.png or folder / "compare-{}.png".format(stamp)
        lines = write_outputs(c, csv_path, png_path, png_required=args.png is not None or args.plot != "bars",
                              plot=args.plot)
        print("\n" + "\n".join(lines))
    return 0
