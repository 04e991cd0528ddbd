"""Admins run the loop from the browser: trigger, watch, cancel, re-run, promote. Personas."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def scientist(django_user_model):
    return django_user_model.objects.create_user("sam", password="x", is_staff=False)


@pytest.mark.parametrize("persona", ["outsider", "volunteer"])
def test_only_staff_reach_job_control(client, volunteer, persona) -> None:
    if persona == "volunteer":
        client.force_login(volunteer)
    for url in (reverse("learning:jobs"), reverse("learning:trigger")):
        response = client.get(url) if url.endswith("/jobs/") else client.post(url, {"kind": "retrain"})
        assert response.status_code == 302 and "login" in response["Location"]
    assert not Job.objects.exists()


def test_an_admin_triggers_a_job_with_parameters(client, admin_user, django_capture_on_commit_callbacks) -> None:
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("learning:trigger"), {"kind": "pretrain", "params": '{"preset": "tiny"}'})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("learning:job", args=[job.pk])
    assert (job.kind, job.params, job.triggered_by) == ("pretrain", {"preset": "tiny"}, admin_user)
    page = client.get(reverse("learning:job", args=[job.pk])).content.decode()
    assert "Pretrain the encoder #" in page and 'id="cancel"' in page


def test_bad_parameters_are_refused_with_the_reason(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("learning:trigger"), {"kind": "pretrain", "params": "{preset: tiny}"}, follow=True)
    assert "not valid JSON" in response.content.decode()
    assert not Job.objects.exists()


def test_a_second_trigger_joins_the_running_job(client, admin_user, django_capture_on_commit_callbacks) -> None:
    client.force_login(admin_user)
    running = Job.objects.create(kind=Job.Kind.RETRAIN, state=Job.State.RUNNING)
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("learning:trigger"), {"kind": "retrain"}, follow=True)
    assert Job.objects.count() == 1
    assert f"already running (job {running.pk})" in response.content.decode()


def test_cancel_and_rerun_from_the_job_page(client, admin_user, django_capture_on_commit_callbacks) -> None:
    client.force_login(admin_user)
    running = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING, params={"preset": "tiny"})
    client.post(reverse("learning:cancel", args=[running.pk]))
    assert Job.objects.get(pk=running.pk).cancel_requested
    failed = Job.objects.create(kind=Job.Kind.EMBED, state=Job.State.FAILED, params={"method": "pca"})
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("learning:rerun", args=[failed.pk]))
    new = Job.objects.latest("created_at")
    assert new.pk != failed.pk and new.params == {"method": "pca", "rerun_of": failed.pk}
    assert response["Location"] == reverse("learning:job", args=[new.pk])


def test_an_admin_rolls_back_to_an_earlier_classifier(client, admin_user) -> None:
    embedding_set = EmbeddingSet.objects.create(method="pca", path="/nowhere", n_sources=1, dim=1)
    old = ClassifierVersion.objects.create(embedding_set=embedding_set, n_labels=5, metrics={"evaluated": True})
    ClassifierVersion.objects.create(
        embedding_set=embedding_set, n_labels=9, metrics={"evaluated": True}, is_active=True
    )
    client.force_login(admin_user)
    client.post(reverse("learning:promote", args=[old.pk]))
    assert ClassifierVersion.objects.get(is_active=True) == old


@pytest.mark.parametrize("persona", ["outsider", "volunteer"])
def test_job_status_is_for_staff_only(client, volunteer, admin_user, persona) -> None:
    job = Job.objects.create(kind=Job.Kind.INGEST, message="12/40: /srv/private/file.fits", error="boom")
    if persona == "volunteer":
        client.force_login(volunteer)
    response = client.get(reverse("learning:job-status", args=[job.pk]))
    assert response.status_code == 403 and "/srv/private" not in response.content.decode()
    client.force_login(admin_user)
    assert client.get(reverse("learning:job-status", args=[job.pk])).json()["error"] == "boom"


def test_an_evaluate_job_without_parameters_says_what_it_needs() -> None:
    from rgzlabel.learning.jobs import run_job

    for params, error in [
        ({}, 'ValueError: no classifier is active: name one to evaluate, e.g. {"classifier": 3}'),
        ({"classifier": 999}, 'ValueError: parameter "classifier": there is no classifier version 999'),
        ({"classifier": "x"}, "ValueError: parameter \"classifier\" must be an id, not 'x'"),
    ]:
        job = Job.objects.create(kind=Job.Kind.EVALUATE, params=params)
        run_job(job.pk)
        job.refresh_from_db()
        assert (job.state, job.error) == (Job.State.FAILED, error)
