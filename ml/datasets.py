"""Readers for the real radio-galaxy image sets, yielding uniform :class:`SourceRecord` s.

Each reader reads the published archive in place (``tarfile`` / ``zipfile``, nothing is
extracted next to the project) and yields one record at a time, so a 100k-source
catalogue never has to be in memory at once. Images follow the preprocessed convention of
:mod:`ml.preprocess` (uint8, 1.8 arcsec/pixel, centre cutout), taken with
:func:`ml.preprocess.from_preprocessed` because every set here is already thresholded and
scaled by its authors.

Sets (see ``shared/data/README.md``): MiraBest (Porter & Scaife), the Griese et al. 2023
FIRST set (PyPI ``firstgalaxydata``), FR-DEEP (Tang et al. 2019) and any folder of PNGs
with a CSV catalogue.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import pickle
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from ml.preprocess import CUTOUT_SIZE, PreprocessError, from_preprocessed


class DatasetError(ValueError):
    """A whole archive or catalogue cannot be read; the message names the file and reason."""


@dataclass
class SourceRecord:
    """One radio source with its preprocessed image, in the same shape for every set.

    Attributes:
        name: identifier, unique within ``dataset``.
        ra_deg: J2000 right ascension in degrees, ``None`` when the set has no positions.
        dec_deg: J2000 declination in degrees, ``None`` when the set has no positions.
        image: uint8 2-D cutout (150x150 at 1.8 arcsec/pixel unless asked otherwise).
        dataset: ``"mirabest"``, ``"griese"``, ``"frdeep"`` or the catalogue's name.
        label: morphology, e.g. ``"FRI"``, ``"FRII"``, ``"hybrid"``, ``"compact"``, ``"bent"``.
        label_code: the set's original label code as a string (MiraBest ``"102"``).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``None``.
        extra: set-specific facts (redshift, angular size in arcsec, catalogue, ...).
    """

    name: str
    ra_deg: float | None
    dec_deg: float | None
    image: np.ndarray
    dataset: str
    label: str | None = None
    label_code: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    """A catalogue row that was skipped; reading carries on with the next row.

    Attributes:
        row: line number in the CSV file (the header is line 1).
        name: the row's source name, if it had one.
        reason: what was wrong, readable by a person.
    """

    row: int
    name: str | None
    reason: str


# --- MiraBest -------------------------------------------------------------------------

#: MiraBest label index -> code (README; checked against ``batches.meta`` on reading).
MIRABEST_CODES = ("100", "102", "104", "110", "112", "200", "201", "210", "300", "310")
#: The standard "MiraBest Confident" benchmark classes (label indices).
MIRABEST_CONFIDENT_FRI = frozenset({0, 1, 2})
MIRABEST_CONFIDENT_FRII = frozenset({5, 6})
_MIRABEST_CLASS = {"1": "FRI", "2": "FRII", "3": "hybrid"}
_MIRABEST_CONFIDENCE = {"0": "confident", "1": "uncertain"}
_MIRABEST_MORPHOLOGY = {"0": "standard", "1": "double-double", "2": "wide-angle tail", "3": "diffuse", "4": "head-tail"}
#: e.g. ``100_185.137+000.072_0.1585_0135.33``: code _ RA _ Dec _ redshift _ size (arcsec).
_MIRABEST_NAME = re.compile(
    r"^(?P<code>\d{3})_(?P<ra>\d+(?:\.\d+)?)(?P<dec>[+-]\d+(?:\.\d+)?)_(?P<z>\d+(?:\.\d+)?)_(?P<size>\d+(?:\.\d+)?)$"
)


def parse_mirabest_name(filename: str) -> dict[str, Any]:
    """Parse a MiraBest file name (with or without folder and extension).

    Args:
        filename: e.g. ``"./MiraBest_F/PNG/Scaled_Final/100_185.137+000.072_0.1585_0135.33.png"``.

    Returns:
        ``name`` (the stem), ``code`` (str), ``ra_deg``, ``dec_deg``, ``redshift`` and
        ``size_arcsec`` (floats).

    Raises:
        DatasetError: the name does not follow the MiraBest pattern.
    """
    stem = Path(filename).name.removesuffix(".png").removesuffix(".fits")
    match = _MIRABEST_NAME.match(stem)
    if match is None:
        raise DatasetError(f"{filename}: not a MiraBest name (code_RA±Dec_z_size)")
    return {
        "name": stem,
        "code": match["code"],
        "ra_deg": float(match["ra"]),
        "dec_deg": float(match["dec"]),
        "redshift": float(match["z"]),
        "size_arcsec": float(match["size"]),
    }


def read_mirabest(path: str | Path, *, cutout_size: int = CUTOUT_SIZE) -> Iterator[SourceRecord]:
    """Read the official MiraBest batches (``MiraBest_F_batches.tar.gz``), all 1256 sources.

    Training batches come first, then the test batch. Labels follow the first digit of the
    MiraBest code (``"FRI"``, ``"FRII"``, ``"hybrid"``); ``extra`` holds ``label_index``
    (0..9), ``redshift``, ``size_arcsec``, ``confidence`` and ``morphology``.

    Args:
        path: the tar.gz of CIFAR-style pickles.
        cutout_size: side of the centre cutout (the images are 150x150).

    Yields:
        One record per image, ``dataset="mirabest"``, ``split`` ``"train"`` or ``"test"``.

    Raises:
        DatasetError: unreadable archive or unexpected content.
    """
    path = Path(path)
    for member, batch in _cifar_batches(path, expect_labels=MIRABEST_CODES):
        split = "test" if "test" in member else "train"
        for filename, label_index, pixels in zip(batch["filenames"], batch["labels"], batch["data"], strict=True):
            parsed = parse_mirabest_name(str(filename))
            code = MIRABEST_CODES[int(label_index)]
            if code != parsed["code"]:
                raise DatasetError(f"{path.name}: {parsed['name']} has label {code} but its name says {parsed['code']}")
            yield SourceRecord(
                name=parsed["name"],
                ra_deg=parsed["ra_deg"],
                dec_deg=parsed["dec_deg"],
                image=_cutout(pixels, cutout_size, path, parsed["name"]),
                dataset="mirabest",
                label=_MIRABEST_CLASS[code[0]],
                label_code=code,
                split=split,
                extra={
                    "label_index": int(label_index),
                    "redshift": parsed["redshift"],
                    "size_arcsec": parsed["size_arcsec"],
                    "confidence": _MIRABEST_CONFIDENCE[code[1]],
                    "morphology": _MIRABEST_MORPHOLOGY[code[2]],
                },
            )


def mirabest_confident(records: Iterable[SourceRecord]) -> list[SourceRecord]:
    """The "MiraBest Confident" benchmark: FRI = indices {0,1,2}, FRII = {5,6}.

    With the official split this is 729 training and 104 test sources
    (Slijepcevic et al. 2023, section 4).

    Args:
        records: MiraBest records from :func:`read_mirabest`.

    Returns:
        The confident FRI and FRII records, labelled ``"FRI"`` / ``"FRII"``, in input order.
    """
    confident = MIRABEST_CONFIDENT_FRI | MIRABEST_CONFIDENT_FRII
    return [record for record in records if record.extra["label_index"] in confident]


# --- FR-DEEP --------------------------------------------------------------------------

_FRDEEP_LABELS = ("FRI", "FRII")


def read_frdeep(path: str | Path, *, cutout_size: int = CUTOUT_SIZE) -> Iterator[SourceRecord]:
    """Read FR-DEEP's FIRST part (``FIRST_PNG_dataset.tar.gz``): 600 images, no positions.

    FR-DEEP file names repeat between its FRI and FRII catalogues (``37_example.png``
    is one of each), so the record name is prefixed with the class: ``"FRII/37_example"``.

    Args:
        path: the tar.gz of CIFAR-style pickles.
        cutout_size: side of the centre cutout (the images are 150x150).

    Yields:
        One record per image, ``dataset="frdeep"``, ``ra_deg``/``dec_deg`` ``None``,
        ``label_code`` ``"0"`` (FRI) or ``"1"`` (FRII), ``split`` ``"train"``/``"test"``.

    Raises:
        DatasetError: unreadable archive or unexpected content.
    """
    path = Path(path)
    for member, batch in _cifar_batches(path, expect_labels=_FRDEEP_LABELS):
        split = "test" if "test" in member else "train"
        for filename, label_index, pixels in zip(batch["filenames"], batch["labels"], batch["data"], strict=True):
            label = _FRDEEP_LABELS[int(label_index)]
            name = f"{label}/{Path(str(filename)).stem}"
            yield SourceRecord(
                name=name,
                ra_deg=None,
                dec_deg=None,
                image=_cutout(pixels, cutout_size, path, name),
                dataset="frdeep",
                label=label,
                label_code=str(int(label_index)),
                split=split,
                extra={"filename": str(filename)},
            )


# --- Griese et al. 2023 (firstgalaxydata) ---------------------------------------------

_GRIESE_LABELS = {0: ("FRI", "FRI"), 1: ("FRII", "FRII"), 2: ("compact", "Compact"), 3: ("bent", "Bent")}
_GRIESE_ARCHIVE = "galaxy_data_h5.zip"


def griese_package_archive() -> Path:
    """Path of the zipped HDF5 set shipped inside the installed ``firstgalaxydata`` wheel.

    Found without importing the package (its import pulls in torch and matplotlib).

    Raises:
        DatasetError: the package is not installed or lacks the archive.
    """
    spec = importlib.util.find_spec("firstgalaxydata")
    if spec is None or spec.origin is None:
        raise DatasetError("the firstgalaxydata package is not installed; pass the archive path instead")
    archive = Path(spec.origin).parent / _GRIESE_ARCHIVE
    if not archive.is_file():
        raise DatasetError(f"{archive}: not found inside the installed firstgalaxydata package")
    return archive


def read_griese(path: str | Path | None = None, *, cutout_size: int = CUTOUT_SIZE) -> Iterator[SourceRecord]:
    """Read the Griese et al. 2023 FIRST set: 2158 sources, 300x300 uint8 images.

    The positions (``RA``, ``DEC``, degrees) and the source catalogue sit as attributes on
    each group's ``Img`` dataset; ``Label_literature`` and ``Split_literature`` are scalar
    datasets in the group. Groups are read in numeric order (``data_0``, ``data_1``, ...).

    Args:
        path: ``galaxy_data_h5.zip`` or an extracted ``.h5``; ``None`` reads the copy
            inside the installed ``firstgalaxydata`` package.
        cutout_size: side of the centre cutout taken from the 300x300 images.

    Yields:
        One record per group, ``dataset="griese"``, labels ``"FRI"``, ``"FRII"``,
        ``"compact"``, ``"bent"``; ``extra`` holds ``group``, ``catalogue`` (e.g.
        ``"MiraBest"``, ``"Gendre"``) and the original file path.

    Raises:
        DatasetError: unreadable archive or unexpected content.
    """
    archive = Path(path) if path is not None else griese_package_archive()
    if archive.suffix == ".zip":
        # HDF5 needs random access; a temp file (outside the project, removed when the
        # generator finishes) keeps the 200 MB file out of memory.
        with tempfile.TemporaryDirectory(prefix="rgz_griese_") as folder:
            yield from _read_griese_h5(_extract_single_h5(archive, Path(folder)), archive, cutout_size)
    else:
        yield from _read_griese_h5(archive, archive, cutout_size)


def _extract_single_h5(archive: Path, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [name for name in zipped.namelist() if name.endswith((".h5", ".hdf5"))]
            if len(members) != 1:
                raise DatasetError(f"{archive.name}: expected one HDF5 file, found {members}")
            return Path(zipped.extract(members[0], folder))
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{archive.name}: cannot read the zip archive ({exc})") from exc


def _read_griese_h5(h5_path: Path, source: Path, cutout_size: int) -> Iterator[SourceRecord]:
    try:
        h5 = h5py.File(h5_path, "r")
    except OSError as exc:
        raise DatasetError(f"{source.name}: not a readable HDF5 file ({exc})") from exc
    with h5:
        for group_name in sorted(h5, key=_natural_key):
            group = h5[group_name]
            try:
                image = group["Img"]
                attrs = image.attrs
                label_index = int(group["Label_literature"][()])
                split = group["Split_literature"].asstr()[()]
                ra_deg, dec_deg = float(attrs["RA"]), float(attrs["DEC"])
                pixels = image[()]
                label, code_name = _GRIESE_LABELS[label_index]
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{source.name}: group {group_name} lacks Img/RA/DEC or a label ({exc})") from exc
            filepath = str(attrs.get("Filepath_literature", ""))
            name = Path(filepath).stem or group_name
            yield SourceRecord(
                name=name,
                ra_deg=ra_deg,
                dec_deg=dec_deg,
                image=_cutout(pixels, cutout_size, source, name),
                dataset="griese",
                label=label,
                label_code=str(label_index),
                split=split,
                extra={
                    "group": group_name,
                    "catalogue": str(attrs.get("Source", "")),
                    "class_name": code_name,
                    "filepath": filepath,
                },
            )


# --- PNG folder + CSV catalogue -------------------------------------------------------

_PNG_MODES = frozenset({"L", "LA", "P", "RGB", "RGBA"})


def read_png_catalogue(
    folder: str | Path,
    csv_path: str | Path,
    *,
    dataset: str = "catalogue",
    cutout_size: int = CUTOUT_SIZE,
) -> Iterator[SourceRecord | RowError]:
    """Read a folder of preprocessed PNG cutouts described by a CSV catalogue.

    CSV columns (header names, case-insensitive): ``name``, ``ra``, ``dec`` (degrees,
    J2000) required; ``label`` and ``file`` (PNG name relative to ``folder``, default
    ``<name>.png``) optional. PNGs must already follow the preprocessed convention
    (greyscale 0..255 at 1.8 arcsec/pixel, at least ``cutout_size`` on a side); colour
    PNGs are converted to greyscale.

    A bad row (unparseable or out-of-range position, missing or unreadable PNG, a
    duplicate name, an image that is too small or blank) does not stop the read: a
    :class:`RowError` is yielded in its place and reading goes on.

    Args:
        folder: folder holding the PNG files.
        csv_path: the catalogue.
        dataset: name recorded in each record's ``dataset``.
        cutout_size: side of the centre cutout.

    Yields:
        A :class:`SourceRecord` per good row, a :class:`RowError` per bad one, in file order.

    Raises:
        DatasetError: the CSV cannot be opened or lacks a required column.
    """
    folder, csv_path = Path(folder), Path(csv_path)
    with open_catalogue(csv_path) as (reader, columns):
        missing = {"name", "ra", "dec"} - columns.keys()
        if missing:
            raise DatasetError(f"{csv_path.name}: missing required column(s) {sorted(missing)}")
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            values = {key: (row.get(column) or "").strip() for key, column in columns.items()}
            name = values["name"] or None
            try:
                record = _catalogue_record(values, folder, dataset, cutout_size, seen)
            except (ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                yield RowError(row=line, name=name, reason=str(exc))
                continue
            seen.add(record.name)
            yield record


@contextmanager
def open_catalogue(csv_path: str | Path) -> Iterator[tuple[csv.DictReader[str], dict[str, str]]]:
    """Open a CSV catalogue: its row reader, and its columns by lower-case, stripped header name.

    Column names are matched case-insensitively (``Label`` is ``label``); ``reader.line_num``
    is the line of the row just read (the header is line 1).

    Raises:
        DatasetError: the file cannot be opened.
    """
    csv_path = Path(csv_path)
    try:
        handle = csv_path.open(newline="", encoding="utf-8-sig")  # -sig: Excel writes a BOM
    except OSError as exc:
        raise DatasetError(f"{csv_path.name}: cannot open the catalogue ({exc})") from exc
    with handle:
        reader = csv.DictReader(handle)
        try:
            fieldnames = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"{csv_path.name}: not a UTF-8 CSV file ({exc})") from exc
        yield reader, {column.strip().lower(): column for column in fieldnames}


def _catalogue_record(
    values: dict[str, str], folder: Path, dataset: str, cutout_size: int, seen: set[str]
) -> SourceRecord:
    name = values["name"]
    if not name:
        raise ValueError("empty name")
    if name in seen:
        raise ValueError(f"duplicate name {name!r}")
    ra_deg, dec_deg = _coordinate(values["ra"], "ra"), _coordinate(values["dec"], "dec")
    if not 0.0 <= ra_deg < 360.0 or not -90.0 <= dec_deg <= 90.0:
        raise ValueError(f"position out of range: ra={ra_deg}, dec={dec_deg}")
    png_path = folder / (values.get("file") or f"{name}.png")
    # A catalogue names images inside its folder: "../" or a symlink must not reach other files.
    if not png_path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"PNG {values.get('file')!r} is outside the catalogue's folder")
    if not png_path.is_file():
        raise ValueError(f"missing PNG {png_path.name}")
    with Image.open(png_path) as picture:
        if picture.mode not in _PNG_MODES:
            raise ValueError(f"{png_path.name}: unsupported image mode {picture.mode} (want 8-bit)")
        pixels = np.asarray(picture.convert("L"))
    try:
        image = from_preprocessed(pixels, size=cutout_size)
    except PreprocessError as exc:
        raise ValueError(f"{png_path.name}: {exc}") from exc
    return SourceRecord(
        name=name,
        ra_deg=ra_deg,
        dec_deg=dec_deg,
        image=image,
        dataset=dataset,
        label=values.get("label") or None,
        label_code=values.get("label") or None,
        split=None,
        extra={"file": png_path.name},
    )


def _coordinate(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number in degrees") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    return value


# --- shared helpers -------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only.

    The CIFAR-style batches are pickles; a plain ``pickle.load`` would run any code a
    tampered archive carries. These four globals are all the real batches use.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        # numpy 2 renamed numpy.core to numpy._core; the old name only warns.
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _cifar_batches(path: Path, expect_labels: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(member name, batch dict) for each data batch in a CIFAR-style tar.gz, train first."""
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {member.name: member for member in archive.getmembers() if member.isfile()}
            meta_names = [name for name in members if name.endswith("batches.meta")]
            if len(meta_names) != 1:
                raise DatasetError(f"{path.name}: expected one batches.meta, found {len(meta_names)}")
            meta = _unpickle(archive, members[meta_names[0]], path)
            if tuple(meta.get("label_names", ())) != expect_labels:
                raise DatasetError(f"{path.name}: label names {meta.get('label_names')} are not {list(expect_labels)}")
            batch_names = sorted(
                (name for name in members if "_batch" in Path(name).name and name not in meta_names),
                key=lambda name: ("test" in name, _natural_key(name)),
            )
            for name in batch_names:
                batch = _unpickle(archive, members[name], path)
                if not {"data", "labels", "filenames"} <= batch.keys():
                    raise DatasetError(f"{path.name}: {name} lacks data/labels/filenames")
                yield name, batch
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"{path.name}: cannot read the archive ({exc})") from exc


def _unpickle(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> dict[str, Any]:
    handle = archive.extractfile(member)
    if handle is None:
        raise DatasetError(f"{path.name}: {member.name} is not a regular file")
    try:
        content = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path.name}: {member.name} is not a readable batch ({exc})") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"{path.name}: {member.name} holds {type(content).__name__}, not a dict")
    return content


def _cutout(pixels: Any, size: int, source: Path, name: str) -> np.ndarray:
    """Preprocessed cutout of a published image; flat 22500-vectors are 150x150 images.

    Blank images are kept (``allow_blank``): a reader reports the set as published.
    """
    image = np.asarray(pixels, dtype=np.uint8)
    if image.ndim == 1:
        side = math.isqrt(image.size)
        if side * side != image.size:
            raise DatasetError(f"{source.name}: {name} has {image.size} pixels, not a square image")
        image = image.reshape(side, side)
    try:
        return from_preprocessed(image, size=size, allow_blank=True)
    except PreprocessError as exc:
        raise DatasetError(f"{source.name}: {name}: {exc}") from exc


def _natural_key(text: str) -> tuple[Any, ...]:
    """Sort key putting ``data_batch_2`` before ``data_batch_10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))
