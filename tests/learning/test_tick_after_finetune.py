"""Beat's tick after a fine-tune: the fine-tuned encoder is not mistaken for a stale pretraining."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rgzlabel.learning.loop import learning_tick
from rgzlabel.learning.models import EncoderVersion, Job, LoopSettings

pytestmark = pytest.mark.django_db


def test_a_fine_tuned_encoder_does_not_trigger_a_pretraining(make_source, django_capture_on_commit_callbacks) -> None:
    sources = [make_source() for _ in range(40)]
    loop = LoopSettings.current()
    loop.pretrain_growth_fraction = 0.25
    loop.save()
    pretrained = EncoderVersion.objects.create(
        name="byol", architecture="resnet18", checkpoint_path="x", n_images=len(sources)
    )
    EncoderVersion.objects.filter(pk=pretrained.pk).update(created_at=timezone.now() - timedelta(hours=1))
    # A fine-tune on 12 consensus labels: newer, and its n_images counts only those labels.
    EncoderVersion.objects.create(
        name="byol-finetuned",
        architecture="resnet18",
        checkpoint_path="y",
        n_images=12,
        config={"finetuned_from": "byol"},
    )

    with django_capture_on_commit_callbacks():
        actions = learning_tick()

    assert "pretrain_job" not in actions
    assert not Job.objects.filter(kind=Job.Kind.PRETRAIN).exists()


def test_growth_is_still_measured_against_the_newest_pretraining(
    make_source, django_capture_on_commit_callbacks
) -> None:
    for _ in range(40):
        make_source()
    loop = LoopSettings.current()
    loop.pretrain_growth_fraction = 0.25
    loop.save()
    pretrained = EncoderVersion.objects.create(name="byol", architecture="resnet18", checkpoint_path="x", n_images=30)
    EncoderVersion.objects.filter(pk=pretrained.pk).update(created_at=timezone.now() - timedelta(hours=1))
    EncoderVersion.objects.create(
        name="byol-finetuned",
        architecture="resnet18",
        checkpoint_path="y",
        n_images=12,
        config={"finetuned_from": "byol"},
    )

    with django_capture_on_commit_callbacks():
        actions = learning_tick()

    assert Job.objects.get(pk=actions["pretrain_job"]).kind == Job.Kind.PRETRAIN  # 40 >= 30 * 1.25
