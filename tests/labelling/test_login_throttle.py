"""Brute force on the log-in page, the admin's log-in and the API's token endpoint: refused after the limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from rgzlabel.labelling.models import RateLimitCounter

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"  # the personas' password (tests/conftest.py)


@pytest.fixture(autouse=True)
def limits(settings):
    settings.RGZ_LOGIN_FAILURES_PER_ACCOUNT = 5
    settings.RGZ_LOGIN_FAILURES_PER_CLIENT = 8
    # Windows are aligned to the epoch: a test that started a second before a 15-minute boundary
    # would count its attempts in two windows (CI met one). A window of ~31 years is never crossed.
    settings.RGZ_LOGIN_WINDOW_S = 10**9


def log_in(username: str, password: str, address: str = "203.0.113.1"):
    return Client(REMOTE_ADDR=address).post(reverse("login"), {"username": username, "password": password})


def test_an_account_is_refused_after_too_many_wrong_passwords(volunteer) -> None:
    for _ in range(5):
        assert log_in("alice", "guess").status_code == 200  # the form again, with its error
    refused = log_in("alice", PASSWORD, address="203.0.113.99")  # even the right one, from anywhere
    assert refused.status_code == 429
    assert "Too many failed log-ins" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session


def test_one_client_is_refused_after_too_many_failures_on_any_accounts(volunteer, other_volunteer) -> None:
    for i in range(8):
        log_in(f"nobody{i}", "guess")
    assert log_in("bob", PASSWORD).status_code == 429
    assert log_in("bob", PASSWORD, address="203.0.113.2").status_code == 302  # another client logs in


def test_successful_log_ins_do_not_count(volunteer) -> None:
    for _ in range(12):
        assert log_in("alice", PASSWORD).status_code == 302
    assert log_in("alice", "guess").status_code == 200


def test_the_admin_log_in_has_the_same_limit(admin_user) -> None:
    client = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(5):
        client.post(reverse("admin:login"), {"username": "root", "password": "guess"})
    response = client.post(reverse("admin:login"), {"username": "root", "password": PASSWORD})
    assert "Too many failed log-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_token_endpoint_answers_429_after_too_many_failures(volunteer) -> None:
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    url = reverse("api:token")
    for _ in range(5):
        assert client.post(url, {"username": "alice", "password": "guess"}).status_code == 400
    refused = client.post(url, {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429
    assert "Too many failed log-ins" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_guesses_are_held_to_the_limit(volunteer) -> None:
    """The counter lives in the database and is exact under concurrency (PostgreSQL in CI)."""

    def guess(_):
        try:
            return log_in("alice", "guess", address="203.0.113.8").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(guess, range(30)))

    assert statuses.count(200) == 5  # wrong passwords that were checked
    assert statuses.count(429) == 25
    assert RateLimitCounter.objects.filter(scope="login/account").get().hits >= 5
