"""The volunteer's pages and API, with personas: volunteer, guest, scientist/admin, outsider."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from rgzlabel.labelling.models import Assignment, Classification, VolunteerProfile
from tests.voting import serve

pytestmark = pytest.mark.django_db


def test_an_outsider_is_offered_to_start(client, make_source) -> None:
    response = client.get(reverse("labelling:label"))
    assert response.status_code == 200
    assert b"Start now, no account needed" in response.content


def test_guests_are_refused_when_the_setting_forbids_them(client, settings) -> None:
    settings.RGZ_ALLOW_GUESTS = False
    response = client.post(reverse("labelling:guest"))
    assert response.status_code == 302
    assert not VolunteerProfile.objects.exists()


def test_a_guest_keeps_their_votes_when_signing_up(client, make_source, django_user_model) -> None:
    source = make_source()
    client.post(reverse("labelling:guest"))
    assert client.get(reverse("labelling:api-next")).json()["source"]["id"] == source.pk
    client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "FRII"})
    guest_id = Classification.objects.get().volunteer_id

    response = client.post(
        reverse("signup"),
        {
            "username": "carol",
            "email": "carol@example.org",
            "password1": "radio lobes 1420",
            "password2": "radio lobes 1420",
        },
    )

    assert response.status_code == 302
    carol = django_user_model.objects.get(username="carol")
    assert carol.pk == guest_id
    assert Classification.objects.get().volunteer == carol
    assert not VolunteerProfile.objects.get(user=carol).is_guest


def test_the_label_page_shows_the_next_source_and_the_tutorial_once(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    page = client.get(reverse("labelling:label")).content.decode()
    assert source.name in page
    assert reverse("catalog:thumbnail", args=[source.pk]) in page
    assert 'data-first-visit="1"' in page
    client.post(reverse("labelling:api-tutorial-seen"))
    assert 'data-first-visit="0"' in client.get(reverse("labelling:label")).content.decode()


def test_the_api_votes_and_answers_a_repeat_as_success(client, volunteer, make_source, workflow) -> None:
    source = make_source()
    serve(volunteer, source.pk, workflow)
    client.force_login(volunteer)
    first = client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "hybrid"})
    again = client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "hybrid"})
    assert first.status_code == again.status_code == 200
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert Classification.objects.get(volunteer=volunteer).label == "hybrid"


@pytest.mark.parametrize(
    ("data", "message"),
    [({"source": "", "label": "FRI"}, "named no source"), ({"label": "FRIII"}, "unknown label")],
)
def test_the_api_rejects_bad_votes_clearly(client, volunteer, make_source, data, message) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = client.post(reverse("labelling:api-vote"), {"source": source.pk, **data})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Classification.objects.exists()


def test_the_api_answers_429_when_rate_limited(client, volunteer, make_source, settings, workflow) -> None:
    settings.RGZ_VOTES_PER_MINUTE = 1
    first, second = make_source(), make_source()
    serve(volunteer, first.pk, workflow)
    serve(volunteer, second.pk, workflow)
    client.force_login(volunteer)
    client.post(reverse("labelling:api-vote"), {"source": first.pk, "label": "FRI"})
    response = client.post(reverse("labelling:api-vote"), {"source": second.pk, "label": "FRI"})
    assert response.status_code == 429


def test_a_vote_without_a_csrf_token_is_refused(volunteer, make_source) -> None:
    source = make_source()
    client = Client(enforce_csrf_checks=True)
    client.force_login(volunteer)
    response = client.post(reverse("labelling:api-vote"), {"source": source.pk, "label": "FRI"})
    assert response.status_code == 403
    assert not Classification.objects.exists()


def test_the_api_needs_a_volunteer(client, make_source) -> None:
    assert client.get(reverse("labelling:api-next")).status_code == 401
    assert client.post(reverse("labelling:api-vote"), {"source": make_source().pk, "label": "FRI"}).status_code == 401


def test_undo_and_skip_through_the_api(client, volunteer, make_source, workflow) -> None:
    first, second = make_source(), make_source()
    serve(volunteer, first.pk, workflow)
    client.force_login(volunteer)
    client.post(reverse("labelling:api-vote"), {"source": first.pk, "label": "FRI"})
    undone = client.post(reverse("labelling:api-undo")).json()
    assert undone["source"]["id"] == first.pk
    assert not Classification.objects.exists()
    assert client.post(reverse("labelling:api-undo")).status_code == 409  # nothing left to undo
    skipped = client.post(reverse("labelling:api-skip"), {"source": first.pk, "exclude": first.pk}).json()
    assert skipped["ok"] and skipped["next"]["id"] == second.pk  # the skip answers with the next subject
    assert not Assignment.objects.filter(subject__source=first).exists()  # and gave the skipped one back
    assert client.get(reverse("labelling:api-next"), {"exclude": first.pk}).json()["source"]["id"] == second.pk


def test_the_volunteer_page_counts_their_own_votes_only(
    client, volunteer, other_volunteer, make_source, workflow
) -> None:
    from tests.voting import served_vote

    for source in [make_source() for _ in range(3)]:
        served_vote(volunteer, source.pk, "FRI", workflow)
    served_vote(other_volunteer, make_source().pk, "FRII", workflow)
    client.force_login(volunteer)
    page = client.get(reverse("labelling:me")).content.decode()
    assert '<b id="n-votes">3</b>' in page
    assert '<b id="streak">1</b>' in page


@pytest.mark.parametrize("url_name", ["learning:jobs", "admin:index"])
def test_volunteers_cannot_open_staff_pages(client, volunteer, url_name) -> None:
    client.force_login(volunteer)
    response = client.get(reverse(url_name))
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_admins_can_open_staff_pages(client, admin_user) -> None:
    client.force_login(admin_user)
    assert client.get(reverse("learning:jobs")).status_code == 200


def test_password_reset_sends_an_email(client, django_user_model) -> None:
    django_user_model.objects.create_user("dana", email="dana@example.org", password="x")
    response = client.post(reverse("password_reset"), {"email": "dana@example.org"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert "/accounts/reset/" in mail.outbox[0].body
