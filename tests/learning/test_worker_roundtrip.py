"""A real job through the real broker to a real worker process, read back from the database."""

from __future__ import annotations

import numpy as np
import pytest

from rgzlabel.learning.jobs import create_job
from rgzlabel.learning.models import EmbeddingSet, Job
from tests.conftest import wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_an_embedding_job_runs_in_the_worker(celery_worker, make_source) -> None:
    from ml.embed import read_embeddings

    sources = [make_source() for _ in range(24)]
    job = create_job(Job.Kind.EMBED, {"method": "pca", "dim": 8})
    assert Job.objects.get(pk=job.pk).celery_task_id  # the broker took the message

    job = wait_for_job(job.pk, celery_worker)

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.progress == 1.0
    assert job.started_at is not None and job.finished_at >= job.started_at
    embedding_set = EmbeddingSet.objects.get(is_active=True)
    assert embedding_set.job_id == job.pk
    stored = read_embeddings(embedding_set.path)
    ids, matrix = stored.source_ids, stored.matrix
    assert sorted(ids.tolist()) == sorted(s.pk for s in sources)
    assert matrix.shape == (24, 8)
    assert np.isfinite(matrix).all() and matrix.std() > 0


def test_a_failing_job_records_its_error(celery_worker) -> None:
    job = create_job(Job.Kind.EMBED, {"method": "no-such-method"})

    job = wait_for_job(job.pk, celery_worker)

    assert job.state == Job.State.FAILED
    assert "unknown embedding method 'no-such-method'" in job.error
    assert "Traceback" in job.traceback
    assert not EmbeddingSet.objects.exists()


def test_pretraining_records_an_encoder_and_chains_its_embedding(celery_worker, make_source) -> None:
    from ml.checkpoint import load_checkpoint
    from rgzlabel.learning.models import EncoderVersion

    for _ in range(16):
        make_source()
    job = create_job(Job.Kind.PRETRAIN, {"preset": "tiny", "overrides": {"max_steps": 3}})

    job = wait_for_job(job.pk, celery_worker)

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    encoder = EncoderVersion.objects.get(job=job)
    assert encoder.n_images == 16
    assert len(encoder.curves["step_loss"]) == 3
    assert load_checkpoint(encoder.checkpoint_path).data.n_images == 16
    assert job.metrics["total_steps"] == 3  # progress figures reached the Job row
    assert "step 3/3" in job.log  # and so did the progress lines, for admins to read
    embed = wait_for_job(job.result["embed_job"], celery_worker)
    assert embed.state == Job.State.SUCCEEDED, embed.error + embed.traceback
    active = EmbeddingSet.objects.get(is_active=True)
    assert (active.method, active.encoder_id, active.n_sources) == ("encoder", encoder.pk, 16)
    # The rows are the orientation-free embedding (RGZ_EMBED_VIEWS' default), and say so.
    from ml.checkpoint import load_encoder
    from ml.embed import embed, read_embeddings
    from rgzlabel.catalog.models import Cutout

    stored = read_embeddings(active.path)
    images = np.stack([Cutout.objects.get(source_id=int(i)).as_array() for i in stored.source_ids])
    expected = embed(load_encoder(encoder.checkpoint_path), images, device="cpu", views="dihedral")
    assert active.views == "dihedral"
    np.testing.assert_allclose(stored.matrix, expected, rtol=1e-3, atol=1e-4)


def test_a_finetuning_runs_on_the_gpu_queue_and_chains_its_embedding(celery_worker, make_source, tmp_path) -> None:
    from django.utils import timezone

    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.encoder import build_encoder
    from rgzlabel.labelling.models import Subject
    from rgzlabel.learning.embedding import activate_embedding_set
    from rgzlabel.learning.models import EncoderVersion

    sources = [make_source() for _ in range(12)]
    for chunk, value in ((sources[:6], "FRI"), (sources[6:], "FRII")):
        Subject.objects.filter(source__in=chunk).update(
            retired_at=timezone.now(), retire_reason="vote count", consensus_label=value, weighted_label=value
        )
    path = save_checkpoint(tmp_path / "base.pt", build_encoder(get_config("tiny").encoder, seed=0))
    base = EncoderVersion.objects.create(name="byol-base", architecture="resnet18", checkpoint_path=str(path))
    activate_embedding_set(
        EmbeddingSet.objects.create(encoder=base, method="encoder", path="/unused", n_sources=12, dim=512)
    )

    job = wait_for_job(create_job(Job.Kind.FINETUNE, {"preset": "tiny"}).pk, celery_worker)

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.queue == "gpu"
    tuned = EncoderVersion.objects.get(job=job)
    embed = wait_for_job(job.result["embed_job"], celery_worker)
    assert embed.state == Job.State.SUCCEEDED, embed.error + embed.traceback
    active = EmbeddingSet.objects.get(is_active=True)
    assert (active.encoder_id, active.n_sources) == (tuned.pk, 12)
