"""Machine-assisted retirement: volunteers and the classifier agreeing retire a subject early."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import GoldLabel, Subject
from rgzlabel.labelling.services import MACHINE_ASSISTED_REASON, hold, record_classification, undo_last_vote
from rgzlabel.learning.classifiers import consensus_labels
from rgzlabel.learning.models import ClassifierVersion, Job
from tests.learning import test_loop
from tests.learning.test_loop import label, run

pytestmark = pytest.mark.django_db
pool = test_loop.pool  # 30 FRI-like, 30 FRII-like and 10 ambiguous sources on 8-d embeddings


def vote(user, source, value: str, workflow) -> None:
    hold(user, Subject.objects.get(workflow=workflow, source=source), is_gold=False)
    record_classification(user, source.pk, value, workflow)


@pytest.fixture
def trained(pool, workflow, django_capture_on_commit_callbacks):
    """An active classifier that knows the two clusters (10 consensus labels each).

    The plain probe is cautious on these 8-d clusters (about 0.77 on a cluster source), so
    the tests use a 0.75 threshold: one agreeing vote from a new volunteer lifts it to ~0.83.
    """
    label(pool[:10], "FRI")
    label(pool[30:40], "FRII")
    run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()
    classifier = ClassifierVersion.objects.get(is_active=True)
    return classifier


def refresh(django_capture_on_commit_callbacks) -> Job:
    job = run(Job.Kind.REFRESH, django_capture_on_commit_callbacks)
    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    return job


def state(source, workflow) -> Subject:
    return Subject.objects.get(workflow=workflow, source=source)


def test_agreement_retires_early_and_disagreement_never(
    trained, pool, workflow, volunteer, other_volunteer, django_capture_on_commit_callbacks
) -> None:
    workflow.machine_retire_confidence = 0.75
    workflow.save()
    vote(volunteer, pool[20], "FRI", workflow)  # agrees with the classifier (FRI cluster)
    vote(volunteer, pool[50], "FRII", workflow)  # agrees (FRII cluster)
    vote(volunteer, pool[25], "FRII", workflow)  # the volunteer says FRII in the FRI cluster
    vote(other_volunteer, pool[25], "FRII", workflow)

    job = refresh(django_capture_on_commit_callbacks)

    for source, expected in ((pool[20], "FRI"), (pool[50], "FRII")):
        subject = state(source, workflow)
        assert subject.retire_reason == MACHINE_ASSISTED_REASON and subject.vote_count == 1
        assert subject.assisted_label == expected and subject.assisted_by == trained.pk
        assert 0.75 <= subject.assisted_confidence <= 1.0
    # The classifier can speed a consensus up, never overturn one.
    assert state(pool[25], workflow).retired_at is None
    # Sources nobody has voted on stay open (the default needs one vote).
    assert Subject.objects.filter(source__in=pool[20:30], vote_count=0, retired_at__isnull=False).count() == 0
    assert (
        job.result["machine_assisted_retired"] == 2
        and "2 retired by volunteers and classifier" in (job.result["summary"])
    )
    # Its own agreement is not a training label: the classifier never learns from itself.
    ids, _, _ = consensus_labels(workflow)
    assert pool[20].pk not in ids and pool[50].pk not in ids and pool[0].pk in ids


def test_off_by_default_and_unseen_sources_only_when_the_workflow_allows(
    trained, pool, workflow, volunteer, django_capture_on_commit_callbacks
) -> None:
    vote(volunteer, pool[20], "FRI", workflow)
    refresh(django_capture_on_commit_callbacks)
    assert workflow.machine_retire_confidence == 0.0  # the shipped default until a replay sets one
    assert not Subject.objects.filter(retire_reason=MACHINE_ASSISTED_REASON).exists()

    workflow.machine_retire_confidence, workflow.machine_retire_min_votes = 0.75, 2
    workflow.save()
    refresh(django_capture_on_commit_callbacks)
    assert state(pool[20], workflow).retired_at is None  # one vote is not enough for this workflow

    workflow.machine_retire_min_votes = 0  # the classifier alone may retire unseen sources
    workflow.save()
    refresh(django_capture_on_commit_callbacks)
    unseen = Subject.objects.filter(retire_reason=MACHINE_ASSISTED_REASON, vote_count=0)
    assert unseen.exists()
    assert set(unseen.values_list("assisted_label", flat=True)) <= {"FRI", "FRII"}
    # The ambiguous middle is left to the volunteers.
    assert unseen.filter(source__in=pool[60:]).count() < unseen.filter(source__in=pool[10:30]).count()


def test_never_gold_never_the_exploration_audit(
    trained, pool, workflow, volunteer, django_capture_on_commit_callbacks
) -> None:
    workflow.machine_retire_confidence, workflow.machine_retire_min_votes = 0.75, 0
    workflow.save()
    # A gold source whose subject is still open (e.g. added while a refresh ran), and a
    # subject served by random exploration: their labels must stay the volunteers' and experts'.
    GoldLabel.objects.create(workflow=workflow, source=pool[21], label="FRI")
    Subject.objects.filter(workflow=workflow, source=pool[21]).update(retired_at=None, retire_reason="")
    Subject.objects.filter(workflow=workflow, source=pool[22]).update(explored=True)
    gold_retired = Subject.objects.filter(workflow=workflow, retire_reason="gold").count()

    refresh(django_capture_on_commit_callbacks)

    assert state(pool[21], workflow).retired_at is None
    assert state(pool[22], workflow).retired_at is None
    # It did run: unseen neighbours in the same cluster were retired.
    assert Subject.objects.filter(source__in=pool[10:30], retire_reason=MACHINE_ASSISTED_REASON).exists()
    assert Subject.objects.filter(workflow=workflow, retire_reason="gold").count() == gold_retired


def test_an_undone_vote_reopens_the_subject(
    trained, pool, workflow, volunteer, django_capture_on_commit_callbacks
) -> None:
    workflow.machine_retire_confidence = 0.75
    workflow.save()
    vote(volunteer, pool[20], "FRI", workflow)
    refresh(django_capture_on_commit_callbacks)
    assert state(pool[20], workflow).retire_reason == MACHINE_ASSISTED_REASON

    undo_last_vote(volunteer, workflow)

    subject = state(pool[20], workflow)
    assert subject.retired_at is None and subject.vote_count == 0
    assert (subject.assisted_label, subject.assisted_confidence, subject.assisted_by) == ("", None, None)


def test_the_source_page_and_the_export_say_why(
    trained, pool, workflow, volunteer, admin_user, client, django_capture_on_commit_callbacks
) -> None:
    workflow.machine_retire_confidence = 0.75
    workflow.save()
    vote(volunteer, pool[50], "FRII", workflow)
    refresh(django_capture_on_commit_callbacks)
    client.force_login(admin_user)

    page = client.get(reverse("science:source", args=[pool[50].pk])).content.decode()
    assert f"Retired ({MACHINE_ASSISTED_REASON})" in page and "agreed on <b>FRII</b>" in page

    response = client.get(reverse("exports:sources-csv"))
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    rows = {int(row["source_id"]): row for row in csv.DictReader(io.StringIO(body.decode()))}
    assert rows[pool[50].pk]["retire_reason"] == MACHINE_ASSISTED_REASON
    assert rows[pool[50].pk]["assisted_label"] == "FRII" and float(rows[pool[50].pk]["assisted_confidence"]) >= 0.75
    assert rows[pool[0].pk]["retire_reason"] == "vote count" and rows[pool[0].pk]["assisted_label"] == ""
