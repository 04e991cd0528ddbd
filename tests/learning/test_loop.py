"""The learning loop in-process: retrain, evaluate, promote, refresh the queue, the tick."""

from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from rgzlabel.labelling.models import GoldLabel, Subject
from rgzlabel.labelling.services import next_subject
from rgzlabel.learning.classifiers import promote_classifier
from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
from rgzlabel.learning.jobs import create_job, run_job
from rgzlabel.learning.loop import learning_tick
from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet, EncoderVersion, Job, LoopSettings, QueuePolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(make_source, workflow):
    """60 sources in two clusters (FRI left, FRII right) and 10 ambiguous ones in the middle."""
    from ml.embed import write_embeddings

    rng = np.random.default_rng(0)
    sources = [make_source() for _ in range(70)]
    centres = np.zeros((70, 8))
    centres[:30, 0], centres[30:60, 0] = -3.0, 3.0
    matrix = (centres + rng.normal(0, 0.5, (70, 8))).astype(np.float32)
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=70, dim=8)
    activate_embedding_set(embedding_set)
    return sources


def label(sources, value: str) -> None:
    Subject.objects.filter(source__in=sources).update(
        retired_at=timezone.now(), retire_reason="vote count", consensus_label=value, weighted_label=value
    )


def gold(sources, value: str, workflow) -> None:
    for source in sources:
        GoldLabel.objects.create(workflow=workflow, source=source, label=value)
    Subject.objects.filter(source__in=sources).update(retired_at=timezone.now(), retire_reason="gold")


def run(kind: str, django_capture_on_commit_callbacks, **params) -> Job:
    with django_capture_on_commit_callbacks():  # run here, in-process; nothing goes to the broker
        job = create_job(kind, params)
        run_job(job.pk)
    return Job.objects.get(pk=job.pk)


def test_retraining_promotes_an_evaluated_classifier_and_queues_a_refresh(
    pool, workflow, django_capture_on_commit_callbacks
) -> None:
    label(pool[:10], "FRI")
    label(pool[30:40], "FRII")
    gold(pool[10:20], "FRI", workflow)
    gold(pool[40:50], "FRII", workflow)

    job = run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)

    assert job.state == Job.State.SUCCEEDED, job.error
    classifier = ClassifierVersion.objects.get(is_active=True)
    assert (classifier.n_labels, classifier.classes) == (20, ["FRI", "FRII", "hybrid"])
    assert classifier.metrics["evaluated_on"] == "gold" and classifier.metrics["n_eval"] == 20
    assert classifier.metrics["accuracy"] >= 0.9
    assert Job.objects.filter(kind=Job.Kind.REFRESH, state=Job.State.QUEUED).exists()


def test_the_refreshed_queue_serves_the_most_uncertain_first(
    pool, workflow, volunteer, django_capture_on_commit_callbacks
) -> None:
    label(pool[:10], "FRI")
    label(pool[30:40], "FRII")
    run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    QueuePolicy.objects.update_or_create(workflow=workflow, defaults={"policy": "margin", "queue_length": 20})
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()

    refresh = run(Job.Kind.REFRESH, django_capture_on_commit_callbacks)

    assert refresh.state == Job.State.SUCCEEDED, refresh.error
    assert refresh.result["policy"] == "margin" and refresh.result["ranked"] == 20
    ambiguous = {s.pk for s in pool[60:]}
    # The sources between the clusters come first (10 of 70; chance would put ~1.4 in the top 10).
    assert len(set(refresh.result["top"]) & ambiguous) >= 7
    assert next_subject(volunteer, workflow).subject.source_id == refresh.result["top"][0]


def test_a_committee_is_fitted_only_for_a_committee_policy_and_on_demand_after_a_switch(
    pool, workflow, django_capture_on_commit_callbacks
) -> None:
    """The default (guarded) candidates need no committee, so a retrain fits the classifier only;
    an admin who then picks a committee policy gets one fitted by the refresh, and kept."""
    from rgzlabel.learning.classifiers import load_classifier

    label(pool[:10], "FRI")
    label(pool[30:40], "FRII")
    run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    classifier = ClassifierVersion.objects.get(is_active=True)
    assert load_classifier(classifier)["committee"] is None
    QueuePolicy.objects.update_or_create(workflow=workflow, defaults={"policy": "vote_entropy", "queue_length": 20})
    Job.objects.filter(kind=Job.Kind.REFRESH).delete()

    refresh = run(Job.Kind.REFRESH, django_capture_on_commit_callbacks)

    assert refresh.state == Job.State.SUCCEEDED, refresh.error
    assert refresh.result["policy"] == "vote_entropy" and refresh.result["ranked"] == 20
    committee = load_classifier(classifier)["committee"]
    assert len(committee.members) == 5 and list(committee.classes) == [0, 1]

    # With the committee policy configured, the next retrain fits its committee itself.
    label(pool[10:12], "FRI")
    run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    newest = ClassifierVersion.objects.latest("pk")
    assert newest.pk != classifier.pk and load_classifier(newest)["committee"] is not None


def test_without_a_classifier_the_cold_start_policy_ranks_the_queue(pool, django_capture_on_commit_callbacks) -> None:
    refresh = run(Job.Kind.REFRESH, django_capture_on_commit_callbacks)
    assert refresh.state == Job.State.SUCCEEDED, refresh.error
    assert refresh.result["policy"] == "typical_clusters"
    assert Subject.objects.filter(priority__gt=0).count() == refresh.result["ranked"] > 0


def test_too_few_labels_fail_the_retrain_clearly(pool, django_capture_on_commit_callbacks) -> None:
    label(pool[:3], "FRI")
    job = run(Job.Kind.RETRAIN, django_capture_on_commit_callbacks)
    assert job.state == Job.State.FAILED
    assert "not enough consensus labels" in job.error
    assert not ClassifierVersion.objects.exists()


def test_two_triggers_at_once_make_one_retrain(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks():
        first = create_job(Job.Kind.RETRAIN)
        second = create_job(Job.Kind.RETRAIN)
    assert second.pk == first.pk and second.joined
    assert Job.objects.filter(kind=Job.Kind.RETRAIN).count() == 1


def test_a_refresh_triggered_while_one_runs_runs_once_more_after_it(pool, django_capture_on_commit_callbacks) -> None:
    """A retrain that promotes a classifier while a refresh is running joins that refresh, which
    ranks with the classifier it started with: it must run again when it ends, once."""
    with django_capture_on_commit_callbacks():
        running = create_job(Job.Kind.REFRESH)
        queued_retrain = create_job(Job.Kind.RETRAIN)
        create_job(Job.Kind.RETRAIN)
        create_job(Job.Kind.REFRESH)
        assert not Job.objects.filter(run_again=True).exists()  # a trigger that joins a queued job marks nothing
        Job.objects.filter(pk__in=[running.pk, queued_retrain.pk]).update(state=Job.State.RUNNING)  # a worker's claim
        assert create_job(Job.Kind.REFRESH).pk == running.pk
        create_job(Job.Kind.REFRESH)  # a second trigger asks for the same one more run
        create_job(Job.Kind.RETRAIN)
    assert Job.objects.get(pk=running.pk).run_again
    assert not Job.objects.get(pk=queued_retrain.pk).run_again  # the tick re-triggers retrains itself


def test_a_refresh_marked_to_run_again_queues_one_more_when_it_ends(pool, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks():
        job = Job.objects.create(kind=Job.Kind.REFRESH, queue="default", run_again=True)
        outcome = run_job(job.pk)
    assert outcome["state"] == Job.State.SUCCEEDED
    again = Job.objects.get(pk=outcome["run_again_job"])
    assert (again.kind, again.state, again.params) == (Job.Kind.REFRESH, Job.State.QUEUED, {"after": job.pk})
    with django_capture_on_commit_callbacks():
        assert "run_again_job" not in run_job(again.pk)  # once, not forever
    assert Job.objects.filter(kind=Job.Kind.REFRESH).count() == 2


def test_only_evaluated_classifiers_are_promoted_and_admins_can_roll_back(pool) -> None:
    embedding_set = EmbeddingSet.objects.get()
    old = ClassifierVersion.objects.create(embedding_set=embedding_set, n_labels=5, metrics={"evaluated": True})
    new = ClassifierVersion.objects.create(embedding_set=embedding_set, n_labels=9, metrics={"evaluated": True})
    raw = ClassifierVersion.objects.create(embedding_set=embedding_set, n_labels=12)
    promote_classifier(new)
    with pytest.raises(ValueError, match="has not been evaluated"):
        promote_classifier(raw)
    promote_classifier(old)
    assert list(ClassifierVersion.objects.filter(is_active=True)) == [old]


def test_the_tick_retrains_once_enough_new_labels_exist(pool, django_capture_on_commit_callbacks) -> None:
    loop = LoopSettings.current()
    loop.retrain_min_new_labels, loop.retrain_every_minutes = 6, 0
    loop.save()
    label(pool[:3], "FRI")
    label(pool[30:32], "FRII")
    with django_capture_on_commit_callbacks():
        assert "retrain_job" not in learning_tick()
        label(pool[32:33], "FRII")
        actions = learning_tick()
    assert actions["new_labels"] == 6
    assert Job.objects.get(pk=actions["retrain_job"]).kind == Job.Kind.RETRAIN


def test_the_tick_counts_only_the_labels_a_retrain_would_train_on(pool, django_capture_on_commit_callbacks) -> None:
    """Exploration labels are held out of training (they audit it), so they cannot make a retrain due.

    Counting them queued retrains that then failed with "not enough consensus labels".
    """
    loop = LoopSettings.current()
    loop.retrain_min_new_labels, loop.retrain_every_minutes = 1, 0
    loop.save()
    label(pool[:3], "FRI")
    label(pool[30:33], "FRII")
    Subject.objects.filter(source__in=pool[31:33]).update(explored=True)  # 1 FRII left to train on
    with django_capture_on_commit_callbacks():
        assert "retrain_job" not in learning_tick()
        label(pool[33:34], "FRII")
        actions = learning_tick()
    assert Job.objects.get(pk=actions["retrain_job"]).params == {"trigger": "tick"}


def test_a_retrain_the_loop_queued_is_skipped_not_failed_when_its_labels_moved(
    pool, django_capture_on_commit_callbacks
) -> None:
    """Between the tick and the worker a consensus refit can turn labels "unsure": nothing to
    train on yet is not an error for an admin to chase, and no classifier is made."""
    label(pool[:3], "FRI")
    label(pool[30:33], "FRII")
    with django_capture_on_commit_callbacks():
        job = create_job(Job.Kind.RETRAIN, {"trigger": "tick"})
        Subject.objects.filter(source__in=pool[30:32]).update(weighted_label="unsure")
        run_job(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["skipped"] and "'FRII': 1" in job.result["reason"]
    assert not ClassifierVersion.objects.exists()
    assert not Job.objects.filter(kind=Job.Kind.REFRESH).exists()


def test_a_retrain_after_a_new_embedding_that_finds_too_few_labels_still_reranks(
    pool, django_capture_on_commit_callbacks
) -> None:
    label(pool[:3], "FRI")
    with django_capture_on_commit_callbacks():
        job = create_job(Job.Kind.RETRAIN, {"trigger": "new embedding"})
        run_job(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED and job.result["skipped"]
    assert Job.objects.get(pk=job.result["refresh_job"]).kind == Job.Kind.REFRESH


def test_the_tick_pretrains_again_when_the_pool_has_grown(pool, django_capture_on_commit_callbacks) -> None:
    loop = LoopSettings.current()
    loop.pretrain_growth_fraction = 0.5
    loop.save()
    EncoderVersion.objects.create(name="old", architecture="resnet18", checkpoint_path="x", n_images=50)
    with django_capture_on_commit_callbacks():
        assert "pretrain_job" not in learning_tick()  # 70 < 50 * 1.5
        EncoderVersion.objects.update(n_images=40)
        actions = learning_tick()
    assert Job.objects.get(pk=actions["pretrain_job"]).params == {"preset": loop.pretrain_preset}


def test_the_loops_pretrainings_default_to_the_servers_preset(pool, settings, django_capture_on_commit_callbacks):
    settings.RGZ_PRETRAIN_PRESET = "cpu-p4m"
    EncoderVersion.objects.create(name="old", architecture="resnet18", checkpoint_path="x", n_images=10)
    with django_capture_on_commit_callbacks():
        actions = learning_tick()  # the pool (70) grew past 10 * 1.25
    assert Job.objects.get(pk=actions["pretrain_job"]).params == {"preset": "cpu-p4m"}


def test_a_disabled_loop_does_nothing(pool) -> None:
    LoopSettings.objects.update_or_create(pk=1, defaults={"enabled": False})
    assert learning_tick() == {"enabled": False}


def test_the_tick_pretrains_again_on_the_calendar(pool, django_capture_on_commit_callbacks) -> None:
    from datetime import timedelta

    loop = LoopSettings.current()
    loop.pretrain_growth_fraction, loop.pretrain_every_days = 0, 7
    loop.save()
    encoder = EncoderVersion.objects.create(name="old", architecture="resnet18", checkpoint_path="x", n_images=70)
    with django_capture_on_commit_callbacks():
        assert "pretrain_job" not in learning_tick()
        EncoderVersion.objects.filter(pk=encoder.pk).update(created_at=timezone.now() - timedelta(days=8))
        assert "pretrain_job" in learning_tick()
