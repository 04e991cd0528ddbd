"""Ingest: turning dataset records into Sources, Provenances and Cutouts.

Each record is written in its own transaction, so a bad file is reported and skipped
without leaving anything half-written, and every other record still goes in. Records are
cross-matched by sky position: the same source from two datasets becomes one Source with
two Provenances. Re-running an ingest is safe: a record whose input is unchanged is
skipped, a changed one is updated in place.

What the inputs are (FITS files and folders, the published archives, PNG catalogues) is
decided in :mod:`rgzlabel.catalog.inputs`; the same services serve ``manage.py ingest``,
the staff ingest page (through a Celery job) and ``bootstrap``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, reset_queries, transaction

from rgzlabel.catalog.inputs import (
    IngestPlan,
    InputError,
    InputKind,
    SkippedInput,
    outside_roots,
    plan_ingest,
    read_input,
)
from rgzlabel.catalog.models import Cutout, Provenance, Source

if TYPE_CHECKING:
    from ml.datasets import RowError, SourceRecord
    from ml.skyindex import SkyIndex

logger = logging.getLogger(__name__)


#: How many kinds of header warning a job copies into its record (all are in each provenance).


class NothingIngested(RuntimeError):
    """Every input of an ingest failed; the message gives the first reasons."""


@dataclass
class IngestReport:
    """What an ingest did, record by record."""

    ingested: int = 0  # new sources
    merged: int = 0  # new provenance on a source already known at that position
    updated: int = 0  # a known record whose input changed
    skipped: int = 0  # a known record, unchanged
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed file, row or archive
    warnings: list[str] = field(default_factory=list)  # one line per ingested file with header warnings
    # How many files had each kind of warning (file-specific details blanked), so that the
    # same harmless problem in 10,000 headers reads as one line.
    warning_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.ingested + self.merged + self.updated + self.skipped + self.failed

    def summary(self) -> str:
        return (
            f"{self.ingested} ingested, {self.merged} merged by position, {self.updated} updated, "
            f"{self.skipped} skipped (unchanged), {self.failed} failed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "ingested": self.ingested,
            "merged": self.merged,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
            "errors": self.errors[:200],
            "warned": len(self.warnings),
            "warning_kinds": dict(self.warning_kinds.most_common(20)),
        }

    def add_warnings(self, where: str, warnings: Sequence[str]) -> None:
        """Record one ingested file's warnings: a line for it, and a count per kind."""
        self.warnings.append(f"{where}: {' | '.join(warnings)}")
        self.warning_kinds.update({_warning_kind(warning) for warning in warnings})


def _warning_kind(warning: str) -> str:
    """A warning without its file-specific details (quoted card text, card numbers)."""
    return re.sub(r"\b(Card|HDU) \d+", r"\1 N", re.sub(r"'[^']*'", "'...'", warning))


def position_name(ra_deg: float, dec_deg: float, prefix: str = "FIRST") -> str:
    """IAU-style name from a J2000 position, e.g. ``FIRST J123456.7+123456``.

    Coordinates are truncated, not rounded, as the IAU naming rules ask: rounding would
    turn RA 359.99999 deg into "J240000.0" and 59.96 s into "60.0".
    """
    ra_tenths = math.floor((ra_deg % 360.0) / 15.0 * 36000.0)  # tenths of a second of time
    ra_hours, ra_rest = divmod(ra_tenths, 36000)
    ra_minutes, ra_tenths = divmod(ra_rest, 600)
    dec_seconds = math.floor(abs(dec_deg) * 3600.0)
    dec_degrees, dec_rest = divmod(dec_seconds, 3600)
    dec_minutes, dec_seconds = divmod(dec_rest, 60)
    sign = "-" if math.copysign(1.0, dec_deg) < 0 else "+"
    return (
        f"{prefix} J{ra_hours:02d}{ra_minutes:02d}{ra_tenths // 10:02d}.{ra_tenths % 10}"
        f"{sign}{dec_degrees:02d}{dec_minutes:02d}{dec_seconds:02d}"
    )


#: Key of the PostgreSQL advisory lock that serialises ingest writes (any constant bigint).
_INGEST_LOCK_KEY = 0x52475A_494E47  # "RGZ" "ING"


@dataclass
class PositionIndex:
    """The positions of the catalogue's sources, kept up to date with other ingests.

    The sky index is read once; each record then catches up with the sources created
    since (by this ingest or a concurrent one), under the ingest lock, so that two
    ingests running at once never both create a source at the same position.
    """

    sky: SkyIndex
    last_id: int

    def catch_up(self) -> None:
        rows = list(
            Source.objects.filter(pk__gt=self.last_id, ra_deg__isnull=False)
            .order_by("pk")
            .values_list("id", "ra_deg", "dec_deg")
        )
        for source_id, ra_deg, dec_deg in rows:
            if ra_deg is not None and dec_deg is not None:
                self.sky.add(source_id, ra_deg, dec_deg)
        if rows:
            self.last_id = rows[-1][0]


def _position_index() -> PositionIndex:
    from ml.skyindex import SkyIndex

    # list() first: NumPy converting a lazy queryset would turn a database error into
    # "setting an array element with a sequence".
    last_id = Source.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    # Up to last_id only: a source created after that read is caught up with by the first record.
    rows = np.array(
        list(Source.objects.filter(pk__lte=last_id, ra_deg__isnull=False).values_list("id", "ra_deg", "dec_deg")),
        dtype=np.float64,
    ).reshape(-1, 3)
    return PositionIndex(SkyIndex(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2]), int(last_id))


def _lock_ingest_writes() -> None:
    """Serialise ingest transactions, so the position check and the insert happen as one.

    On SQLite the settings' ``transaction_mode = IMMEDIATE`` already takes the database's
    write lock when the transaction begins; PostgreSQL needs an explicit lock, released
    at commit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_INGEST_LOCK_KEY])


def _record_checksum(record: SourceRecord, cutout: np.ndarray) -> str:
    digest = hashlib.sha256(cutout.tobytes())
    digest.update(
        repr((record.name, record.ra_deg, record.dec_deg, record.label, record.label_code, record.split)).encode()
    )
    return digest.hexdigest()


def _unique_name(name: str) -> str:
    if not Source.objects.filter(name=name).exists():
        return name
    suffix = 2
    while Source.objects.filter(name=f"{name} ({suffix})").exists():
        suffix += 1
    return f"{name} ({suffix})"


def _write_cutout(source: Source, cutout: np.ndarray, *, new_source: bool) -> None:
    from ml.thumbnail import render_thumbnail

    pixels = cutout.tobytes()
    fields = {
        "size": cutout.shape[0],
        "pixels": pixels,
        "thumbnail_png": render_thumbnail(cutout),
        "checksum": hashlib.sha256(pixels).hexdigest(),
    }
    if new_source:
        # A plain insert: update_or_create would add a SELECT and a savepoint per file.
        Cutout.objects.create(source=source, **fields)
    else:
        Cutout.objects.update_or_create(source=source, defaults=fields)


def _jsonable_extra(value: Any) -> bool:
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    # Lists of strings: the header warnings of a FITS file.
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


def _provenance_fields(record: SourceRecord, checksum: str) -> dict[str, Any]:
    return {
        "catalogue_label": record.label or "",
        "label_code": record.label_code or "",
        "split": record.split or "",
        "path": str(record.extra.get("path", ""))[:1024],
        "checksum": checksum,
        "extra": {k: (list(v) if isinstance(v, tuple) else v) for k, v in record.extra.items() if _jsonable_extra(v)},
    }


def _where(record: SourceRecord) -> str:
    """How an error or warning names a record: its file, and its name inside an archive."""
    path = record.extra.get("path")
    if not path:
        return f"{record.dataset} {record.name}"
    return str(path) if record.dataset == InputKind.FITS else f"{path} ({record.name})"


def _angular_size(record: SourceRecord, cutout: np.ndarray) -> float | None:
    """The catalogue's size when it gives one, else the extent of the emission above the threshold."""
    from ml.preprocess import TARGET_SCALE_ARCSEC, angular_extent_arcsec

    given = record.extra.get("angular_size_arcsec")
    if given is not None:
        return float(given)
    extent = angular_extent_arcsec(cutout, TARGET_SCALE_ARCSEC)
    return round(extent, 1) if extent > 0 else None


def ingest_record(
    record: SourceRecord, cutout: np.ndarray, index: PositionIndex, report: IngestReport, radius_arcsec: float
) -> None:
    """Write one preprocessed record (atomically) and count what happened in ``report``.

    Safe beside a concurrent ingest: the lookups and the writes happen under one lock,
    after catching up with the sources the other ingest created.
    """
    checksum = _record_checksum(record, cutout)
    external_id = str(record.extra.get("external_id", record.name))
    survey = str(record.extra.get("survey") or "FIRST")
    with transaction.atomic():
        _lock_ingest_writes()
        index.catch_up()
        existing = (
            Provenance.objects.filter(dataset=record.dataset, external_id=external_id).select_related("source").first()
        )
        if existing is not None:
            if existing.checksum == checksum:
                report.skipped += 1
                return
            Provenance.objects.filter(pk=existing.pk).update(**_provenance_fields(record, checksum))
            if existing.source.provenances.order_by("id").first() == existing:
                # The image shown for a source comes from its first provenance.
                _write_cutout(existing.source, cutout, new_source=False)
                Source.objects.filter(pk=existing.source_id).update(angular_size_arcsec=_angular_size(record, cutout))
            report.updated += 1
            return

        match = None
        if record.ra_deg is not None and record.dec_deg is not None:
            match = index.sky.nearest(record.ra_deg, record.dec_deg, radius_arcsec)
        if match is not None:
            source = Source(pk=match[0])  # only its key is needed; no query
            report.merged += 1
        else:
            if record.ra_deg is not None and record.dec_deg is not None:
                name = position_name(record.ra_deg, record.dec_deg, prefix=survey)
            else:
                name = f"{record.dataset} {record.name}"
            source = Source.objects.create(
                name=_unique_name(name),
                ra_deg=record.ra_deg,
                dec_deg=record.dec_deg,
                survey=survey,
                angular_size_arcsec=_angular_size(record, cutout),
            )
            _write_cutout(source, cutout, new_source=True)
            report.ingested += 1
        Provenance.objects.create(
            source=source, dataset=record.dataset, external_id=external_id, **_provenance_fields(record, checksum)
        )
    # The new source joins the index through the next catch_up(), which reads only committed rows.


def ingest_records(
    records: Iterable[SourceRecord | RowError | SkippedInput],
    *,
    radius_arcsec: float | None = None,
    on_record: Callable[[IngestReport], None] | None = None,
    report: IngestReport | None = None,
    index: PositionIndex | None = None,
) -> IngestReport:
    """Ingest already-decoded records (preprocessed uint8 images), one transaction each.

    Args:
        records: records, and the files or rows that could not be read (counted as failed).
        radius_arcsec: cross-match radius (default ``RGZ_CROSSMATCH_RADIUS_ARCSEC``).
        on_record: called after each item, e.g. to move a progress bar.
        report: add to this report (several inputs in one ingest) instead of a new one.
        index: the positions already in the catalogue, shared between inputs.

    Returns:
        The counts, one error line per failed item and one warning line per ingested
        file with header warnings.
    """
    from ml.datasets import RowError
    from ml.preprocess import PreprocessError, from_preprocessed

    radius = settings.RGZ_CROSSMATCH_RADIUS_ARCSEC if radius_arcsec is None else radius_arcsec
    report = IngestReport() if report is None else report
    index = _position_index() if index is None else index
    for record in records:
        if isinstance(record, SkippedInput):
            report.failed += 1
            report.errors.append(str(record))
        elif isinstance(record, RowError):
            report.failed += 1
            report.errors.append(f"row {record.row} ({record.name or 'no name'}): {record.reason}")
        else:
            try:
                cutout = from_preprocessed(record.image)
                ingest_record(record, cutout, index, report, radius)
            except (PreprocessError, ValueError, IntegrityError) as exc:
                report.failed += 1
                report.errors.append(f"{_where(record)}: {exc}")
            else:
                if record.extra.get("warnings"):
                    report.add_warnings(_where(record), record.extra["warnings"])
        # With DEBUG on, Django logs every query (cutout bytes included) until a web request
        # ends; an ingest is not a request, so without this its memory would grow per file.
        reset_queries()
        if on_record is not None:
            on_record(report)
    return report


def ingest_inputs(
    plan: IngestPlan,
    *,
    survey: str | None = None,
    radius_arcsec: float | None = None,
    allow_no_position: bool = False,
    on_record: Callable[[IngestReport], None] | None = None,
    processes: int = 1,
) -> IngestReport:
    """Ingest every input of a plan into one report; a broken archive fails alone.

    Args:
        plan: from :func:`rgzlabel.catalog.inputs.plan_ingest`; its rejected paths are
            counted as failed.
        survey: survey of new sources (default ``FIRST``), also the prefix of their names.
        radius_arcsec: cross-match radius (default ``RGZ_CROSSMATCH_RADIUS_ARCSEC``).
        allow_no_position: ingest FITS files without a celestial WCS instead of failing them.
        on_record: called after each record, e.g. to move a progress bar.
        processes: read FITS files in this many processes (writing stays in this one, in the
            files' order, so the result is the same as with one).
    """
    from ml.datasets import DatasetError

    report = IngestReport()
    for rejected in plan.rejected:
        report.failed += 1
        report.errors.append(str(rejected))
    index = _position_index()
    for ingest_input in plan.inputs:
        records = read_input(
            ingest_input,
            survey=survey,
            allow_no_position=allow_no_position,
            max_pixels=settings.RGZ_MAX_IMAGE_PIXELS,
            processes=processes,
        )
        try:
            ingest_records(records, radius_arcsec=radius_arcsec, on_record=on_record, report=report, index=index)
        except DatasetError as exc:
            # Records read before the archive broke are in (each in its own transaction).
            name = ingest_input.path.name if ingest_input.path is not None else ""
            report.failed += 1
            report.errors.append(f"{ingest_input.path or 'firstgalaxydata'}: {str(exc).removeprefix(f'{name}: ')}")
            if on_record is not None:
                on_record(report)
    return report


def ingest_paths(paths: Sequence[str | Path], *, kind: str | None = None, **options: Any) -> IngestReport:
    """Recognise and ingest files, folders and archives (see :func:`ingest_inputs` for options)."""
    return ingest_inputs(plan_ingest(paths, kind=kind), **options)


def ingest_dataset(
    name: str, path: str | None = None, *, on_record: Callable[[IngestReport], None] | None = None
) -> IngestReport:
    """Ingest one of the known datasets by name (``griese``, ``mirabest``, ...), read in place.

    Raises:
        InputError: ``name`` is not a known kind of input.
    """
    return ingest_paths([path] if path else [], kind=name, on_record=on_record)


# --- where a background ingest may read (its job lives in rgzlabel.learning.ingest) ----------


def upload_folder(job_id: int) -> Path:
    """Where the files uploaded for an ingest job are kept (``DATA_DIR/uploads/<job id>``)."""
    return uploads_root() / str(job_id)


def uploads_root() -> Path:
    return Path(settings.DATA_DIR) / "uploads"


def job_paths(params: dict[str, Any]) -> list[str]:
    """The server paths of an ingest job's parameters (``paths``, and an older single ``path``)."""
    paths = params.get("paths") or []
    if isinstance(paths, str):
        paths = [paths]
    return [str(path) for path in [*paths, *([params["path"]] if params.get("path") else [])]]


def check_ingest_params(params: dict[str, Any]) -> None:
    """Refuse ingest parameters that would read outside ``RGZ_INGEST_ROOTS`` (symlinks resolved).

    Every route into an ingest job checks this (the ingest form, ``/jobs/trigger/``, a
    re-run) and so does the job itself: a web user must not make the worker read
    arbitrary server files.

    Raises:
        InputError: a path outside the allowed folders, a relative path, or an upload
            folder that is not one the ingest page made.
    """
    paths = job_paths(params)
    relative = [path for path in paths if not Path(path).is_absolute()]
    if relative:
        raise InputError(f"use absolute paths: {', '.join(relative)}")
    outside = outside_roots(paths, settings.RGZ_INGEST_ROOTS)
    if outside:
        raise InputError(
            f"not inside an allowed folder (RGZ_INGEST_ROOTS: {', '.join(map(str, settings.RGZ_INGEST_ROOTS))}): "
            f"{', '.join(outside)} (symlinks resolved)"
        )
    uploads = params.get("upload_folder")
    if uploads and (outside_roots([uploads], [uploads_root()]) or Path(uploads).resolve() == uploads_root().resolve()):
        raise InputError(f"upload_folder must be a folder the ingest page made under {uploads_root()}, not {uploads}")
