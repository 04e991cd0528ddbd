"""What an ingest reads: recognising each input and turning it into records.

An input is a FITS file or a folder of them (searched recursively), the MiraBest or
FR-DEEP batches (``tar.gz``), the Griese et al. HDF5 zip (or, with no path, the copy
inside the installed ``firstgalaxydata`` package), or a folder of PNGs with a catalogue
CSV. The kind is recognised from the name and, where the name is not enough, the content;
``kind=`` forces it.

Nothing here touches the database: inputs become :class:`ml.datasets.SourceRecord` s
(preprocessed uint8 cutouts) or :class:`SkippedInput` s (a file or row that cannot be
used, with the reason), which :mod:`rgzlabel.catalog.services` writes or reports.
"""

from __future__ import annotations

import csv
import gzip
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path

from ml.datasets import DatasetError, RowError, SourceRecord

#: File names read as FITS images (``.fits.gz`` and ``.fit.gz`` are gzip-compressed FITS;
#: ``.fz`` is tile-compressed FITS, fpack's convention, read by astropy as a CompImageHDU).
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".fits.fz", ".fit.fz", ".fz")
#: Spellings of Jy/beam (upper case, spaces removed). Any flux unit works, as the cutout
#: is scaled to its own peak, so another unit is worth a warning, not a failure.
_JY_PER_BEAM = frozenset({"JY/BEAM", "JYBEAM-1", "JY/BM", "JYBM-1"})
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class InputKind(StrEnum):
    """The kinds of input ingest understands (also the values of ``--dataset``)."""

    FITS = "fits"
    MIRABEST = "mirabest"
    GRIESE = "griese"
    FRDEEP = "frdeep"
    PNG = "png"


#: Kinds whose records each come from their own file (the others come from one archive).
_FILE_KINDS = frozenset({InputKind.FITS, InputKind.PNG})


class InputError(ValueError):
    """A path that cannot be ingested at all; the message names the path and the reason."""


@dataclass(frozen=True)
class SkippedInput:
    """A file or catalogue row that was not ingested; ingest goes on with the next one.

    Attributes:
        where: the file (or ``catalogue.csv row 7 (name)``) it concerns.
        reason: what was wrong, readable by a person.
    """

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class IngestInput:
    """One recognised input.

    Attributes:
        kind: what it is.
        path: the file or folder given; ``None`` for the Griese set inside the installed
            ``firstgalaxydata`` package.
        files: for FITS, every FITS file found (sorted, so runs are reproducible).
        catalogue: for PNG, the CSV describing the images in ``path``.
    """

    kind: InputKind
    path: Path | None
    files: tuple[Path, ...] = ()
    catalogue: Path | None = None

    @property
    def expected(self) -> int | None:
        """How many records it will give, when that is known without reading it."""
        if self.kind is InputKind.FITS:
            return len(self.files)
        if self.kind is InputKind.PNG and self.catalogue is not None:
            with self.catalogue.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
        return None

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "the installed firstgalaxydata package"
        return f"{where} ({self.kind.value})"


@dataclass
class IngestPlan:
    """The inputs recognised among the paths given, and the paths that were not."""

    inputs: list[IngestInput] = field(default_factory=list)
    rejected: list[SkippedInput] = field(default_factory=list)

    @property
    def expected(self) -> int | None:
        """Records to expect over all inputs; ``None`` if any input's count is unknown."""
        counts = [ingest_input.expected for ingest_input in self.inputs]
        return None if any(count is None for count in counts) else sum(counts)  # type: ignore[misc]


def outside_roots(paths: Sequence[str | Path], roots: Sequence[str | Path]) -> list[str]:
    """The paths that are not inside one of ``roots`` once symlinks and ``..`` are resolved.

    Checking the resolved path, not its spelling, is what stops a symlink inside an allowed
    folder from reaching a file outside it.
    """
    resolved_roots = [Path(root).resolve() for root in roots]
    return [
        str(path) for path in paths if not any(Path(path).resolve().is_relative_to(root) for root in resolved_roots)
    ]


def plan_ingest(
    paths: Sequence[str | Path], *, kind: str | None = None, roots: Sequence[str | Path] | None = None
) -> IngestPlan:
    """Recognise each path; no path at all means the Griese set of the installed package.

    Args:
        paths: files and folders.
        kind: force every path to be read as this :class:`InputKind` (``--dataset``).
        roots: when given (a web form, a job), only paths inside these folders are read, after
            resolving symlinks; so are the files a folder scan finds.

    Returns:
        The recognised inputs, and one :class:`SkippedInput` per path that was not
        (missing, unrecognised, an empty folder).

    Raises:
        InputError: ``kind`` is not a known kind.
    """
    forced = _input_kind(kind)
    plan = IngestPlan()
    for path in paths or [None]:
        if path is not None and roots is not None and outside_roots([path], roots):
            plan.rejected.append(SkippedInput(str(path), _outside_reason(roots)))
            continue
        try:
            ingest_input = recognise_input(path, forced)
        except InputError as exc:
            plan.rejected.append(SkippedInput(str(path) if path is not None else "(no path)", str(exc)))
            continue
        if roots is not None and ingest_input.files:
            escaping = set(outside_roots(ingest_input.files, roots))
            plan.rejected += [SkippedInput(name, _outside_reason(roots)) for name in sorted(escaping)]
            ingest_input = replace(ingest_input, files=tuple(f for f in ingest_input.files if str(f) not in escaping))
            if not ingest_input.files:
                continue
        plan.inputs.append(ingest_input)
    return plan


def _outside_reason(roots: Sequence[str | Path]) -> str:
    return f"outside the allowed folders ({', '.join(map(str, roots))}) once symlinks are resolved"


def recognise_input(path: str | Path | None, kind: InputKind | None = None) -> IngestInput:
    """What ``path`` is: by its name, and by its content when the name does not say.

    Raises:
        InputError: the path is missing, empty, or not something ingest can read.
    """
    if path is None:
        if kind not in (None, InputKind.GRIESE):
            raise InputError(f"{kind.value} needs a path; only griese has a default (the installed package)")
        return IngestInput(InputKind.GRIESE, None)
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder")
    if path.is_dir():
        return _recognise_folder(path, kind)
    kind = kind or _sniff_file(path)
    if kind is InputKind.FITS:
        return IngestInput(kind, path, files=(path,))
    if kind is InputKind.PNG:
        if path.suffix.lower() != ".csv":
            raise InputError("a PNG catalogue is a folder with one CSV, or the CSV itself")
        return IngestInput(kind, path.parent, catalogue=path)
    return IngestInput(kind, path)


def find_fits_files(folder: Path) -> tuple[Path, ...]:
    """Every FITS file under ``folder`` (recursively, hidden folders skipped), sorted."""
    found = [
        path
        for path in folder.rglob("*")
        if path.name.lower().endswith(FITS_SUFFIXES)
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return tuple(sorted(found))


def read_input(
    ingest_input: IngestInput,
    *,
    survey: str | None = None,
    allow_no_position: bool = False,
    max_pixels: int | None = None,
    processes: int = 1,
) -> Iterator[SourceRecord | SkippedInput]:
    """The records of one input, with a :class:`SkippedInput` for each unusable file or row.

    Args:
        ingest_input: from :func:`recognise_input`.
        survey: the survey to record on new sources (default ``FIRST``).
        allow_no_position: ingest FITS files without a celestial WCS (name from the
            file, not cross-matched) instead of failing them.
        processes: FITS files are read and preprocessed in this many processes at once
            (:func:`read_fits_records_in_processes`); the records come in the same order.

    Raises:
        DatasetError: a whole archive or catalogue cannot be read.
    """
    from ml import datasets

    kind = ingest_input.kind
    if kind is InputKind.FITS:
        read = read_fits_records if processes <= 1 else partial(read_fits_records_in_processes, processes=processes)
        records = read(ingest_input.files, allow_no_position=allow_no_position, max_pixels=max_pixels)
    elif kind is InputKind.PNG:
        assert ingest_input.path is not None and ingest_input.catalogue is not None
        records = read_png_records(ingest_input.path, ingest_input.catalogue)
    else:
        readers = {
            InputKind.MIRABEST: datasets.read_mirabest,
            InputKind.GRIESE: datasets.read_griese,
            InputKind.FRDEEP: datasets.read_frdeep,
        }
        records = readers[kind](ingest_input.path)
    archive = str(ingest_input.path or datasets.griese_package_archive()) if kind not in _FILE_KINDS else None
    for record in records:
        if isinstance(record, SourceRecord):
            if survey:
                record.extra["survey"] = survey
            if archive is not None:
                record.extra.setdefault("path", archive)
        yield record


def read_fits_records(
    files: Sequence[Path], *, allow_no_position: bool = False, max_pixels: int | None = None
) -> Iterator[SourceRecord | SkippedInput]:
    """Read and preprocess FITS files, one record per file.

    A file that cannot give a cutout (corrupt, truncated, not FITS, a cube, all NaN or
    zero, smaller than the cutout, no position) becomes a :class:`SkippedInput` naming
    the file and the reason. Header problems that do not stop it (odd characters, an
    unexpected unit, another pixel scale, which is resampled) go in the record's
    ``extra["warnings"]``: cope, record, go on.

    Records are keyed by file name (``extra["external_id"]``), so a folder that moves or
    a file uploaded again is recognised; two files with the same name in one run would
    overwrite each other, so the second is refused. ``max_pixels`` is the largest image a
    header may declare (``ml.fits_io.DEFAULT_MAX_PIXELS`` by default).
    """
    from ml.fits_io import DEFAULT_MAX_PIXELS, FitsReadError, read_fits
    from ml.preprocess import TARGET_SCALE_ARCSEC, PreprocessError, preprocess

    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen:
            yield SkippedInput(str(path), f"same file name as {seen[path.name]}: FITS files are keyed by name")
            continue
        seen[path.name] = path
        try:
            image = read_fits(path, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        except FitsReadError as exc:
            yield SkippedInput(str(path), exc.reason)
            continue
        except Exception as exc:  # noqa: BLE001 - one odd file (an astropy bug, say) must not stop the ingest
            yield SkippedInput(str(path), f"cannot be read ({type(exc).__name__}: {exc})")
            continue
        if image.ra_deg is None and not allow_no_position:
            yield SkippedInput(str(path), _no_position_reason(image.warnings))
            continue
        try:
            cutout = preprocess(image.data, image.pixel_scale_arcsec, overwrite_input=True)
        except PreprocessError as exc:
            yield SkippedInput(str(path), str(exc))
            continue
        except MemoryError:
            yield SkippedInput(str(path), f"a {image.data.shape[0]}x{image.data.shape[1]} image does not fit in memory")
            continue
        finally:
            del image.data  # the raw image is not needed past this point
        file_warnings = list(image.warnings)
        if image.ra_deg is None:
            file_warnings.append("ingested without a position: not cross-matched, named after the file")
        if image.unit is None:
            file_warnings.append("no BUNIT: assumed Jy/beam")
        elif image.unit.upper().replace(" ", "") not in _JY_PER_BEAM:
            file_warnings.append(f"BUNIT is {image.unit!r}, not Jy/beam: kept, as the cutout is scaled to its own peak")
        if image.pixel_scale_arcsec is None:
            file_warnings.append(f"pixel scale unknown: assumed {TARGET_SCALE_ARCSEC} arcsec/pixel")
        elif abs(image.pixel_scale_arcsec / TARGET_SCALE_ARCSEC - 1) > 1e-3:
            file_warnings.append(
                f"pixel scale {image.pixel_scale_arcsec:.4g} arcsec: resampled to {TARGET_SCALE_ARCSEC} arcsec/pixel"
            )
        yield SourceRecord(
            name=_fits_stem(path),
            ra_deg=image.ra_deg,
            dec_deg=image.dec_deg,
            image=cutout,
            dataset=InputKind.FITS.value,
            extra={
                "external_id": path.name,
                "path": str(path),
                "unit": image.unit,
                "pixel_scale_arcsec": image.pixel_scale_arcsec,
                "hdu": image.hdu_index,
                "warnings": file_warnings,
            },
        )


def _read_fits_batch(
    files: Sequence[Path], allow_no_position: bool, max_pixels: int | None
) -> list[SourceRecord | SkippedInput]:
    return list(read_fits_records(files, allow_no_position=allow_no_position, max_pixels=max_pixels))


def read_fits_records_in_processes(
    files: Sequence[Path],
    *,
    allow_no_position: bool = False,
    max_pixels: int | None = None,
    processes: int = 2,
    batch_files: int = 16,
) -> Iterator[SourceRecord | SkippedInput]:
    """:func:`read_fits_records` with the reading and preprocessing spread over ``processes``.

    The same records in the same order as one process gives (so an ingest's result does not
    depend on it): files of a repeated name are refused here, in order, and the batches come
    back in the order they were sent. At most ``4 * processes`` batches are read ahead of the
    consumer, so memory stays bounded however many files there are.
    """
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    seen: dict[str, Path] = {}
    order: list[Path | SkippedInput] = []
    for path in files:
        if path.name in seen:
            order.append(SkippedInput(str(path), f"same file name as {seen[path.name]}: FITS files are keyed by name"))
        else:
            seen[path.name] = path
            order.append(path)
    unique = [item for item in order if isinstance(item, Path)]
    batches = [unique[start : start + batch_files] for start in range(0, len(unique), batch_files)]
    # forkserver: the readers start from a clean process, not a fork of one holding database
    # connections and threads.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        pending: deque[Future[list[SourceRecord | SkippedInput]]] = deque()
        sent = 0
        ready: deque[SourceRecord | SkippedInput] = deque()
        for item in order:
            if isinstance(item, SkippedInput):
                yield item
                continue
            while not ready:
                while sent < len(batches) and len(pending) < 4 * processes:
                    pending.append(pool.submit(_read_fits_batch, batches[sent], allow_no_position, max_pixels))
                    sent += 1
                ready.extend(pending.popleft().result())
            yield ready.popleft()


def read_png_records(folder: Path, catalogue: Path) -> Iterator[SourceRecord | SkippedInput]:
    """A PNG catalogue's records; a bad row becomes a :class:`SkippedInput` naming the CSV row."""
    from ml.datasets import read_png_catalogue

    for record in read_png_catalogue(folder, catalogue, dataset=InputKind.PNG.value):
        if isinstance(record, RowError):
            yield SkippedInput(f"{catalogue} row {record.row} ({record.name or 'no name'})", record.reason)
        else:
            record.extra["path"] = str(folder / record.extra.get("file", ""))
            yield record


def _recognise_folder(folder: Path, kind: InputKind | None) -> IngestInput:
    catalogues = sorted(path for path in folder.glob("*.csv") if path.is_file())
    kind = kind or (InputKind.PNG if catalogues else InputKind.FITS)
    if kind is InputKind.FITS:
        files = find_fits_files(folder)
        if not files:
            raise InputError(f"no FITS files ({', '.join(FITS_SUFFIXES)}) in this folder or below")
        return IngestInput(kind, folder, files=files)
    if kind is InputKind.PNG:
        if len(catalogues) != 1:
            found = ", ".join(path.name for path in catalogues) or "none"
            raise InputError(f"a PNG folder needs exactly one catalogue CSV (found: {found}); pass the CSV itself")
        return IngestInput(kind, folder, catalogue=catalogues[0])
    raise InputError(f"{kind.value} is read from its archive file, not a folder")


def _sniff_file(path: Path) -> InputKind:
    name = path.name.lower()
    if name.endswith(FITS_SUFFIXES):
        return InputKind.FITS  # a corrupt or fake one fails later, with read_fits's reason
    if name.endswith(".csv"):
        return InputKind.PNG
    if name.endswith((".zip", ".h5", ".hdf5")):
        return InputKind.GRIESE
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar_kind(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror or exc})") from exc
    if head.startswith(_FITS_MAGIC):
        return InputKind.FITS
    if head.startswith((_ZIP_MAGIC, _HDF5_MAGIC)):
        return InputKind.GRIESE
    if head.startswith(_GZIP_MAGIC):
        if tarfile.is_tarfile(path):
            return _cifar_kind(path)
        with gzip.open(path, "rb") as handle:
            if handle.read(len(_FITS_MAGIC)) == _FITS_MAGIC:
                return InputKind.FITS
    raise InputError(
        "not a recognised input (FITS, MiraBest or FR-DEEP tar.gz, Griese HDF5 zip, PNG catalogue CSV); "
        "--dataset forces a kind"
    )


def _cifar_kind(path: Path) -> InputKind:
    """MiraBest or FR-DEEP: both are CIFAR-style batches; their readers check the labels."""
    from ml.datasets import read_frdeep, read_mirabest

    reasons = []
    for kind, reader in ((InputKind.MIRABEST, read_mirabest), (InputKind.FRDEEP, read_frdeep)):
        records = reader(path)
        try:
            next(records)
            return kind
        except DatasetError as exc:
            reasons.append(str(exc))
        except StopIteration:
            reasons.append(f"{kind.value}: no records")
        finally:
            records.close()
    raise InputError(f"neither MiraBest nor FR-DEEP batches ({'; '.join(reasons)})")


def _input_kind(kind: str | None) -> InputKind | None:
    if kind is None or kind == "":
        return None
    try:
        return InputKind(kind)
    except ValueError:
        raise InputError(f"unknown dataset {kind!r}; known: {', '.join(k.value for k in InputKind)}") from None


def _no_position_reason(header_warnings: list[str]) -> str:
    """Why a FITS file has no position, with read_fits's detail when the WCS was broken."""
    details = [
        warning.split(": ", 1)[-1]
        for warning in header_warnings
        if "WCS" in warning and "no celestial WCS" not in warning
    ]
    reason = f"no usable celestial WCS ({details[0]})" if details else "no celestial WCS"
    return f"{reason}: cannot place it on the sky (--allow-no-position ingests it without a position)"


def _fits_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
