"""The random-exploration share of the queue: served at the set rate, recorded on assignments and votes."""

from __future__ import annotations

import random

import pytest

from rgzlabel.labelling.models import Assignment, Classification, Subject
from rgzlabel.labelling.services import next_subject, record_classification, release

pytestmark = pytest.mark.django_db


def test_the_exploration_share_is_served_and_recorded(make_source, workflow, django_user_model) -> None:
    # Seeded before the sources exist: their random keys decide which subject exploration draws
    # first, and that one is served again until it has its votes (nobody votes here), so an
    # unseeded run would find it among the ten ranked on top one time in six.
    random.seed(7)
    sources = [make_source() for _ in range(60)]
    # The policy ranks the first ten on top; exploration ignores the ranking.
    for rank, source in enumerate(sources[:10]):
        Subject.objects.filter(source=source).update(priority=1.0 - rank / 100)
    workflow.exploration_share = 0.25
    workflow.save()
    top = {s.pk for s in sources[:10]}
    volunteers = [django_user_model.objects.create_user(f"v{i}") for i in range(4)]

    served = []
    for call in range(400):
        volunteer = volunteers[call % 4]
        item = next_subject(volunteer, workflow)
        assert Assignment.objects.get(volunteer=volunteer, subject=item.subject).explore == item.explore
        served.append(item)
        release(volunteer, item.subject.source_id, workflow)

    share = sum(item.explore for item in served) / len(served)
    assert 0.25 - 0.065 < share < 0.25 + 0.065  # three binomial standard deviations
    assert all(item.subject.source_id in top for item in served if not item.explore)
    explored = {item.subject.source_id for item in served if item.explore}
    assert explored - top  # exploration reaches sources the policy ranked low
    assert Subject.objects.filter(explored=True).count() >= 1

    volunteer = volunteers[0]
    by_policy = next(item for item in served if not item.explore)
    by_chance = next(item for item in served if item.explore)
    for item in (by_policy, by_chance):
        Assignment.objects.filter(volunteer=volunteer).delete()
        from rgzlabel.labelling.services import hold

        hold(volunteer, item.subject, is_gold=False, explore=item.explore)
        record_classification(volunteer, item.subject.source_id, "FRI", workflow)
    assert Classification.objects.get(source_id=by_chance.subject.source_id).explore
    assert not Classification.objects.get(source_id=by_policy.subject.source_id).explore
