"""On the real FIRST images of a fresh install (pixel-PCA cold start), the live retrain improves with labels."""

from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from rgzlabel.catalog.models import Provenance
from rgzlabel.catalog.services import ingest_dataset
from rgzlabel.labelling.models import Subject
from rgzlabel.labelling.services import seed_gold_from_catalogue, sync_subjects
from rgzlabel.learning.jobs import create_job, run_job
from rgzlabel.learning.models import ClassifierVersion, Job

pytestmark = pytest.mark.django_db
BUDGETS = (10, 50, 300)


def test_accuracy_of_the_live_retrain_rises_with_correct_labels(workflow, django_capture_on_commit_callbacks) -> None:
    ingest_dataset("griese")
    sync_subjects(workflow)
    # 60 gold per class (bin/start takes 20): a 40-source set measures +-15 points, too coarse here.
    seed_gold_from_catalogue(workflow, per_class=60)
    with django_capture_on_commit_callbacks():
        embed = create_job(Job.Kind.EMBED, {"method": "pca", "chain": False})
        run_job(embed.pk)
    assert Job.objects.get(pk=embed.pk).state == Job.State.SUCCEEDED
    truth = dict(
        Provenance.objects.filter(catalogue_label__in=["FRI", "FRII"])
        .exclude(source__gold_labels__workflow=workflow)
        .values_list("source_id", "catalogue_label")
    )
    candidates = np.array(sorted(truth))
    accuracy: dict[int, list[float]] = {}
    for budget in BUDGETS:
        for subset in range(6):
            chosen = np.random.default_rng(1000 * budget + subset).choice(candidates, budget, replace=False)
            Subject.objects.filter(workflow=workflow, retire_reason="vote count").update(
                retired_at=None, retire_reason="", consensus_label="", weighted_label=""
            )
            for label in ("FRI", "FRII"):
                ids = [int(i) for i in chosen if truth[int(i)] == label]
                Subject.objects.filter(workflow=workflow, source_id__in=ids).update(
                    retired_at=timezone.now(), retire_reason="vote count", consensus_label=label, weighted_label=label
                )
            Job.objects.filter(kind__in=[Job.Kind.RETRAIN, Job.Kind.REFRESH], state=Job.State.QUEUED).delete()
            with django_capture_on_commit_callbacks():
                job = create_job(Job.Kind.RETRAIN)
                run_job(job.pk)
            job = Job.objects.get(pk=job.pk)
            assert job.state == Job.State.SUCCEEDED, job.error
            metrics = ClassifierVersion.objects.get(pk=job.result["classifier"]).metrics
            assert metrics["n_gold"] == 120
            accuracy.setdefault(budget, []).append(metrics["accuracy"])
    means = {budget: float(np.mean(values)) for budget, values in accuracy.items()}
    print("mean gold accuracy by labels:", means, accuracy)
    # Pixel PCA is a weak cold start (52 / 55 / 57 % at 10 / 50 / 150 labels over 30 subsets,
    # docs/benchmarks.md): six subsets resolve the rise over 10 -> 300 labels; this run measured
    # 57.5 / 59.3 / 61.2 % on 120 gold sources.
    assert means[10] < means[300] and means[50] < means[300]
    assert all(mean >= 0.5 for mean in means.values())
    assert min(min(values) for values in accuracy.values()) >= 0.45  # no collapse below chance
