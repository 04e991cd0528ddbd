"""Jobs split into chunks that several workers run at once (embedding rows, ingest files).

A job that is worth splitting plans its chunks and *hands them off*: :func:`hand_off` writes
one :class:`JobChunk` row per chunk and sends one ``rgzlabel.run_chunk`` task per chunk (a
Celery group, sent after the job's transaction commits), and the job stays ``running``
without holding a worker. Any worker listening on the job's queue takes chunks, so two
workers (or two hosts, or GPUs) split the work.

- **One progress figure**: each chunk reports the items it has done; the job's progress is
  their sum over the total, written on the job row with its heartbeat.
- **Retries**: a chunk that raises is queued again through Celery's retry (with a growing
  countdown) up to ``RGZ_CHUNK_RETRIES`` times; every chunk writes only its own rows or
  files, and writing them again gives the same result, so a retried chunk cannot corrupt
  the job's. A chunk that still fails fails the job, which stops the other chunks.
- **The join**: the chunk that finishes last finishes the job (a latch in the database: each
  finishing chunk locks the job row, so exactly one sees no chunk left). Chords would need a
  result store that counts (Redis); the embedded mode's file-system store cannot, and the
  latch works on every broker.
- **Cancel and shutdown**: a cancel stops the running chunks at their next step and the
  queued ones before they start; a chunk interrupted by a worker shutdown is queued again
  without using up a retry.
- **Lost workers**: :func:`sweep_lost_chunks` (beat's sweep) re-sends a running chunk whose
  heartbeat stopped, as a failed attempt.

What a chunk does and how a job ends are per kind (``WORK``, ``FINISH``, ``ABANDON``),
looked up lazily so this module never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from rgzlabel.learning.dispatch import send_chunks
from rgzlabel.learning.jobs import WORKER_SHUTDOWN, JobCancelled
from rgzlabel.learning.models import Job, JobChunk

logger = logging.getLogger(__name__)

#: kind -> "module:function" taking (job, chunk, context) and returning the chunk's JSON-able result.
WORK: dict[str, str] = {
    Job.Kind.EMBED: "rgzlabel.learning.embedding:embed_chunk",
    Job.Kind.INGEST: "rgzlabel.learning.ingest:ingest_chunk",
}
#: kind -> "module:function" taking (job, chunks, context) and returning the job's result, run once
#: by the chunk that finishes last.
FINISH: dict[str, str] = {
    Job.Kind.EMBED: "rgzlabel.learning.embedding:finish_embed_chunks",
    Job.Kind.INGEST: "rgzlabel.learning.ingest:finish_ingest_chunks",
}
#: kind -> "module:function" taking (job) that removes what a failed or cancelled job left behind.
ABANDON: dict[str, str] = {
    Job.Kind.EMBED: "rgzlabel.learning.embedding:abandon_embed_chunks",
    Job.Kind.INGEST: "rgzlabel.learning.ingest:abandon_ingest_chunks",
}

#: The key of a service's result that tells ``run_job`` the job went on in its chunks.
HANDED_OFF = "handed_off"
_ACTIVE = (JobChunk.State.QUEUED, JobChunk.State.RUNNING)


class RetryChunk(Exception):
    """Raised to the Celery task: send this chunk again after ``countdown`` seconds."""

    def __init__(self, countdown: float) -> None:
        super().__init__(f"retry in {countdown:g} s")
        self.countdown = countdown


def _function(table: dict[str, str], kind: str) -> Callable[..., Any]:
    module_name, _, name = table[kind].partition(":")
    return getattr(import_module(module_name), name)


def hand_off(job: Job, pieces: Sequence[tuple[dict[str, Any], int]], message: str) -> dict[str, Any]:
    """Split ``job`` into chunks, one per ``(params, size)``, and send them to the workers.

    Returns the job's interim result; ``run_job`` sees :data:`HANDED_OFF` in it and leaves
    the job running for its chunks to finish.
    """
    if not pieces:
        raise ValueError("a job cannot be split into no chunks")
    with transaction.atomic():
        JobChunk.objects.filter(job=job).delete()  # a job run again plans afresh
        chunks = JobChunk.objects.bulk_create(
            JobChunk(job=job, index=index, params=params, size=size) for index, (params, size) in enumerate(pieces)
        )
        Job.objects.filter(pk=job.pk).update(
            progress=0.0, message=message[:512], heartbeat_at=timezone.now(), metrics={"chunks": len(chunks)}
        )
        send_chunks(job, [chunk.pk for chunk in chunks])
    return {HANDED_OFF: True, "chunks": len(chunks), "summary": message}


@dataclass
class ChunkContext:
    """What a chunk's work sees: the job's :class:`~rgzlabel.learning.jobs.JobContext` interface
    (``progress``, ``warn``, ``should_stop``, ``check_cancelled``), reporting into the chunk."""

    chunk: JobChunk
    min_interval_s: float = 1.0
    _last_write: float = field(default=0.0, init=False)
    _stopped: bool = field(default=False, init=False)

    def progress(self, done: int, message: str = "", *, force: bool = False) -> None:
        """This chunk has finished ``done`` of its items; updates the job's one progress figure."""
        import time

        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        chunk = self.chunk
        stamp = timezone.now()
        JobChunk.objects.filter(pk=chunk.pk).update(done=min(done, chunk.size), heartbeat_at=stamp)
        totals = JobChunk.objects.filter(job_id=chunk.job_id).aggregate(done=Sum("done"), size=Sum("size"))
        finished = JobChunk.objects.filter(job_id=chunk.job_id, state=JobChunk.State.SUCCEEDED).count()
        n_chunks = JobChunk.objects.filter(job_id=chunk.job_id).count()
        fraction = (totals["done"] or 0) / max(1, totals["size"] or 0)
        line = f"{totals['done'] or 0}/{totals['size']} done, {finished}/{n_chunks} chunks finished"
        Job.objects.filter(pk=chunk.job_id, state=Job.State.RUNNING).update(
            progress=min(fraction, 0.999), heartbeat_at=stamp, message=(f"{line}; {message}" if message else line)[:512]
        )

    def warn(self, message: str) -> None:
        """A warning on the job, prefixed with the chunk it came from."""
        warn_job(self.chunk.job_id, f"chunk {self.chunk.index + 1}: {message}")

    def should_stop(self) -> bool:
        if WORKER_SHUTDOWN.is_set():
            return True
        if not self._stopped:
            self._stopped = not Job.objects.filter(
                pk=self.chunk.job_id, state=Job.State.RUNNING, cancel_requested=False
            ).exists()
        return self._stopped

    def check_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelled()


def warn_job(job_id: int, message: str) -> None:
    """Append a warning to a job row (kept to its first 200), atomically with other chunks'."""
    logger.warning("job %s: %s", job_id, message)
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).only("warnings").first()
        if job is not None and len(job.warnings) < 200:
            Job.objects.filter(pk=job_id).update(warnings=[*job.warnings, message])


def run_chunk(chunk_id: int) -> dict[str, Any]:
    """Run one chunk in this worker; the chunk that completes the set finishes the job.

    Raises:
        RetryChunk: it failed and has retries left (the task sends it again).
    """
    claimed = JobChunk.objects.filter(pk=chunk_id, state=JobChunk.State.QUEUED).update(
        state=JobChunk.State.RUNNING, attempts=F("attempts") + 1, done=0, heartbeat_at=timezone.now()
    )
    if not claimed:
        state = JobChunk.objects.filter(pk=chunk_id).values_list("state", flat=True).first()
        return {"chunk": chunk_id, "state": state, "skipped": True}
    chunk = JobChunk.objects.select_related("job").get(pk=chunk_id)
    job = chunk.job
    context = ChunkContext(chunk)
    try:
        context.check_cancelled()
        _injected_fault(job, chunk)
        result = _function(WORK, job.kind)(job, chunk, context)
    except JobCancelled:
        if WORKER_SHUTDOWN.is_set() and job_is_running(job.pk):
            # Not the chunk's fault: queued again for another worker, the attempt given back.
            JobChunk.objects.filter(pk=chunk_id).update(state=JobChunk.State.QUEUED, attempts=F("attempts") - 1, done=0)
            send_chunks(job, [chunk_id])
            return {"chunk": chunk_id, "state": JobChunk.State.QUEUED, "requeued": True}
        _stop_chunk(chunk, JobChunk.State.CANCELLED, "")
        return {"chunk": chunk_id, "state": JobChunk.State.CANCELLED}
    except Exception as exc:  # noqa: BLE001 - a chunk's failure is recorded, then retried or failing its job
        return _failed(chunk, f"{type(exc).__name__}: {exc}", retry=True)
    return _succeeded(chunk, result, context)


def job_is_running(job_id: int) -> bool:
    return Job.objects.filter(pk=job_id, state=Job.State.RUNNING, cancel_requested=False).exists()


def _injected_fault(job: Job, chunk: JobChunk) -> None:
    """Fail the chunks a job's ``fail_chunks_once`` (first attempt) or ``fail_chunks`` (every
    attempt) names, when the worker allows it (``RGZ_ALLOW_FAULT_INJECTION``: the test suite's
    worker; never in production)."""
    if not settings.RGZ_ALLOW_FAULT_INJECTION:
        return
    once = chunk.index in job.params.get("fail_chunks_once", ()) and chunk.attempts == 1
    if once or chunk.index in job.params.get("fail_chunks", ()):
        raise RuntimeError(f"fault injected into attempt {chunk.attempts} of chunk {chunk.index + 1}")


def _failed(chunk: JobChunk, error: str, *, retry: bool) -> dict[str, Any]:
    attempts = JobChunk.objects.filter(pk=chunk.pk).values_list("attempts", flat=True).first() or 1
    where = f"chunk {chunk.index + 1} ({_describe(chunk)})"
    if retry and attempts <= settings.RGZ_CHUNK_RETRIES and job_is_running(chunk.job_id):
        JobChunk.objects.filter(pk=chunk.pk).update(state=JobChunk.State.QUEUED, error=error, done=0)
        warn_job(chunk.job_id, f"{where} failed on attempt {attempts}: {error}; retrying")
        raise RetryChunk(countdown=min(2.0 ** (attempts - 1), 60.0))
    _stop_chunk(chunk, JobChunk.State.FAILED, error)
    message = f"{where} failed after {attempts} attempt(s): {error}"
    # The job fails at once; its other chunks see that at their next step and stop.
    if Job.objects.filter(pk=chunk.job_id, state=Job.State.RUNNING).update(
        state=Job.State.FAILED, error=message, message="failed", finished_at=timezone.now(), cancel_requested=True
    ):
        logger.error("job %s: %s", chunk.job_id, message)
        _abandon(chunk.job_id)
    return {"chunk": chunk.pk, "state": JobChunk.State.FAILED, "error": error}


def _describe(chunk: JobChunk) -> str:
    params = chunk.params
    if "start" in params:
        return f"rows {params['start']}-{params['stop'] - 1}"
    return f"{chunk.size} item(s)"


def _stop_chunk(chunk: JobChunk, state: str, error: str) -> None:
    JobChunk.objects.filter(pk=chunk.pk).update(state=state, error=error, finished_at=timezone.now())
    _end_if_stopped(chunk.job_id)


def _end_if_stopped(job_id: int) -> None:
    """A cancelled job whose chunks have all stopped is recorded as cancelled."""
    with transaction.atomic():
        Job.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())  # the job's lock: one ender
        if JobChunk.objects.filter(job_id=job_id, state__in=_ACTIVE).exists():
            return
        ended = Job.objects.filter(pk=job_id, state=Job.State.RUNNING, cancel_requested=True).update(
            state=Job.State.CANCELLED, message="cancelled by request", finished_at=timezone.now()
        )
    if ended:
        _abandon(job_id)


def _abandon(job_id: int) -> None:
    job = Job.objects.get(pk=job_id)
    try:
        _function(ABANDON, job.kind)(job)
    except Exception:  # noqa: BLE001 - cleaning up must not hide why the job ended
        logger.exception("job %s: cleaning up its chunks failed", job_id)


def _succeeded(chunk: JobChunk, result: dict[str, Any], context: ChunkContext) -> dict[str, Any]:
    """Record the chunk; if it was the last one, finish the job (once, under the job's lock)."""
    now = timezone.now()
    try:
        with transaction.atomic():
            # Locks the job row (PostgreSQL) / takes the write lock (SQLite, IMMEDIATE): chunks that
            # end at the same moment pass here one at a time, so exactly one sees none left.
            Job.objects.filter(pk=chunk.job_id).update(heartbeat_at=now)
            JobChunk.objects.filter(pk=chunk.pk).update(
                state=JobChunk.State.SUCCEEDED, done=chunk.size, result=result, error="", finished_at=now
            )
            job = Job.objects.get(pk=chunk.job_id)
            left = JobChunk.objects.filter(job=job).exclude(state=JobChunk.State.SUCCEEDED).count()
            if job.state != Job.State.RUNNING or left:
                context.progress(chunk.size, force=True)
                return {"chunk": chunk.pk, "state": JobChunk.State.SUCCEEDED, "left": left}
            _finish(job)
    except Exception as exc:  # noqa: BLE001 - finishing failed: the chunk did its part, the job fails
        JobChunk.objects.filter(pk=chunk.pk).update(
            state=JobChunk.State.SUCCEEDED, done=chunk.size, result=result, finished_at=now
        )
        message = f"finishing after its last chunk failed: {type(exc).__name__}: {exc}"
        if Job.objects.filter(pk=chunk.job_id, state=Job.State.RUNNING).update(
            state=Job.State.FAILED, error=message, message="failed", finished_at=timezone.now()
        ):
            logger.exception("job %s: %s", chunk.job_id, message)
            _abandon(chunk.job_id)
        return {"chunk": chunk.pk, "state": JobChunk.State.SUCCEEDED, "job_failed": message}
    return {"chunk": chunk.pk, "state": JobChunk.State.SUCCEEDED, "job": chunk.job_id, "finished": True}


def _finish(job: Job) -> None:
    from rgzlabel.learning.jobs import JobContext

    chunks = list(JobChunk.objects.filter(job=job))
    job_context = JobContext(job.pk)
    job_context.warnings = list(job.warnings)
    final = _function(FINISH, job.kind)(job, chunks, job_context)
    final = {**final, "chunks": len(chunks), "attempts": sum(c.attempts for c in chunks)}
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.SUCCEEDED,
        progress=1.0,
        result=final,
        warnings=job_context.warnings[:200],
        message=str(final.get("summary", "done"))[:512],
        finished_at=timezone.now(),
    )


def cancel_chunks(job: Job) -> None:
    """Stop a handed-off job: queued chunks never start, running ones stop at their next step."""
    JobChunk.objects.filter(job=job, state=JobChunk.State.QUEUED).update(
        state=JobChunk.State.CANCELLED, finished_at=timezone.now()
    )
    _end_if_stopped(job.pk)


def sweep_lost_chunks() -> dict[str, int]:
    """Chunks whose worker stopped sending heartbeats: a failed attempt, sent again or failing the job.

    Also sends again the queued chunks of a job that has shown no progress for the heartbeat
    timeout (a message lost, or never sent while the broker was down). A chunk sent twice runs
    once: the first delivery claims it.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S)
    counts = {"resent": 0, "failed": 0, "stalled": 0}
    stalled = Job.objects.filter(
        state=Job.State.RUNNING, heartbeat_at__lt=cutoff, chunks__state=JobChunk.State.QUEUED
    ).distinct()
    for job in stalled:
        queued = list(job.chunks.filter(state=JobChunk.State.QUEUED).values_list("pk", flat=True))
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
            send_chunks(job, queued)
        counts["stalled"] += len(queued)
    lost = JobChunk.objects.filter(state=JobChunk.State.RUNNING, heartbeat_at__lt=cutoff).select_related("job")
    for chunk in lost:
        error = f"worker lost: no heartbeat for {settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S} s"
        try:
            _failed(chunk, error, retry=True)
        except RetryChunk:
            send_chunks(chunk.job, [chunk.pk])
            counts["resent"] += 1
        else:
            counts["failed"] += 1
    return counts
