"""The catalogue label: retired consensus, else the votes so far combined with the classifier."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import Subject
from rgzlabel.science.catalogue import (
    BASIS_CLASSIFIER,
    BASIS_COMBINED,
    BASIS_VOLUNTEERS,
    BASIS_VOTES,
    SubjectState,
    catalogue_entries,
)
from rgzlabel.science.predictions import predict_sources
from tests.learning import test_loop
from tests.learning.test_machine_assisted import trained, vote  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
pool = test_loop.pool  # 30 FRI-like, 30 FRII-like and 10 ambiguous sources on 8-d embeddings


def entries_of(sources, workflow, with_classifier: bool = True):
    ids = [s.pk for s in sources]
    states = [SubjectState.of(subject) for subject in Subject.objects.filter(workflow=workflow, source_id__in=ids)]
    return catalogue_entries(workflow, states, predict_sources(ids) if with_classifier else None)


@pytest.fixture
def overturned(trained, pool, workflow, volunteer, other_volunteer):  # noqa: F811
    """The source the classifier leans to FRI on least surely, which two volunteers call FRII."""
    doubtful = doubtful_fri(pool)
    vote(volunteer, doubtful, "FRII", workflow)
    vote(other_volunteer, doubtful, "FRII", workflow)
    return doubtful


def doubtful_fri(pool):
    """The ambiguous source (middle of the pool) the classifier leans to FRI on, least surely."""
    predictions = predict_sources([s.pk for s in pool[60:]])
    assert predictions is not None
    fri = predictions.classes.index("FRI")
    leaning = [s for s in pool[60:] if predictions.label_of(s.pk) == "FRI"]
    assert leaning, "no ambiguous source leans to FRI"
    return min(leaning, key=lambda s: predictions.by_source[s.pk][fri])


def export_rows(client) -> dict[int, dict[str, str]]:
    response = client.get(reverse("exports:sources-csv"))
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return {int(row["source_id"]): row for row in csv.DictReader(io.StringIO(body))}


def test_votes_so_far_and_the_classifier_are_combined_for_open_sources(overturned, pool, workflow, volunteer) -> None:
    # Two volunteers call FRII a source the classifier is unsure of: their votes decide.
    doubtful = overturned
    # One vote agreeing with the classifier makes the label surer than the classifier alone.
    vote(volunteer, pool[23], "FRI", workflow)

    entries = entries_of([pool[0], pool[22], pool[23], doubtful], workflow)
    predictions = predict_sources([pool[22].pk, pool[23].pk, doubtful.pk])
    assert predictions is not None and predictions.label_of(doubtful.pk) == "FRI"

    assert (entries[doubtful.pk].label, entries[doubtful.pk].basis) == ("FRII", BASIS_COMBINED)
    alone = predictions.by_source[pool[23].pk][predictions.classes.index("FRI")]
    assert entries[pool[23].pk].label == "FRI" and entries[pool[23].pk].confidence > alone
    assert (entries[pool[22].pk].label, entries[pool[22].pk].basis) == ("FRI", BASIS_CLASSIFIER)
    own = predictions.by_source[pool[22].pk]
    assert entries[pool[22].pk].confidence == pytest.approx(own.max() / own.sum())
    # A retired subject keeps its volunteers' consensus, whatever the classifier says.
    assert (entries[pool[0].pk].label, entries[pool[0].pk].basis) == ("FRI", BASIS_VOLUNTEERS)


def test_without_a_classifier_the_votes_decide_and_unseen_sources_have_no_label(
    pool, workflow, volunteer, other_volunteer
) -> None:
    vote(volunteer, pool[50], "FRII", workflow)
    entries = entries_of([pool[50], pool[51]], workflow, with_classifier=False)
    assert (entries[pool[50].pk].label, entries[pool[50].pk].basis) == ("FRII", BASIS_VOTES)
    assert (entries[pool[51].pk].label, entries[pool[51].pk].basis) == ("", "")


def test_the_export_carries_the_catalogue_label_and_its_basis(
    overturned,
    pool,
    admin_user,
    client,
) -> None:
    doubtful = overturned
    client.force_login(admin_user)

    rows = export_rows(client)

    assert (rows[doubtful.pk]["catalogue_label"], rows[doubtful.pk]["catalogue_basis"]) == ("FRII", BASIS_COMBINED)
    assert rows[doubtful.pk]["predicted_label"] == "FRI"
    assert 0.5 < float(rows[doubtful.pk]["catalogue_confidence"]) <= 1.0
    assert (rows[pool[0].pk]["catalogue_label"], rows[pool[0].pk]["catalogue_basis"]) == ("FRI", BASIS_VOLUNTEERS)
    assert rows[pool[0].pk]["catalogue_confidence"] == ""
    assert rows[pool[55].pk]["catalogue_basis"] == BASIS_CLASSIFIER
    assert rows[pool[55].pk]["catalogue_label"] == rows[pool[55].pk]["predicted_label"] == "FRII"


def test_the_source_page_states_the_catalogue_label_and_where_it_comes_from(
    overturned,
    pool,
    admin_user,
    client,
) -> None:
    doubtful = overturned
    client.force_login(admin_user)

    page = client.get(reverse("science:source", args=[doubtful.pk])).content.decode()
    assert "Catalogue label: <b>FRII</b>, from its votes so far and the classifier" in page
    page = client.get(reverse("science:source", args=[pool[0].pk])).content.decode()
    assert "Catalogue label: <b>FRI</b>, from the volunteers' consensus" in page


def test_the_dashboard_says_what_the_catalogue_rests_on(
    trained,  # noqa: F811
    pool,
    workflow,
    volunteer,
    admin_user,
    client,
) -> None:
    vote(volunteer, pool[50], "FRII", workflow)
    vote(volunteer, pool[51], "FRII", workflow)
    client.force_login(admin_user)
    open_subjects = Subject.objects.filter(workflow=workflow, retired_at__isnull=True)
    unseen = open_subjects.filter(vote_count=0).count()
    retired = Subject.objects.filter(workflow=workflow, retired_at__isnull=False).exclude(retire_reason="gold").count()

    page = client.get(reverse("science:dashboard")).content.decode()

    assert f"<b>{retired}</b> from the volunteers' consensus" in page and retired == 20
    assert "<b>2</b> from their votes so far and the classifier" in page
    assert f"<b>{unseen}</b> from the classifier alone" in page and unseen == 70 - 20 - 2
