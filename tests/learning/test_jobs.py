from __future__ import annotations

import pytest

from rgzlabel.learning.jobs import fail_lost_jobs, request_cancel, run_job
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db


def queued_job(**fields) -> Job:
    return Job.objects.create(kind=Job.Kind.EMBED, params={"method": "no-such-method"}, **fields)


def test_a_job_runs_once_however_often_it_is_delivered() -> None:
    job = queued_job()
    first = run_job(job.pk)
    second = run_job(job.pk)
    assert first["state"] == Job.State.FAILED
    assert second == {"job": job.pk, "state": Job.State.FAILED, "skipped": True}


def test_cancelling_a_queued_job_stops_it_before_it_starts() -> None:
    job = queued_job()
    assert request_cancel(job)
    assert run_job(job.pk)["skipped"]
    assert Job.objects.get(pk=job.pk).state == Job.State.CANCELLED


def test_a_running_job_without_heartbeat_is_failed() -> None:
    from datetime import timedelta

    from django.utils import timezone

    stale = queued_job(state=Job.State.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=2))
    alive = queued_job(state=Job.State.RUNNING, heartbeat_at=timezone.now())
    assert fail_lost_jobs() == 1
    assert Job.objects.get(pk=stale.pk).state == Job.State.FAILED
    assert "worker lost" in Job.objects.get(pk=stale.pk).error
    assert Job.objects.get(pk=alive.pk).state == Job.State.RUNNING


def test_a_job_stopped_by_a_worker_shutdown_is_queued_again(make_source, django_capture_on_commit_callbacks) -> None:
    from rgzlabel.learning.jobs import WORKER_SHUTDOWN

    for _ in range(4):
        make_source()
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params={"preset": "tiny"})
    WORKER_SHUTDOWN.set()
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            outcome = run_job(job.pk)
    finally:
        WORKER_SHUTDOWN.clear()
    job.refresh_from_db()
    assert outcome["requeued"]
    assert (job.state, job.started_at) == (Job.State.QUEUED, None)
    assert "interrupted by a worker shutdown" in job.message
    assert len(callbacks) == 1  # a new message for the broker


def test_an_admin_cancel_during_shutdown_still_cancels(make_source) -> None:
    from rgzlabel.learning.jobs import WORKER_SHUTDOWN

    for _ in range(4):
        make_source()
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params={"preset": "tiny"}, cancel_requested=True)
    WORKER_SHUTDOWN.set()
    try:
        run_job(job.pk)
    finally:
        WORKER_SHUTDOWN.clear()
    assert Job.objects.get(pk=job.pk).state == Job.State.CANCELLED
