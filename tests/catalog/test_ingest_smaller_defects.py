"""Issue 15's smaller ingest defects, each reproduced with a file generated here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from rgzlabel.catalog.models import Provenance, Source
from rgzlabel.catalog.services import upload_folder
from rgzlabel.learning.ingest import delete_uploads_of_failed_jobs, start_ingest_job
from rgzlabel.learning.jobs import run_job
from rgzlabel.learning.models import Job
from tests.catalog.conftest import ingest, radio_image, sky_header

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_a_wrong_database_port_is_one_line_naming_database_url(tmp_path, write_fits) -> None:
    write_fits(tmp_path / "a.fits")
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere", "RGZ_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "manage.py", "ingest", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("CommandError: cannot reach the database (DATABASE_URL): "), run.stderr
    assert "setting an array element" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "card",
    [
        b"OBJECT  = 'caf\xe9'",
        b"OBJECT  = 'NGC 1234 \xb0' / \xc3\xa9t\xc3\xa9",
        b"OBJECT  = caf\xe9 / x",
        b"OBJECT  = 'caf\xe9",
    ],
)
def test_a_non_ascii_byte_in_object_keeps_the_wcs(tmp_path, write_fits, card) -> None:
    path = write_fits(tmp_path / "object.fits", ra_deg=123.0, OBJECT="placeholder")
    content = bytearray(path.read_bytes())
    start = content.index(b"OBJECT  =")
    content[start : start + 80] = card.ljust(80)
    path.write_bytes(bytes(content))

    status, out, err = ingest(str(path))

    assert status == 0, err
    source = Source.objects.get()
    assert source.ra_deg == pytest.approx(123.0)
    assert "non-ASCII" in " ".join(Provenance.objects.get().extra["warnings"])


def test_tile_compressed_fz_files_are_found_and_ingested(tmp_path) -> None:
    folder = tmp_path / "fpacked"
    folder.mkdir()
    for number, name in enumerate(["one.fits.fz", "two.fz"]):
        image = radio_image(seed=number)
        hdus = fits.HDUList(
            [fits.PrimaryHDU(), fits.CompImageHDU(image, header=sky_header(30.0 + number, 5.0, image.shape))]
        )
        hdus.writeto(folder / name)

    status, out, err = ingest(str(folder))

    assert status == 0, err
    assert sorted(Provenance.objects.values_list("external_id", flat=True)) == ["one.fits.fz", "two.fz"]
    assert sorted(round(ra) for ra in Source.objects.values_list("ra_deg", flat=True)) == [30, 31]


def test_the_uploads_of_a_failed_ingest_job_are_deleted(admin_user, settings, tmp_path) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_DIR = tmp_path / "data"
    job = start_ingest_job(admin_user, uploads=[SimpleUploadedFile("broken.fits", b"not FITS")])
    assert upload_folder(job.pk).is_dir()

    assert run_job(job.pk)["state"] == Job.State.FAILED

    assert not upload_folder(job.pk).exists()


def test_the_sweep_deletes_uploads_of_jobs_that_failed_elsewhere(admin_user, settings, tmp_path) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_DIR = tmp_path / "data"
    lost = start_ingest_job(admin_user, uploads=[SimpleUploadedFile("a.fits", b"x")])
    waiting = start_ingest_job(admin_user, uploads=[SimpleUploadedFile("b.fits", b"x")])
    Job.objects.filter(pk=lost.pk).update(state=Job.State.FAILED, error="worker lost")  # as the sweep does

    assert delete_uploads_of_failed_jobs() == 1

    assert not upload_folder(lost.pk).exists() and upload_folder(waiting.pk).is_dir()
    assert np.array_equal(sorted(p.name for p in upload_folder(waiting.pk).iterdir()), ["b.fits"])
