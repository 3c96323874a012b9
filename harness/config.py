"""Config files: a JSON list of tasks {target, workload, params}, parsed into typed dataclasses.

Everything is validated here, before any task runs, so that a typo in task 7 never costs the
minutes spent on tasks 1-6. MLMark 1.0 files parse unchanged (they write `batch` or `batch_size`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from core.errors import ConfigError, clean, shown

log = logging.getLogger("mlmark.config")

MODES = ("throughput", "latency", "accuracy")
HARDWARE = ("cpu", "gpu", "dla")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Bounds that catch typos (batch 10000000) without limiting real use; each error names its bound.
MAX_BATCH = 4096
MAX_CONCURRENCY = 256
MAX_ITERATIONS = 10_000_000
MAX_WARMUP_S = 3600.0
DEFAULT_WARMUP_S = 1.0
# MLMark's run rule: a throughput or latency score needs at least this many timed iterations.
MIN_VALID_ITERATIONS = 1024
# Accuracy subsets: typo bounds (ILSVRC2012 has 50 validation images per class).
MAX_IMAGES_PER_CLASS = 50
MAX_IMAGES = 10_000_000

COMMON_PARAMS = (
    "mode", "hardware", "precision", "batch", "batch_size", "concurrency", "iterations",
    "warmup", "warmup_iterations", "model", "images_per_class", "max_images",
)


@dataclass(frozen=True)
class Params:
    """A task's parameters as they will be run (latency already forced to batch 1, concurrency 1)."""

    mode: str
    hardware: str
    precision: str
    batch: int
    concurrency: int
    iterations: int
    warmup_s: float = DEFAULT_WARMUP_S
    warmup_iterations: int = 0
    model: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    images_per_class: Optional[int] = None  # accuracy on ILSVRC2012: None = MLMark's 5
    max_images: Optional[int] = None  # accuracy: None = all of MLMark's subset

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_config(self) -> Dict[str, Any]:
        """The params as a config file writes them, parsing back to these (how a task is sent to mlmark serve)."""
        raw: Dict[str, Any] = {"mode": self.mode, "hardware": self.hardware, "precision": self.precision,
                               "batch": self.batch, "concurrency": self.concurrency, "iterations": self.iterations,
                               "warmup": self.warmup_s, "warmup_iterations": self.warmup_iterations}
        for key in ("model", "images_per_class", "max_images"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        raw.update(self.options)
        return raw


@dataclass(frozen=True)
class Task:
    """One entry of a config file."""

    target: str
    workload: str
    params: Params
    source: str  # "file.json: task N", used in every message about this task
    index: int

    @property
    def label(self) -> str:
        p = self.params
        return "{}/{} {} {} {} batch {} conc {}".format(
            self.target, self.workload, p.mode, p.hardware, p.precision, p.batch, p.concurrency)


def expand_config_args(args: Sequence[str]) -> List[Path]:
    """Expand -c arguments (files or shell globs the shell did not expand) into config paths.

    An existing file is taken as it is, even when its name holds glob characters (run[1].json).
    """
    paths: List[Path] = []
    for arg in args:
        if glob.has_magic(arg) and not os.path.isfile(arg):
            matches = sorted(glob.glob(arg))
            if not matches:
                raise ConfigError("{}: no config file matches this pattern".format(clean(arg)))
            paths.extend(Path(m) for m in matches)
        else:
            paths.append(Path(arg))
    return paths


def load_configs(paths: Sequence[Path]) -> List[Task]:
    """Parse and validate every task of every config file; raise ConfigError on the first problem."""
    tasks: List[Task] = []
    for path in paths:
        for raw_index, raw in enumerate(_read_task_list(path), start=1):
            tasks.append(parse_task(raw, "{}: task {}".format(path, raw_index), len(tasks), base_dir=path.parent))
    if not tasks:
        raise ConfigError("{}: the config holds no task".format(", ".join(str(p) for p in paths)))
    return tasks


def _read_task_list(path: Path) -> List[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("{}: config file not found".format(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("{}: cannot read config file ({})".format(path, exc)) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise ConfigError("{}: malformed JSON at line {} column {}: {}".format(
            path, exc.lineno, exc.colno, exc.msg)) from None
    except _DuplicateKey as exc:
        raise ConfigError("{}: duplicate key {} in one JSON object; give each field once".format(
            path, exc)) from None
    except RecursionError:
        raise ConfigError("{}: the JSON is nested too deeply to be a task list".format(path)) from None
    if not isinstance(data, list):
        raise ConfigError("{}: a config must be a JSON list of tasks "
                          "[{{\"target\": ..., \"workload\": ..., \"params\": {{...}}}}], got a JSON {}".format(
                              path, _json_type(data)))
    return data


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (json keeps the last silently)."""


def _no_duplicate_keys(pairs: List[Any]) -> Dict[str, Any]:
    seen: Dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey("'{}'".format(key) if len(key) <= 60 else shown(key))
        seen[key] = value
    return seen


class _LongInteger(str):
    """An integer literal too long to be any field's value, kept as text: Python refuses to convert
    integers of thousands of digits, and no bound here needs more than a few."""

    number_text = True


def _parse_int(text: str) -> Any:
    return int(text) if len(text) <= 30 else _LongInteger(text)


def parse_task(raw: Any, source: str, index: int, base_dir: Path = Path(".")) -> Task:
    """Validate one raw task object into a Task."""
    from targets import get_target
    from workloads import workload_names

    if not isinstance(raw, dict):
        raise ConfigError("{}: a task must be a JSON object with target, workload and params, got a JSON {}".format(
            source, _json_type(raw)))
    for key in ("target", "workload", "params"):
        if key not in raw:
            raise ConfigError("{}: missing field '{}' (a task needs target, workload and params)".format(source, key))
    extra = sorted(set(raw) - {"target", "workload", "params"})
    if extra:
        raise ConfigError("{}: unknown field '{}' (a task has only target, workload and params)".format(
            source, extra[0]))
    target = _string(raw["target"], source, "target")
    target_options = get_target(target, source).option_names  # refuses unknown and MLMark-only targets
    workload = _string(raw["workload"], source, "workload")
    if workload not in workload_names():
        raise ConfigError("{}: unknown workload '{}' (allowed: {})".format(
            source, clean(workload), ", ".join(workload_names())))
    params = raw["params"]
    if not isinstance(params, dict):
        raise ConfigError("{}: field 'params' must be a JSON object, got a JSON {}".format(source, _json_type(params)))
    parsed = _parse_params(params, source, target, target_options, base_dir)
    if parsed.images_per_class is not None:
        from workloads import get_workload

        if not get_workload(workload).per_class_subsets:
            raise ConfigError("{}: params.images_per_class applies to the ImageNet workloads only "
                              "(mobilenet, resnet50); use params.max_images".format(source))
    return Task(target=target, workload=workload, params=parsed, source=source, index=index)


def _parse_params(p: Dict[str, Any], source: str, target: str, target_options: Sequence[str],
                  base_dir: Path) -> Params:
    allowed = set(COMMON_PARAMS) | set(target_options)
    unknown = sorted(set(p) - allowed)
    if unknown:
        extra = " and {}'s options {}".format(target, ", ".join(sorted(target_options))) if target_options else ""
        raise ConfigError("{}: unknown field 'params.{}' (allowed: {}{})".format(
            source, unknown[0], ", ".join(COMMON_PARAMS), extra))
    for key in ("mode", "hardware", "precision"):
        if key not in p:
            raise ConfigError("{}: missing field 'params.{}'".format(source, key))
    mode = _choice(p["mode"], source, "params.mode", MODES)
    hardware = _choice(p["hardware"], source, "params.hardware", HARDWARE)
    precision = _choice(p["precision"], source, "params.precision", PRECISIONS)
    if "batch" in p and "batch_size" in p and not (
            type(p["batch"]) is type(p["batch_size"]) and p["batch"] == p["batch_size"]):
        raise ConfigError("{}: params.batch ({}) and params.batch_size ({}) disagree; give one".format(
            source, shown(p["batch"]), shown(p["batch_size"])))
    batch_key = "batch" if "batch" in p else "batch_size"
    batch = _positive_int(p.get(batch_key, 1), source, "params." + batch_key, MAX_BATCH)
    concurrency = _positive_int(p.get("concurrency", 1), source, "params.concurrency", MAX_CONCURRENCY)
    default_iterations = 1 if mode == "accuracy" else MIN_VALID_ITERATIONS
    iterations = _positive_int(p.get("iterations", default_iterations), source, "params.iterations", MAX_ITERATIONS)
    warmup_s = DEFAULT_WARMUP_S
    if "warmup" in p:
        warmup_s = _number(p["warmup"], source, "params.warmup (seconds)", 0.0, MAX_WARMUP_S)
    warmup_iterations = 0
    if "warmup_iterations" in p:
        warmup_iterations = _nonneg_int(p["warmup_iterations"], source, "params.warmup_iterations", MAX_ITERATIONS)
    model = None
    if p.get("model") is not None:
        model = _model_path(p["model"], source, base_dir)
    subset = {}
    for key, bound in (("images_per_class", MAX_IMAGES_PER_CLASS), ("max_images", MAX_IMAGES)):
        if p.get(key) is not None:
            if mode != "accuracy":
                raise ConfigError("{}: params.{} applies to mode accuracy only".format(source, key))
            subset[key] = _positive_int(p[key], source, "params." + key, bound)
    if mode == "latency" and (batch != 1 or concurrency != 1):
        log.info("%s: latency mode runs batch 1 and concurrency 1 (config asked batch %d, concurrency %d)",
                 source, batch, concurrency)
        batch, concurrency = 1, 1
    options = {k: v for k, v in p.items() if k in target_options}
    return Params(mode=mode, hardware=hardware, precision=precision, batch=batch, concurrency=concurrency,
                  iterations=iterations, warmup_s=warmup_s, warmup_iterations=warmup_iterations,
                  model=model, options=options, **subset)


def _model_path(value: Any, source: str, base_dir: Path) -> str:
    text = _string(value, source, "params.model")
    path = Path(os.path.expanduser(text))
    try:
        if not path.is_absolute() and not path.exists() and (base_dir / path).exists():
            path = base_dir / path  # relative to the config file when not found from the current folder
        if path.is_dir():
            raise ConfigError("{}: params.model: {} is a folder, not an ONNX file".format(source, clean(text)))
        found = path.is_file()
    except OSError:  # a name too long for the file system, say
        found = False
    if not found:
        raise ConfigError("{}: params.model: file not found: {}".format(source, clean(text)))
    if path.suffix.lower() != ".onnx":
        raise ConfigError("{}: params.model: {} is not an ONNX file (expected a .onnx file)".format(
            source, clean(text)))
    return str(path.resolve())


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _string(value: Any, source: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("{}: field '{}' must be a non-empty string, got {}".format(source, name, shown(value)))
    return value


def _choice(value: Any, source: str, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError("{}: unknown {} {} (allowed: {})".format(
            source, name, shown(value), ", ".join(allowed)))
    return value


def _positive_int(value: Any, source: str, name: str, bound: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
        raise ConfigError("{}: {} must be a positive integer no larger than {}, got {}".format(
            source, name, bound, shown(value)))
    return value


def _nonneg_int(value: Any, source: str, name: str, bound: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
        raise ConfigError("{}: {} must be an integer from 0 to {}, got {}".format(
            source, name, bound, shown(value)))
    return value


def _number(value: Any, source: str, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError("{}: {} must be a number from {:g} to {:g}, got {}".format(
            source, name, lo, hi, shown(value)))
    return float(value)
