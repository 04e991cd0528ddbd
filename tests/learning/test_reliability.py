"""The loop on the real stack: a real worker process, cancelled jobs, a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from rgzlabel.learning.dispatch import celery_client
from rgzlabel.learning.jobs import create_job, fail_lost_jobs, rerun_job
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job
from tests.conftest import ROOT, _database_url, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

LONG_PRETRAINING = {"preset": "tiny", "overrides": {"max_steps": 100_000, "epochs": 10_000}}


def wait_until(predicate, timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def is_training(job_id: int) -> bool:
    job = Job.objects.get(pk=job_id)
    return job.state == Job.State.RUNNING and job.metrics.get("step", 0) >= 1


def test_an_admin_cancels_a_running_pretraining(celery_worker, make_source) -> None:
    for _ in range(8):
        make_source()
    job = create_job(Job.Kind.PRETRAIN, LONG_PRETRAINING)
    wait_until(lambda: is_training(job.pk), what="the pretraining to start")

    from rgzlabel.learning.jobs import request_cancel

    assert request_cancel(Job.objects.get(pk=job.pk))
    job = wait_for_job(job.pk, celery_worker, timeout_s=60)

    assert job.state == Job.State.CANCELLED
    assert job.finished_at is not None and job.error == ""
    assert not EncoderVersion.objects.exists()


def test_a_prefork_worker_shutting_down_queues_its_running_job_again(make_source, tmp_path) -> None:
    """docker-compose's workers use the prefork pool: the job runs in a pool process, not the main one."""
    from django.db import connection

    for _ in range(8):
        make_source()
    queue = f"pf-{os.getpid()}"  # Job.queue holds 16 characters
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict))
    log = open(tmp_path / "prefork-worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-c", "1", "-P", "prefork",
         "--without-gossip", "--without-mingle", "-n", f"prefork-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        job = Job.objects.create(kind=Job.Kind.PRETRAIN, params=LONG_PRETRAINING, queue=queue)
        celery_client().send_task("rgzlabel.run_job", args=[job.pk], queue=queue)
        wait_until(lambda: is_training(job.pk), what="the prefork worker to start training")
        worker.send_signal(signal.SIGTERM)  # what `docker compose stop` sends: a warm shutdown
        worker.wait(timeout=90)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()

    job = Job.objects.get(pk=job.pk)
    assert job.state == Job.State.QUEUED, (tmp_path / "prefork-worker.log").read_text()[-3000:]
    assert "interrupted by a worker shutdown" in job.message and job.celery_task_id
    assert not EncoderVersion.objects.exists()


def test_a_worker_killed_mid_job_never_leaves_it_running(celery_worker, make_source, settings, tmp_path) -> None:
    from django.db import connection

    for _ in range(8):
        make_source()
    embedding_set = EmbeddingSet.objects.create(method="pca", path="/unused", n_sources=8, dim=2, is_active=True)
    active = ClassifierVersion.objects.create(
        embedding_set=embedding_set, n_labels=4, metrics={"evaluated": True}, is_active=True
    )
    # A worker of its own on a queue of its own, in its own process group so that the
    # kill takes its pool process too, exactly as the OOM killer or a lost machine would.
    queue = f"kill-test-{os.getpid()}"
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict))
    log = open(tmp_path / "doomed-worker.log", "wb")  # noqa: SIM115 - closed below
    doomed = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-c", "1",
         "--without-gossip", "--without-mingle", "-n", f"doomed-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        job = Job.objects.create(kind=Job.Kind.PRETRAIN, params=LONG_PRETRAINING, queue=queue)
        celery_client().send_task("rgzlabel.run_job", args=[job.pk], queue=queue)
        wait_until(lambda: is_training(job.pk), what="the doomed worker to start training")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
        log.close()

    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING  # nobody could say otherwise yet
    settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S = 2
    time.sleep(2.5)
    assert fail_lost_jobs() == 1  # what beat's sweep does every minute

    lost = Job.objects.get(pk=job.pk)
    assert lost.state == Job.State.FAILED and "worker lost" in lost.error
    assert ClassifierVersion.objects.get(is_active=True) == active
    assert not EncoderVersion.objects.exists()

    again = wait_for_job(rerun_job(lost, params={"overrides": {"max_steps": 2}}).pk, celery_worker)
    assert again.state == Job.State.SUCCEEDED, again.error + again.traceback
    assert EncoderVersion.objects.filter(job=again).exists()


def test_the_loop_end_to_end(celery_worker, django_user_model) -> None:
    """Ingest real images, pretrain, embed, label, retrain, refresh: a new active classifier and a new queue."""

    from ml.datasets import read_griese
    from rgzlabel.catalog.services import ingest_records
    from rgzlabel.labelling.models import Subject
    from rgzlabel.labelling.services import default_workflow, sync_subjects
    from tests.voting import served_vote

    workflow = default_workflow()
    workflow.retire_after, workflow.retire_on_margin, workflow.gold_rate_start, workflow.gold_rate_min = 3, 0, 0.0, 0.0
    workflow.save()
    # The real FIRST images the firstgalaxydata package ships (no shared data folder needed).
    records = [record for record in read_griese() if record.label in ("FRI", "FRII")]
    fri = [r for r in records if r.label == "FRI"][:20]
    frii = [r for r in records if r.label == "FRII"][:20]
    report = ingest_records(fri + frii)
    assert report.ingested + report.merged == 40, report.errors
    sync_subjects(workflow)

    pretrain = create_job(Job.Kind.PRETRAIN, {"preset": "tiny", "overrides": {"max_steps": 3}})
    assert wait_for_job(pretrain.pk, celery_worker).state == Job.State.SUCCEEDED
    embed = wait_for_job(Job.objects.get(pk=pretrain.pk).result["embed_job"], celery_worker)
    assert embed.state == Job.State.SUCCEEDED, embed.error
    cold = wait_for_job(embed.result["next_job"], celery_worker)  # no labels yet: the cold-start ranking
    assert cold.state == Job.State.SUCCEEDED and cold.result["policy"] == "typical_clusters", cold.error
    cold_queue = list(
        Subject.objects.filter(retired_at__isnull=True).order_by("-priority", "id").values_list("source_id", flat=True)
    )

    volunteers = [django_user_model.objects.create_user(f"e2e{i}") for i in range(3)]
    labelled = {s.pk: label for s, label in _sources_with_labels(fri[:8] + frii[:8])}
    for source_id, label in labelled.items():
        for volunteer in volunteers:
            served_vote(volunteer, source_id, label, workflow)

    retrain = wait_for_job(create_job(Job.Kind.RETRAIN).pk, celery_worker)
    assert retrain.state == Job.State.SUCCEEDED, retrain.error + retrain.traceback
    refresh = wait_for_job(retrain.result["refresh_job"], celery_worker)
    assert refresh.state == Job.State.SUCCEEDED, refresh.error

    classifier = ClassifierVersion.objects.get(is_active=True)
    assert classifier.n_labels == 16 and classifier.embedding_set.encoder.job_id == pretrain.pk
    new_queue = list(
        Subject.objects.filter(retired_at__isnull=True).order_by("-priority", "id").values_list("source_id", flat=True)
    )
    assert set(new_queue) == set(cold_queue) - set(labelled)
    assert new_queue != [s for s in cold_queue if s not in labelled]  # the policy re-ranked it


def _sources_with_labels(records):
    from rgzlabel.catalog.models import Provenance

    for record in records:
        provenance = Provenance.objects.get(
            dataset=record.dataset, external_id=record.extra.get("external_id", record.name)
        )
        yield provenance.source, record.label


def test_simultaneous_retrain_triggers_make_one_job() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def trigger(_):
        try:
            return create_job(Job.Kind.RETRAIN).pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(trigger, range(8)))

    jobs = list(Job.objects.filter(kind=Job.Kind.RETRAIN).order_by("pk"))
    # The suite's worker (a session fixture, when an earlier test started it) may take the job
    # and fail it (no embedding) before a late trigger arrives; that trigger then rightly makes
    # a new one. What must never happen is two at once: each earlier job ended before the next.
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert earlier.state == Job.State.FAILED, [(job.pk, job.state, job.error) for job in jobs]
        # created_at is stamped before the insert waits on the unique index for the worker's
        # commit, so it may precede finished_at by the length of that wait (milliseconds).
        assert earlier.finished_at is not None
        assert earlier.finished_at <= later.created_at + timedelta(seconds=2), (earlier.finished_at, later.created_at)
    assert ids == {job.pk for job in jobs}


def test_a_pretraining_stopped_by_a_worker_shutdown_resumes_from_its_saved_step(make_source, tmp_path) -> None:
    """SIGTERM (what Ctrl-C on bin/start sends) a worker mid-pretraining; the next worker continues it."""
    from django.db import connection

    from ml.checkpoint import load_checkpoint
    from ml.train import load_resume_state
    from rgzlabel.learning.training import resume_path

    for _ in range(8):
        make_source()
    total = 16
    params = {"preset": "tiny", "overrides": {"max_steps": total, "epochs": total}}
    # Solo pool (as bin/start runs it), a queue of its own, a save after every step.
    queue = f"rs-{os.getpid()}"  # Job.queue holds 16 characters
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), RGZ_RESUME_EVERY_S="0")

    def start_worker(name: str) -> subprocess.Popen:
        log_path = tmp_path / f"{name}-worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-c", "1", "-P", "solo",
                 "--without-gossip", "--without-mingle", "-n", f"{name}-{os.getpid()}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker.log_path = log_path  # type: ignore[attr-defined]
        return worker

    first = start_worker("first")
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, params=params, queue=queue)
    state_file = resume_path(job)
    try:
        celery_client().send_task("rgzlabel.run_job", args=[job.pk], queue=queue)
        wait_until(
            lambda: state_file.exists() and is_training(job.pk), timeout_s=300, what="a saved state while training"
        )
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()

    # Stopped and queued again on its own queue, its state saved.
    assert Job.objects.get(pk=job.pk).state == Job.State.QUEUED, first.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
    saved = load_resume_state(state_file)
    assert saved is not None, first.log_path.read_text()  # type: ignore[attr-defined]
    stopped_at = int(saved["step"])
    assert 1 <= stopped_at < total
    assert len(saved["step_loss"]) == stopped_at

    second = start_worker("second")  # the worker started again: it finds the queued message
    try:
        job = wait_for_job(job.pk, second, timeout_s=900)  # generous: a shared machine may be very busy
    finally:
        second.terminate()
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.result["resumed_from"] == stopped_at and job.result["steps"] == total
    assert f"resumed from step {stopped_at}" in job.log
    # The log goes on from where the first run stopped: its steps before, the second run's after.
    steps = [int(line.split("step ")[1].split("/")[0]) for line in job.log.splitlines() if f"/{total}, loss" in line]
    assert steps == sorted(steps) and steps[-1] == total
    assert not state_file.exists()  # removed once the encoder is recorded
    encoder = EncoderVersion.objects.get(job=job)
    checkpoint = load_checkpoint(encoder.checkpoint_path)  # the usual encoder checkpoint
    assert len(checkpoint.curves.step_loss) == total and len(encoder.curves["step_loss"]) == total
