"""The loop running by itself: what beat's tick queues, and what follows a new embedding."""

from __future__ import annotations

from typing import Any

from rgzlabel.labelling.services import NOT_VOLUNTEER_CONSENSUS
from rgzlabel.learning.classifiers import enough_labels_to_train
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job


def after_new_embedding() -> Job:
    """A new embedding set invalidates the classifier: retrain if labels allow, else re-rank cold."""
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.jobs import create_job

    if enough_labels_to_train(default_workflow()):
        return create_job(Job.Kind.RETRAIN, {"trigger": "new embedding"})
    return create_job(Job.Kind.REFRESH)


def learning_tick() -> dict[str, Any]:
    """Beat's once-a-minute look at the loop: queue retraining or pretraining when due.

    The thresholds live in ``LoopSettings`` (admin-editable), so a change applies at the next
    tick without restarting beat, and after a broker outage the first tick catches up.
    """
    from datetime import timedelta

    from django.utils import timezone

    from rgzlabel.catalog.models import Cutout
    from rgzlabel.labelling.models import Subject
    from rgzlabel.labelling.services import default_workflow
    from rgzlabel.learning.jobs import create_job
    from rgzlabel.learning.models import LoopSettings

    loop = LoopSettings.current()
    if not loop.enabled:
        return {"enabled": False}
    actions: dict[str, Any] = {"enabled": True}
    workflow = default_workflow()
    if EmbeddingSet.objects.filter(is_active=True).exists():
        # The newest version, promoted or not: a rejected retrain has seen these labels too,
        # so it must not trigger another retrain on the same labels every minute.
        active = ClassifierVersion.objects.first()
        new_labels = Subject.objects.filter(workflow=workflow, retired_at__isnull=False).exclude(
            retire_reason__in=NOT_VOLUNTEER_CONSENSUS
        )
        if active is not None and active.labels_until is not None:
            new_labels = new_labels.filter(retired_at__gt=active.labels_until)
        n_new = new_labels.count()
        overdue = loop.retrain_every_minutes and (
            active is None or timezone.now() - active.created_at >= timedelta(minutes=loop.retrain_every_minutes)
        )
        actions["new_labels"] = n_new
        if (n_new >= loop.retrain_min_new_labels or (n_new and overdue)) and enough_labels_to_train(workflow):
            actions["retrain_job"] = create_job(Job.Kind.RETRAIN, {"trigger": "tick"}).pk
    # Measured against the newest *pretrained* encoder: a fine-tuned one counts only the labels
    # it was tuned on, so comparing the pool with it would queue a pretraining at every tick
    # after a fine-tune, and that pretraining's embedding would replace the fine-tuned one.
    encoder = EncoderVersion.objects.exclude(config__has_key="finetuned_from").first()
    if encoder is not None:
        growth = loop.pretrain_growth_fraction
        grown = growth and Cutout.objects.count() >= encoder.n_images * (1 + growth)
        age = loop.pretrain_every_days
        aged = age and timezone.now() - encoder.created_at >= timedelta(days=age)
        if grown or aged:
            actions["pretrain_job"] = create_job(Job.Kind.PRETRAIN, {"preset": loop.pretrain_preset}).pk
    return actions
