"""With the broker down, volunteers keep labelling and triggers fail with a clear message."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rgzlabel.labelling.models import Classification
from rgzlabel.learning import dispatch
from rgzlabel.learning.jobs import create_job, sweep_unsent_jobs
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db

#: Nothing listens on port 1: connections are refused at once, as with a stopped Redis.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def broker_down(settings):
    dispatch.celery_client.cache_clear()
    settings.CELERY_BROKER_URL = DEAD_REDIS
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1}
    settings.BROKER_DESCRIPTION = "Redis (REDIS_URL)"
    yield
    dispatch.celery_client.cache_clear()


@pytest.fixture
def redis_down(settings, broker_down):
    """The whole REDIS_URL unreachable: the broker and the result store."""
    dispatch.celery_client.cache_clear()
    settings.CELERY_RESULT_BACKEND = DEAD_REDIS
    yield
    dispatch.celery_client.cache_clear()


def test_volunteers_label_while_the_broker_is_down(client, volunteer, make_source, broker_down) -> None:
    make_source()
    client.force_login(volunteer)
    served = client.get(reverse("labelling:api-next")).json()["source"]
    response = client.post(reverse("labelling:api-vote"), {"source": served["id"], "label": "FRII"})
    assert response.status_code == 200 and response.json()["created"]
    assert Classification.objects.filter(volunteer=volunteer).count() == 1


@pytest.mark.django_db(transaction=True)  # real commits, so the job is sent while the view runs
def test_a_trigger_fails_with_a_clear_message(client, admin_user, broker_down) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("learning:trigger"), {"kind": "retrain"}, follow=True)
    page = response.content.decode()
    assert "the broker (Redis (REDIS_URL)) is unreachable" in page
    assert Job.objects.get().state == Job.State.FAILED  # nothing waits forever for a lost message


@pytest.mark.django_db(transaction=True)
def test_a_trigger_fails_fast_when_broker_and_result_store_are_down(client, admin_user, redis_down) -> None:
    client.force_login(admin_user)
    started = time.monotonic()
    response = client.post(reverse("learning:trigger"), {"kind": "retrain"}, follow=True)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert "the broker (Redis (REDIS_URL)) is unreachable" in response.content.decode()
    assert elapsed < 8, f"the trigger took {elapsed:.1f} s"
    assert not Job.objects.filter(state=Job.State.QUEUED).exists()  # no orphan for later triggers to join
    # ...so the next trigger (beat's included) is refused the same way instead of joining a dead job.
    client.post(reverse("learning:trigger"), {"kind": "retrain"})
    assert Job.objects.filter(kind="retrain", state=Job.State.FAILED).count() == 2


def _orphan(kind: str = "retrain", age_s: float = 600) -> Job:
    """A queued job whose message never left (the process died between commit and send)."""
    job = Job.objects.create(kind=kind, queue="default")
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=age_s))
    return job


@pytest.mark.django_db(transaction=True)
def test_the_sweep_sends_again_a_job_that_never_reached_the_broker(settings) -> None:
    dispatch.celery_client.cache_clear()
    orphan, recent = _orphan(), _orphan("refresh", age_s=1)
    assert sweep_unsent_jobs() == {"sent": 1, "failed": 0}
    orphan.refresh_from_db()
    assert orphan.state == Job.State.QUEUED and orphan.celery_task_id
    assert not Job.objects.get(pk=recent.pk).celery_task_id  # its own send may still be under way


@pytest.mark.django_db(transaction=True)
def test_the_sweep_fails_an_unsent_job_while_the_broker_is_down(redis_down) -> None:
    orphan = _orphan()
    assert sweep_unsent_jobs() == {"sent": 0, "failed": 1}
    orphan.refresh_from_db()
    assert orphan.state == Job.State.FAILED and "unreachable" in orphan.error
    # The kind is free again: a new trigger is not swallowed by the orphan.
    with pytest.raises(dispatch.BrokerUnavailable):
        create_job("retrain")


@pytest.mark.django_db(transaction=True)
def test_a_job_sent_again_goes_back_to_its_own_queue() -> None:
    """A job requeued after a worker shutdown must reach the workers of its queue, not the kind's default."""
    dispatch.celery_client.cache_clear()
    queue = f"own-{time.monotonic_ns() % 10**8}"
    job = Job.objects.create(kind=Job.Kind.PRETRAIN, queue=queue)
    dispatch.send_now(job)
    with dispatch.celery_client().connection_for_read() as connection:
        message = connection.SimpleQueue(queue).get(timeout=5)
        message.ack()
    assert message.headers["task"] == "rgzlabel.run_job" and message.headers["argsrepr"] == f"[{job.pk}]"
