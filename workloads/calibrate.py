"""INT8 calibration: a workload's own preprocessing of real images through ONNX Runtime's calibrators.

`calibrate()` is what `utility/calibrate.py` runs:

1. the images: the first N of the workload's dataset in the harness's order (MLMark's subset
   order, `workloads/datasets`), or the first N image files of a folder in sorted order; each
   decoded and preprocessed exactly as accuracy runs do (`workloads/preprocess.py`). Unreadable
   files are skipped and counted, and refused beyond MAX_UNREADABLE_FRACTION. There is no
   fallback to random data: scales calibrated on noise are worthless for accuracy.
2. the ranges: onnxruntime.quantization's calibrator (entropy by default, as TensorRT's
   EntropyCalibration2; percentile or minmax on request) over every float activation of the
   model, fed a few images at a time so that memory stays bounded.
3. the table: scale = amax / 127 per activation (see precision/table.py), written to
   utility/CalibrationTable_<workload> with its sidecar record;
4. the Q/DQ model with exactly those scales (precision/qdq.py), beside the model, and a check
   of its output against the float model on the first calibration images.

Entropy settings: a signed histogram of 2048 bins and 255 quantized levels, close to TensorRT's
2048 bins of |x| quantized to 128 levels (ONNX Runtime's own defaults, 128 and 128, leave the
search a single candidate: the plain maximum). Before the search the zero bin is flattened to its
neighbours' height, as NVIDIA's calibrators do (see _flatten_zero_spike), and the search, pure
Python in ONNX Runtime and about a second per tensor, runs over a process pool.

The check of step 4 runs the Q/DQ graph as written (graph optimizations off); the onnxruntime
target's int8 tasks run ONNX Runtime's optimized graph, which folds and fuses around the Q/DQ pairs.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from core.errors import DatasetError, ModelError, RunError
from core.fileio import atomic_write_bytes, sha256_file
from core.progress import progress
from precision import qdq as qdqmod
from precision.table import ENTROPY2, CalibrationTable, activation_tensors, sidecar_path, table_path, write_table

log = logging.getLogger("mlmark.int8")

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_METHOD = "entropy"
DEFAULT_COUNT = 500  # MLMark's tables were made from the first 500 images
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 255
PERCENTILE_BINS = 2048
PERCENTILE = 99.999
# The header names the TensorRT calibrator closest to the method (its legacy one is quantile-based).
ALGORITHMS = {"entropy": ENTROPY2, "minmax": "MinMaxCalibration", "percentile": "LegacyCalibration"}
# Up to this fraction of the requested images may be unreadable (skipped and counted); more means
# the folder is not what the user thinks it is.
MAX_UNREADABLE_FRACTION = 0.05
CHUNK_IMAGES = 8  # images per calibrator pass: bounds the memory of the intermediate outputs
AGREEMENT_IMAGES = 16  # first calibration images on which the Q/DQ model is checked against fp32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PathLike = Union[str, Path]


@dataclass
class CalibrationImages:
    """The preprocessed calibration images (uint8 planes, before normalisation) and where they came from."""

    pixels: np.ndarray  # uint8 [N, 3, h, w] of the readable images, in order
    names: List[str]  # their names, relative to the dataset's images folder or to --images
    skipped: List[Tuple[str, str]]  # (name, reason) of the unreadable ones
    requested: int
    identity: Dict[str, Any]  # dataset or folder, selection, and a SHA-256 over the files used


@dataclass
class CalibrationResult:
    """What calibrate() wrote and measured."""

    table_path: Path
    qdq_path: Path
    table: CalibrationTable
    record: Dict[str, Any]
    agreement: Dict[str, Any]
    seconds: Dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------- images


def _folder_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise DatasetError("{}: no such folder of calibration images".format(folder))
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise DatasetError("{}: no image files ({}) in this folder: calibration needs real images (a table made "
                           "from random data is worthless)".format(folder, ", ".join(IMAGE_SUFFIXES)))
    return files


def select_images(workload: Any, images: Optional[PathLike], count: int) -> Tuple[List[Path], List[str], Dict[str, Any]]:
    """The first `count` calibration image files, their names, and the identity of where they come from."""
    from workloads.datasets import check_dataset

    if count < 1:
        raise DatasetError("the image count must be at least 1, got {}".format(count))
    if images is not None:
        folder = Path(images)
        files = _folder_images(folder)
        if len(files) < count:
            raise DatasetError("{}: {} image files, fewer than the {} requested: give --count {} or more "
                               "images".format(folder, len(files), count, len(files)))
        chosen = files[:count]
        return chosen, [p.relative_to(folder).as_posix() for p in chosen], {
            "source": "folder", "folder": str(folder.resolve()), "order": "sorted file names"}
    try:
        subset = check_dataset(workload, None, count)
    except DatasetError as exc:
        raise DatasetError("no calibration images: {}; or give a folder of images with --images DIR (a table made "
                           "from random data is worthless)".format(exc)) from None
    if subset.selected < count:
        raise DatasetError("{}: the dataset's selection holds {} images, fewer than the {} requested: give --count "
                           "{} or link the complete dataset (see datasets/README.md)".format(
                               subset.root, subset.selected, count, subset.selected))
    return [s.path for s in subset.samples], [s.name for s in subset.samples], {
        "source": "dataset", "dataset": subset.dataset, "identity": subset.identity,
        "order": "the harness's accuracy order (workloads/datasets), first {}".format(count),
        "missing_skipped": list(subset.missing)}


def load_images(workload: Any, images: Optional[PathLike] = None, count: int = DEFAULT_COUNT) -> CalibrationImages:
    """Select, decode and preprocess the calibration images (geometry stage; normalised per batch later)."""
    from workloads.preprocess import cached_preprocess

    spec = workload.preprocess
    if spec is None:
        raise DatasetError("workload {} defines no preprocessing to calibrate with".format(workload.name))
    paths, names, identity = select_images(workload, images, count)
    missing = identity.pop("missing_skipped", [])
    # Decoded in parallel by the accuracy pipeline, into a private folder: a calibration set is
    # used once, so it is not kept in the datasets cache.
    with tempfile.TemporaryDirectory(prefix="mlmark-calib-") as tmp:
        cache = cached_preprocess(paths, spec, Path(tmp), {"calibration": identity}, "calibration",
                                  label="{} calibration images".format(workload.name))
        ok = np.flatnonzero(cache.ok)
        pixels = np.array(cache.pixels[ok])  # copied out of the memory map before the folder goes
    skipped = [(m, "missing") for m in missing] + [(names[i], why) for i, why in cache.failures]
    allowed = int(MAX_UNREADABLE_FRACTION * count)
    if len(skipped) > allowed:
        raise DatasetError("{} of the {} calibration images are unreadable (first: {}: {}); at most {} may be: check "
                           "the images folder".format(len(skipped), count, skipped[0][0], skipped[0][1], allowed))
    for name, why in skipped[:5]:
        log.warning("calibration: skipped %s (%s)", name, why)
    used = [names[i] for i in ok]
    h = hashlib.sha256()
    for i in ok:
        h.update(sha256_file(paths[i]).encode("ascii"))
    identity.update({"requested": count, "used": len(used), "skipped": len(skipped),
                     "first": used[0], "last": used[-1], "files_sha256": h.hexdigest(),
                     "preprocess": spec.describe()})
    return CalibrationImages(pixels=pixels, names=used, skipped=skipped, requested=count, identity=identity)


# ---------------------------------------------------------------------- model input


def _input_info(model_path: Path, workload: Any) -> Tuple[str, Any, str, str]:
    """Input name, batch dimension (int or symbolic), dtype and layout; ModelError without a batch dimension."""
    import onnx

    from workloads.preprocess import input_format

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises a variety of types for a corrupt file
        raise ModelError("{}: not a readable ONNX model ({})".format(model_path, str(exc).splitlines()[0][:200])) \
            from None
    if qdqmod.is_qdq_model(model):
        raise ModelError("{}: already quantized (it holds QuantizeLinear/DequantizeLinear nodes): calibrate the float "
                         "model it was made from".format(model_path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ModelError("{}: calibration feeds one image input, the model has {}".format(
            model_path, [v.name for v in inputs]))
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) == 3:
        raise ModelError("{}: input '{}' has shape {}, without a batch dimension: calibration and the Q/DQ model "
                         "need [N, {}] (export the model with a batch dimension)".format(
                             model_path, inputs[0].name, dims, ", ".join(str(d) for d in dims)))
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
    except AttributeError:  # onnx < 1.13
        np_dtype = onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[inputs[0].type.tensor_type.elem_type]
    dtype, layout = input_format(dims, str(np_dtype), workload.preprocess.size, str(model_path))
    return inputs[0].name, dims[0], dtype, layout


# ---------------------------------------------------------------------- calibration


def _calibration_method(method: str, bins: Optional[int]) -> Tuple[Any, Dict[str, Any]]:
    from onnxruntime.quantization import CalibrationMethod

    if method == "entropy":
        return CalibrationMethod.Entropy, {"symmetric": True, "num_bins": bins or ENTROPY_BINS,
                                           "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
    if method == "percentile":
        return CalibrationMethod.Percentile, {"symmetric": True, "num_bins": bins or PERCENTILE_BINS,
                                              "percentile": PERCENTILE}
    if method == "minmax":
        return CalibrationMethod.MinMax, {"symmetric": True}
    raise ValueError("unknown calibration method {!r} (allowed: {})".format(method, ", ".join(METHODS)))


def _reader(name: str, batch: np.ndarray) -> Any:
    """A CalibrationDataReader that serves one batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class OneBatch(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = [{name: batch}]

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return self.items.pop() if self.items else None

    return OneBatch()


def collect_ranges(model_path: Path, batches: Sequence[np.ndarray], input_name: str, method: str,
                   bins: Optional[int] = None, progress: Optional[Callable[[int], None]] = None) -> Dict[str, float]:
    """amax per calibrated tensor, from onnxruntime's calibrator over the batches."""
    qmod = qdqmod.quantization_api()
    cal_method, options = _calibration_method(method, bins)
    quiet = io.StringIO()  # the calibrators print a line per pass on stdout
    with tempfile.TemporaryDirectory(prefix="mlmark-calib-") as tmp:
        calibrator = qmod.create_calibrator(Path(model_path), None,
                                            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                            calibrate_method=cal_method, extra_options=options)
        try:
            for batch in batches:
                with contextlib.redirect_stdout(quiet):
                    calibrator.collect_data(_reader(input_name, batch))
                if progress is not None:
                    progress(int(batch.shape[0]))
            if method == "entropy":
                _flatten_zero_spike(calibrator)
            t0 = time.perf_counter()
            data = _compute(calibrator, method, quiet)
            log.info("%s thresholds of %d tensors computed in %.1f s", method, len(data), time.perf_counter() - t0)
        finally:
            del calibrator  # closes its session before the augmented model's folder goes
    amax: Dict[str, float] = {}
    for name, td in data.items():
        lo, hi = td[0], td[1]
        # 0-d for most calibrators, shape [1] for some releases' minmax: reduce either way
        amax[name] = float(max(np.abs(np.asarray(lo, dtype=np.float64)).max(),
                               np.abs(np.asarray(hi, dtype=np.float64)).max()))
    return amax


def _flatten_zero_spike(calibrator: Any) -> None:
    """Give each histogram's zero bin its neighbours' height before the entropy search.

    After a ReLU, half or more of a tensor is exactly 0. That spike sits in one bin, and the KL
    search, which merges neighbouring bins for every threshold above the smallest, then finds the
    smallest threshold best whatever the data (ReLU6 outputs clipped at 0.75 instead of 6).
    NVIDIA's own entropy calibration (pytorch-quantization, TensorRT Model Optimizer) sets the
    zero bin to its neighbour's count for this reason; this does the same to onnxruntime's
    histograms, whose (hist, edges, ...) tuples are signed with 0 inside.
    """
    hists = getattr(getattr(calibrator, "collector", None), "histogram_dict", None)
    if not isinstance(hists, dict):
        log.warning("this onnxruntime keeps no histograms where expected: entropy runs without the zero-bin "
                    "correction (ReLU outputs may be clipped hard)")
        return
    for name, value in list(hists.items()):
        hist, edges = np.asarray(value[0]), np.asarray(value[1])
        if hist.ndim != 1 or hist.size < 3 or edges.size != hist.size + 1:
            continue
        z = int(np.clip(np.searchsorted(edges, 0.0, side="right") - 1, 0, hist.size - 1))
        left = hist[z - 1] if z > 0 else 0
        right = hist[z + 1] if z + 1 < hist.size else 0
        flat = hist.copy()
        flat[z] = max(left, right)
        hists[name] = (flat,) + tuple(value[1:])


def _compute(calibrator: Any, method: str, quiet: Any) -> Dict[str, Any]:
    """Tensor -> (lowest, highest, ...) from the calibrator, histogram thresholds over a process pool.

    The entropy search is ONNX Runtime's own (HistogramCollector), in pure Python: about a second
    per tensor with 2048 bins. Tensors are independent, so each process runs the library's search
    on a share of the histograms; without a collector to share (minmax, or a release that keeps it
    elsewhere) the calibrator computes everything itself.
    """
    collector = getattr(calibrator, "collector", None)
    hists = getattr(collector, "histogram_dict", None)
    workers = min(_cores(), len(hists or ()) // 8)
    if method == "minmax" or not isinstance(hists, dict) or workers < 2:
        with contextlib.redirect_stdout(quiet):
            data = calibrator.compute_data()
        return {name: td.range_value if hasattr(td, "range_value") else td for name, td in data.items()}
    import copy
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Largest histograms first, each to the least loaded share: the search costs about its bin count.
    shares: List[Dict[str, Any]] = [{} for _ in range(workers)]
    load = [0] * workers
    for name, hist in sorted(hists.items(), key=lambda kv: -len(kv[1][0])):
        k = load.index(min(load))
        shares[k][name] = hist
        load[k] += len(hist[0])
    parts = []
    for share in shares:
        part = copy.copy(collector)
        part.histogram_dict = share
        parts.append(part)
    # Not fork: this process runs ONNX Runtime's threads (see workloads/preprocess.py).
    method_name = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method_name)) as pool:
        results = list(pool.map(_thresholds, parts))
    merged: Dict[str, Any] = {}
    for r in results:
        merged.update(r)
    return merged


def _thresholds(collector: Any) -> Dict[str, Any]:
    """Run the library's threshold search on one share of the histograms (in a pool process)."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = collector.compute_collection_result()
    return {name: (v.range_value if hasattr(v, "range_value") else v) for name, v in result.items()}


def _cores() -> int:
    from workloads.preprocess import available_cores

    return available_cores()


def scale_of(amax: float) -> float:
    """The table's float32 scale for a range: amax / 127, or 1 where the range is empty (as ONNX Runtime does)."""
    s = np.float32(np.float64(amax) / 127.0)
    if s < np.finfo(np.float32).tiny:
        return 1.0  # a tensor that was 0 on every image; a zero scale would make QuantizeLinear divide by 0
    return float(s)


def make_table(model_path: Path, amax: Dict[str, float], method: str) -> CalibrationTable:
    """The table for every activation of the model, from the calibrator's ranges."""
    names = activation_tensors(model_path)
    lacking = [n for n in names if n not in amax]
    if lacking:
        raise RunError("{}: the calibrator produced no range for {} activation tensors (first: {})".format(
            model_path, len(lacking), lacking[0]))
    bad = [n for n in names if not math.isfinite(amax[n])]
    if bad:
        raise ModelError("{}: tensor '{}' is not finite on the calibration images ({} tensors): the weights or the "
                         "preprocessing are wrong".format(model_path, bad[0], len(bad)))
    return CalibrationTable(scales={n: scale_of(amax[n]) for n in names}, algorithm=ALGORITHMS[method])


# ---------------------------------------------------------------------- agreement


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened (1.0 for two zero arrays)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(np.dot(a, b) / (na * nb)) if na and nb else 0.0


def agreement(run_a: Callable[[np.ndarray], Sequence[np.ndarray]], run_b: Callable[[np.ndarray], Sequence[np.ndarray]],
              images: Iterable[np.ndarray], classification: bool) -> Dict[str, Any]:
    """How closely model b reproduces model a: per-image cosine of all outputs, and top-1 agreement."""
    cos: List[float] = []
    same = 0
    for x in images:
        out_a = [np.asarray(o) for o in run_a(x)]
        out_b = [np.asarray(o) for o in run_b(x)]
        for i in range(x.shape[0]):
            cos.append(cosine(np.concatenate([o[i].ravel() for o in out_a]),
                              np.concatenate([o[i].ravel() for o in out_b])))
            if classification:
                same += int(np.argmax(out_a[0][i]) == np.argmax(out_b[0][i]))
    res: Dict[str, Any] = {"images": len(cos), "cosine_min": min(cos) if cos else None,
                           "cosine_mean": float(np.mean(cos)) if cos else None}
    if classification:
        res["top1_agreement"] = same / len(cos) if cos else None
    return res


def ort_runner(model: Union[Path, bytes], input_name: str, threads: Optional[int] = None,
               optimize: bool = True) -> Callable[[np.ndarray], Any]:
    """A plain ONNX Runtime CPU session as a function of the input batch.

    optimize=False runs the graph as written: a Q/DQ model then computes exactly its quantize,
    dequantize and float arithmetic (what TensorRT's int8 kernels approximate with int32 sums),
    rather than ONNX Runtime's optimized graph, which folds the weights' dequantization and fuses
    float operators around the activations' Q/DQ pairs, rounding slightly differently.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {input_name: x})


# ---------------------------------------------------------------------- the whole run


def calibrate(workload_name: str, images: Optional[PathLike] = None, count: int = DEFAULT_COUNT,
              model: Optional[PathLike] = None, method: str = DEFAULT_METHOD, table_out: Optional[PathLike] = None,
              qdq_out: Optional[PathLike] = None, bins: Optional[int] = None,
              check_images: int = AGREEMENT_IMAGES) -> CalibrationResult:
    """Calibrate a workload's model on real images; write the table, its record and the Q/DQ model."""
    import onnxruntime as ort

    from workloads import get_workload
    from workloads.model_store import resolve_model

    if method not in METHODS:
        raise ValueError("unknown calibration method {!r} (allowed: {})".format(method, ", ".join(METHODS)))
    qdqmod.quantization_api()
    workload = get_workload(workload_name)
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    if model is not None:
        _input_info(Path(model), workload)  # a model without a batch dimension: say so before anything else
    select_images(workload, images, count)  # no images, or too few: say so before any model is generated
    mf = resolve_model(workload, str(model) if model is not None else None)
    input_name, batch_dim, dtype, layout = _input_info(mf.path, workload)
    imgs = load_images(workload, images, count)
    seconds["images"] = time.perf_counter() - t0

    x = workload.preprocess.normalize(imgs.pixels, dtype, layout)
    fixed = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
    batches = _batches(x, fixed, mf.path)
    fed = sum(b.shape[0] for b in batches)
    if fed < len(imgs.names):
        imgs.identity.update(used=fed, last=imgs.names[fed - 1])

    t1 = time.perf_counter()
    log.info("calibrating %s (%s) with %s on %d images", workload.name, mf.path.name, method, fed)
    with progress("{} calibration ({})".format(workload.name, method), fed) as bar:
        amax = collect_ranges(mf.path, batches, input_name, method, bins, progress=bar.update)
    table = make_table(mf.path, amax, method)
    seconds["calibration"] = time.perf_counter() - t1

    table_file = Path(table_out) if table_out is not None else table_path(workload.name)
    qdq_file = Path(qdq_out) if qdq_out is not None else qdqmod.qdq_path(mf.path)
    text = table.to_text()
    table_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    created = datetime.datetime.now().isoformat(timespec="seconds")
    images_line = "{} images of {} ({} .. {})".format(
        fed, imgs.identity.get("dataset") or imgs.identity.get("folder"), imgs.identity["first"], imgs.identity["last"])
    t2 = time.perf_counter()
    qdq_model = qdqmod.build_qdq(mf.path, table, {
        qdqmod.META_SOURCE_SHA: mf.sha256, qdqmod.META_SOURCE_FILE: mf.path.name,
        qdqmod.META_TABLE_SHA: table_sha, qdqmod.META_TABLE_FILE: table_file.name,
        qdqmod.META_METHOD: method, qdqmod.META_IMAGES: images_line, qdqmod.META_CREATED: created})
    data = qdq_model.SerializeToString()
    seconds["qdq"] = time.perf_counter() - t2

    # The Q/DQ model against the float one on the first calibration images, before anything is written.
    t3 = time.perf_counter()
    agree = _qdq_agreement(mf.path, data, input_name, x, batches, fixed, check_images,
                           workload.kind == "classification")
    seconds["check"] = time.perf_counter() - t3

    record = {
        "workload": workload.name,
        "model": {"file": mf.path.name, "path": str(mf.path), "sha256": mf.sha256, "weights": mf.weights},
        "images": imgs.identity,
        "method": {"name": method, "library": "onnxruntime.quantization.create_calibrator",
                   "options": _calibration_method(method, bins)[1], "symmetric": True},
        "created": created,
        "onnxruntime": ort.__version__,
        "qdq": {"file": qdq_file.name, "sha256": hashlib.sha256(data).hexdigest(),
                "quantized": "inputs of " + ", ".join(qdqmod.QUANTIZED_OPS) + " (symmetric int8; weights per channel)"},
        "agreement": agree,
    }
    try:
        atomic_write_bytes(qdq_file, data)
    except OSError as exc:
        raise ModelError("{}: cannot write the Q/DQ model ({})".format(qdq_file, exc.strerror or exc)) from None
    record = write_table(table_file, table, record)
    seconds["total"] = time.perf_counter() - t0
    log.info("wrote %s (%d tensors), %s and %s", table_file, len(table.scales), sidecar_path(table_file).name,
             qdq_file)
    return CalibrationResult(table_path=table_file, qdq_path=qdq_file, table=table, record=record, agreement=agree,
                             seconds=seconds)


def _batches(x: np.ndarray, fixed: Optional[int], model: Path) -> List[np.ndarray]:
    """The calibration images in batches the model takes: its fixed batch, else chunks of CHUNK_IMAGES."""
    if not fixed:
        return [x[i:i + CHUNK_IMAGES] for i in range(0, x.shape[0], CHUNK_IMAGES)]
    batches = [x[i:i + fixed] for i in range(0, x.shape[0] - fixed + 1, fixed)]
    if not batches:
        raise ModelError("{}: the model's batch dimension is fixed at {}, more than the {} calibration "
                         "images".format(model, fixed, x.shape[0]))
    if len(batches) * fixed < x.shape[0]:
        log.warning("the model's batch is fixed at %d: the last %d calibration images are not used", fixed,
                    x.shape[0] - len(batches) * fixed)
    return batches


def _qdq_agreement(model: Path, qdq: bytes, input_name: str, x: np.ndarray, batches: List[np.ndarray],
                   fixed: Optional[int], images: int, classification: bool) -> Dict[str, Any]:
    """The Q/DQ model's arithmetic as written against the float model, on the first calibration images."""
    import onnxruntime as ort

    n_check = max(1, min(images, x.shape[0]))
    check = batches[:max(1, n_check // fixed)] if fixed else [x[i:i + 1] for i in range(n_check)]
    agree = agreement(ort_runner(model, input_name, optimize=False), ort_runner(qdq, input_name, optimize=False),
                      check, classification)
    agree["runtime"] = "onnxruntime {} CPU, graph optimizations off (the Q/DQ arithmetic as written)".format(
        ort.__version__)
    return agree
