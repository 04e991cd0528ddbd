"""RGZ_INGEST_ROOTS holds on every route into an ingest: the page, /jobs/trigger/, the job itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from rgzlabel.catalog.models import Source
from rgzlabel.learning.jobs import run_job
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def escape(tmp_path, settings, write_fits) -> dict[str, Path]:
    """An allowed root holding one good file and symlinks (a file, a folder) to a folder outside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    write_fits(allowed / "good.fits", ra_deg=10.0)
    write_fits(secret / "private.fits", ra_deg=20.0)
    (allowed / "link.fits").symlink_to(secret / "private.fits")
    (allowed / "linked-folder").symlink_to(secret, target_is_directory=True)
    settings.RGZ_INGEST_ROOTS = [str(allowed)]
    return {"allowed": allowed, "secret": secret}


@pytest.mark.parametrize("name", ["link.fits", "linked-folder", "linked-folder/private.fits"])
def test_the_ingest_page_refuses_a_symlink_out_of_the_root(client, admin_user, escape, name) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("learning:ingest"), {"paths": str(escape["allowed"] / name)})
    assert response.status_code == 200
    assert "Not inside an allowed folder" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "params",
    [
        '{"paths": ["/etc"]}',
        '{"path": "/etc"}',
        '{"paths": "/etc"}',
        '{"paths": ["SECRET"]}',
        '{"path": "ALLOWED/link.fits"}',
        '{"upload_folder": "/etc"}',
        '{"paths": ["relative/path"]}',
    ],
)
def test_the_trigger_route_applies_the_same_roots(client, admin_user, escape, params) -> None:
    params = params.replace("SECRET", str(escape["secret"])).replace("ALLOWED", str(escape["allowed"]))
    client.force_login(admin_user)
    response = client.post(reverse("learning:trigger"), {"kind": "ingest", "params": params}, follow=True)
    page = response.content.decode()
    assert "not inside an allowed folder" in page or "upload_folder must be" in page or "absolute" in page
    assert not Job.objects.exists()


def test_the_job_itself_refuses_paths_outside_the_roots(escape) -> None:
    # As if the parameters had been edited after the checks (admin, database, an older version).
    job = Job.objects.create(kind=Job.Kind.INGEST, params={"paths": [str(escape["secret"])]})
    assert run_job(job.pk)["state"] == Job.State.FAILED
    assert "not inside an allowed folder" in Job.objects.get(pk=job.pk).error
    assert not Source.objects.exists()


def test_a_folder_scan_skips_files_that_resolve_outside_the_roots(escape) -> None:
    job = Job.objects.create(kind=Job.Kind.INGEST, params={"paths": [str(escape["allowed"])]})
    outcome = run_job(job.pk)
    job.refresh_from_db()
    assert outcome["state"] == Job.State.SUCCEEDED, job.error
    assert [p.path for s in Source.objects.all() for p in s.provenances.all()] == [str(escape["allowed"] / "good.fits")]
    assert any("link.fits: outside the allowed folders" in line for line in job.warnings)


def test_a_png_catalogue_cannot_name_a_file_outside_its_folder(tmp_path, settings) -> None:
    from PIL import Image

    from rgzlabel.catalog.services import ingest_paths

    folder, outside = tmp_path / "pngs", tmp_path / "elsewhere"
    folder.mkdir(), outside.mkdir()
    image = Image.new("L", (150, 150), 0)
    image.putpixel((75, 75), 255)
    image.save(outside / "stolen.png")
    (folder / "catalogue.csv").write_text("name,ra,dec,file\nA,10,10,../elsewhere/stolen.png\n")
    report = ingest_paths([folder])
    assert report.failed == 1 and "outside the catalogue's folder" in report.errors[0]
