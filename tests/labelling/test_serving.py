"""Which subject `next` serves: unseen, open, by priority, never over-assigned, gold mixed in."""

from __future__ import annotations

import pytest
from django.utils import timezone

from rgzlabel.labelling.models import Assignment, GoldLabel, Subject, VolunteerProfile
from rgzlabel.labelling.services import gold_rate, next_subject, record_classification, release
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


def test_next_skips_what_the_volunteer_classified_and_retired_subjects(volunteer, make_source, workflow) -> None:
    seen, retired, fresh = make_source(), make_source(), make_source()
    served_vote(volunteer, seen.pk, "FRI", workflow)
    Subject.objects.filter(source=retired).update(retired_at=timezone.now())
    assert next_subject(volunteer, workflow).subject.source == fresh


def test_next_follows_the_queue_priority(volunteer, make_source, workflow) -> None:
    low, high = make_source(), make_source()
    Subject.objects.filter(source=high).update(priority=0.9)
    Subject.objects.filter(source=low).update(priority=0.1)
    assert next_subject(volunteer, workflow).subject.source == high


def test_a_subject_needing_one_vote_goes_to_one_volunteer_at_a_time(
    volunteer, other_volunteer, make_source, workflow
) -> None:
    workflow.retire_after = 1
    workflow.save()
    only = make_source()
    assert next_subject(volunteer, workflow).subject.source == only
    assert next_subject(other_volunteer, workflow) is None  # its one slot is held
    release(volunteer, only.pk, workflow)  # a skip gives it back
    assert next_subject(other_volunteer, workflow).subject.source == only


def test_redundancy_lets_extra_volunteers_hold_a_subject(volunteer, other_volunteer, make_source, workflow) -> None:
    workflow.retire_after, workflow.redundancy = 1, 1
    workflow.save()
    only = make_source()
    assert next_subject(volunteer, workflow).subject.source == only
    assert next_subject(other_volunteer, workflow).subject.source == only


def test_expired_holds_free_their_slot(volunteer, other_volunteer, make_source, workflow) -> None:
    workflow.retire_after = 1
    workflow.save()
    only = make_source()
    next_subject(volunteer, workflow)
    Assignment.objects.update(expires_at=timezone.now())
    assert next_subject(other_volunteer, workflow).subject.source == only


def test_gold_subjects_are_mixed_in_at_the_workflow_rate(django_user_model, make_source, workflow) -> None:
    workflow.gold_rate_start = workflow.gold_rate_min = 1.0
    workflow.save()
    make_source()
    gold_source = make_source()
    GoldLabel.objects.create(workflow=workflow, source=gold_source, label="FRII")
    Subject.objects.filter(source=gold_source).update(retired_at=timezone.now(), retire_reason="gold")
    volunteer = django_user_model.objects.create_user("goldie")
    served = next_subject(volunteer, workflow)
    assert served.is_gold and served.subject.source == gold_source


def test_the_gold_rate_tapers_as_a_volunteer_proves_reliable(volunteer, workflow) -> None:
    workflow.gold_rate_start, workflow.gold_rate_min, workflow.gold_halving = 0.4, 0.05, 5
    profile = VolunteerProfile.objects.create(user=volunteer)
    rates = []
    for correct in (0, 5, 10, 50):
        profile.gold_correct = correct
        rates.append(gold_rate(profile, workflow))
    assert rates == [0.4, 0.2, 0.1, 0.05]


def test_before_any_ranking_subjects_come_in_a_random_order_not_by_id(django_user_model, make_source, workflow) -> None:
    sources = [make_source() for _ in range(40)]
    first_served = [
        next_subject(django_user_model.objects.create_user(f"early{i}"), workflow).subject.source_id for i in range(8)
    ]
    # By id, each new volunteer would get the lowest id; at random, 8 draws of 40 are not all that one.
    assert len(set(first_served)) > 1
    volunteer = django_user_model.objects.create_user("sequence")
    served = []
    for _ in range(10):
        subject = next_subject(volunteer, workflow).subject
        record_classification(volunteer, subject.source_id, "FRI", workflow)
        served.append(subject.source_id)
    assert served != sorted(served) and len(set(served)) == 10

    # Once a ranking exists, its order is served (and the unranked rest after it).
    ranked = sources[-3:]
    for priority, source in zip((0.9, 0.6, 0.3), ranked, strict=True):
        Subject.objects.filter(source=source).update(priority=priority)
    Assignment.objects.all().delete()  # the early volunteers' holds lapse
    late = django_user_model.objects.create_user("late")
    served = []
    for _ in range(3):
        served.append(next_subject(late, workflow).subject.source)
        record_classification(late, served[-1].pk, "FRI", workflow)
    assert served == ranked
