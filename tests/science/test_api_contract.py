"""The API against its own OpenAPI schema: generated requests (schemathesis) never get a 5xx.

The schema is fetched from the live ``/api/schema/`` of Django's WSGI application when the
module is collected (it needs no database). Requests go through the same application in this
process, so they see the test's database transaction; as a volunteer and as an admin (by
token), with a labelled catalogue in place.

Not ``schemathesis.pytest.from_fixture``: its lazy loader sets pytest's private
``Item._nodeid``, which pytest 9 no longer has.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test.utils import override_settings
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.django_db

CONTRACT = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same requests every run
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=list(HealthCheck),
)


WSGI_HOST = "localhost"  # the host name schemathesis's WSGI client sends

with override_settings(ALLOWED_HOSTS=[WSGI_HOST]):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture(autouse=True)
def in_test_transaction(catalogue, settings):
    """Serve the generated requests inside the test's transaction, with data in place."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, WSGI_HOST]
    # As Django's test client does: a request must not close the test's connection (its
    # transaction holds the test data).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def token_header(user) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


@schema.parametrize()
@CONTRACT
def test_no_server_errors_for_a_volunteer(case, volunteer) -> None:
    case.call_and_validate(headers=token_header(volunteer), checks=[not_a_server_error])


@schema.parametrize()
@CONTRACT
def test_no_server_errors_for_an_admin(case, admin_user) -> None:
    case.call_and_validate(headers=token_header(admin_user), checks=[not_a_server_error])
