"""A subject retired early keeps the class its votes retired it with (docs/benchmarks.md, "The class
a retirement decided on"): two hybrid votes that retire a subject by margin label it hybrid, however
strongly the fitted class prior favours FRI, at the vote and after the refit; a subject retired by
its vote count is still labelled by the Dawid-Skene consensus."""

from __future__ import annotations

import pytest

from rgzlabel.labelling.models import ConsensusSnapshot, Subject, Workflow
from rgzlabel.labelling.services import recompute_consensus, votes_with_reliability, weighted_consensus
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def fri_heavy(django_user_model, make_source, workflow) -> Workflow:
    """A workflow whose refit has learnt a class prior of nearly all FRI, weighed in full, retiring
    on a margin of 2 votes, at most 2 votes."""
    workflow.retire_after = 10
    workflow.save()
    regulars = [django_user_model.objects.create_user(f"regular{i}") for i in range(3)]
    for _ in range(30):
        source = make_source()
        for volunteer in regulars:
            served_vote(volunteer, source.pk, "FRI", workflow)
    recompute_consensus(workflow)
    workflow = Workflow.objects.get(pk=workflow.pk)
    assert workflow.consensus_class_prior["FRI"] > 0.8
    workflow.consensus_prior_strength = 1.0
    workflow.retire_on_margin, workflow.retire_after = 2, 2
    workflow.save()
    return workflow


def vote_as_newcomers(django_user_model, workflow: Workflow, source, labels: list[str], name: str) -> Subject:
    for i, label in enumerate(labels):
        served_vote(django_user_model.objects.create_user(f"{name}{i}"), source.pk, label, workflow)
    return Subject.objects.get(workflow=workflow, source=source)


def test_a_margin_retirement_labels_the_subject_with_the_class_that_led(
    django_user_model, make_source, fri_heavy
) -> None:
    rare = make_source()
    subject = vote_as_newcomers(django_user_model, fri_heavy, rare, ["hybrid", "hybrid"], "new")
    assert subject.retire_reason == "margin"
    votes = votes_with_reliability(fri_heavy, [rare.pk])[rare.pk]
    # The posterior alone would call it FRI: the prior outweighs two unproven volunteers.
    assert weighted_consensus(votes, fri_heavy)[0] == "FRI"
    assert (subject.consensus_label, subject.weighted_label) == ("hybrid", "hybrid")
    assert subject.weighted_confidence < 0.5  # the posterior's probability of that class, not inflated

    recompute_consensus(fri_heavy)
    subject.refresh_from_db()
    assert subject.weighted_label == "hybrid"
    snapshot = ConsensusSnapshot.objects.filter(workflow=fri_heavy).latest("pk")
    assert snapshot.class_counts["hybrid"] == 1


def test_a_retirement_by_count_is_labelled_by_the_consensus(django_user_model, make_source, fri_heavy) -> None:
    split = make_source()
    subject = vote_as_newcomers(django_user_model, fri_heavy, split, ["hybrid", "FRII"], "split")
    assert subject.retire_reason == "vote count"
    assert subject.weighted_label == "FRI"  # neither vote: the prior decides a split subject
    recompute_consensus(fri_heavy)
    subject.refresh_from_db()
    assert subject.weighted_label == "FRI"


def test_a_subject_sent_to_the_experts_is_labelled_by_the_consensus(django_user_model, make_source, fri_heavy) -> None:
    experts = Workflow.objects.create(slug="experts", name="Experts", experts_only=True)
    fri_heavy.retire_after, fri_heavy.disagreement_threshold, fri_heavy.expert_workflow = 7, 0.9, experts
    fri_heavy.save()
    disputed = make_source()
    # Hybrid leads by 2 (3 to 1), but a quarter of the volunteers disagree: the experts decide.
    subject = vote_as_newcomers(django_user_model, fri_heavy, disputed, ["hybrid", "FRI", "hybrid", "hybrid"], "d")
    assert subject.retire_reason == "to expert"
    assert subject.consensus_label == "hybrid"
    assert subject.weighted_label == "FRI"  # the consensus's label, not the lead's
    recompute_consensus(fri_heavy)
    subject.refresh_from_db()
    assert subject.weighted_label == "FRI"
