"""Which subject `next` serves: unseen, open, by priority, never over-assigned, gold mixed in."""

from __future__ import annotations

import pytest
from django.utils import timezone

from rgzlabel.labelling.models import Assignment, GoldLabel, Subject, VolunteerProfile
from rgzlabel.labelling.services import gold_rate, next_subject, release
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
