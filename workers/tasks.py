"""Thin tasks: ids in, one service call, a small JSON summary out."""

from __future__ import annotations

from typing import Any

from workers.celery import app


@app.task(name="rgzlabel.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> dict[str, Any]:
    from rgzlabel.learning.jobs import run_job as run

    return run(job_id)


@app.task(
    name="rgzlabel.run_chunk",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    ignore_result=True,
)
def run_chunk(self: Any, chunk_id: int) -> dict[str, Any]:
    """One chunk of a job split across workers; a failed chunk is retried through Celery."""
    from rgzlabel.learning.chunks import RetryChunk
    from rgzlabel.learning.chunks import run_chunk as run

    try:
        return run(chunk_id)
    except RetryChunk as retry:
        raise self.retry(countdown=retry.countdown) from None


@app.task(name="rgzlabel.embed_query", acks_late=False)
def embed_query(checkpoint: str, views: str, pixels: str, shape: list[int]) -> list[float]:
    """Search by image: the embedding of one uploaded cutout (base64 uint8 pixels), on the query worker."""
    from rgzlabel.science.query import embed_cutout

    return embed_cutout(checkpoint, views, pixels, shape)


@app.task(name="rgzlabel.sweep_lost_jobs")
def sweep_lost_jobs() -> dict[str, Any]:
    from rgzlabel.learning.chunks import sweep_lost_chunks
    from rgzlabel.learning.ingest import delete_uploads_of_failed_jobs
    from rgzlabel.learning.jobs import fail_lost_jobs, sweep_unsent_jobs

    failed = fail_lost_jobs()
    return {
        "failed": failed,
        "unsent": sweep_unsent_jobs(),
        "chunks": sweep_lost_chunks(),
        "uploads_deleted": delete_uploads_of_failed_jobs(),
    }


@app.task(name="rgzlabel.recompute_consensus", soft_time_limit=600)
def recompute_consensus() -> dict[str, Any]:
    """Refit Dawid-Skene over each active workflow's votes (volunteer reliability)."""
    from rgzlabel.labelling.models import Workflow
    from rgzlabel.labelling.services import recompute_consensus as recompute

    reports = {w.slug: recompute(w) for w in Workflow.objects.filter(is_active=True)}
    return {
        slug: {"subjects": r.subjects, "volunteers": r.volunteers, "changed": r.changed} for slug, r in reports.items()
    }


@app.task(name="rgzlabel.learning_tick", soft_time_limit=120)
def learning_tick() -> dict[str, Any]:
    """Queue retraining / pretraining when the loop's settings say they are due."""
    from rgzlabel.learning.loop import learning_tick as tick

    return tick()
