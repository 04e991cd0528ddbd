"""The staff ingest page: who may use it, and what it queues."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from rgzlabel.catalog.services import upload_folder
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db

URL = reverse("learning:ingest")


def test_an_outsider_is_sent_to_log_in(client) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    client.post(URL, {"paths": "/data"})
    assert not Job.objects.exists()


def test_a_volunteer_is_refused(client, volunteer) -> None:
    client.force_login(volunteer)
    assert client.get(URL).status_code == 302
    client.post(URL, {"paths": "/data"})
    assert not Job.objects.exists()


def test_an_admin_sees_the_form_and_recent_ingest_jobs(client, admin_user) -> None:
    Job.objects.create(kind=Job.Kind.INGEST, message="12 ingested, 0 merged", warnings=["failed: /x.fits: broken"])
    client.force_login(admin_user)

    response = client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert "12 ingested, 0 merged" in page and "failed: /x.fits: broken" in page


def test_an_admin_queues_an_ingest_of_server_paths(
    client, admin_user, settings, django_capture_on_commit_callbacks
) -> None:
    settings.RGZ_INGEST_ROOTS = ["/data"]
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            URL, {"paths": "/data/fits\n\n /data/MiraBest_F_batches.tar.gz ", "radius_arcsec": "5", "survey": "FIRST"}
        )

    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.kind, job.triggered_by, job.state) == (Job.Kind.INGEST, admin_user, Job.State.QUEUED)
    assert job.params == {
        "paths": ["/data/fits", "/data/MiraBest_F_batches.tar.gz"],
        "upload_folder": None,
        "dataset": None,
        "survey": "FIRST",
        "radius_arcsec": 5.0,
        "allow_no_position": False,
    }
    assert len(callbacks) == 1  # sent to the broker once the job is committed
    assert f"Ingest job #{job.pk} queued" in client.get(URL).content.decode()


def test_an_admin_uploads_fits_files(client, admin_user, settings, tmp_path) -> None:
    settings.DATA_DIR = tmp_path
    client.force_login(admin_user)
    files = [SimpleUploadedFile("a.fits", b"SIMPLE  = T"), SimpleUploadedFile("b.fits.gz", b"\x1f\x8b")]

    response = client.post(URL, {"files": files, "dataset": "fits", "allow_no_position": "on"})

    assert response.status_code == 302
    job = Job.objects.get()
    assert job.params["upload_folder"] == str(upload_folder(job.pk))
    assert job.params["allow_no_position"] is True
    assert sorted(path.name for path in upload_folder(job.pk).iterdir()) == ["a.fits", "b.fits.gz"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "Give a server path or upload FITS files."),
        ({"paths": "data/fits"}, "Use absolute paths: data/fits"),
        ({"files": [SimpleUploadedFile("notes.txt", b"hello")]}, "Only FITS files can be uploaded: notes.txt"),
        ({"paths": "/data", "radius_arcsec": "-1"}, "Ensure this value is greater than or equal to 0.0."),
        ({"paths": "/etc/passwd"}, "Not inside an allowed folder (RGZ_INGEST_ROOTS: /data): /etc/passwd"),
        ({"paths": "/data/../etc"}, "Not inside an allowed folder"),
    ],
)
def test_a_bad_request_queues_nothing_and_says_why(client, admin_user, settings, data, error) -> None:
    settings.RGZ_INGEST_ROOTS = ["/data"]
    client.force_login(admin_user)

    response = client.post(URL, data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Job.objects.exists()
