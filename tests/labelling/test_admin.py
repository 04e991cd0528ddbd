"""The Django admin is no way around the services: votes, subjects and jobs change only through them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.learning.models import Job
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


def test_votes_and_subjects_cannot_be_added_edited_or_deleted_in_the_admin(
    admin_client_, volunteer, make_source, workflow
) -> None:
    source = make_source()
    vote = served_vote(volunteer, source.pk, "FRI", workflow).classification
    subject = Subject.objects.get(source=source, workflow=workflow)
    for model, pk in (("classification", vote.pk), ("subject", subject.pk)):
        assert admin_client_.get(reverse(f"admin:labelling_{model}_add")).status_code == 403
        assert admin_client_.get(reverse(f"admin:labelling_{model}_delete", args=[pk])).status_code == 403
        change = reverse(f"admin:labelling_{model}_change", args=[pk])
        assert admin_client_.get(change).status_code == 200  # still visible
        admin_client_.post(change, {"label": "FRII", "vote_count": 0})
    vote.refresh_from_db()
    subject.refresh_from_db()
    assert (vote.label, subject.vote_count) == ("FRI", 1)


def test_removing_votes_in_the_admin_recounts_and_reopens_the_source(
    admin_client_, django_user_model, make_source, workflow
) -> None:
    workflow.retire_after = 3
    workflow.save()
    source = make_source()
    crowd = [django_user_model.objects.create_user(f"v{i}") for i in range(3)]
    votes = [
        served_vote(v, source.pk, label, workflow) for v, label in zip(crowd, ["FRI", "FRII", "FRII"], strict=True)
    ]
    subject = Subject.objects.get(source=source, workflow=workflow)
    assert subject.retired_at is not None

    response = admin_client_.post(
        reverse("admin:labelling_classification_changelist"),
        {"action": "remove_and_recount", "_selected_action": [votes[1].classification.pk]},
    )

    assert response.status_code == 302
    assert Classification.objects.count() == 2
    subject.refresh_from_db()
    assert (subject.vote_count, subject.retired_at, subject.retire_reason) == (2, None, "")
    assert (subject.consensus_label, subject.consensus_confidence) == ("FRI", 0.5)


def test_jobs_cannot_be_added_or_edited_in_the_admin(admin_client_, django_capture_on_commit_callbacks) -> None:
    from rgzlabel.learning.jobs import create_job

    assert admin_client_.get(reverse("admin:learning_job_add")).status_code == 403
    with django_capture_on_commit_callbacks():
        job = create_job(Job.Kind.REFRESH)
    admin_client_.post(reverse("admin:learning_job_change", args=[job.pk]), {"kind": "refresh", "state": "running"})
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    # The admin still stops a job through the service.
    admin_client_.post(reverse("admin:learning_job_changelist"), {"action": "cancel", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
