"""Ingest as a background job: started from the staff page or ``/jobs/trigger/``, run by a worker.

The reading and cross-matching is the catalog's (``rgzlabel.catalog.services``); this module
adds what an ingest means for the loop: a Job with progress, uploads kept for the worker, and
labelling subjects for the new sources.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from rgzlabel.catalog.inputs import IngestInput, IngestPlan, InputKind, SkippedInput, plan_ingest
from rgzlabel.catalog.services import (
    IngestReport,
    NothingIngested,
    check_ingest_params,
    ingest_inputs,
    job_paths,
    upload_folder,
    uploads_root,
)
from rgzlabel.labelling.services import choose_field_guide_examples, default_workflow, sync_subjects
from rgzlabel.learning.chunks import hand_off
from rgzlabel.learning.jobs import JobCancelled, JobContext, create_job
from rgzlabel.learning.models import Job, JobChunk

#: Kinds of warning copied to the job's log (the rest are counted in its result).
JOB_WARNING_KINDS = 20

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.core.files.uploadedfile import UploadedFile

    from rgzlabel.learning.chunks import ChunkContext


def sync_subjects_after_ingest() -> int:
    """Give the new sources their labelling subjects; returns how many were created."""
    created = sync_subjects()
    # New catalogue labels (e.g. MiraBest's hybrids) may give a class its first field-guide examples.
    choose_field_guide_examples(default_workflow())
    return created


def start_ingest_job(
    user: AbstractBaseUser | None,
    *,
    paths: Sequence[str] = (),
    uploads: Sequence[UploadedFile] = (),
    dataset: str | None = None,
    survey: str | None = None,
    radius_arcsec: float | None = None,
    allow_no_position: bool = False,
) -> Job:
    """Queue an ingest of server paths and/or uploaded FITS files.

    Uploads are saved under :func:`upload_folder` before the job's transaction commits, so
    the worker (which receives the job only after the commit) always finds them. The
    worker must see ``DATA_DIR``: on several machines it is a shared volume.

    Args:
        user: the admin who asked (recorded on the job).
        paths: files or folders on the worker's file system.
        uploads: FITS files sent with the request.
        dataset: force the kind of every path (see :class:`InputKind`); uploads are FITS.
        survey, radius_arcsec, allow_no_position: as for :func:`ingest_inputs`.
    """
    params = {
        "paths": [str(path) for path in paths],
        "upload_folder": None,
        "dataset": dataset or None,
        "survey": survey or None,
        "radius_arcsec": radius_arcsec,
        "allow_no_position": allow_no_position,
    }
    folder: Path | None = None
    try:
        with transaction.atomic():
            job = create_job(Job.Kind.INGEST, params, user=user)
            if uploads:
                folder = upload_folder(job.pk)
                _save_uploads(uploads, folder)
                # Named in the parameters (not derived from the job id) so that a re-run of
                # this job, which copies them, reads the same files.
                job.params["upload_folder"] = str(folder)
                job.save(update_fields=["params"])
    except BaseException:
        # Nothing will read them: the job was rolled back, or failed at commit (BrokerUnavailable).
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def delete_uploads_of_failed_jobs() -> int:
    """Delete the upload folders of ingest jobs that failed (any way: a bad file, a lost
    worker, the broker down); returns how many. Run by beat's sweep.

    Only folders whose job exists and is failed: a folder being filled belongs to a job
    not yet committed, which this process cannot see.
    """
    root = uploads_root()
    if not root.is_dir():
        return 0
    ids = {int(path.name): path for path in root.iterdir() if path.is_dir() and path.name.isdigit()}
    failed = Job.objects.filter(pk__in=ids, kind=Job.Kind.INGEST, state=Job.State.FAILED).values_list("pk", flat=True)
    for job_id in failed:
        shutil.rmtree(ids[job_id], ignore_errors=True)
    return len(failed)


def _save_uploads(uploads: Sequence[UploadedFile], folder: Path) -> None:
    from django.utils.text import get_valid_filename

    folder.mkdir(parents=True, exist_ok=False)
    for number, upload in enumerate(uploads, start=1):
        # Never trust a client's file name: no folders, no odd characters, no clashes.
        name = get_valid_filename(Path(upload.name or "").name) or f"upload-{number}.fits"
        target = folder / name
        if target.exists():
            target = folder / f"{number}-{name}"
        with target.open("wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)


def ingest_job(job: Job, context: JobContext) -> dict[str, Any]:
    """The Celery job behind the staff ingest page.

    ``job.params``: ``paths`` (server files or folders), ``upload_folder`` (uploaded FITS
    files, always read as FITS), ``dataset`` (force the kind of the paths), ``survey``,
    ``radius_arcsec``, ``allow_no_position``, ``chunk_files`` (default ``RGZ_INGEST_CHUNK_FILES``).
    An older ``path`` key is read as one more path; with no paths and no uploads it ingests
    the Griese set of the installed package. With more FITS files than ``chunk_files`` the
    ingest is split into chunks that any workers run at once (:func:`ingest_pieces`).

    Raises:
        NothingIngested: every input failed (the job is then marked failed).
    """
    params = job.params
    check_ingest_params(params)  # again: parameters can be edited or re-run after they were checked
    paths = job_paths(params)
    uploads = params.get("upload_folder")
    roots = settings.RGZ_INGEST_ROOTS
    plan = plan_ingest(paths, kind=params.get("dataset"), roots=roots) if paths or not uploads else IngestPlan()
    if uploads:
        uploaded = plan_ingest([uploads], kind=InputKind.FITS, roots=[uploads_root()])
        plan.inputs += uploaded.inputs
        plan.rejected += uploaded.rejected
    per_chunk = ingest_chunk_files(params)
    if sum(len(item.files) for item in plan.inputs if item.kind is InputKind.FITS) > per_chunk:
        return hand_off(job, ingest_pieces(plan, per_chunk), f"ingesting {plan.expected or '?'} records in chunks")
    try:
        return _run_ingest_job(plan, params, context)
    except BaseException as exc:
        # A failed job's uploads go (a re-run needs them uploaded again); a cancelled or
        # interrupted one keeps them, as it may run again.
        if uploads and not isinstance(exc, JobCancelled):
            shutil.rmtree(uploads, ignore_errors=True)
        raise


def _run_ingest_job(plan: IngestPlan, params: dict[str, Any], context: JobContext) -> dict[str, Any]:
    expected = plan.expected
    warned_errors = 0

    def report_progress(report: IngestReport) -> None:
        nonlocal warned_errors
        # Failures are copied to the job as they happen, so an admin sees them mid-run.
        for error in report.errors[warned_errors:]:
            context.warn(f"failed: {error}")
        warned_errors = len(report.errors)
        done = report.total
        context.progress(
            done / expected if expected else 0.0, f"{done}{f'/{expected}' if expected else ''}: {report.summary()}"
        )

    def on_record(report: IngestReport) -> None:
        report_progress(report)
        context.check_cancelled()

    try:
        report = ingest_inputs(
            plan,
            survey=params.get("survey"),
            radius_arcsec=params.get("radius_arcsec"),
            allow_no_position=bool(params.get("allow_no_position")),
            on_record=on_record,
        )
    finally:
        # Even when cancelled, the sources already written (each committed) become labellable.
        subjects_created = sync_subjects_after_ingest()
    report_progress(report)  # paths rejected before any record was read
    for kind, files in report.warning_kinds.most_common(JOB_WARNING_KINDS):
        context.warn(f"warning in {files} file(s): {kind}")
    if report.failed and report.total == report.failed:
        raise NothingIngested(f"all {report.failed} input(s) failed: {'; '.join(report.errors[:3])}")
    return {**report.as_dict(), "subjects_created": subjects_created}


# --- an ingest split across workers (rgzlabel.learning.chunks) ------------------------------------
_COUNTS = ("ingested", "merged", "updated", "skipped", "failed")


def ingest_chunk_files(params: dict[str, Any]) -> int:
    """FITS files per chunk: the job's ``chunk_files`` or ``RGZ_INGEST_CHUNK_FILES``."""
    value = params.get("chunk_files") or settings.RGZ_INGEST_CHUNK_FILES
    try:
        files = int(value)
    except (TypeError, ValueError):
        raise ValueError(f'parameter "chunk_files" must be a number of files, not {value!r}') from None
    if files < 1:
        raise ValueError(f'parameter "chunk_files" must be at least 1, not {files}')
    return files


def ingest_pieces(plan: IngestPlan, per_chunk: int) -> list[tuple[dict[str, Any], int]]:
    """The chunks of an ingest plan: FITS files ``per_chunk`` at a time, each archive alone.

    FITS files are keyed by name, so two files of one name are refused here, over the whole
    plan, exactly as a single worker reading them in order would (the first is kept).
    """
    rejected = [{"where": item.where, "reason": item.reason} for item in plan.rejected]
    pieces: list[tuple[dict[str, Any], int]] = []
    seen: dict[str, Path] = {}
    for item in plan.inputs:
        if item.kind is not InputKind.FITS:
            common = {"kind": item.kind.value, "path": str(item.path) if item.path else None}
            catalogue = {"catalogue": str(item.catalogue)} if item.catalogue else {}
            pieces.append(({**common, **catalogue}, item.expected or 1))
            continue
        files: list[str] = []
        for path in item.files:
            if path.name in seen:
                rejected.append(
                    {"where": str(path), "reason": f"same file name as {seen[path.name]}: FITS files are keyed by name"}
                )
                continue
            seen[path.name] = path
            files.append(str(path))
        for start in range(0, len(files), per_chunk):
            part = files[start : start + per_chunk]
            pieces.append(({"kind": InputKind.FITS.value, "path": str(item.path), "files": part}, len(part)))
    if not pieces:
        pieces.append(({"kind": "none"}, 1))
    pieces[0][0]["rejected"] = rejected
    return pieces


def ingest_chunk(job: Job, chunk: JobChunk, context: ChunkContext) -> dict[str, Any]:
    """Ingest one chunk's files (or archive); each record is its own transaction, as always."""
    params, piece = job.params, chunk.params
    plan = IngestPlan(rejected=[SkippedInput(item["where"], item["reason"]) for item in piece.get("rejected", [])])
    if piece["kind"] != "none":
        kind = InputKind(piece["kind"])
        files = tuple(Path(name) for name in piece.get("files", ()))
        catalogue = Path(piece["catalogue"]) if piece.get("catalogue") else None
        path = Path(piece["path"]) if piece.get("path") else None
        plan.inputs.append(IngestInput(kind=kind, path=path, files=files, catalogue=catalogue))
    latest = IngestReport()
    warned = 0

    def on_record(report: IngestReport) -> None:
        nonlocal latest, warned
        latest = report
        for error in report.errors[warned:]:
            context.warn(f"failed: {error}")
        warned = len(report.errors)
        context.progress(report.total)
        context.check_cancelled()

    earlier = dict(chunk.result.get("earlier", {}))
    try:
        report = ingest_inputs(
            plan,
            survey=params.get("survey"),
            radius_arcsec=params.get("radius_arcsec"),
            allow_no_position=bool(params.get("allow_no_position")),
            on_record=on_record,
        )
    except Exception:
        # A retry reads these files again and finds what this attempt wrote unchanged ("skipped"):
        # remember what it wrote, so the chunk's counts come out as one attempt's would.
        written = {key: earlier.get(key, 0) + getattr(latest, key) for key in ("ingested", "merged", "updated")}
        JobChunk.objects.filter(pk=chunk.pk).update(result={"earlier": written})
        raise
    counts = {key: getattr(report, key) for key in _COUNTS}
    for key in ("ingested", "merged", "updated"):
        counts[key] += earlier.get(key, 0)
        counts["skipped"] -= earlier.get(key, 0)
    return {
        **counts,
        "errors": report.errors[:200],
        "warned": len(report.warnings),
        "warning_kinds": dict(report.warning_kinds),
    }


def finish_ingest_chunks(job: Job, chunks: list[JobChunk], context: JobContext) -> dict[str, Any]:
    """Every chunk is in: one report, as a single worker's, and the new sources' subjects."""
    from collections import Counter

    report = IngestReport()
    for chunk in chunks:
        for key in _COUNTS:
            setattr(report, key, getattr(report, key) + int(chunk.result.get(key, 0)))
        report.errors += chunk.result.get("errors", [])
        report.warning_kinds.update(Counter(chunk.result.get("warning_kinds", {})))
    warned = sum(int(chunk.result.get("warned", 0)) for chunk in chunks)
    subjects_created = sync_subjects_after_ingest()
    for kind, files in report.warning_kinds.most_common(JOB_WARNING_KINDS):
        context.warn(f"warning in {files} file(s): {kind}")
    if report.failed and report.total == report.failed:
        raise NothingIngested(f"all {report.failed} input(s) failed: {'; '.join(report.errors[:3])}")
    return {**report.as_dict(), "warned": warned, "subjects_created": subjects_created}


def abandon_ingest_chunks(job: Job) -> None:
    """A chunked ingest that failed: its uploads go, as a single worker's would; a cancelled one keeps
    them. Either way, the sources already written (each committed) become labellable."""
    sync_subjects_after_ingest()
    uploads = job.params.get("upload_folder")
    if uploads and Job.objects.filter(pk=job.pk, state=Job.State.FAILED).exists():
        shutil.rmtree(uploads, ignore_errors=True)
