"""The data step of `bin/start`: the real FIRST images, loaded once, and the first jobs."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from rgzlabel.catalog.models import Cutout, Provenance, Source
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db


def bootstrap(*args: str) -> str:
    out = StringIO()
    call_command("bootstrap", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_loads_the_packaged_first_images_once_and_queues_the_first_jobs() -> None:
    first = bootstrap()

    n_sources = Source.objects.count()
    # 2158 images ship in the package; one has an all-zero centre and is reported, not loaded.
    assert 2150 <= n_sources <= 2158
    assert Cutout.objects.count() == n_sources
    assert Provenance.objects.filter(dataset="griese").count() == n_sources
    assert set(Provenance.objects.values_list("catalogue_label", flat=True)) == {"FRI", "FRII", "compact", "bent"}
    assert f"{n_sources} ingested" in first
    assert Job.objects.filter(kind=Job.Kind.EMBED, params__method="pca").count() == 1
    assert Job.objects.filter(kind=Job.Kind.PRETRAIN).count() == 1

    second = bootstrap()

    assert Source.objects.count() == n_sources
    assert f"{n_sources} skipped (unchanged)" in second
    assert Job.objects.count() == 2  # nothing queued twice


def test_it_marks_jobs_left_running_by_a_stop_as_failed() -> None:
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING)
    bootstrap("--recover-interrupted", "--no-pretrain")
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "interrupted" in job.error
