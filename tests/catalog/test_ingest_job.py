"""Ingest as a background job: through the real broker and worker, with progress and warnings."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rgzlabel.catalog.models import Provenance, Source
from rgzlabel.catalog.services import upload_folder
from rgzlabel.labelling.models import Subject
from rgzlabel.learning.ingest import start_ingest_job
from rgzlabel.learning.jobs import rerun_job, run_job
from rgzlabel.learning.models import Job
from tests.conftest import wait_for_job


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_ingest_job_runs_in_the_worker_and_reports_bad_files(
    celery_worker, admin_user, settings, write_fits
) -> None:
    # Inside DATA_DIR, one of the worker's default RGZ_INGEST_ROOTS (it runs with its own settings).
    tmp_path = Path(tempfile.mkdtemp(dir=settings.DATA_DIR, prefix="ingest-job-"))
    for number in range(3):
        write_fits(tmp_path / f"good_{number}.fits", ra_deg=10.0 + number, seed=number)
    (tmp_path / "broken.fits").write_bytes(b"not FITS at all")

    job = start_ingest_job(admin_user, paths=[str(tmp_path)])
    job = wait_for_job(job.pk, celery_worker)

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert (job.progress, job.triggered_by) == (1.0, admin_user)
    assert job.result["ingested"] == 3 and job.result["failed"] == 1
    assert job.message == "3 ingested, 0 merged by position, 0 updated, 0 skipped (unchanged), 1 failed"
    assert [w for w in job.warnings if w.startswith("failed:")] == [
        f"failed: {tmp_path / 'broken.fits'}: corrupt, truncated or not a FITS file (OSError: No SIMPLE card found, "
        "this file does not appear to be a valid FITS file. If this is really a FITS file, try with "
        "ignore_missing_simple=True)"
    ]
    assert Source.objects.count() == 3
    # Ingested sources are ready to label.
    assert Subject.objects.filter(source__in=Source.objects.all()).count() == 3
    assert job.result["subjects_created"] == 3


@pytest.mark.django_db
def test_uploaded_files_are_kept_under_the_job_and_ingested(admin_user, tmp_path, settings, write_fits) -> None:
    settings.DATA_DIR = tmp_path / "data"
    content = write_fits(tmp_path / "source.fits").read_bytes()
    uploads = [
        SimpleUploadedFile("../../etc/evil name.fits", content),  # a client's path is never trusted
        SimpleUploadedFile("other.fits", content.replace(b"150.0", b"151.0", 1)),
    ]

    job = start_ingest_job(admin_user, uploads=uploads)

    folder = upload_folder(job.pk)
    assert folder == tmp_path / "data" / "uploads" / str(job.pk)
    assert (job.params["upload_folder"], job.params["paths"]) == (str(folder), [])
    assert sorted(path.name for path in folder.iterdir()) == ["evil_name.fits", "other.fits"]

    outcome = run_job(job.pk)  # in-process: what the worker would do

    assert outcome["state"] == Job.State.SUCCEEDED
    assert outcome["ingested"] == 2
    assert sorted(Provenance.objects.values_list("external_id", flat=True)) == ["evil_name.fits", "other.fits"]

    rerun = rerun_job(Job.objects.get(pk=job.pk), user=admin_user)  # reads the same uploads
    assert run_job(rerun.pk)["skipped"] == 2


@pytest.mark.django_db
def test_a_job_whose_every_input_fails_is_failed(admin_user, tmp_path, settings) -> None:
    settings.RGZ_INGEST_ROOTS = [str(tmp_path)]
    job = start_ingest_job(admin_user, paths=[str(tmp_path / "nowhere")])

    outcome = run_job(job.pk)

    job.refresh_from_db()
    assert outcome["state"] == job.state == Job.State.FAILED
    assert job.error == f"NothingIngested: all 1 input(s) failed: {tmp_path / 'nowhere'}: no such file or folder"
    assert job.warnings == [f"failed: {tmp_path / 'nowhere'}: no such file or folder"]
