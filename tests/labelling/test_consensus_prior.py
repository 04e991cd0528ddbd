"""The consensus's class prior: a rare class is not absorbed by a common one (docs/benchmarks.md,
"Consensus rules"), and a vote's own consensus agrees with the refit's."""

from __future__ import annotations

import pytest

from rgzlabel.labelling.models import Subject, Workflow
from rgzlabel.labelling.services import recompute_consensus, votes_with_reliability, weighted_consensus
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(django_user_model, make_source, workflow):
    """30 sources every regular calls FRI; five volunteers who each called four of them FRI too
    meet a rare source, and four of them call it hybrid, one FRI."""
    workflow.retire_after = 10
    workflow.save()
    regulars = [django_user_model.objects.create_user(f"regular{i}") for i in range(3)]
    common = [make_source() for _ in range(30)]
    for source in common:
        for volunteer in regulars:
            served_vote(volunteer, source.pk, "FRI", workflow)
    rare = make_source()
    for i, label in enumerate(["hybrid", "hybrid", "FRI", "hybrid", "hybrid"]):
        volunteer = django_user_model.objects.create_user(f"member{i}")
        for source in common[4 * i : 4 * i + 4]:
            served_vote(volunteer, source.pk, "FRI", workflow)
        served_vote(volunteer, rare.pk, label, workflow)
    return workflow, rare


def refit_label(workflow: Workflow, source, strength: float) -> str:
    workflow.consensus_prior_strength = strength
    workflow.save()
    recompute_consensus(workflow)
    return Subject.objects.get(workflow=workflow, source=source).weighted_label


def test_the_fitted_prior_is_stored_and_only_its_full_weight_absorbs_the_rare_class(campaign) -> None:
    workflow, rare = campaign
    assert refit_label(workflow, rare, 1.0) == "FRI"  # the most probable class: the prior wins
    stored = Workflow.objects.get(pk=workflow.pk).consensus_class_prior
    assert set(stored) == set(workflow.class_keys) and max(stored, key=stored.get) == "FRI"
    assert stored["FRI"] > 0.8 and abs(sum(stored.values()) - 1) < 1e-4
    default = Workflow._meta.get_field("consensus_prior_strength").default
    assert refit_label(workflow, rare, default) == "hybrid"  # the shipped weight keeps it
    assert refit_label(workflow, rare, 0.0) == "hybrid"


@pytest.mark.parametrize("strength", [1.0, 0.25, 0.0])
def test_a_votes_own_consensus_agrees_with_the_refit(campaign, strength) -> None:
    workflow, rare = campaign
    label = refit_label(workflow, rare, strength)
    workflow = Workflow.objects.get(pk=workflow.pk)  # as the next vote reads it
    subject = Subject.objects.get(workflow=workflow, source=rare)
    again, confidence = weighted_consensus(votes_with_reliability(workflow, [rare.pk])[rare.pk], workflow)
    assert again == label
    assert confidence == pytest.approx(subject.weighted_confidence, abs=1e-3)
