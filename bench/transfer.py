"""Few-label transfer evaluation of any encoder checkpoint on any labelled image set.

How well does an encoder's representation carry over to a survey, or a labelling, it never
saw? As Slijepcevic et al. (2023) do with MIGHTEE: nothing is retuned; the methods of the
paper benchmark (``bench/paper_benchmark.py``: ``linear``, ``linear-dihedral``, ``finetune``,
``supervised``, ``pca``) are trained on random class-stratified label subsets of the set's
training part and scored on its test part. The result is the test error per method and label
budget (mean ± std over seeds), and the recall of every class at the largest budget run, so
that a rare class the methods miss is visible behind a good overall error.

Data (``--format``, ``--data``):

* ``fits``: raw FITS cutouts (flux, e.g. Jy/beam) in a folder, and a CSV naming each file
  (``--file-column``, relative to the folder) and its label (``--label-column``). Every image
  is preprocessed as at ingest (``ml.preprocess.preprocess``); a file that cannot be read or
  preprocessed is reported with its CSV row and skipped, and the skipped files are counted.
* ``png``: preprocessed PNG cutouts with a CSV as ``ml.datasets.read_png_catalogue`` reads it
  (``name``, ``ra``, ``dec``, optional ``file``); the label comes from ``--label-column``.
* ``mirabest`` (FRI / FRII / hybrid), ``mirabest-confident`` (the paper's FRI / FRII set),
  ``frdeep``: the published CIFAR-style batches (``ml.datasets``).
* ``griese``: the Griese et al. 2023 set (FRI / FRII / compact / bent); ``--data`` may be left
  out to read the copy inside the installed ``firstgalaxydata`` package.

For ``fits`` and ``png``, ``--data`` is the CSV, or the folder holding the images and its only
CSV (``--catalogue`` names the CSV otherwise). The classes are the labels the data holds, or
``--classes`` (a subset, in that order); sources of other classes are left out and counted.

The split is the data's own train/test split when it has one (the batches', Griese's, a CSV's
``--split-column`` with ``train`` / ``test`` values; validation sources join the training part
unless ``--valid-as`` says otherwise); else, or with ``--ignore-split``, a class-stratified split
with ``--test-fraction`` of the sources for testing, drawn with ``--split-seed``. The output
says which. ``--budgets`` counts labels in total (``--budget-unit total``, class-stratified
subsets as in the paper) or per class (``per-class``: balanced subsets); a budget the training
part cannot give is skipped with the reason.

Examples::

    .venv/bin/python -m bench.transfer --format griese --checkpoint var/benchmarks/byol-cpu-quick-e25-s0.pt \\
        --methods linear,linear-dihedral,pca --budget-unit per-class --budgets 5,10,25,100 --seeds 0-4
    .venv/bin/python -m bench.transfer --format fits --data cutouts/labels.csv --label-column morphology \\
        --split-column split --checkpoint encoder.pt --methods linear,pca --budgets 50,100,200

Results go to ``--out`` (JSON: the data read and skipped, the split with every source's name,
each fit with its per-class recall, the summary), rewritten after every fit; the tables are
printed as markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench import markdown_table
from bench.paper_benchmark import (
    ENCODER_METHODS,
    METHODS,
    PoseCache,
    add_method_options,
    check_method_options,
    checkpoint_summary,
    file_sha256,
    finetune_setup,
    method_runner,
    parse_seeds,
    plan_fits,
    run_summary,
    write_json,
)
from ml.evaluation import (
    FitPredict,
    SubsetResult,
    evaluate_subsets,
    per_class_subset,
    stratified_subset,
    summarise,
)
from ml.evaluation import markdown_table as error_table

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("fits", "png", "mirabest", "mirabest-confident", "frdeep", "griese")
CATALOGUE_FORMATS = frozenset({"fits", "png"})
BUDGET_UNITS = ("total", "per-class")
#: Accepted split values (case-insensitive) and what they mean.
SPLIT_VALUES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
}
#: Skipped inputs listed one by one on the terminal (the JSON lists all).
SHOWN_SKIPS = 10


class TransferError(ValueError):
    """Input the evaluation cannot use; the message names the file, column or row and why."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS, help="what --data holds")
    parser.add_argument(
        "--data",
        type=Path,
        help="the archive, or for fits/png the CSV or the folder of images (griese: default the package's copy)",
    )
    parser.add_argument("--catalogue", type=Path, help="fits/png: the CSV, when --data is a folder with several")
    parser.add_argument("--file-column", help="fits: the CSV column naming each file, relative to the folder [file]")
    parser.add_argument("--label-column", help="fits/png: the CSV column holding the label [label]")
    parser.add_argument("--split-column", help="fits/png: a CSV column with train / test (or valid) per source")
    parser.add_argument("--classes", help="comma-separated labels to evaluate, in this order (default: all found)")
    parser.add_argument(
        "--valid-as",
        choices=("train", "test", "drop"),
        default="train",
        help="where the data's validation sources go (Griese has 200) [train]",
    )
    parser.add_argument("--ignore-split", action="store_true", help="a stratified split even if the data has one")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="stratified split: share of test sources")
    parser.add_argument("--split-seed", type=int, default=0, help="stratified split: seed of the draw")
    parser.add_argument(
        "--checkpoint", type=Path, help=f"encoder checkpoint (needed by {', '.join(sorted(ENCODER_METHODS))})"
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated from {', '.join(METHODS)} [linear,pca with --checkpoint, else pca]",
    )
    parser.add_argument("--budgets", default="10,25,50,100", help="comma-separated label budgets")
    parser.add_argument(
        "--budget-unit",
        choices=BUDGET_UNITS,
        default="total",
        help="total: labels in all, class-stratified; per-class: that many labels of every class [total]",
    )
    parser.add_argument("--seeds", default="0-4", help="label subsets per budget, e.g. 0-9 or 0,1,2 [0-4]")
    add_method_options(parser)
    parser.add_argument("--out", type=Path, help="results JSON [var/benchmarks/transfer-FORMAT.json]")
    args = parser.parse_args(argv)

    methods = args.methods or ("linear,pca" if args.checkpoint else "pca")
    args.methods = list(dict.fromkeys(name.strip() for name in methods.split(",") if name.strip()))
    unknown = set(args.methods) - set(METHODS)
    if unknown or not args.methods:
        parser.error(f"unknown or no methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    needing = sorted(ENCODER_METHODS & set(args.methods))
    if needing and args.checkpoint is None:
        parser.error(f"methods {', '.join(needing)} use an encoder: pass --checkpoint")
    check_method_options(parser, args)
    if args.format in CATALOGUE_FORMATS:
        if args.data is None:
            parser.error(f"--format {args.format} needs --data (the CSV, or the folder of images)")
    else:
        given = [name for name in ("catalogue", "file_column", "label_column", "split_column") if getattr(args, name)]
        if given:
            options = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            parser.error(f"{options}: only for --format fits or png (--format {args.format} has its own labels)")
        if args.data is None and args.format != "griese":
            parser.error(f"--format {args.format} needs --data (the archive)")
    if args.format == "png" and args.file_column not in (None, "file"):
        parser.error("--file-column is for --format fits: a PNG catalogue names its files in a 'file' column")
    args.file_column = args.file_column or "file"
    args.label_column = args.label_column or "label"
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must lie between 0 and 1")
    try:
        args.budgets = sorted({int(part) for part in args.budgets.split(",") if part.strip()})
        args.seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(f"--budgets / --seeds: {exc}")
    if not args.budgets or min(args.budgets) < 1:
        parser.error("--budgets must be positive whole numbers")
    if args.classes is not None:
        args.classes = [name.strip() for name in args.classes.split(",") if name.strip()]
        if len(args.classes) < 2 or len(set(args.classes)) != len(args.classes):
            parser.error("--classes needs two or more different labels")
    args.out = args.out or ROOT / "var" / "benchmarks" / f"transfer-{args.format}.json"
    return args


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueRow:
    """One row of a CSV catalogue: its line, key (file or name), label and split."""

    line: int
    key: str
    label: str | None
    split: str | None


def split_value(text: str, where: str) -> str:
    """``"train"``, ``"test"`` or ``"valid"`` for a split value; ``where`` names it in errors."""
    value = SPLIT_VALUES.get(text.strip().lower())
    if value is None:
        raise TransferError(f"{where}: split {text!r} is not train or test (or valid)")
    return value


def read_label_catalogue(
    csv_path: Path, key_column: str, label_column: str, split_column: str | None
) -> tuple[dict[str, CatalogueRow], list[Any]]:
    """The rows of a CSV by key, and a ``RowError`` for each row whose key is empty or repeated.

    Raises:
        DatasetError: The file cannot be opened.
        TransferError: A named column is missing; a split value is not train/test/valid.
    """
    from ml.datasets import RowError, open_catalogue

    wanted = [("file" if key_column != "name" else "name", key_column), ("label", label_column)]
    if split_column:
        wanted.append(("split", split_column))
    rows: dict[str, CatalogueRow] = {}
    errors: list[RowError] = []
    with open_catalogue(csv_path) as (reader, columns):
        for role, column in wanted:
            if column.strip().lower() not in columns:
                found = ", ".join(repr(name) for name in columns.values()) or "none"
                raise TransferError(f"{csv_path}: no {role} column {column!r} (its columns: {found})")

        for row in reader:
            line = reader.line_num

            def value(column: str, row: dict[str, str | None] = row) -> str:
                return (row.get(columns[column.strip().lower()]) or "").strip()

            key = value(key_column)
            if not key:
                errors.append(RowError(line, None, f"empty {key_column!r}"))
                continue
            if key in rows:
                errors.append(RowError(line, key, f"{key!r} is already in row {rows[key].line}"))
                continue
            split = None
            if split_column:
                split = split_value(value(split_column), f"{csv_path} row {line}, column {split_column!r}")
            rows[key] = CatalogueRow(line, key, value(label_column) or None, split)
    return rows, errors


def read_fits_rows(folder: Path, rows: Iterable[CatalogueRow], dataset: str) -> Iterator[Any]:
    """A ``SourceRecord`` per FITS file that reads and preprocesses, a ``RowError`` per one that does not."""
    from ml.datasets import RowError, SourceRecord
    from ml.fits_io import read_fits
    from ml.preprocess import preprocess

    root = folder.resolve()
    for row in rows:
        path = folder / row.key
        if not path.resolve().is_relative_to(root):
            yield RowError(row.line, row.key, f"{row.key} lies outside the folder {folder}")
            continue
        if not path.is_file():
            yield RowError(row.line, row.key, f"no such file {path}")
            continue
        try:
            image = read_fits(path)
            cutout = preprocess(image.data, image.pixel_scale_arcsec, overwrite_input=True)
        except Exception as exc:  # noqa: BLE001 - one bad file (FitsReadError, PreprocessError, ...) is skipped
            reason = str(exc) if str(exc).startswith(path.name) else f"{path.name}: {exc}"
            yield RowError(row.line, row.key, reason)
            continue
        yield SourceRecord(
            name=row.key,
            ra_deg=image.ra_deg,
            dec_deg=image.dec_deg,
            image=cutout,
            dataset=dataset,
            label=row.label,
            split=row.split,
        )


def with_catalogue_labels(items: Iterable[Any], rows: dict[str, CatalogueRow]) -> Iterator[Any]:
    """Records of a PNG catalogue with the label and split of their CSV row (matched by name)."""
    from ml.datasets import SourceRecord

    for item in items:
        row = rows.get(item.name) if isinstance(item, SourceRecord) else None
        if row is not None:
            item.label, item.split = row.label, row.split
        yield item


def catalogue_paths(data: Path, catalogue: Path | None) -> tuple[Path, Path]:
    """``(image folder, CSV)`` from ``--data`` (a CSV or a folder) and ``--catalogue``."""
    if data.is_file():
        return data.parent, data
    if not data.is_dir():
        raise TransferError(f"{data}: no such file or folder")
    if catalogue is not None:
        return data, catalogue
    found = sorted(data.glob("*.csv"))
    if len(found) != 1:
        raise TransferError(f"{data} holds {len(found)} CSV files: name the catalogue with --catalogue")
    return data, found[0]


def records(args: argparse.Namespace) -> tuple[str, list[Any], Iterable[Any]]:
    """A description of ``--data``, what is known before reading images, and its records.

    The records (``SourceRecord``, or ``RowError`` for an image that cannot be read) are
    yielded as they are read. The FITS files of rows without a label, or of a class left out,
    are not read: those rows come first, as their ``CatalogueRow``, with the rows in error.
    """
    from ml.datasets import mirabest_confident, read_frdeep, read_griese, read_mirabest, read_png_catalogue

    if args.format in CATALOGUE_FORMATS:
        folder, csv_path = catalogue_paths(args.data, args.catalogue)
        key = args.file_column if args.format == "fits" else "name"
        rows, errors = read_label_catalogue(csv_path, key, args.label_column, args.split_column)
        description = f"{args.format.upper()} catalogue {csv_path} (images in {folder})"
        if args.format == "png":
            # read_png_catalogue reports empty and repeated names itself.
            return description, [], with_catalogue_labels(read_png_catalogue(folder, csv_path), rows)
        wanted = [row for row in rows.values() if row.label and (args.classes is None or row.label in args.classes)]
        keys = {row.key for row in wanted}
        unread = [row for row in rows.values() if row.key not in keys]
        return description, [*errors, *unread], read_fits_rows(folder, wanted, csv_path.stem)
    if args.format == "griese":
        return f"Griese et al. 2023 ({args.data or 'the firstgalaxydata package copy'})", [], read_griese(args.data)
    if args.format == "frdeep":
        return f"FR-DEEP batches {args.data}", [], read_frdeep(args.data)
    if args.format == "mirabest-confident":
        return f"MiraBest Confident batches {args.data}", [], mirabest_confident(read_mirabest(args.data))
    return f"MiraBest batches {args.data}", [], read_mirabest(args.data)


@dataclass
class LabelledSet:
    """The labelled sources read, and what was left out.

    Attributes:
        names, images, labels, splits: One entry per source kept (split ``None``: the data has none).
        skipped: ``{"row", "name", "reason"}`` per input that could not be read.
        left_out: Sources read but not evaluated, by reason (no label, another class, ...).
        description: Where the data came from.
        validation: Sources of the data's validation split (``--valid-as`` says where they went).
    """

    names: list[str]
    images: list[np.ndarray]
    labels: list[str]
    splits: list[str | None]
    skipped: list[dict[str, Any]]
    left_out: Counter[str]
    description: str
    validation: int = 0


def read_set(args: argparse.Namespace) -> LabelledSet:
    """Read ``--data``: every labelled source of the wanted classes, with its split.

    Raises:
        DatasetError: An archive or catalogue cannot be read.
        TransferError: A missing column, a bad split value, nothing usable.
    """
    from ml.datasets import RowError

    description, first, items = records(args)
    kept = LabelledSet([], [], [], [], [], Counter(), description)
    for item in itertools.chain(first, items):
        if isinstance(item, RowError):
            kept.skipped.append({"row": item.row, "name": item.name, "reason": item.reason})
        elif not item.label:
            kept.left_out["no label"] += 1
        elif args.classes is not None and item.label not in args.classes:
            kept.left_out["not in --classes"] += 1
        elif item.split == "valid" and args.valid_as == "drop":
            kept.validation += 1
            kept.left_out["validation split (--valid-as drop)"] += 1
        else:
            kept.validation += item.split == "valid"
            split = args.valid_as if item.split == "valid" else item.split
            kept.names.append(item.name)
            kept.images.append(item.image)
            kept.labels.append(item.label)
            kept.splits.append(split)
    kept.skipped.sort(key=lambda skip: skip["row"])
    if not kept.names:
        raise TransferError(f"{description}: no labelled source to evaluate ({dict(kept.left_out) or 'none read'})")
    return kept


# --- the split and the budgets ----------------------------------------------------------------


@dataclass
class Prepared:
    """The split to evaluate on, the budgets it allows and everything said about it."""

    split: Any  # ml.evaluation.BenchmarkSplit
    train_names: list[str]
    test_names: list[str]
    split_info: dict[str, Any]
    budgets: list[int]
    skipped_budgets: list[dict[str, Any]]
    notes: list[str]


def make_split(data: LabelledSet, args: argparse.Namespace) -> Prepared:
    """The data's own train/test split (or a stratified one), class indices and usable budgets.

    Raises:
        TransferError: Fewer than two classes, a ``--classes`` label the data lacks, a split
            without training or test sources, a class with no training source.
    """
    from ml.evaluation import BenchmarkSplit, stratified_subset

    found = sorted(set(data.labels))
    if args.classes:
        absent = [name for name in args.classes if name not in found]
        if absent:
            raise TransferError(f"{data.description}: no source labelled {absent} (labels found: {found})")
    class_names = tuple(args.classes or found)
    if len(class_names) < 2:
        raise TransferError(f"{data.description}: one class only ({class_names[0]!r}): nothing to classify")
    labels = np.array([class_names.index(label) for label in data.labels], dtype=np.int64)
    has_split = [split is not None for split in data.splits]
    if any(has_split) and not all(has_split):
        raise TransferError(f"{data.description}: {has_split.count(False)} sources have no split, the others do")
    if all(has_split) and not args.ignore_split:
        test = np.array([split == "test" for split in data.splits])
        if test.all() or not test.any():
            side = "training" if test.all() else "test"
            raise TransferError(f"{data.description}: the data's own split has no {side} source (--ignore-split?)")
        info: dict[str, Any] = {"kind": "data", "description": "the data's own train/test split"}
        if data.validation:
            where = {"train": "trained on", "test": "tested on", "drop": "left out"}[args.valid_as]
            info["description"] += f" ({data.validation} validation sources {where}, --valid-as)"
    else:
        n_test = round(args.test_fraction * len(labels))
        try:
            test_rows = stratified_subset(labels, n_test, seed=args.split_seed)
        except ValueError:
            raise TransferError(
                f"a test fraction of {args.test_fraction} of {len(labels)} sources is {n_test}: a stratified split "
                f"needs one test source of each of the {len(class_names)} classes and a training part"
            ) from None
        test = np.zeros(len(labels), dtype=bool)
        test[test_rows] = True
        reason = "--ignore-split" if all(has_split) else "the data has no split of its own"
        info = {
            "kind": "stratified",
            "description": f"stratified, {args.test_fraction:g} of the sources for testing, seed {args.split_seed} "
            f"({reason})",
            "test_fraction": args.test_fraction,
            "seed": args.split_seed,
        }
    train_counts = np.bincount(labels[~test], minlength=len(class_names))
    test_counts = np.bincount(labels[test], minlength=len(class_names))
    untrained = [
        f"{name!r} ({test_counts[i]} test sources)" for i, name in enumerate(class_names) if not train_counts[i]
    ]
    if untrained:
        raise TransferError(
            f"no training source of class {', '.join(untrained)}: no budget can teach it; "
            "leave it out with --classes or give it training sources"
        )
    notes = []
    for name, n_train, n_test in zip(class_names, train_counts, test_counts, strict=True):
        if n_train == 1:
            notes.append(
                f"class {name!r} has 1 training source: every subset holds that same one, "
                "and budgets of more than 1 label per class are impossible"
            )
        if n_test == 0:
            notes.append(f"class {name!r} has no test source: its recall is not measured")
    images = np.stack(data.images)
    split = BenchmarkSplit(images[~test], labels[~test], images[test], labels[test], class_names)
    info["class_counts"] = {
        name: {"train": int(train_counts[i]), "test": int(test_counts[i])} for i, name in enumerate(class_names)
    }
    budgets, skipped = usable_budgets(args.budgets, args.budget_unit, train_counts, class_names)
    names = np.array(data.names, dtype=object)
    return Prepared(split, names[~test].tolist(), names[test].tolist(), info, budgets, skipped, notes)


def usable_budgets(
    budgets: Sequence[int], unit: str, train_counts: np.ndarray, class_names: Sequence[str]
) -> tuple[list[int], list[dict[str, Any]]]:
    """The budgets the training part can give, and ``{"budget", "reason"}`` for the others."""
    usable: list[int] = []
    skipped: list[dict[str, Any]] = []
    n_train, n_classes = int(train_counts.sum()), len(class_names)
    for budget in budgets:
        reason = None
        if unit == "total" and budget > n_train:
            reason = f"{budget} labels: more than the {n_train} training sources"
        elif unit == "total" and budget < n_classes:
            reason = f"{budget} labels: fewer than the {n_classes} classes (a subset holds one of each at least)"
        elif unit == "per-class":
            short = [
                f"{name!r} ({count})" for name, count in zip(class_names, train_counts, strict=True) if count < budget
            ]
            if short:
                reason = f"{budget} labels per class: too few training sources of {', '.join(short)}"
        if reason is None:
            usable.append(budget)
        else:
            skipped.append({"budget": budget, "reason": reason})
    return usable, skipped


# --- scoring ----------------------------------------------------------------------------------


def recording(runner: FitPredict, predicted: list[np.ndarray]) -> FitPredict:
    """``runner``, keeping each fit's test predictions in ``predicted`` (for the per-class recall)."""

    def fit_predict(indices: np.ndarray, seed: int) -> np.ndarray:
        predicted.append(np.asarray(runner(indices, seed)))
        return predicted[-1]

    return fit_predict


def class_recall(predictions: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float | None]:
    """Recall of each class (share of its test sources predicted as it); ``None`` without any."""
    recalls: list[float | None] = []
    for label in range(n_classes):
        members = truth == label
        recalls.append(float(np.mean(predictions[members] == label)) if members.any() else None)
    return recalls


def recall_summary(results: Sequence[dict[str, Any]], budget: int, class_names: Sequence[str]) -> dict[str, Any]:
    """Per method, each class's recall at ``budget``: mean and std over seeds."""
    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in results if r["budget"] == budget):
        rows = [r["recall"] for r in results if r["method"] == method and r["budget"] == budget]
        per_class = {}
        for name in class_names:
            values = [row[name] for row in rows if row[name] is not None]
            per_class[name] = (
                {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n_seeds": len(values),
                }
                if values
                else None
            )
        summary[method] = per_class
    return summary


def recall_table(summary: dict[str, Any], class_names: Sequence[str], test_counts: dict[str, Any]) -> str:
    """Markdown: one row per method, one column per class, recall ``mean ± std`` in %."""
    header = ["method", *[f"{name} ({test_counts[name]['test']} test)" for name in class_names]]
    rows = [
        [
            method,
            *[
                "" if cell is None else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"
                for cell in (per_class[name] for name in class_names)
            ],
        ]
        for method, per_class in summary.items()
    ]
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from ml.checkpoint import load_checkpoint
    from ml.config import config_to_dict
    from ml.datasets import DatasetError
    from ml.errors import CheckpointError

    if args.threads:
        torch.set_num_threads(args.threads)
    device = None if args.device == "auto" else args.device
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        checkpoint = load_checkpoint(args.checkpoint) if args.checkpoint else None
        data = read_set(args)
        prepared = make_split(data, args)
    except (DatasetError, CheckpointError, TransferError) as exc:
        print(f"bench.transfer: error: {exc}", file=sys.stderr)
        return 2
    split = prepared.split
    encoder, finetune_config = finetune_setup(args, checkpoint)

    say = functools.partial(print, file=sys.stderr)
    say(f"{data.description}: {len(data.names)} labelled sources; split: {prepared.split_info['description']}")
    if data.skipped:
        say(f"skipped {len(data.skipped)} unreadable input(s):")
        for skip in data.skipped[:SHOWN_SKIPS]:
            say(f"  row {skip['row']}: {skip['reason']}")
        if len(data.skipped) > SHOWN_SKIPS:
            say(f"  ... and {len(data.skipped) - SHOWN_SKIPS} more (all in {args.out})")
    for reason, count in data.left_out.items():
        say(f"left out {count} source(s): {reason}")
    for note in prepared.notes:
        say(f"note: {note}")
    for skip in prepared.skipped_budgets:
        say(f"skipping budget {skip['reason']}")

    class_names = split.class_names
    record: dict[str, Any] = {
        "run": run_summary("bench.transfer", started_at, device, argv),
        "data": {
            "format": args.format,
            "description": data.description,
            "sources": len(data.names),
            "skipped": {"count": len(data.skipped), "inputs": data.skipped},
            "left_out": dict(data.left_out),
            "classes": list(class_names),
        },
        "split": {**prepared.split_info, "train": prepared.train_names, "test": prepared.test_names},
        "encoder": None,
        "encoder_sha256": file_sha256(args.checkpoint) if args.checkpoint else None,
        "encoder_config": config_to_dict(encoder.config) if encoder is not None else None,
        "finetune_config": config_to_dict(finetune_config) if finetune_config else None,
        "pca_dim": args.pca_dim if "pca" in args.methods else None,
        "probe_c": args.probe_c,
        "selftrain": [args.selftrain_share, args.selftrain_rounds] if "selftrain" in args.methods else None,
        "methods": args.methods,
        "budget_unit": args.budget_unit,
        "budgets": prepared.budgets,
        "skipped_budgets": prepared.skipped_budgets,
        "seeds": args.seeds,
        "notes": prepared.notes,
        "majority_error": float(1 - np.bincount(split.test_labels).max() / len(split.test_labels)),
        "results": [],
    }
    if checkpoint is not None:
        record["encoder"] = checkpoint_summary(args.checkpoint, checkpoint)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, record)

    draw = per_class_subset if args.budget_unit == "per-class" else stratified_subset
    runners: dict[str, FitPredict] = {}
    poses = PoseCache()  # the probe methods share one embedding of the poses
    predicted: list[np.ndarray] = []  # the test predictions of the latest fit
    results: list[SubsetResult] = []
    todo = plan_fits(args.methods, prepared.budgets, args.seeds, set())
    with tqdm(total=len(todo), desc="fits", unit="fit", file=sys.stderr, mininterval=2) as bar:
        for seed, budget, method in todo:
            if method not in runners:
                runner = method_runner(method, split, encoder, finetune_config, args, device, poses)
                runners[method] = recording(runner, predicted)
            [result] = evaluate_subsets(
                method, runners[method], split.train_labels, split.test_labels, [budget], [seed], draw=draw
            )
            results.append(result)
            recall = class_recall(predicted[-1], split.test_labels, split.n_classes)
            record["results"].append(
                {**dataclasses.asdict(result), "recall": dict(zip(class_names, recall, strict=True))}
            )
            write_json(args.out, record)  # an interrupted run keeps every finished fit
            bar.update()
            bar.set_postfix(method=method, budget=budget, err=f"{100 * result.error:.1f}%", refresh=False)

    summary = summarise(results)
    record["summary"] = [
        {"method": method, "budget": budget, **dataclasses.asdict(cell)} for (method, budget), cell in summary.items()
    ]
    column = "{} labels" if args.budget_unit == "total" else "{} per class"
    lines = [
        f"Transfer: {data.description}; {len(split.test_labels)} test sources of {split.n_classes} classes "
        f"({', '.join(class_names)}); split: {prepared.split_info['description']}.",
        f"Encoder: {args.checkpoint or 'none'}. Test error (%), mean ± std over seeds (n = seeds); "
        f"majority class {100 * record['majority_error']:.1f} %.",
        "",
    ]
    if summary:
        lines.append(error_table(summary, args.methods, prepared.budgets, column=column))
        largest = max(prepared.budgets)
        record["recall"] = {"budget": largest, "methods": recall_summary(record["results"], largest, class_names)}
        lines += [
            "",
            f"Recall per class (%) at {column.format(largest)}, mean ± std over seeds:",
            "",
            recall_table(record["recall"]["methods"], class_names, prepared.split_info["class_counts"]),
        ]
    else:
        lines.append("No budget could be run.")
    notes = [f"Skipped budget: {skip['reason']}." for skip in prepared.skipped_budgets]
    if data.skipped:
        notes.append(f"Skipped {len(data.skipped)} unreadable input(s), listed in {args.out}.")
    lines += ["", *notes] if notes else []
    record["table"] = "\n".join(lines)
    record["run"]["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out, record)
    print(record["table"])
    say(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
