"""Jobs split into chunks across workers: embedding rows and ingest files, retried chunks, the join."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from rgzlabel.catalog.inputs import plan_ingest
from rgzlabel.catalog.models import Source
from rgzlabel.learning.jobs import create_job, fail_lost_jobs
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job, JobChunk
from tests.conftest import wait_for_job
from tests.synthetic import write_fits_image


def _encoder(tmp_path: Path) -> EncoderVersion:
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.encoder import build_encoder

    path = save_checkpoint(tmp_path / "tiny.pt", build_encoder(get_config("tiny").encoder, seed=0))
    return EncoderVersion.objects.create(name="byol-tiny", architecture="resnet18", checkpoint_path=str(path))


def _catalogue() -> list[tuple]:
    """What an ingest wrote, without database ids: a serial and a chunked ingest must agree on it."""
    rows = []
    for source in Source.objects.prefetch_related("provenances").select_related("cutout"):
        rows.append(
            (
                source.name,
                round(source.ra_deg, 9),
                round(source.dec_deg, 9),
                hashlib.sha256(bytes(source.cutout.pixels)).hexdigest(),
                sorted(p.external_id for p in source.provenances.all()),
            )
        )
    return sorted(rows)


def _fits_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(5)
    for i in range(n):
        write_fits_image(root / f"src{i:03d}.fits", float(rng.uniform(120, 240)), float(rng.uniform(0, 50)), seed=i)
    (root / "broken.fits").write_bytes(b"SIMPLE  = nonsense")
    # The same name in a sub-folder: refused wherever it falls among the chunks.
    write_fits_image(root / "again" / "src001.fits", 200.0, 10.0, seed=99)
    return root


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_chunked_embedding_equals_one_workers_and_survives_a_failed_chunk(celery_worker, make_source, tmp_path):
    for _ in range(600):
        make_source()
    encoder = _encoder(tmp_path)
    common = {"method": "encoder", "encoder": encoder.pk, "views": "centre", "chain": False}

    whole = wait_for_job(create_job(Job.Kind.EMBED, {**common, "chunk_rows": 10_000}).pk, celery_worker)
    split = wait_for_job(
        create_job(Job.Kind.EMBED, {**common, "chunk_rows": 256, "fail_chunks_once": [1]}).pk, celery_worker
    )

    assert whole.state == Job.State.SUCCEEDED, whole.error + whole.traceback
    assert split.state == Job.State.SUCCEEDED, split.error + split.traceback
    assert not whole.chunks.exists()
    chunks = list(split.chunks.order_by("index"))
    assert [(c.params["start"], c.params["stop"]) for c in chunks] == [(0, 256), (256, 512), (512, 600)]
    assert [c.attempts for c in chunks] == [1, 2, 1]  # the failed chunk ran again, the others once
    assert all(c.state == JobChunk.State.SUCCEEDED for c in chunks)
    assert split.result["attempts"] == 4 and split.progress == 1.0
    assert any("chunk 2" in w and "retrying" in w for w in split.warnings)
    from ml.embedding_store import read_embeddings

    one = read_embeddings(EmbeddingSet.objects.get(job=whole).path)
    many = read_embeddings(EmbeddingSet.objects.get(job=split).path)
    np.testing.assert_array_equal(many.source_ids, one.source_ids)
    np.testing.assert_array_equal(many.matrix, one.matrix)  # the same batches through the same encoder
    assert EmbeddingSet.objects.get(is_active=True).job_id == split.pk
    partial = Path(chunks[0].params["partial"])
    assert not partial.exists() and Path(chunks[0].params["folder"]).is_dir()


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_chunk_that_keeps_failing_fails_its_job_and_leaves_nothing(celery_worker, make_source, tmp_path, settings):
    for _ in range(300):
        make_source()
    encoder = _encoder(tmp_path)
    params = {"method": "encoder", "encoder": encoder.pk, "views": "centre", "chain": False, "chunk_rows": 256}

    job = wait_for_job(create_job(Job.Kind.EMBED, {**params, "fail_chunks": [1]}).pk, celery_worker)

    assert job.state == Job.State.FAILED
    assert "chunk 2 (rows 256-299) failed after" in job.error and "fault injected" in job.error
    failed = job.chunks.get(index=1)
    assert failed.state == JobChunk.State.FAILED and failed.attempts == settings.RGZ_CHUNK_RETRIES + 1
    assert not EmbeddingSet.objects.filter(job=job).exists()
    assert not Path(failed.params["partial"]).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_chunked_ingest_writes_what_one_worker_writes(celery_worker, workflow, settings):
    import uuid

    from rgzlabel.catalog.services import ingest_inputs
    from rgzlabel.labelling.models import Subject

    folder = _fits_folder(settings.DATA_DIR / f"fits-{uuid.uuid4().hex[:8]}", 11)  # inside RGZ_INGEST_ROOTS

    job = create_job(Job.Kind.INGEST, {"paths": [str(folder)], "chunk_files": 4, "fail_chunks_once": [0]})
    job = wait_for_job(job.pk, celery_worker, timeout_s=240)

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.chunks.count() == 3  # 13 files, one refused by name before chunking: 12, four at a time
    assert job.chunks.get(index=0).attempts == 2
    result = job.result
    assert (result["ingested"], result["failed"], result["skipped"]) == (11, 2, 0)
    assert any("broken.fits" in e for e in result["errors"])
    assert any("same file name" in e for e in result["errors"])
    assert Subject.objects.filter(workflow=workflow).count() == 11
    chunked = _catalogue()

    Source.objects.all().delete()
    serial = ingest_inputs(plan_ingest([folder]))

    assert (serial.ingested, serial.failed) == (11, 2)
    assert _catalogue() == chunked


@pytest.mark.django_db(transaction=True)
def test_ingest_in_two_processes_writes_what_one_process_writes(tmp_path):
    folder = _fits_folder(tmp_path / "fits", 9)

    two = _ingest(folder, processes=2)
    two_catalogue = _catalogue()
    Source.objects.all().delete()
    one = _ingest(folder, processes=1)

    assert two == one
    assert "9 ingested" in one and "2 failed" in one
    assert _catalogue() == two_catalogue


def _ingest(folder: Path, processes: int) -> str:
    import io

    from django.core.management.base import CommandError

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="2 input"):  # the broken file and the repeated name
        call_command("ingest", str(folder), "--processes", str(processes), verbosity=1, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines()[-1] + "\n" + "\n".join(sorted(err.getvalue().splitlines()))


@pytest.mark.django_db
def test_a_handed_off_job_is_not_failed_as_lost_while_its_chunks_wait(settings):
    old = timezone.now() - timedelta(seconds=settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S + 60)
    waiting = Job.objects.create(kind=Job.Kind.EMBED, state=Job.State.RUNNING, heartbeat_at=old)
    JobChunk.objects.create(job=waiting, index=0, size=10, state=JobChunk.State.QUEUED)
    lost = Job.objects.create(kind=Job.Kind.EMBED, state=Job.State.RUNNING, heartbeat_at=old)

    assert fail_lost_jobs() == 1

    assert Job.objects.get(pk=waiting.pk).state == Job.State.RUNNING
    assert Job.objects.get(pk=lost.pk).state == Job.State.FAILED


@pytest.mark.django_db
def test_a_chunk_whose_worker_was_lost_is_sent_again_then_fails_its_job(settings):
    from rgzlabel.learning.chunks import sweep_lost_chunks

    old = timezone.now() - timedelta(seconds=settings.RGZ_JOB_HEARTBEAT_TIMEOUT_S + 60)
    job = Job.objects.create(kind=Job.Kind.INGEST, state=Job.State.RUNNING, heartbeat_at=old)
    chunk = JobChunk.objects.create(
        job=job, index=0, size=3, state=JobChunk.State.RUNNING, attempts=1, heartbeat_at=old
    )

    assert sweep_lost_chunks() == {"resent": 1, "failed": 0, "stalled": 0}
    chunk.refresh_from_db()
    assert chunk.state == JobChunk.State.QUEUED and "worker lost" in chunk.error

    JobChunk.objects.filter(pk=chunk.pk).update(
        state=JobChunk.State.RUNNING, attempts=settings.RGZ_CHUNK_RETRIES + 1, heartbeat_at=old
    )
    assert sweep_lost_chunks() == {"resent": 0, "failed": 1, "stalled": 0}
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "worker lost" in job.error
