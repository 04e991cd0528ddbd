"""The one place where Django code hands work to Celery.

Tasks are sent by name, so no Django app imports ``workers`` (dependencies point one way:
workers -> rgzlabel -> ml), and only after the transaction that created the job commits,
so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from rgzlabel.learning.models import Job

logger = logging.getLogger(__name__)

# kind -> (task name, queue). Pretraining and embedding want the GPU when there is one.
TASKS: dict[str, tuple[str, str]] = {
    Job.Kind.INGEST: ("rgzlabel.run_job", "default"),
    Job.Kind.EMBED: ("rgzlabel.run_job", "gpu"),
    Job.Kind.PRETRAIN: ("rgzlabel.run_job", "gpu"),
    Job.Kind.FINETUNE: ("rgzlabel.run_job", "gpu"),
    Job.Kind.RETRAIN: ("rgzlabel.run_job", "default"),
    Job.Kind.REFRESH: ("rgzlabel.run_job", "default"),
    Job.Kind.EVALUATE: ("rgzlabel.run_job", "default"),
}


class BrokerUnavailable(RuntimeError):
    """The Celery broker could not take the job; the message names the setting to check."""


@lru_cache(maxsize=1)
def celery_client() -> Celery:
    """A Celery app used only to send messages, configured from the same settings as workers."""
    app = Celery("rgzlabel", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    return app


def queue_for(kind: str) -> str:
    return TASKS[kind][1]


def enqueue(job: Job) -> None:
    """Send ``job`` to its queue once the current transaction commits.

    Raises:
        BrokerUnavailable: the broker refused or could not be reached; the job is marked
            failed with the same message so that nothing waits for it forever.
    """
    task_name, queue = TASKS[job.kind]

    def send() -> None:
        try:
            result = celery_client().send_task(
                task_name,
                args=[job.pk],
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
            )
        except (OperationalError, OSError) as exc:
            message = f"Cannot queue {job}: the broker ({settings.BROKER_DESCRIPTION}) is unreachable: {exc}"
            logger.error(message)
            Job.objects.filter(pk=job.pk).update(state=Job.State.FAILED, error=message, finished_at=timezone.now())
            raise BrokerUnavailable(message) from exc
        Job.objects.filter(pk=job.pk).update(celery_task_id=result.id)

    transaction.on_commit(send, robust=False)
