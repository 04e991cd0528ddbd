"""Many volunteers at once: every vote exactly once, exact retirement, no over-assignment.

Runs on whatever database the suite is configured with: PostgreSQL in CI (row locks,
SKIP LOCKED), SQLite locally (serialised write transactions).
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.labelling.services import RateLimited, VoteRejected, next_subject, record_classification
from tests.voting import serve

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(function):
    """Run a database call in a worker thread with its own connection, closed afterwards."""

    def run(*args):
        try:
            return function(*args)
        finally:
            connection.close()

    return run


def test_concurrent_votes_are_each_recorded_once_and_retire_exactly(
    django_user_model, make_source, workflow, settings
) -> None:
    settings.RGZ_VOTES_PER_MINUTE = 0
    workflow.retire_after = 5
    workflow.save()
    sources = [make_source() for _ in range(8)]
    volunteers = [django_user_model.objects.create_user(f"v{i}") for i in range(16)]
    attempts = [(v, s, random.Random(v.pk * 1000 + s.pk).choice(["FRI", "FRII"])) for v in volunteers for s in sources]
    attempts += attempts[::3]  # double submits of a third of them
    random.Random(0).shuffle(attempts)
    for volunteer in volunteers:
        for source in sources:
            serve(volunteer, source.pk, workflow)

    @in_thread
    def attempt(volunteer, source, label):
        try:
            outcome = record_classification(volunteer, source.pk, label, workflow)
            return ("created" if outcome.created else "repeat", volunteer.pk, source.pk)
        except VoteRejected as exc:
            assert "already retired" in str(exc), exc
            return ("retired", volunteer.pk, source.pk)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda a: attempt(*a), attempts))

    created = Counter(source_id for kind, _, source_id in results if kind == "created")
    stored = Counter(Classification.objects.values_list("source_id", flat=True))
    assert stored == created  # every accepted vote is in the database exactly once
    assert set(stored.values()) == {5}  # and no source took more than its five
    assert Classification.objects.values("volunteer", "source").distinct().count() == Classification.objects.count()
    for subject in Subject.objects.filter(source__in=sources):
        assert subject.vote_count == 5
        assert subject.retired_at is not None and subject.retire_reason == "vote count"


def test_concurrent_next_never_hands_out_more_slots_than_remain(django_user_model, make_source, workflow) -> None:
    workflow.retire_after = 1
    workflow.save()
    sources = {make_source().pk for _ in range(5)}
    volunteers = [django_user_model.objects.create_user(f"n{i}") for i in range(12)]

    @in_thread
    def ask(volunteer):
        served = next_subject(volunteer, workflow)
        return served.subject.source_id if served else None

    with ThreadPoolExecutor(max_workers=12) as pool:
        served = [s for s in pool.map(ask, volunteers) if s is not None]

    assert len(served) == len(set(served))  # no subject needing one vote went to two volunteers
    assert set(served) <= sources
    assert len(served) == 5  # and every free slot was handed out


def test_one_volunteer_firing_votes_at_once_stays_within_the_rate_limit(
    volunteer, make_source, workflow, settings
) -> None:
    """200 concurrent votes of one volunteer against a limit of 60: exactly 60 stored."""
    settings.RGZ_VOTES_PER_MINUTE = 60
    sources = [make_source() for _ in range(200)]
    for source in sources:
        serve(volunteer, source.pk, workflow)

    @in_thread
    def attempt(source):
        try:
            record_classification(volunteer, source.pk, "FRI", workflow)
            return "stored"
        except RateLimited:
            return "limited"

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = Counter(pool.map(attempt, sources))

    assert Classification.objects.filter(volunteer=volunteer).count() == 60
    assert results == {"stored": 60, "limited": 140}


def test_next_waits_for_rows_another_write_holds_instead_of_finding_nothing(
    django_user_model, make_source, workflow
) -> None:
    """A queue refresh storing its ranking (or a consensus refit) briefly holds every open
    subject's row; a volunteer asking meanwhile gets a subject once it is released, not "nothing
    to label" (on PostgreSQL, SKIP LOCKED alone skipped every row; the campaign replay found it)."""
    import threading
    import time

    from django.db import transaction

    sources = {make_source().pk for _ in range(3)}
    volunteer = django_user_model.objects.create_user("waiting")
    locked, done = threading.Event(), threading.Event()

    @in_thread
    def refresh() -> None:
        with transaction.atomic():
            Subject.objects.filter(workflow=workflow).update(priority=0.5)  # every row locked
            locked.set()
            time.sleep(0.4)
        done.set()

    writer = threading.Thread(target=refresh)
    writer.start()
    assert locked.wait(10)
    served = next_subject(volunteer, workflow)
    writer.join()

    assert done.is_set()
    assert served is not None and served.subject.source_id in sources
