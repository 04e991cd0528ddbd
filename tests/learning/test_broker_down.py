"""With the broker down, volunteers keep labelling and triggers fail with a clear message."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rgzlabel.labelling.models import Classification
from rgzlabel.learning import dispatch
from rgzlabel.learning.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down(settings):
    dispatch.celery_client.cache_clear()
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1}
    settings.BROKER_DESCRIPTION = "Redis (REDIS_URL)"
    yield
    dispatch.celery_client.cache_clear()


def test_volunteers_label_while_the_broker_is_down(client, volunteer, make_source, broker_down) -> None:
    make_source()
    client.force_login(volunteer)
    served = client.get(reverse("labelling:api-next")).json()["source"]
    response = client.post(reverse("labelling:api-vote"), {"source": served["id"], "label": "FRII"})
    assert response.status_code == 200 and response.json()["created"]
    assert Classification.objects.filter(volunteer=volunteer).count() == 1


@pytest.mark.django_db(transaction=True)  # real commits, so the job is sent while the view runs
def test_a_trigger_fails_with_a_clear_message(client, admin_user, broker_down) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("learning:trigger"), {"kind": "retrain"}, follow=True)
    page = response.content.decode()
    assert "the broker (Redis (REDIS_URL)) is unreachable" in page
    assert Job.objects.get().state == Job.State.FAILED  # nothing waits forever for a lost message
