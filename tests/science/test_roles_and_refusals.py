"""The scientist role (command and admin action), the styled 403 page, and one log line per refusal."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse

from rgzlabel.science.roles import SCIENTISTS_GROUP, is_scientist

pytestmark = pytest.mark.django_db


def test_the_command_grants_and_revokes_the_scientist_role(volunteer, other_volunteer, capsys) -> None:
    call_command("scientist", "--grant", "alice", "bob")
    assert "alice: now a scientist" in capsys.readouterr().out
    assert is_scientist(volunteer) and is_scientist(other_volunteer)
    call_command("scientist", "--grant", "alice")
    assert "alice: already a scientist" in capsys.readouterr().out
    call_command("scientist", "--list")
    assert capsys.readouterr().out.split() == ["alice", "bob"]
    call_command("scientist", "--revoke", "bob")
    assert "bob: no longer a scientist" in capsys.readouterr().out
    assert not is_scientist(other_volunteer)


def test_an_unknown_name_changes_nothing(volunteer) -> None:
    with pytest.raises(CommandError, match="no such user: nobody"):
        call_command("scientist", "--grant", "alice", "nobody")
    assert not is_scientist(volunteer)


def test_admins_grant_and_revoke_the_role_from_the_users_list(client, admin_user, volunteer) -> None:
    client.force_login(admin_user)
    url = reverse("admin:auth_user_changelist")
    response = client.post(url, {"action": "grant_scientist", "_selected_action": [volunteer.pk]}, follow=True)
    assert "1 user(s) made scientists" in response.content.decode()
    assert volunteer.groups.filter(name=SCIENTISTS_GROUP).exists()
    client.post(url, {"action": "revoke_scientist", "_selected_action": [volunteer.pk]})
    assert not volunteer.groups.filter(name=SCIENTISTS_GROUP).exists()


def test_a_volunteer_gets_a_styled_page_naming_the_role_and_no_traceback(client, volunteer, caplog) -> None:
    client.force_login(volunteer)
    with caplog.at_level(logging.INFO):
        response = client.get(reverse("science:dashboard"))
    assert response.status_code == 403
    page = response.content.decode()
    assert "This page is for scientists" in page and "<b>scientists</b> group" in page
    assert "manage.py scientist --grant alice" in page and 'href="/favicon.ico"' in page  # the site's own page
    refusals = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in refusals] == ["Forbidden: /science/"]
    assert all(r.exc_info is None for r in caplog.records)


def test_each_request_warning_reaches_exactly_one_handler() -> None:
    """Django's default config and ours both had a console handler: every warning came out twice."""
    handlers = []
    logger: logging.Logger | None = logging.getLogger("django.request")
    while logger is not None:
        # pytest's own capture handlers come and go per test; count the configured ones.
        handlers += [
            h
            for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not type(h).__module__.startswith("_pytest")
        ]
        logger = logger.parent if logger.propagate else None
    assert len(handlers) == 1, handlers


def test_the_admin_says_queue_policies(client, admin_user) -> None:
    client.force_login(admin_user)
    page = client.get(reverse("admin:index")).content.decode()
    assert "Queue policies" in page and "Queue policys" not in page


def test_the_favicon_answers_and_is_linked(client) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert 'rel="icon" href="/favicon.ico"' in client.get("/").content.decode()


def test_scientists_group_members_pass(client, volunteer) -> None:
    volunteer.groups.add(Group.objects.get_or_create(name=SCIENTISTS_GROUP)[0])
    client.force_login(volunteer)
    assert client.get(reverse("science:flags")).status_code == 200
