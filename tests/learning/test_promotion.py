"""Promotion by evidence: a worse retrain is kept but not promoted; a pinned version stays active."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from rgzlabel.labelling.models import Subject
from rgzlabel.learning.jobs import run_job
from rgzlabel.learning.loop import learning_tick
from rgzlabel.learning.models import ClassifierVersion, Job, LoopSettings
from tests.learning import test_loop
from tests.learning.test_loop import gold, label, run

pytestmark = pytest.mark.django_db
pool = test_loop.pool  # the same two-cluster pool fixture


def test_a_worse_retrain_is_kept_but_not_promoted(pool, workflow, django_capture_on_commit_callbacks) -> None:
    gold(pool[10:20], "FRI", workflow)
    gold(pool[40:50], "FRII", workflow)
    label(pool[:10], "FRI")
    label(pool[30:40], "FRII")
    first = run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    good = ClassifierVersion.objects.get(pk=first.result["classifier"])
    assert good.is_active and good.promotion == "promoted"
    # The volunteers get the classes backwards: every label is now wrong.
    label(pool[:10], "FRII")
    label(pool[30:40], "FRI")
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()

    second = run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)

    assert second.state == Job.State.SUCCEEDED, second.error
    worse = ClassifierVersion.objects.get(pk=second.result["classifier"])
    assert worse.metrics["accuracy"] < 0.2 and not worse.is_active
    assert worse.promotion == "rejected" and "worse than the active classifier" in worse.promotion_reason
    assert ClassifierVersion.objects.get(is_active=True) == good
    # The interval is stored and shown: 20 gold sources.
    assert worse.metrics["accuracy_low"] <= worse.metrics["accuracy"] <= worse.metrics["accuracy_high"]
    assert "+-" in good.accuracy_text and "(20 gold)" in good.accuracy_text


def test_a_pinned_version_stays_active_through_the_tick_and_retrains(
    pool, workflow, admin_user, client, django_capture_on_commit_callbacks
) -> None:
    gold(pool[10:20], "FRI", workflow)
    gold(pool[40:50], "FRII", workflow)
    label(pool[:3], "FRI")
    label(pool[30:33], "FRII")
    first = ClassifierVersion.objects.get(
        pk=run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks).result["classifier"]
    )
    label(pool[3:10], "FRI")
    label(pool[33:40], "FRII")
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()
    second = ClassifierVersion.objects.get(
        pk=run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks).result["classifier"]
    )
    assert second.is_active
    client.force_login(admin_user)
    client.post(reverse("learning:promote", args=[first.pk]))  # the admin's "make active"
    first.refresh_from_db()
    assert first.is_active and first.is_pinned

    loop = LoopSettings.current()
    loop.retrain_min_new_labels, loop.retrain_every_minutes = 5, 0
    loop.save()
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()
    Subject.objects.filter(source__in=pool[20:26]).update(
        retired_at=timezone.now(), retire_reason="vote count", consensus_label="FRI", weighted_label="FRI"
    )
    with django_capture_on_commit_callbacks():
        actions = learning_tick()
    run_job(actions["retrain_job"])

    third = ClassifierVersion.objects.first()
    assert third.pk not in (first.pk, second.pk)
    assert third.promotion == "rejected" and "pinned" in third.promotion_reason
    assert ClassifierVersion.objects.get(is_active=True) == first
    # The tick does not retrain again on labels a rejected version has already seen.
    with django_capture_on_commit_callbacks():
        assert "retrain_job" not in learning_tick()

    client.post(reverse("learning:unpin", args=[first.pk]))
    first.refresh_from_db()
    assert first.is_active and not first.is_pinned
