"""A CI-sized campaign replay (``bench/campaign.py``): the whole loop, so that it cannot silently break.

Simulated volunteers start as guests and label over HTTP (the live server); the embedding,
retraining and queue refreshes run in the real worker process on the loop's own trigger
(beat's tick, called here every second instead of every minute).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bench.campaign import (
    POOLS,
    Campaign,
    catalogue_snapshot,
    configure,
    gold_answers,
    parse_arm,
    read_truth,
    start_learning,
)
from ml.crowd import CrowdConfig, make_crowd
from tests.synthetic import mirabest_entries, write_mirabest_archive

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_a_short_campaign_replay_runs_the_loop_through_the_real_worker(
    celery_worker, live_server, settings, tmp_path
) -> None:
    from rgzlabel.catalog.services import ingest_dataset
    from rgzlabel.labelling.models import Classification, Subject
    from rgzlabel.learning.loop import learning_tick
    from rgzlabel.learning.models import ClassifierVersion, Job
    from rgzlabel.science.predictions import predict_sources

    settings.RGZ_VOTES_PER_MINUTE = 0  # the simulated volunteers have no think time
    settings.RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR = 0  # every guest comes from 127.0.0.1
    pool = POOLS["mirabest"]
    archive = write_mirabest_archive(
        tmp_path / "MiraBest_F_batches.tar.gz", mirabest_entries(per_code=12, seed=3, morphology=True)
    )
    assert not ingest_dataset("mirabest", str(archive)).errors
    arm = parse_arm("b:0.8")
    configure(pool, arm, seed=0, gold_per_class=2, retrain_every_labels=5)
    truth = read_truth(pool)
    assert len(truth.scored) >= 100 and any(truth.ambiguous.values())
    # 8 pixel principal components: the synthetic morphologies live in the first few, and a
    # standardised probe on 64 would give the remaining (noise) components equal weight.
    start_learning(None, seed=0, timeout_s=120, pca_dim=8)

    port = int(live_server.url.rsplit(":", 1)[1])
    crowd = make_crowd(CrowdConfig(n_volunteers=60, class_difficulty=pool.difficulty, median_sources=8), 3, seed=0)
    campaign = Campaign(port, crowd, truth, gold_answers(pool), concurrency=3, max_votes=300)
    threads = [threading.Thread(target=campaign.slot, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 240
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        learning_tick()  # what beat does every minute
        time.sleep(1.0)
    campaign.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    learning_tick()
    settle = time.monotonic() + 120
    while Job.objects.filter(state__in=Job.ACTIVE_STATES).exists() and time.monotonic() < settle:
        time.sleep(0.5)

    assert campaign.tally.errors == []
    assert campaign.tally.votes >= 250, campaign.tally
    # Every vote the server acknowledged as new is stored exactly once.
    assert Classification.objects.count() == campaign.tally.votes
    failed = list(Job.objects.filter(state=Job.State.FAILED).values_list("kind", "error"))
    assert failed == []
    assert Job.objects.filter(kind=Job.Kind.RETRAIN, state=Job.State.SUCCEEDED).exists()
    # The queue was ranked again after a retrain, not only at the cold start.
    assert Job.objects.filter(kind=Job.Kind.REFRESH, state=Job.State.SUCCEEDED).count() >= 2
    classifier = ClassifierVersion.objects.filter(is_active=True).first()
    assert classifier is not None
    retired = Subject.objects.filter(retired_at__isnull=False, source_id__in=truth.scored.tolist())
    assert retired.exclude(retire_reason="").count() == retired.count() > 0

    # The classifier learned from the volunteers: on the sources nobody retired it beats a
    # uniform guess. (Beating the most common class, ~54 % here, is not reliable at ~30 noisy
    # consensus labels: the promoted version is sometimes an early one.)
    open_ids = sorted(set(truth.scored.tolist()) - set(retired.values_list("source_id", flat=True)))
    assert len(open_ids) >= 20
    predictions = predict_sources(open_ids, classifier)
    guessed = np.array([predictions.label_of(s) for s in open_ids])
    true = np.array([truth.classes[truth.label[s]] for s in open_ids])
    chance = 1 / len(truth.classes)
    assert np.mean(guessed == true) > chance + 0.05

    snapshot = catalogue_snapshot(truth, arm)
    assert snapshot["votes"] == campaign.tally.votes
    assert snapshot["classifier"] == classifier.pk
    assert snapshot["retired"] == retired.count()
    assert snapshot["accuracy"] > chance + 0.05
