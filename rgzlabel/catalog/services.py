"""Ingest: turning dataset records into Sources, Provenances and Cutouts.

Each record is written in its own transaction, so a bad file is reported and skipped
without leaving anything half-written, and every other record still goes in. Records are
cross-matched by sky position: the same source from two datasets becomes one Source with
two Provenances.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction

from rgzlabel.catalog.models import Cutout, Provenance, Source

if TYPE_CHECKING:
    from ml.datasets import RowError, SourceRecord
    from ml.skyindex import SkyIndex

    from rgzlabel.learning.jobs import JobContext
    from rgzlabel.learning.models import Job

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What an ingest did, record by record."""

    ingested: int = 0  # new sources
    merged: int = 0  # new provenance on a source already known at that position
    updated: int = 0  # a known record whose input changed
    skipped: int = 0  # a known record, unchanged
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
        }


def position_name(ra_deg: float, dec_deg: float, prefix: str = "FIRST") -> str:
    """IAU-style name from a position, e.g. ``FIRST J123456.7+123456``."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    coord = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    ra = coord.ra.to_string(unit=u.hourangle, sep="", precision=1, pad=True)
    dec = coord.dec.to_string(sep="", precision=0, alwayssign=True, pad=True)
    return f"{prefix} J{ra}{dec}"


def _position_index() -> SkyIndex:
    from ml.skyindex import SkyIndex

    rows = np.array(
        Source.objects.filter(ra_deg__isnull=False).values_list("id", "ra_deg", "dec_deg"), dtype=np.float64
    ).reshape(-1, 3)
    return SkyIndex(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2])


def _record_checksum(record: SourceRecord, cutout: np.ndarray) -> str:
    digest = hashlib.sha256(cutout.tobytes())
    digest.update(repr((record.name, record.ra_deg, record.dec_deg, record.label, record.label_code, record.split)).encode())
    return digest.hexdigest()


def _unique_name(name: str) -> str:
    if not Source.objects.filter(name=name).exists():
        return name
    suffix = 2
    while Source.objects.filter(name=f"{name} ({suffix})").exists():
        suffix += 1
    return f"{name} ({suffix})"


def _write_cutout(source: Source, cutout: np.ndarray, checksum: str) -> None:
    from ml.thumbnail import render_thumbnail

    Cutout.objects.update_or_create(
        source=source,
        defaults={
            "size": cutout.shape[0],
            "pixels": cutout.tobytes(),
            "thumbnail_png": render_thumbnail(cutout),
            "checksum": hashlib.sha256(cutout.tobytes()).hexdigest(),
        },
    )


def _provenance_fields(record: SourceRecord, checksum: str) -> dict[str, Any]:
    return {
        "catalogue_label": record.label or "",
        "label_code": record.label_code or "",
        "split": record.split or "",
        "path": str(record.extra.get("path", ""))[:1024],
        "checksum": checksum,
        "extra": {k: v for k, v in record.extra.items() if isinstance(v, str | int | float | bool) or v is None},
    }


def ingest_record(record: SourceRecord, cutout: np.ndarray, index: SkyIndex, report: IngestReport, radius_arcsec: float) -> None:
    """Write one preprocessed record (atomically) and count what happened in ``report``."""
    checksum = _record_checksum(record, cutout)
    external_id = str(record.extra.get("external_id", record.name))
    existing = Provenance.objects.filter(dataset=record.dataset, external_id=external_id).select_related("source").first()
    with transaction.atomic():
        if existing is not None:
            if existing.checksum == checksum:
                report.skipped += 1
                return
            Provenance.objects.filter(pk=existing.pk).update(**_provenance_fields(record, checksum))
            if existing.source.provenances.order_by("id").first() == existing:
                # The image shown for a source comes from its first provenance.
                _write_cutout(existing.source, cutout, checksum)
            report.updated += 1
            return

        match = None
        if record.ra_deg is not None and record.dec_deg is not None:
            match = index.nearest(record.ra_deg, record.dec_deg, radius_arcsec)
        if match is not None:
            source = Source.objects.get(pk=match[0])
            report.merged += 1
        else:
            if record.ra_deg is not None and record.dec_deg is not None:
                name = position_name(record.ra_deg, record.dec_deg)
            else:
                name = f"{record.dataset} {record.name}"
            source = Source.objects.create(
                name=_unique_name(name),
                ra_deg=record.ra_deg,
                dec_deg=record.dec_deg,
                survey=str(record.extra.get("survey", "FIRST")),
                angular_size_arcsec=record.extra.get("angular_size_arcsec"),
            )
            _write_cutout(source, cutout, checksum)
            report.ingested += 1
        Provenance.objects.create(
            source=source, dataset=record.dataset, external_id=external_id, **_provenance_fields(record, checksum)
        )
    # Only after the commit: a rolled-back source must not be matched later.
    if match is None and record.ra_deg is not None and record.dec_deg is not None:
        index.add(source.pk, record.ra_deg, record.dec_deg)


def ingest_records(
    records: Iterable[SourceRecord | RowError],
    *,
    radius_arcsec: float | None = None,
    on_record: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Ingest already-decoded records (preprocessed uint8 images), one transaction each."""
    from ml.datasets import RowError
    from ml.preprocess import PreprocessError, from_preprocessed

    radius = settings.RGZ_CROSSMATCH_RADIUS_ARCSEC if radius_arcsec is None else radius_arcsec
    report = IngestReport()
    index = _position_index()
    for record in records:
        if isinstance(record, RowError):
            report.failed += 1
            report.errors.append(f"row {record.row} ({record.name or 'no name'}): {record.reason}")
            continue
        try:
            cutout = from_preprocessed(record.image)
            ingest_record(record, cutout, index, report, radius)
        except (PreprocessError, ValueError, IntegrityError) as exc:
            report.failed += 1
            report.errors.append(f"{record.dataset} {record.name}: {exc}")
        if on_record is not None:
            on_record(report)
    return report


def ingest_dataset(name: str, path: str | None = None, *, context: JobContext | None = None, on_record=None) -> IngestReport:
    """Ingest one of the known datasets by name (``griese``), reading it in place."""
    from ml import datasets

    readers = {"griese": datasets.read_griese}
    if name not in readers:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(readers))}")
    return ingest_records(readers[name](path), on_record=on_record)


def ingest_job(job: Job, context: JobContext) -> dict[str, Any]:
    """The Celery job behind an admin's ingest: ``params = {"dataset": ..., "path": ...}``."""
    expected = job.params.get("expected")

    def on_record(report: IngestReport) -> None:
        done = report.total
        context.progress(done / expected if expected else 0.0, f"{done} records: {report.summary()}")
        context.check_cancelled()

    report = ingest_dataset(job.params["dataset"], job.params.get("path"), context=context, on_record=on_record)
    for error in report.errors[:50]:
        context.warn(error)
    return report.as_dict()
