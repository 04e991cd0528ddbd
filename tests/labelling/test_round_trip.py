"""One round trip per classification: the vote's answer carries the next subject, lean on SQL.

The statement budgets are the figures measured when the hot path was cut (issue 17, from 22
statements per classification over two requests); a change that adds a statement to every
vote fails here and has to say why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rgzlabel.labelling.models import Assignment, Classification, Subject
from rgzlabel.labelling.services import DEFAULT_WORKFLOW_SLUG, next_subject, profile_of, record_classification
from tests.voting import serve

pytestmark = pytest.mark.django_db

#: Statements of one vote in the service (lock the volunteer; lock the subject with its workflow;
#: take the hold and count the last minute's votes; insert; read the subject's votes; write it).
VOTE_STATEMENTS = 6
#: Statements of one classification request: the session and the user (Django's middleware),
#: the vote, then the next subject (claim it, hold it).
CLASSIFICATION_STATEMENTS = 10


#: Transaction control, which SQLite's driver sends as statements and PostgreSQL's does not.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@contextmanager
def at_most_statements(budget: int) -> Iterator[None]:
    """Fail when the block runs more than ``budget`` SQL statements (transaction control aside)."""
    with CaptureQueriesContext(connection) as captured:
        yield
    statements = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
    assert len(statements) <= budget, f"{len(statements)} statements, budget {budget}:\n" + "\n".join(statements)


@pytest.fixture
def ranked(workflow, make_source):
    """Twelve sources with a stored ranking, as in a running campaign (best first)."""
    sources = [make_source() for _ in range(12)]
    for position, source in enumerate(sources):
        Subject.objects.filter(workflow=workflow, source=source).update(priority=1.0 - position / len(sources))
    return sources


def test_the_vote_answers_with_the_next_subject_as_next_serves_it(client, volunteer, ranked, workflow) -> None:
    client.force_login(volunteer)
    first = client.get(reverse("labelling:api-next")).json()["source"]
    assert first["id"] == ranked[0].pk
    queued = [ranked[1].pk, ranked[2].pk]  # what the page already holds (its prefetched queue)
    for source_id in queued:
        serve(volunteer, source_id, workflow)

    answer = client.post(reverse("labelling:api-vote"), {"source": first["id"], "label": "FRI", "exclude": queued})

    assert answer.status_code == 200 and answer.json()["created"]
    following = answer.json()["next"]
    assert following["id"] == ranked[3].pk  # the best subject not voted on and not already held by the page
    assert set(following) == set(first)  # the same object api/next answers with
    assert following["thumbnail"] == reverse("catalog:thumbnail", args=[ranked[3].pk])
    # It is held for the volunteer, so the page can vote on it without asking again.
    assert Assignment.objects.filter(volunteer=volunteer, subject__source_id=ranked[3].pk).exists()
    vote = client.post(reverse("labelling:api-vote"), {"source": following["id"], "label": "FRII"})
    assert vote.json()["created"]
    assert Classification.objects.filter(volunteer=volunteer).count() == 2


def test_a_refused_vote_answers_with_the_next_subject_and_a_rate_limited_one_does_not(
    client, volunteer, ranked, workflow, settings
) -> None:
    client.force_login(volunteer)
    refused = client.post(reverse("labelling:api-vote"), {"source": ranked[5].pk, "label": "FRI"})  # never served
    assert refused.status_code == 400 and "not being shown to you" in refused.json()["error"]
    assert refused.json()["next"]["id"] == ranked[0].pk  # the page moves on to a subject it may vote on

    settings.RGZ_VOTES_PER_MINUTE = 1
    assert client.post(reverse("labelling:api-vote"), {"source": ranked[0].pk, "label": "FRI"}).status_code == 200
    serve(volunteer, ranked[1].pk, workflow)
    limited = client.post(reverse("labelling:api-vote"), {"source": ranked[1].pk, "label": "FRI"})
    assert limited.status_code == 429 and "next" not in limited.json()
    assert Assignment.objects.filter(volunteer=volunteer, subject__source=ranked[1]).exists()  # still theirs


def test_the_last_subject_answers_next_null(client, volunteer, make_source, workflow) -> None:
    only = make_source()
    serve(volunteer, only.pk, workflow)
    client.force_login(volunteer)
    answer = client.post(reverse("labelling:api-vote"), {"source": only.pk, "label": "FRI"}).json()
    assert answer["created"] and answer["next"] is None


def test_release_gives_back_the_pages_queue_and_only_its_own(
    client, volunteer, other_volunteer, ranked, workflow
) -> None:
    for source in ranked[:3]:
        serve(volunteer, source.pk, workflow)
    serve(other_volunteer, ranked[0].pk, workflow)
    client.force_login(volunteer)

    answer = client.post(reverse("labelling:api-release"), {"source": [ranked[0].pk, ranked[1].pk, ranked[9].pk]})

    assert answer.json() == {"ok": True, "released": 2}
    assert list(Assignment.objects.filter(volunteer=volunteer).values_list("subject__source_id", flat=True)) == [
        ranked[2].pk
    ]
    assert Assignment.objects.filter(volunteer=other_volunteer, subject__source=ranked[0]).exists()
    assert client.post(reverse("labelling:api-release"), {"source": "x"}).status_code == 400


@pytest.mark.django_db(transaction=True)  # no test transaction around it: no savepoints are counted
def test_a_vote_costs_at_most_its_statement_budget(volunteer, ranked, workflow) -> None:
    profile_of(volunteer)  # a volunteer who has labelled before has a profile
    served = next_subject(volunteer, workflow)
    assert served is not None
    with at_most_statements(VOTE_STATEMENTS):
        outcome = record_classification(volunteer, served.subject.source_id, "FRI", DEFAULT_WORKFLOW_SLUG)
    assert outcome.created and Classification.objects.get().source_id == served.subject.source_id


@pytest.mark.django_db(transaction=True)
def test_a_classification_request_costs_at_most_its_statement_budget(client, volunteer, ranked) -> None:
    profile_of(volunteer)
    client.force_login(volunteer)
    current = client.get(reverse("labelling:api-next")).json()["source"]
    for _ in range(3):
        with at_most_statements(CLASSIFICATION_STATEMENTS):
            answer = client.post(reverse("labelling:api-vote"), {"source": current["id"], "label": "FRI"}).json()
        assert answer["created"]
        current = answer["next"]
    assert Classification.objects.filter(volunteer=volunteer).count() == 3
