"""Sessions read from a cache in front of the session table (Redis in production): one database
round trip fewer per request, and a Redis that is down costs speed, never the site."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import Subject
from rgzlabel.labelling.services import profile_of
from tests.labelling.test_round_trip import CLASSIFICATION_STATEMENTS, at_most_statements

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def cached_sessions(settings, backend: str, location: str = "") -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {"BACKEND": backend, "LOCATION": location, "TIMEOUT": 300},
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    settings.SESSION_CACHE_ALIAS = "sessions"


def test_a_cached_session_saves_the_session_read(client, settings, volunteer, make_source, workflow) -> None:
    cached_sessions(settings, "django.core.cache.backends.locmem.LocMemCache", "sessions")
    for position in range(3):
        Subject.objects.filter(source=make_source()).update(priority=1.0 - position / 3)
    profile_of(volunteer)
    client.force_login(volunteer)
    current = client.get(reverse("labelling:api-next")).json()["source"]
    with at_most_statements(CLASSIFICATION_STATEMENTS - 1):  # no django_session read
        answer = client.post(reverse("labelling:api-vote"), {"source": current["id"], "label": "FRI"}).json()
    assert answer["created"] and answer["next"] is not None


def test_an_unreachable_redis_falls_back_to_the_database(client, settings, volunteer, make_source, caplog) -> None:
    cached_sessions(settings, "rgzlabel.sessions.SessionCache", UNREACHABLE)
    make_source()
    client.force_login(volunteer)  # written to the database; the cache write fails quietly

    answer = client.get(reverse("labelling:api-next"))

    assert answer.status_code == 200 and answer.json()["source"] is not None  # still logged in
    assert "session cache unreachable" in caplog.text
    client.logout()
    assert client.get(reverse("labelling:api-next")).status_code == 401


def test_entries_live_at_most_the_cache_timeout() -> None:
    from rgzlabel.sessions import SessionCache

    cache = SessionCache(UNREACHABLE, {"TIMEOUT": 300})
    assert cache._capped(14 * 24 * 3600) == 300  # a two-week session is cached for 5 minutes
    assert cache._capped(60) == 60
    assert cache.get("missing", "fallback") == "fallback"
