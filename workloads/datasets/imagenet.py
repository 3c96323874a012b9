"""ILSVRC2012 validation set: the `<file> <class index>` label file, MLMark's subset, and a devkit converter.

Label file: one `<image file> <class index>` per line, the index 0..999 in sorted-synset (WordNet
ID) order. This is MLMark's `validation.txt` and Caffe's `val.txt` (caffe_ilsvrc12.tar.gz), the
form most tools use. TF-slim's 1001-class models put a background class at 0 and the same sorted
synsets at 1..1000; the scoring subtracts that offset.

The official devkit (ILSVRC2012_devkit_t12) gives the ground truth differently:
`data/ILSVRC2012_validation_ground_truth.txt` has one ILSVRC2012_ID (1..1000) per line, line i for
ILSVRC2012_val_%08d.JPEG % i, and the IDs are in the devkit's own order, defined by
`data/meta.mat` (ID -> WNID). `convert_devkit` maps each ID to its WNID and then to that WNID's
rank among the 1000 sorted WNIDs, which is the label file's index. meta.mat needs scipy
(`pip install scipy`); without it, give the ID -> WNID table as a text file instead (`--synsets`):
either one WNID per line, line i being ILSVRC2012_ID i, or lines `<ID> <WNID> [words...]`.

    python -m workloads.datasets.imagenet --devkit ILSVRC2012_devkit_t12 \\
        -o datasets/ILSVRC2012/annotations/validation.txt

MLMark's subset: per class, the first `images_per_class` (5) file names in sorted order; the
whole selection sorted by file name; then, for quick runs, its first `max_images`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from core.console import guarded
from core.errors import DatasetError
from core.fileio import atomic_write_text

NUM_CLASSES = 1000
IMAGES_PER_CLASS = 5  # MLMark's subset: 5 per class, 5,000 images
VAL_IMAGES = 50000
_WNID = re.compile(r"^n\d{8}$")


def parse_label_file(path: Path, num_classes: int = NUM_CLASSES) -> List[Tuple[str, int]]:
    """(file, class index) of every line of a `<file> <class index>` label file; DatasetError on any bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError("{}: label file not found".format(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError("{}: cannot read the label file ({})".format(path, exc)) from None
    entries: List[Tuple[str, int]] = []
    seen: Dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not re.match(r"^-?\d+$", parts[1]):
            raise DatasetError("{}: line {}: expected '<image file> <class index>', got '{}'".format(
                path, lineno, line[:80]))
        name, index = parts[0], int(parts[1])
        if not 0 <= index < num_classes:
            raise DatasetError("{}: line {}: class index {} is out of range 0..{} (indices are 0-based in sorted "
                               "synset order, as Caffe's val.txt; convert the devkit's 1..1000 IDs with python -m "
                               "workloads.datasets.imagenet --devkit DIR)".format(path, lineno, index, num_classes - 1))
        if name.startswith("/") or ".." in Path(name).parts:
            raise DatasetError("{}: line {}: '{}' must be a path relative to the images folder".format(
                path, lineno, name))
        if name in seen:
            raise DatasetError("{}: line {}: {} is listed twice (first on line {})".format(
                path, lineno, name, seen[name]))
        seen[name] = lineno
        entries.append((name, index))
    if not entries:
        raise DatasetError("{}: the label file lists no image".format(path))
    return entries


def select_subset(entries: Sequence[Tuple[str, int]], images_per_class: int = IMAGES_PER_CLASS,
                  max_images: Optional[int] = None) -> List[Tuple[str, int]]:
    """MLMark's selection: the first images_per_class names (sorted) of each class, sorted by name, then a prefix."""
    by_class: Dict[int, List[str]] = defaultdict(list)
    for name, label in entries:
        by_class[label].append(name)
    chosen = [(name, label) for label, names in by_class.items() for name in sorted(names)[:images_per_class]]
    chosen.sort()
    if max_images is not None:
        chosen = chosen[:max_images]
    return chosen


# ---------------------------------------------------------------------- devkit conversion


def read_synsets(path: Path) -> Dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1000 classes, from the devkit's meta.mat or a text table."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return _read_meta_mat(path)
    table: Dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError("{}: cannot read ({})".format(path, exc)) from None
    n = 0
    for lineno, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        n += 1
        if _WNID.match(parts[0]):  # one WNID per line, in ID order
            table[n] = parts[0]
        elif len(parts) >= 2 and parts[0].isdigit() and _WNID.match(parts[1]):
            table[int(parts[0])] = parts[1]
        else:
            raise DatasetError("{}: line {}: expected '<WNID>' or '<ILSVRC2012_ID> <WNID> [words]', got '{}'".format(
                path, lineno, raw.strip()[:80]))
    return _check_synsets(table, path)


def _read_meta_mat(path: Path) -> Dict[int, str]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("{}: reading meta.mat needs scipy (pip install scipy); or give the ID -> WNID table as "
                           "a text file with --synsets".format(path)) from None
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        ids = [int(x) for x in synsets["ILSVRC2012_ID"]]
        wnids = [str(x) for x in synsets["WNID"]]
    except Exception as exc:  # scipy raises many types for a file that is not the devkit's meta.mat
        raise DatasetError("{}: not the devkit's meta.mat ({})".format(path, str(exc).splitlines()[0][:120])) from None
    # meta.mat also lists the 860 non-leaf synsets (IDs above 1000); the classes are IDs 1..1000.
    return _check_synsets({i: w for i, w in zip(ids, wnids) if 1 <= i <= NUM_CLASSES}, path)


def _check_synsets(table: Dict[int, str], path: Path) -> Dict[int, str]:
    if sorted(table) != list(range(1, NUM_CLASSES + 1)) or len(set(table.values())) != NUM_CLASSES:
        raise DatasetError("{}: expected {} distinct WNIDs for ILSVRC2012_ID 1..{}, found {} IDs and {} WNIDs".format(
            path, NUM_CLASSES, NUM_CLASSES, len(table), len(set(table.values()))))
    return table


def devkit_to_index(synsets: Dict[int, str]) -> Dict[int, int]:
    """ILSVRC2012_ID (devkit order, 1-based) -> class index (0-based, sorted-WNID order)."""
    rank = {wnid: i for i, wnid in enumerate(sorted(synsets.values()))}
    return {devkit_id: rank[wnid] for devkit_id, wnid in synsets.items()}


def convert_devkit(ground_truth: Path, synsets: Path) -> List[str]:
    """Label-file lines `ILSVRC2012_val_%08d.JPEG <index>` from the devkit's ground truth and its synset table."""
    mapping = devkit_to_index(read_synsets(synsets))
    try:
        values = Path(ground_truth).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise DatasetError("{}: cannot read ({})".format(ground_truth, exc)) from None
    lines = []
    for n, v in enumerate(values, start=1):
        if not v.isdigit() or int(v) not in mapping:
            raise DatasetError("{}: value {} ('{}') is not an ILSVRC2012_ID 1..{}".format(
                ground_truth, n, v[:20], NUM_CLASSES))
        lines.append("ILSVRC2012_val_{:08d}.JPEG {}".format(n, mapping[int(v)]))
    if not lines:
        raise DatasetError("{}: empty ground-truth file".format(ground_truth))
    return lines


def _devkit_files(devkit: Path) -> Tuple[Path, Path]:
    for data in (devkit / "data", devkit):
        gt = data / "ILSVRC2012_validation_ground_truth.txt"
        if gt.is_file():
            return gt, data / "meta.mat"
    raise DatasetError("{}: no data/ILSVRC2012_validation_ground_truth.txt (extract ILSVRC2012_devkit_t12.tar.gz "
                       "and give its folder)".format(devkit))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write a label file from the ILSVRC2012 devkit."""
    parser = argparse.ArgumentParser(
        prog="python -m workloads.datasets.imagenet",
        description="Convert the ILSVRC2012 devkit's validation ground truth (ILSVRC2012_ID 1..1000, devkit order) "
                    "into a '<file> <class index>' label file (0..999, sorted-WNID order, as Caffe's val.txt).")
    parser.add_argument("--devkit", type=Path, help="the extracted ILSVRC2012_devkit_t12 folder")
    parser.add_argument("--ground-truth", type=Path, help="ILSVRC2012_validation_ground_truth.txt (else from --devkit)")
    parser.add_argument("--synsets", type=Path, help="meta.mat (needs scipy) or a text ID -> WNID table "
                        "(else the devkit's meta.mat)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the label file to write")
    args = parser.parse_args(argv)

    def convert() -> int:
        gt, meta = args.ground_truth, args.synsets
        if args.devkit is not None:
            dk_gt, dk_meta = _devkit_files(args.devkit)
            gt, meta = gt or dk_gt, meta or dk_meta
        if gt is None or meta is None:
            parser.error("give --devkit, or both --ground-truth and --synsets")
        lines = convert_devkit(gt, meta)
        atomic_write_text(args.output, "\n".join(lines) + "\n")
        print("wrote {} ({} images)".format(args.output, len(lines)))
        return 0

    return guarded(parser.prog, 0, convert)


if __name__ == "__main__":
    sys.exit(main())
