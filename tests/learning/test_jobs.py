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
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params={"preset": "tiny"}, run_again=True)
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
    assert not job.run_again  # the run it is queued for is the run again
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


def test_training_progress_percentage_and_eta_agree_with_the_steps() -> None:
    from ml.train import TrainingProgress
    from rgzlabel.learning.jobs import JobContext
    from rgzlabel.learning.training import training_reporter

    job = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING)
    report = training_reporter(JobContext(job.pk, min_interval_s=0))
    # 100 of 400 steps, resumed at 60: 40 steps in this run at 2 s each, 300 left -> 600 s.
    report(TrainingProgress(1, 100, 400, 2.5, 4.0, 600.0, 0.25, resumed_from=60))
    job.refresh_from_db()
    assert job.progress == 0.25  # "25 %", the same as "step 100/400"
    assert "step 100/400" in job.message and "10.0 min left" in job.message and "resumed from step 60" in job.message
    assert job.metrics["eta_s"] == 600.0 and job.metrics["resumed_from"] == 60


def test_a_log_goes_on_when_a_requeued_job_runs_again() -> None:
    from rgzlabel.learning.jobs import JobContext

    job = Job.objects.create(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING, log="10:00:00 step 5/9, loss 1.0")
    context = JobContext(job.pk, min_interval_s=0)
    context.resume_log(job.log)
    context.progress(None, "step 6/9, loss 0.9")
    job.refresh_from_db()
    assert job.log.splitlines()[0] == "10:00:00 step 5/9, loss 1.0" and job.log.endswith("step 6/9, loss 0.9")
    assert job.progress == 0.0  # None keeps the fraction
