"""Ballot stuffing: fresh accounts voting on sources of their choice, and their weight in the consensus."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from rgzlabel.labelling.models import Classification, GoldLabel, Subject, VolunteerProfile
from rgzlabel.labelling.services import recompute_consensus, record_classification
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


def guest_client(address: str) -> Client:
    client = Client(REMOTE_ADDR=address)
    assert client.post(reverse("labelling:guest")).status_code == 302
    return client


def test_five_fresh_guests_cannot_retire_a_source_they_were_not_served(make_source, workflow) -> None:
    workflow.retire_after = 5
    workflow.save()
    target = make_source()
    guests = [guest_client(f"10.0.0.{i}") for i in range(5)]
    for client in guests:
        response = client.post(reverse("labelling:api-vote"), {"source": target.pk, "label": "hybrid"})
        assert response.status_code == 400
        assert "not being shown to you" in response.json()["error"]
    subject = Subject.objects.get(source=target, workflow=workflow)
    assert (subject.vote_count, subject.retired_at) == (0, None)
    assert not Classification.objects.exists()


def test_a_vote_on_the_source_the_page_served_is_taken(make_source, workflow) -> None:
    source = make_source()
    client = guest_client("10.0.0.1")
    assert client.get(reverse("labelling:api-next")).json()["source"]["id"] == source.pk
    assert client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "FRI"}).json()["created"]


def test_a_vote_after_the_hold_expired_is_refused(volunteer, make_source, workflow) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from rgzlabel.labelling.models import Assignment
    from rgzlabel.labelling.services import VoteRejected
    from tests.voting import serve

    source = make_source()
    serve(volunteer, source.pk, workflow)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(VoteRejected, match="not being shown to you"):
        record_classification(volunteer, source.pk, "FRI", workflow)


def test_guest_creation_is_throttled_per_client(settings) -> None:
    settings.RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR = 3
    for _ in range(3):
        guest_client("192.0.2.7")
    refused = Client(REMOTE_ADDR="192.0.2.7").post(reverse("labelling:guest"))
    assert refused.status_code == 429
    assert b"Too many new accounts from your network" in refused.content
    assert VolunteerProfile.objects.filter(is_guest=True).count() == 3
    guest_client("192.0.2.8")  # another client is not affected
    assert VolunteerProfile.objects.filter(is_guest=True).count() == 4


def test_sign_ups_count_against_the_same_limit(settings, django_user_model) -> None:
    settings.RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR = 1
    guest_client("192.0.2.9")

    response = Client(REMOTE_ADDR="192.0.2.9").post(
        reverse("signup"),
        {"username": "mallory", "password1": "radio lobes 1420", "password2": "radio lobes 1420"},
    )

    assert response.status_code == 429
    assert not django_user_model.objects.filter(username="mallory").exists()


def test_behind_a_proxy_the_client_is_the_address_the_proxy_saw(settings) -> None:
    settings.RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR = 1
    settings.RGZ_BEHIND_PROXY = True
    proxy = "10.1.1.1"
    # The first entry is whatever the client claims; the last is the one our proxy appended.
    first = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.4")
    assert first.post(reverse("labelling:guest")).status_code == 302
    spoofed = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="2.2.2.2, 198.51.100.4")
    assert spoofed.post(reverse("labelling:guest")).status_code == 429
    other = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.5")
    assert other.post(reverse("labelling:guest")).status_code == 302


def test_a_new_volunteers_vote_weighs_less_than_a_proven_ones(django_user_model, make_source, workflow) -> None:
    """A volunteer proven on gold outweighs a fresh account that disagrees, in the background consensus."""
    proven = django_user_model.objects.create_user("proven")
    newcomer = django_user_model.objects.create_user("newcomer")
    for i in range(16):
        gold_source = make_source()
        label = workflow.class_keys[i % 4]
        GoldLabel.objects.create(workflow=workflow, source=gold_source, label=label)
        served_vote(proven, gold_source.pk, label, workflow)
    contested = make_source()
    # The newcomer's label comes first in the class order, so a tie would go its way.
    served_vote(newcomer, contested.pk, "FRI", workflow)
    served_vote(proven, contested.pk, "FRII", workflow)

    recompute_consensus(workflow)

    subject = Subject.objects.get(source=contested, workflow=workflow)
    assert subject.weighted_label == "FRII"
    # And on the hot path: the next vote re-scores the subject with the stored matrices.
    third = django_user_model.objects.create_user("third")
    served_vote(third, contested.pk, "FRI", workflow)
    subject.refresh_from_db()
    assert subject.weighted_label == "FRII"  # one proven voice still outweighs two new ones


def test_a_new_volunteers_confusion_is_close_to_chance() -> None:
    from ml.consensus import prior_confusion

    matrix = prior_confusion(4)
    assert matrix[0, 0] < 0.4  # four classes: chance is 0.25
