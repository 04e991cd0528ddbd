"""Fine-tuning the encoder on volunteers' consensus labels, as a job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from django.utils import timezone

from rgzlabel.labelling.models import GoldLabel, Subject
from rgzlabel.learning.embedding import activate_embedding_set
from rgzlabel.learning.jobs import create_job, run_job
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def sources(make_source):
    return [make_source() for _ in range(20)]


@pytest.fixture
def base_encoder(tmp_path):
    """A (random-init) tiny encoder behind the active embedding, as after a pretraining."""
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.encoder import build_encoder

    path = save_checkpoint(tmp_path / "base.pt", build_encoder(get_config("tiny").encoder, seed=0))
    version = EncoderVersion.objects.create(name="byol-tiny", architecture="resnet18", checkpoint_path=str(path))
    activate_embedding_set(
        EmbeddingSet.objects.create(encoder=version, method="encoder", path="/unused", n_sources=20, dim=512)
    )
    return version


def label(sources, value: str) -> None:
    Subject.objects.filter(source__in=sources).update(
        retired_at=timezone.now(), retire_reason="vote count", consensus_label=value, weighted_label=value
    )


def run(kind: str, django_capture_on_commit_callbacks, **params) -> Job:
    with django_capture_on_commit_callbacks():  # in-process; the chained job is not sent anywhere
        job = create_job(kind, params)
        run_job(job.pk)
    return Job.objects.get(pk=job.pk)


def test_finetuning_records_a_new_encoder_and_queues_its_embedding(
    sources, base_encoder, workflow, django_capture_on_commit_callbacks
) -> None:
    from ml.checkpoint import load_encoder

    label(sources[:8], "FRI")
    label(sources[8:16], "FRII")
    for source in sources[14:16]:  # experts labelled these too: they stay out of training
        GoldLabel.objects.create(workflow=workflow, source=source, label="FRII")

    job = run(Job.Kind.FINETUNE, django_capture_on_commit_callbacks, preset="tiny")

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert job.queue == "gpu"
    tuned = EncoderVersion.objects.get(job=job)
    assert tuned.config["finetuned_from"] == "byol-tiny"
    assert tuned.n_images == 14
    assert job.metrics["total_steps"] >= 1 and "step" in job.log
    before, after = load_encoder(base_encoder.checkpoint_path), load_encoder(tuned.checkpoint_path)
    assert not torch.equal(before.backbone.conv1.weight, after.backbone.conv1.weight)
    embed = Job.objects.get(pk=job.result["embed_job"])
    assert (embed.kind, embed.params["encoder"], embed.state) == (Job.Kind.EMBED, tuned.pk, Job.State.QUEUED)


def test_too_few_labels_fail_with_the_counts(sources, base_encoder, django_capture_on_commit_callbacks) -> None:
    label(sources[:5], "FRI")

    job = run(Job.Kind.FINETUNE, django_capture_on_commit_callbacks, preset="tiny")

    assert job.state == Job.State.FAILED
    assert "not enough consensus labels to train yet: {'FRI': 5, 'FRII': 0, 'hybrid': 0}" in job.error
    assert EncoderVersion.objects.count() == 1


def test_a_pixel_pca_embedding_has_no_encoder_to_finetune(sources, django_capture_on_commit_callbacks) -> None:
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path="/unused", n_sources=20, dim=8))
    label(sources[:8], "FRI")
    label(sources[8:16], "FRII")

    job = run(Job.Kind.FINETUNE, django_capture_on_commit_callbacks, preset="tiny")

    assert job.state == Job.State.FAILED
    assert "no pretrained encoder to fine-tune" in job.error


def test_retraining_on_finetuned_features_flags_cross_validation_as_optimistic(
    sources, base_encoder, django_capture_on_commit_callbacks, tmp_path
) -> None:
    from ml.embed import write_embeddings

    tuned = EncoderVersion.objects.create(
        name="byol-tiny-finetuned",
        architecture="resnet18",
        checkpoint_path=base_encoder.checkpoint_path,
        config={"finetuned_from": "byol-tiny"},
    )
    matrix = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    matrix[8:16, 0] += 4  # separable
    write_embeddings(tmp_path / "set", [s.pk for s in sources], matrix)
    activate_embedding_set(
        EmbeddingSet.objects.create(encoder=tuned, method="encoder", path=str(tmp_path / "set"), n_sources=20, dim=4)
    )
    label(sources[:8], "FRI")
    label(sources[8:16], "FRII")

    job = run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["metrics"]["evaluated_on"] == "cross-validation"
    assert "optimistic" in job.result["metrics"]["caveat"]


def test_a_semisupervised_preset_also_trains_on_unlabelled_sources_but_never_gold(
    sources, base_encoder, workflow, settings, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    import ml.finetune

    label(sources[:6], "FRI")
    label(sources[6:12], "FRII")
    GoldLabel.objects.create(workflow=workflow, source=sources[19], label="FRI")
    settings.RGZ_SEMISUP_POOL = 5
    pools: list[int] = []
    real_finetune = ml.finetune.finetune

    def recording_finetune(*args, **kwargs):  # the real fine-tuning, with the size of its pool noted
        pools.append(len(kwargs["unlabelled"]))
        return real_finetune(*args, **kwargs)

    monkeypatch.setattr(ml.finetune, "finetune", recording_finetune)
    job = run(
        Job.Kind.FINETUNE, django_capture_on_commit_callbacks, preset="tiny", overrides={"unlabelled_weight": 1.0}
    )

    assert job.state == Job.State.SUCCEEDED, job.error + job.traceback
    assert pools == [5] and job.result["n_unlabelled"] == 5  # 7 unlabelled, non-gold sources; capped at 5
    assert "on 12 labels and 5 unlabelled sources" in job.result["summary"]
    from rgzlabel.learning.training import unlabelled_sample

    drawn = unlabelled_sample(np.array([s.pk for s in sources[:12]] + [sources[19].pk]), seed=0)
    assert len(drawn) == 5 and set(drawn) <= {s.pk for s in sources[12:19]}
    settings.RGZ_SEMISUP_POOL = 100
    assert set(unlabelled_sample(np.array([s.pk for s in sources[:12]] + [sources[19].pk]), 0)) == {
        s.pk for s in sources[12:19]
    }
    with pytest.raises(ValueError, match="every source is labelled"):
        unlabelled_sample(np.array([s.pk for s in sources]), 0)
