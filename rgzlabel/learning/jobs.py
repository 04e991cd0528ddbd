"""Creating, running and reporting background jobs.

A job's service function receives a :class:`JobContext` through which it reports progress
and learns that an admin asked it to stop; the worker's task only calls :func:`run_job`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from rgzlabel.learning.dispatch import BrokerUnavailable, enqueue, queue_for, send_now
from rgzlabel.learning.models import Job

logger = logging.getLogger(__name__)

# kind -> "module:function" taking (job, context) and returning a JSON-able summary.
# Looked up lazily so the web process never imports torch.
SERVICES: dict[str, str] = {
    Job.Kind.INGEST: "rgzlabel.learning.ingest:ingest_job",
    Job.Kind.EMBED: "rgzlabel.learning.embedding:embed_job",
    Job.Kind.PRETRAIN: "rgzlabel.learning.training:pretrain_job",
    Job.Kind.FINETUNE: "rgzlabel.learning.training:finetune_job",
    Job.Kind.RETRAIN: "rgzlabel.learning.classifiers:retrain_job",
    Job.Kind.REFRESH: "rgzlabel.learning.queue:refresh_queue_job",
    Job.Kind.EVALUATE: "rgzlabel.learning.classifiers:evaluate_job",
    Job.Kind.INDEX: "rgzlabel.learning.embedding:index_job",
}


class JobCancelled(Exception):
    """Raised inside a job when an admin asked it to stop."""


#: Set by the worker when it is asked to shut down (``workers.celery``). A job that notices
#: stops at its next step and is queued again, so stopping ``bin/start`` pauses pretraining
#: instead of abandoning it.
WORKER_SHUTDOWN = threading.Event()


def create_job(kind: str, params: dict[str, Any] | None = None, *, user: AbstractBaseUser | None = None) -> Job:
    """Record a job and queue it for a worker (after the surrounding transaction commits).

    For kinds of which only one may be active (``Job.SINGLETON_KINDS``), a trigger while
    one is queued or running returns that job instead: the database's constraint decides,
    so two simultaneous triggers make one job. For ``Job.RUN_AGAIN_KINDS`` a trigger while one
    is *running* also marks it to be queued once more when it ends, so what changed since it
    started is not lost.
    """
    for attempt in range(3):
        try:
            with transaction.atomic():
                job = Job.objects.create(
                    kind=kind,
                    params=params or {},
                    queue=queue_for(kind),
                    triggered_by=user if user is not None and user.is_authenticated else None,
                )
                enqueue(job)
            return job
        except IntegrityError:
            # Only the one-active-job constraint is expected here; anything else (a schema that
            # does not match the code) must surface, not be retried.
            if kind not in Job.SINGLETON_KINDS or attempt == 2:
                raise
            existing = Job.objects.filter(kind=kind, state__in=Job.ACTIVE_STATES).first()
            if existing is None:  # it finished between our insert and this read: try again
                continue
            # The mark is conditional on still running: if the job ended meanwhile, its end did
            # not see the mark, and the insert can succeed now.
            if (
                existing.state == Job.State.RUNNING
                and kind in Job.RUN_AGAIN_KINDS
                and not Job.objects.filter(pk=existing.pk, state=Job.State.RUNNING).update(run_again=True)
            ):
                continue
            existing.joined = True  # type: ignore[attr-defined]
            return existing
    raise AssertionError("unreachable: the last attempt returns or raises")


def rerun_job(job: Job, *, params: dict[str, Any] | None = None, user: AbstractBaseUser | None = None) -> Job:
    """Queue a new job with the kind and parameters of a finished one (``params`` override some)."""
    if job.is_active:
        raise ValueError(f"{job} is still {job.state}; cancel it first")
    return create_job(job.kind, {**job.params, **(params or {}), "rerun_of": job.pk}, user=user)


def request_cancel(job: Job) -> bool:
    """Ask a job to stop. A queued job is cancelled at once; a running one at its next step."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED, cancel_requested=True, finished_at=now, message="cancelled before it started"
    ):
        return True
    if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(cancel_requested=True) != 1:
        return False
    if job.chunks.exists():
        from rgzlabel.learning.chunks import cancel_chunks

        cancel_chunks(job)
    return True


@dataclass
class JobContext:
    """What a running service sees of its job: progress reports and cancellation."""

    job_id: int
    min_interval_s: float = 1.0
    _last_write: float = field(default=0.0, init=False)
    _last_cancel_check: float = field(default=0.0, init=False)
    _cancelled: bool = field(default=False, init=False)
    warnings: list[str] = field(default_factory=list, init=False)
    max_log_lines: int = 200
    _log_lines: list[str] = field(default_factory=list, init=False)

    def progress(self, fraction: float | None, message: str = "", *, force: bool = False, **metrics: Any) -> None:
        """Record progress (``None`` keeps the fraction); throttled so a fast loop does not hammer the database."""
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s and (fraction is None or fraction < 1.0):
            return
        self._last_write = now
        updates: dict[str, Any] = {"heartbeat_at": timezone.now()}
        if fraction is not None:
            updates["progress"] = max(0.0, min(1.0, float(fraction)))
        if message:
            updates["message"] = message[:512]
            self._log_lines.append(f"{timezone.now():%H:%M:%S} {message}")
            del self._log_lines[: -self.max_log_lines]
            updates["log"] = "\n".join(self._log_lines)
        if metrics:
            updates["metrics"] = {k: _jsonable(v) for k, v in metrics.items()}
        Job.objects.filter(pk=self.job_id).update(**updates)

    def resume_log(self, log: str) -> None:
        """Continue an earlier run's log instead of starting an empty one."""
        self._log_lines = log.splitlines()[-self.max_log_lines :]

    def warn(self, message: str) -> None:
        """Record a warning on the job at once, so admins see it while the job runs."""
        logger.warning("job %s: %s", self.job_id, message)
        self.warnings.append(message)
        if len(self.warnings) <= 200:  # a job with thousands of bad files keeps its first 200
            Job.objects.filter(pk=self.job_id).update(warnings=self.warnings)

    def should_stop(self) -> bool:
        """True once an admin asked to cancel or the worker is shutting down."""
        if WORKER_SHUTDOWN.is_set():
            return True
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= self.min_interval_s:
            self._last_cancel_check = now
            self._cancelled = Job.objects.filter(pk=self.job_id, cancel_requested=True).exists()
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelled()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _service(kind: str) -> Callable[[Job, JobContext], dict[str, Any]]:
    module_name, _, function_name = SERVICES[kind].partition(":")
    return getattr(import_module(module_name), function_name)


def run_job(job_id: int) -> dict[str, Any]:
    """Claim a queued job, run its service, and record the outcome. Safe to call twice."""
    now = timezone.now()
    # The atomic claim: of two deliveries of the same message only one moves the job on.
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
        logger.info("job %s not run: state is %s", job_id, state)
        return {"job": job_id, "state": state, "skipped": True}

    job = Job.objects.get(pk=job_id)
    context = JobContext(job_id)
    if job.log:  # a job run again after a worker shutdown keeps its log (and the losses in it)
        context.resume_log(job.log)
    try:
        result = _service(job.kind)(job, context)
    except BaseException as exc:  # noqa: BLE001 - every failure must be recorded, then re-raised if fatal
        cancelled = isinstance(exc, JobCancelled) or type(exc).__name__ == "TrainingCancelled"
        if cancelled and WORKER_SHUTDOWN.is_set() and not Job.objects.filter(pk=job_id, cancel_requested=True).exists():
            return _requeue_interrupted(job)
        Job.objects.filter(pk=job_id).update(
            state=Job.State.CANCELLED if cancelled else Job.State.FAILED,
            error="" if cancelled else f"{type(exc).__name__}: {exc}",
            traceback="" if cancelled else traceback.format_exc(),
            message="cancelled by request" if cancelled else "failed",
            warnings=context.warnings,
            finished_at=timezone.now(),
        )
        if not isinstance(exc, Exception):
            raise  # SystemExit or KeyboardInterrupt: the worker is going down, let Celery see it
        if not cancelled:
            logger.exception("job %s failed", job_id)
            _run_again_if_asked(job)
        return {"job": job_id, "state": Job.State.CANCELLED if cancelled else Job.State.FAILED}

    if result.get("handed_off"):
        # Split into chunks (rgzlabel.learning.chunks): it stays running, and its last chunk ends it.
        return {"job": job_id, "state": Job.State.RUNNING, **result}
    Job.objects.filter(pk=job_id).update(
        state=Job.State.SUCCEEDED,
        progress=1.0,
        result=result,
        warnings=context.warnings,
        message=str(result.get("summary", "done"))[:512],
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    again = _run_again_if_asked(job)
    return {"job": job_id, "state": Job.State.SUCCEEDED, **result, **({"run_again_job": again.pk} if again else {})}


def _run_again_if_asked(job: Job) -> Job | None:
    """After a job's end is recorded: queue it once more if a trigger marked it while it ran.

    Read after the end was written, so a mark made before it is seen; a trigger after it
    found the job no longer running and queued a new one itself (``create_job``).
    """
    if not Job.objects.filter(pk=job.pk, run_again=True).exists():
        return None
    params = {k: v for k, v in job.params.items() if k != "rerun_of"}
    return create_job(job.kind, {**params, "after": job.pk})


def _requeue_interrupted(job: Job) -> dict[str, Any]:
    """Put a job stopped by a worker shutdown back in the queue.

    Its progress stays where it was: a pretraining resumes from its saved state (see
    ``training.pretrain_job``), and other jobs report afresh once they run again.
    """
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.QUEUED,
        started_at=None,
        celery_task_id="",  # until the new message is sent: the sweep re-sends it if this process dies first
        run_again=False,  # the run it is queued for sees whatever a trigger during this one wanted seen
        message="interrupted by a worker shutdown; queued to run again",
    )
    enqueue(job)
    logger.info("job %s interrupted by shutdown and queued again", job.pk)
    return {"job": job.pk, "state": Job.State.QUEUED, "requeued": True}


def fail_lost_jobs() -> int:
    """Mark running jobs whose worker stopped sending heartbeats as failed; return how many."""
    from datetime import timedelta

    from django.conf import settings

    from rgzlabel.learning.models import JobChunk

    cutoff = timezone.now() - timedelta(seconds=settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S)
    # A job handed off to its chunks is alive while any chunk is: lost chunks are the chunk sweep's.
    waiting = JobChunk.objects.filter(state__in=[JobChunk.State.QUEUED, JobChunk.State.RUNNING]).values("job_id")
    return (
        Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=cutoff)
        .exclude(pk__in=waiting)
        .update(
            state=Job.State.FAILED,
            error=f"worker lost: no heartbeat for {settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S} s",
            finished_at=timezone.now(),
        )
    )


def sweep_unsent_jobs() -> dict[str, int]:
    """Send again queued jobs whose message never reached the broker; fail them if it is still down.

    A job is unsent when it has no Celery task id ``RGZ_JOB_SEND_GRACE_S`` after it was
    queued: the process that created it died between the commit and the send, or the
    broker refused it without the job being marked. Left alone, such a job would block its
    kind (a singleton) forever, as every later trigger joins it.
    """
    from datetime import timedelta

    from django.conf import settings

    cutoff = timezone.now() - timedelta(seconds=settings.RGZ_JOB_SEND_GRACE_S)
    counts = {"sent": 0, "failed": 0}
    for job in Job.objects.filter(state=Job.State.QUEUED, celery_task_id="", created_at__lt=cutoff):
        try:
            send_now(job)
        except BrokerUnavailable:
            counts["failed"] += 1
        else:
            counts["sent"] += 1
            logger.warning("job %s had never reached the broker: sent again", job.pk)
    return counts


def row_param(params: dict[str, Any], key: str, model: type[Any]) -> Any:
    """The model row a job parameter names by id, or a ValueError saying what is wrong with it."""
    value = params.get(key)
    if value in (None, ""):
        raise ValueError(f'parameter "{key}" is required, e.g. {{"{key}": 3}}')
    try:
        return model.objects.get(pk=int(value))
    except (TypeError, ValueError):
        raise ValueError(f'parameter "{key}" must be an id, not {value!r}') from None
    except model.DoesNotExist:
        raise ValueError(f'parameter "{key}": there is no {model._meta.verbose_name} {value}') from None
