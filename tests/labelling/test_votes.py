"""Recording votes: one per volunteer per source, exact counts, retirement rules, undo, gold."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile, Workflow
from rgzlabel.labelling.services import (
    RateLimited,
    VoteRejected,
    record_classification,
    undo_last_vote,
)
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


def subject_of(source, workflow) -> Subject:
    return Subject.objects.get(source=source, workflow=workflow)


@pytest.fixture
def crowd(django_user_model):
    return [django_user_model.objects.create_user(f"volunteer{i}") for i in range(8)]


def test_it_records_one_vote_and_counts_it(volunteer, make_source, workflow) -> None:
    source = make_source()
    outcome = served_vote(volunteer, source.pk, "FRII", workflow)
    assert outcome.created and not outcome.retired
    assert Classification.objects.get().label == "FRII"
    subject = subject_of(source, workflow)
    assert (subject.vote_count, subject.consensus_label, subject.consensus_confidence) == (1, "FRII", 1.0)


def test_a_double_submit_records_one_vote_and_succeeds_twice(volunteer, make_source, workflow) -> None:
    source = make_source()
    first = served_vote(volunteer, source.pk, "FRI", workflow)
    second = served_vote(volunteer, source.pk, "FRI", workflow)
    assert (first.created, second.created) == (True, False)
    assert second.classification.pk == first.classification.pk
    assert Classification.objects.count() == 1
    assert subject_of(source, workflow).vote_count == 1


def test_the_database_refuses_a_second_vote_by_the_same_volunteer(volunteer, make_source, workflow) -> None:
    source = make_source()
    Classification.objects.create(volunteer=volunteer, source=source, workflow=workflow, label="FRI")
    with pytest.raises(IntegrityError), transaction.atomic():
        Classification.objects.create(volunteer=volunteer, source=source, workflow=workflow, label="FRII")


def test_it_rejects_an_unknown_label(volunteer, make_source, workflow) -> None:
    source = make_source()
    with pytest.raises(VoteRejected, match="unknown label 'FRIII'"):
        served_vote(volunteer, source.pk, "FRIII", workflow)
    assert not Classification.objects.exists()


def test_it_rejects_a_source_outside_the_workflow(volunteer, make_source, workflow) -> None:
    source = make_source()
    other = Workflow.objects.create(slug="other", name="Other")
    with pytest.raises(VoteRejected, match="not in the Other workflow"):
        record_classification(volunteer, source.pk, "FRI", other)
    assert not Classification.objects.exists()


def test_it_retires_after_the_workflow_vote_count(crowd, make_source, workflow) -> None:
    workflow.retire_after = 3
    workflow.save()
    source = make_source()
    outcomes = [
        served_vote(v, source.pk, label, workflow) for v, label in zip(crowd, ["FRI", "FRII", "FRI"], strict=False)
    ]
    assert [o.retired for o in outcomes] == [False, False, True]
    with pytest.raises(VoteRejected, match="already retired"):
        served_vote(crowd[3], source.pk, "FRI", workflow)
    subject = subject_of(source, workflow)
    assert (subject.vote_count, subject.retire_reason, subject.consensus_label) == (3, "vote count", "FRI")
    assert subject.consensus_confidence == pytest.approx(2 / 3)


def test_it_retires_early_when_the_first_votes_agree(crowd, make_source, workflow) -> None:
    workflow.retire_on_agreement = 2
    workflow.save()
    agreed, split = make_source(), make_source()
    served_vote(crowd[0], agreed.pk, "FRII", workflow)
    assert served_vote(crowd[1], agreed.pk, "FRII", workflow).retired
    served_vote(crowd[0], split.pk, "FRII", workflow)
    assert not served_vote(crowd[1], split.pk, "FRI", workflow).retired
    assert subject_of(agreed, workflow).retire_reason == "agreement"


def test_a_margin_retires_a_clear_subject_early_and_gives_a_split_one_more_votes(
    crowd, make_source, workflow, admin_user, client
) -> None:
    from django.urls import reverse

    workflow.retire_after, workflow.retire_on_margin = 6, 2
    workflow.save()
    clear, split = make_source(), make_source()
    answers = ["FRI", "FRII", "FRI", "FRII", "FRI", "FRI"]  # leads of 1, 0, 1, 0, 1, then 2 at the sixth vote
    retired = [served_vote(v, split.pk, label, workflow).retired for v, label in zip(crowd, answers, strict=False)]
    assert retired == [False] * 5 + [True]
    assert [served_vote(v, clear.pk, "FRII", workflow).retired for v in crowd[:2]] == [False, True]
    assert (subject_of(clear, workflow).retire_reason, subject_of(clear, workflow).vote_count) == ("margin", 2)
    assert subject_of(split, workflow).retire_reason == "margin"

    client.force_login(admin_user)
    page = client.get(reverse("science:source", args=[clear.pk])).content.decode()
    assert "Retired (margin): <b>FRII</b> led every other class by 2 votes" in page

    # Undoing the deciding vote reopens the subject; the cap still retires a subject that stays split.
    assert undo_last_vote(crowd[1], workflow) is not None
    assert subject_of(clear, workflow).retired_at is None
    workflow.retire_after = 2
    workflow.save()
    assert served_vote(crowd[1], clear.pk, "FRI", workflow).retired
    assert subject_of(clear, workflow).retire_reason == "vote count"


def test_disagreement_moves_the_subject_to_the_expert_workflow(crowd, make_source, workflow) -> None:
    experts = Workflow.objects.create(slug="experts", name="Experts", experts_only=True)
    workflow.retire_after, workflow.disagreement_threshold, workflow.expert_workflow = 4, 0.75, experts
    workflow.save()
    clear, unclear = make_source(), make_source()
    for volunteer, label in zip(crowd, ["FRI", "FRII", "FRI", "FRII"], strict=False):
        served_vote(volunteer, unclear.pk, label, workflow)
    for volunteer in crowd[:4]:
        served_vote(volunteer, clear.pk, "FRI", workflow)
    assert subject_of(unclear, workflow).retire_reason == "to expert"
    assert Subject.objects.filter(workflow=experts, source=unclear, retired_at__isnull=True).exists()
    assert subject_of(clear, workflow).retire_reason == "vote count"
    assert not Subject.objects.filter(workflow=experts, source=clear).exists()
    with pytest.raises(VoteRejected, match="for experts"):
        served_vote(crowd[5], unclear.pk, "FRI", experts)


def test_the_rate_limit_stops_scripted_spam(volunteer, make_source, workflow, settings) -> None:
    settings.RGZ_VOTES_PER_MINUTE = 3
    sources = [make_source() for _ in range(4)]
    for source in sources[:3]:
        served_vote(volunteer, source.pk, "FRI", workflow)
    with pytest.raises(RateLimited, match="at most 3 votes a minute"):
        served_vote(volunteer, sources[3].pk, "FRI", workflow)
    assert Classification.objects.count() == 3


def test_undo_takes_back_the_last_vote_and_reopens_the_subject(crowd, make_source, workflow) -> None:
    workflow.retire_after = 2
    workflow.save()
    source = make_source()
    served_vote(crowd[0], source.pk, "FRI", workflow)
    assert served_vote(crowd[1], source.pk, "FRII", workflow).retired

    served = undo_last_vote(crowd[1], workflow)

    assert served is not None and served.subject.source_id == source.pk
    subject = subject_of(source, workflow)
    assert (subject.vote_count, subject.retired_at, subject.consensus_label) == (1, None, "FRI")
    assert not Classification.objects.filter(volunteer=crowd[1]).exists()
    assert served_vote(crowd[1], source.pk, "FRI", workflow).retired  # answers again


def test_undo_is_refused_after_the_window(volunteer, make_source, workflow) -> None:
    source = make_source()
    served_vote(volunteer, source.pk, "FRI", workflow)
    Classification.objects.update(created_at=timezone.now() - timedelta(seconds=workflow.undo_window_s + 1))
    assert undo_last_vote(volunteer, workflow) is None
    assert Classification.objects.count() == 1


def test_a_gold_answer_gets_feedback_and_counts_for_accuracy(volunteer, make_source, workflow) -> None:
    right, wrong = make_source(), make_source()
    GoldLabel.objects.create(workflow=workflow, source=right, label="FRII", feedback="Note the hotspots.")
    GoldLabel.objects.create(workflow=workflow, source=wrong, label="FRII", feedback="Note the hotspots.")

    good = served_vote(volunteer, right.pk, "FRII", workflow)
    bad = served_vote(volunteer, wrong.pk, "FRI", workflow)

    assert good.gold == {"correct": True, "expert_label": "FRII", "feedback": "Note the hotspots."}
    assert bad.gold["correct"] is False
    profile = VolunteerProfile.objects.get(user=volunteer)
    assert (profile.gold_answered, profile.gold_correct) == (2, 1)
    assert subject_of(right, workflow).vote_count == 0  # gold answers are not consensus votes


@pytest.mark.parametrize("write_batch", [200, 2])
def test_background_consensus_learns_volunteer_reliability(
    django_user_model, make_source, workflow, monkeypatch, write_batch
) -> None:
    """A volunteer who always disagrees with two consistent peers ends up outweighed (whether the
    refit writes its rows in one batch or in many short ones)."""
    from rgzlabel.labelling import services
    from rgzlabel.labelling.services import recompute_consensus

    monkeypatch.setattr(services, "CONSENSUS_WRITE_BATCH", write_batch)

    workflow.retire_after = 10
    workflow.save()
    good = [django_user_model.objects.create_user(f"good{i}") for i in range(2)]
    contrarian = django_user_model.objects.create_user("contrarian")
    sources = [make_source() for _ in range(12)]
    for i, source in enumerate(sources):
        truth = "FRI" if i % 2 else "FRII"
        for volunteer in good:
            served_vote(volunteer, source.pk, truth, workflow)
        served_vote(contrarian, source.pk, "FRII" if truth == "FRI" else "FRI", workflow)

    report = recompute_consensus(workflow)

    assert (report.subjects, report.volunteers) == (12, 3)
    confusion = VolunteerProfile.objects.get(user=contrarian).confusion[workflow.slug]
    assert confusion[0][0] < 0.5  # it learned the contrarian rarely says FRI when the truth is FRI
    for i, source in enumerate(sources):
        subject = subject_of(source, workflow)
        assert subject.weighted_label == ("FRI" if i % 2 else "FRII")
        assert subject.weighted_confidence > subject.consensus_confidence


def test_a_repeat_of_the_vote_that_retired_a_subject_still_succeeds(volunteer, make_source, workflow) -> None:
    workflow.retire_after = 1
    workflow.save()
    source = make_source()
    first = served_vote(volunteer, source.pk, "FRI", workflow)
    again = served_vote(volunteer, source.pk, "FRI", workflow)
    assert first.retired and not again.created
    assert again.classification.pk == first.classification.pk
