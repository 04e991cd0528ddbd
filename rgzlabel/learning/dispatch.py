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
    Job.Kind.INDEX: ("rgzlabel.run_job", "default"),
}


#: The queue of interactive requests that need torch (search by image): its own worker, so a
#: query never waits behind a job, and no web process loads the encoder.
QUERY_QUEUE = "query"


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
    transaction.on_commit(lambda: send_now(job), robust=False)


def send_now(job: Job) -> None:
    """Hand ``job`` to the broker at once; on failure mark it failed and raise.

    Results are not asked for (``ignore_result``): the job row is the record of what
    happened, and asking would make Celery subscribe to the result store first, which,
    when it is down, retries for ~20 s and raises an error no one catches.
    """
    task_name, default_queue = TASKS[job.kind]
    # The job's own queue: a job sent again (after a worker shutdown, or by the sweep) goes
    # back to the workers it was meant for, not to the kind's default ones.
    queue = job.queue or default_queue
    try:
        result = celery_client().send_task(
            task_name,
            args=[job.pk],
            queue=queue,
            ignore_result=True,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
        )
    except Exception as exc:  # noqa: BLE001 - any failure to send (kombu, redis, OS) leaves the job unsent
        message = f"Cannot queue {job}: the broker ({settings.BROKER_DESCRIPTION}) is unreachable: {exc}"
        logger.error(message)
        Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
            state=Job.State.FAILED, error=message, message="not queued: broker unreachable", finished_at=timezone.now()
        )
        raise BrokerUnavailable(message) from exc
    Job.objects.filter(pk=job.pk).update(celery_task_id=result.id)


def send_chunks(job: Job, chunk_ids: list[int]) -> None:
    """Send one ``rgzlabel.run_chunk`` task per chunk (a Celery group) to the job's queue, after
    the current transaction commits, so a worker never looks for a chunk row not there yet.

    A chunk that could not be sent stays queued; beat's sweep sends it again once its job has
    stalled (``rgzlabel.learning.chunks.sweep_lost_chunks``).
    """
    from celery import group

    queue = job.queue or TASKS[job.kind][1]

    def send() -> None:
        client = celery_client()
        signatures = [
            client.signature("rgzlabel.run_chunk", args=[chunk_id], queue=queue, ignore_result=True)
            for chunk_id in chunk_ids
        ]
        try:
            group(signatures, app=client).apply_async()
        except Exception as exc:  # noqa: BLE001 - any failure to send leaves the chunks queued for the sweep
            logger.error(
                "cannot send %d chunk(s) of %s: the broker (%s) is unreachable: %s",
                len(chunk_ids),
                job,
                settings.BROKER_DESCRIPTION,
                exc,
            )

    transaction.on_commit(send)


class QueryUnanswered(RuntimeError):
    """A query sent to the ``query`` worker got no answer; the message says what to check."""


def ask_query_worker(task_name: str, args: list, timeout_s: float) -> object:
    """Send one interactive task to the ``query`` queue and wait for its answer.

    The message expires after ``timeout_s``, so a query nobody took in time is never run late.

    Raises:
        QueryUnanswered: the broker could not take it, no worker answered in time, or the task
            failed (its error in the message).
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        result = celery_client().send_task(task_name, args=args, queue=QUERY_QUEUE, expires=timeout_s)
    except Exception as exc:  # noqa: BLE001 - kombu, redis or OS errors: the broker did not take it
        raise QueryUnanswered(f"the broker ({settings.BROKER_DESCRIPTION}) is unreachable: {exc}") from exc
    try:
        return result.get(timeout=timeout_s, interval=0.05)
    except CeleryTimeout:
        raise QueryUnanswered(
            f"no worker on the '{QUERY_QUEUE}' queue answered within {timeout_s:g} s (bin/start and docker "
            f"compose run one: celery -A workers worker -Q {QUERY_QUEUE})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the task's own exception, re-raised by Celery
        raise QueryUnanswered(f"the query worker failed: {exc}") from exc
    finally:
        result.forget()
