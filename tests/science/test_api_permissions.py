"""Who may call each API endpoint and export: outsider, volunteer, scientist, admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.learning.models import Job
from tests.science.conftest import PERSONAS

pytestmark = pytest.mark.django_db

#: Expected status per persona, in the order of PERSONAS (outsider, volunteer, scientist, admin).
SCIENCE_ONLY = (401, 403, 200, 200)
ANY_MEMBER = (401, 200, 200, 200)
ADMIN_ONLY = (401, 403, 403, 200)


def endpoints(catalogue, job: Job) -> list[tuple[str, tuple[int, ...]]]:
    source = catalogue.sources[0]
    exports = [
        reverse(f"exports:{d}-{f}") for d in ("sources", "classifications", "flags") for f in ("csv", "votable", "fits")
    ]
    return [
        (reverse("api:source-list"), SCIENCE_ONLY),
        (reverse("api:source-detail", args=[source.pk]), SCIENCE_ONLY),
        (reverse("api:consensus-list"), SCIENCE_ONLY),
        (reverse("api:encoder-list"), SCIENCE_ONLY),
        (reverse("api:embedding-set-list"), SCIENCE_ONLY),
        (reverse("api:embedding-set-detail", args=[catalogue.classifier.embedding_set_id]), SCIENCE_ONLY),
        (reverse("api:classifier-list"), SCIENCE_ONLY),
        (reverse("api:classifier-detail", args=[catalogue.classifier.pk]), SCIENCE_ONLY),
        (reverse("api:exports"), SCIENCE_ONLY),
        *[(url, SCIENCE_ONLY) for url in exports],
        (reverse("api:classification-list"), ANY_MEMBER),
        (reverse("api:job-list"), ADMIN_ONLY),
        (reverse("api:job-detail", args=[job.pk]), ADMIN_ONLY),
    ]


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_endpoint_admits_exactly_its_personas(api_as, persona, catalogue) -> None:
    job = Job.objects.create(kind=Job.Kind.EMBED, state=Job.State.SUCCEEDED)
    client = api_as(persona)
    for url, expected in endpoints(catalogue, job):
        assert client.get(url).status_code == expected[PERSONAS.index(persona)], (persona, url)


def test_an_outsider_is_told_to_authenticate_by_token(api_as) -> None:
    response = api_as("outsider").get(reverse("api:source-list"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_the_schema_and_docs_are_public(client) -> None:
    schema = client.get(reverse("api:schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/sources/" in schema.json()["paths"]
    assert client.get(reverse("api:docs")).status_code == 200


def test_a_volunteer_gets_a_token_with_their_password(client, volunteer) -> None:
    response = client.post(reverse("api:token"), {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 200 and len(response.json()["token"]) == 40


def test_a_session_login_works_too(client, scientist) -> None:
    client.force_login(scientist)
    assert client.get(reverse("api:source-list")).status_code == 200


def test_the_scientists_group_comes_from_a_migration() -> None:
    from django.contrib.auth.models import Group

    assert Group.objects.filter(name="scientists").exists()


def test_the_api_docs_load_their_scripts_from_this_server(client) -> None:
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "cdn.jsdelivr" not in page and "/static/drf_spectacular_sidecar/" in page
