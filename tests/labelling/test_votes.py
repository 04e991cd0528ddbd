from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Classification
from rgzlabel.labelling.services import VoteRejected, default_workflow, next_source, record_classification

pytestmark = pytest.mark.django_db


def test_it_records_one_vote_and_counts_it(volunteer, make_source) -> None:
    source = make_source()
    outcome = record_classification(volunteer, source.pk, "FRII", default_workflow())
    assert outcome.created
    assert Classification.objects.get().label == "FRII"
    assert Source.objects.get(pk=source.pk).vote_count == 1


def test_a_double_submit_records_one_vote_and_succeeds_twice(volunteer, make_source) -> None:
    source = make_source()
    workflow = default_workflow()
    first = record_classification(volunteer, source.pk, "FRI", workflow)
    second = record_classification(volunteer, source.pk, "FRI", workflow)
    assert (first.created, second.created) == (True, False)
    assert second.classification.pk == first.classification.pk
    assert Classification.objects.count() == 1
    assert Source.objects.get(pk=source.pk).vote_count == 1


def test_the_database_refuses_a_second_vote_by_the_same_volunteer(volunteer, make_source) -> None:
    from django.db import IntegrityError, transaction

    source = make_source()
    workflow = default_workflow()
    Classification.objects.create(volunteer=volunteer, source=source, workflow=workflow, label="FRI")
    with pytest.raises(IntegrityError), transaction.atomic():
        Classification.objects.create(volunteer=volunteer, source=source, workflow=workflow, label="FRII")


def test_it_rejects_an_unknown_label(volunteer, make_source) -> None:
    source = make_source()
    with pytest.raises(VoteRejected, match="unknown label 'FRIII'"):
        record_classification(volunteer, source.pk, "FRIII", default_workflow())
    assert not Classification.objects.exists()


def test_it_retires_after_the_workflow_vote_count(django_user_model, make_source) -> None:
    workflow = default_workflow()
    workflow.retire_after = 3
    workflow.save()
    source = make_source()
    volunteers = [django_user_model.objects.create_user(f"v{i}") for i in range(4)]
    outcomes = [record_classification(v, source.pk, "FRI", workflow) for v in volunteers[:3]]
    assert [o.retired for o in outcomes] == [False, False, True]
    with pytest.raises(VoteRejected, match="already retired"):
        record_classification(volunteers[3], source.pk, "FRI", workflow)
    assert Source.objects.get(pk=source.pk).vote_count == 3


def test_next_skips_what_the_volunteer_classified_and_retired_sources(volunteer, make_source) -> None:
    from django.utils import timezone

    seen, retired, fresh = make_source(), make_source(), make_source()
    record_classification(volunteer, seen.pk, "FRI", default_workflow())
    Source.objects.filter(pk=retired.pk).update(retired_at=timezone.now())
    assert next_source(volunteer, default_workflow()) == fresh


def test_the_label_page_shows_the_next_source(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = client.get(reverse("labelling:label"))
    assert response.status_code == 200
    assert source.name in response.content.decode()
    assert reverse("catalog:thumbnail", args=[source.pk]) in response.content.decode()


def test_voting_through_the_page(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = client.post(reverse("labelling:vote"), {"source": source.pk, "label": "hybrid"})
    assert response.status_code == 302
    assert Classification.objects.get(volunteer=volunteer).label == "hybrid"


def test_a_vote_without_a_csrf_token_is_refused(volunteer, make_source) -> None:
    from django.test import Client

    source = make_source()
    client = Client(enforce_csrf_checks=True)
    client.force_login(volunteer)
    response = client.post(reverse("labelling:vote"), {"source": source.pk, "label": "FRI"})
    assert response.status_code == 403
    assert not Classification.objects.exists()


def test_an_outsider_is_sent_to_log_in(client, make_source) -> None:
    response = client.get(reverse("labelling:label"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_the_thumbnail_is_a_cached_png(client, make_source) -> None:
    source = make_source()
    response = client.get(reverse("catalog:thumbnail", args=[source.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    again = client.get(reverse("catalog:thumbnail", args=[source.pk]), HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
