"""Votes through the API: a volunteer sees and creates only their own, via the labelling service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import Classification, Subject
from tests.voting import serve

pytestmark = pytest.mark.django_db


def test_a_volunteer_records_a_vote_that_counts(api_as, make_source, volunteer) -> None:
    source = make_source()
    client = api_as("volunteer")
    assert client.get(reverse("api:classification-next")).json()["source"]["id"] == source.pk
    response = client.post(reverse("api:classification-list"), {"source": source.pk, "label": "FRI"})
    assert response.status_code == 201, response.content
    assert response.json()["label"] == "FRI" and response.json()["workflow"] == "fr-morphology"
    vote = Classification.objects.get()
    assert vote.volunteer == volunteer and vote.source == source
    assert Subject.objects.get(source=source).vote_count == 1  # counted by record_classification


def test_a_repeated_vote_is_answered_with_the_stored_one(api_as, make_source, volunteer, workflow) -> None:
    source = make_source()
    serve(volunteer, source.pk, workflow)
    client = api_as("volunteer")
    first = client.post(reverse("api:classification-list"), {"source": source.pk, "label": "FRI"})
    again = client.post(reverse("api:classification-list"), {"source": source.pk, "label": "FRII"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["label"] == "FRI"
    assert Subject.objects.get(source=source).vote_count == 1


def test_a_volunteer_sees_only_their_own_votes(api_as, catalogue, volunteer, other_volunteer) -> None:
    theirs = Classification.objects.get(volunteer=other_volunteer)
    client = api_as("volunteer")
    rows = client.get(reverse("api:classification-list")).json()["results"]
    assert [r["id"] for r in rows] == [Classification.objects.get(volunteer=volunteer).pk]
    assert client.get(reverse("api:classification-detail", args=[theirs.pk])).status_code == 404


def test_a_scientist_with_no_votes_sees_none(api_as, catalogue) -> None:
    assert api_as("scientist").get(reverse("api:classification-list")).json()["count"] == 0


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"label": "FRI"}, "source", "required"),
        ({"source": 999999, "label": "FRI"}, "source", "does not exist"),
        ({"source": "x", "label": "FRI"}, "source", "Incorrect type"),
        ({"source": "new", "label": "FRI", "workflow": "nope"}, "workflow", "does not exist"),
    ],
)
def test_a_bad_vote_is_a_400_naming_the_field(api_as, make_source, payload, field, words) -> None:
    if payload.get("source") == "new":
        payload = {**payload, "source": make_source().pk}
    response = api_as("volunteer").post(reverse("api:classification-list"), payload, format="json")
    assert response.status_code == 400
    assert words in " ".join(response.json()[field])
    assert not Classification.objects.exists()


def test_a_source_not_served_is_refused(api_as, make_source) -> None:
    response = api_as("volunteer").post(
        reverse("api:classification-list"), {"source": make_source().pk, "label": "FRI"}
    )
    assert response.status_code == 400
    assert "not being shown to you" in response.json()["detail"]
    assert not Classification.objects.exists()


def test_next_serves_nothing_when_all_is_labelled(api_as) -> None:
    assert api_as("volunteer").get(reverse("api:classification-next")).json() == {"source": None}


def test_an_unknown_label_is_refused_by_the_service(api_as, make_source) -> None:
    response = api_as("volunteer").post(reverse("api:classification-list"), {"source": make_source().pk, "label": "X"})
    assert response.status_code == 400
    assert "unknown label 'X'" in response.json()["detail"]


def test_too_many_votes_a_minute_is_a_429(api_as, make_source, settings, volunteer, workflow) -> None:
    settings.RGZ_VOTES_PER_MINUTE = 1
    client = api_as("volunteer")
    first, second = make_source(), make_source()
    serve(volunteer, first.pk, workflow)
    serve(volunteer, second.pk, workflow)
    assert client.post(reverse("api:classification-list"), {"source": first.pk, "label": "FRI"}).status_code == 201
    response = client.post(reverse("api:classification-list"), {"source": second.pk, "label": "FRI"})
    assert response.status_code == 429 and "slow down" in response.json()["detail"]


def test_outsiders_cannot_vote(api_as, make_source) -> None:
    response = api_as("outsider").post(reverse("api:classification-list"), {"source": make_source().pk, "label": "FRI"})
    assert response.status_code == 401
    assert not Classification.objects.exists()
