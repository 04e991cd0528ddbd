"""The volunteer flow: which subject comes next, recording and undoing votes, consensus.

Every vote is one transaction that locks the volunteer's profile row, then the subject's,
so vote counts, retirement, consensus and each volunteer's rate limit stay exact under any
number of concurrent requests.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, JSONField
from django.utils import timezone

from ml.retirement import AGREEMENT, MARGIN, VOTE_COUNT, decided_class
from rgzlabel.catalog.models import Source
from rgzlabel.labelling import rows
from rgzlabel.labelling.models import (
    Assignment,
    Classification,
    ConsensusSnapshot,
    Flag,
    GoldLabel,
    Subject,
    VolunteerProfile,
    Workflow,
)

DEFAULT_WORKFLOW_SLUG = "fr-morphology"
#: How long a served subject holds its vote slot for the volunteer who got it.
ASSIGNMENT_TTL = timedelta(minutes=10)


class VoteRejected(ValueError):
    """A vote that cannot be recorded; the message is fit to show the volunteer."""


class RateLimited(VoteRejected):
    """Too many votes in the last minute."""


class FlagRejected(ValueError):
    """A flag that cannot be stored; the message names the field and is fit to show the volunteer."""


@dataclass(frozen=True)
class Served:
    subject: Subject
    is_gold: bool
    explore: bool = False  # drawn at random for the unbiased audit share, not by the policy


@dataclass(frozen=True)
class VoteOutcome:
    classification: Classification
    created: bool  # False when this repeated an earlier submission (double click, retry)
    retired: bool = False
    gold: dict[str, Any] | None = None  # feedback when the subject was a gold-standard one
    # The workflow as the vote's transaction read it, and the volunteer's profile it locked, so
    # serving the next subject in the same request needs neither again.
    workflow: Workflow | None = None
    profile: VolunteerProfile | None = None


# --- workflows and subjects ---------------------------------------------------------------------
def default_workflow() -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(
        slug=DEFAULT_WORKFLOW_SLUG,
        defaults={
            "name": "Fanaroff-Riley morphology",
            "retire_after": settings.RGZ_RETIRE_AFTER,
            "retire_on_margin": settings.RGZ_RETIRE_ON_MARGIN,
        },
    )
    return workflow


def sync_subjects(workflow: Workflow | None = None) -> int:
    """Give every source with a cutout a subject in ``workflow`` (default: the main one)."""
    workflow = workflow or default_workflow()
    missing = (
        Source.objects.filter(cutout__isnull=False).exclude(subjects__workflow=workflow).values_list("id", flat=True)
    )
    created = 0
    batch: list[Subject] = []
    for source_id in missing.iterator(chunk_size=5000):
        batch.append(Subject(source_id=source_id, workflow=workflow))
        if len(batch) == 5000:
            created += len(Subject.objects.bulk_create(batch, ignore_conflicts=True))
            batch = []
    if batch:
        created += len(Subject.objects.bulk_create(batch, ignore_conflicts=True))
    # Gold subjects are answered for feedback, never queued for consensus.
    Subject.objects.filter(workflow=workflow, source__gold_labels__workflow=workflow, retired_at__isnull=True).update(
        retired_at=timezone.now(), retire_reason="gold"
    )
    return created


def profile_of(volunteer: User) -> VolunteerProfile:
    profile, _ = VolunteerProfile.objects.get_or_create(user=volunteer)
    return profile


def create_guest() -> User:
    """A volunteer who has not signed up yet; signing up later keeps their votes."""
    user = get_user_model().objects.create_user(f"guest-{uuid.uuid4().hex[:12]}")
    user.set_unusable_password()
    user.save(update_fields=["password"])
    VolunteerProfile.objects.create(user=user, is_guest=True)
    return user


def promote_guest(guest: User, username: str, password: str, email: str = "") -> User:
    """Turn a guest into a registered volunteer in place, so every vote stays theirs."""
    with transaction.atomic():
        guest.username = username
        guest.email = email
        guest.set_password(password)
        guest.save(update_fields=["username", "email", "password"])
        VolunteerProfile.objects.filter(user=guest).update(is_guest=False)
    return guest


#: What volunteers are told after answering a gold-standard source of each class.
GOLD_FEEDBACK = {
    "FRI": "Look for emission brightest near the core, fading along the jets.",
    "FRII": "Note the bright hotspots at the lobe ends, far from the core.",
    "hybrid": "One lobe ends in a hotspot while the other fades like a jet.",
}


def seed_gold_from_catalogue(workflow: Workflow, *, dataset: str = "griese", per_class: int = 20, seed: int = 0) -> int:
    """Make gold labels from an expert catalogue's labels (provenance), a few per class."""
    import random

    from rgzlabel.catalog.models import Provenance

    created = 0
    for key in workflow.class_keys:
        candidates = sorted(
            Provenance.objects.filter(dataset=dataset, catalogue_label=key, source__cutout__isnull=False)
            .exclude(source__gold_labels__workflow=workflow)
            .exclude(source__subjects__workflow=workflow, source__subjects__retire_reason=FIELD_GUIDE_REASON)
            .values_list("source_id", flat=True)
        )
        for source_id in random.Random(f"{seed}:{key}").sample(candidates, min(per_class, len(candidates))):
            GoldLabel.objects.create(
                workflow=workflow, source_id=source_id, label=key, feedback=GOLD_FEEDBACK.get(key, "")
            )
            created += 1
    sync_subjects(workflow)  # retires the new gold sources from the consensus queue
    return created


# --- serving --------------------------------------------------------------------------------------
def gold_rate(profile: VolunteerProfile, workflow: Workflow) -> float:
    """Share of gold subjects: halves with every ``gold_halving`` correct answers, down to a floor."""
    halvings = profile.gold_correct / max(1, workflow.gold_halving)
    return max(workflow.gold_rate_min, workflow.gold_rate_start * 0.5**halvings)


def _serve_gold(volunteer: User, workflow: Workflow, exclude: list[int]) -> Subject | None:
    gold = (
        GoldLabel.objects.filter(workflow=workflow)
        .exclude(source__classifications__volunteer=volunteer)
        .exclude(source_id__in=exclude)
        .order_by("?")
        .values_list("source_id", flat=True)
        .first()
    )
    if gold is None:
        return None
    subject, _ = Subject.objects.get_or_create(
        workflow=workflow, source_id=gold, defaults={"retired_at": timezone.now(), "retire_reason": "gold"}
    )
    return subject


def next_subject(
    volunteer: User,
    workflow: Workflow,
    *,
    exclude: list[int] | None = None,
    profile: VolunteerProfile | None = None,
) -> Served | None:
    """The next subject for ``volunteer``: unseen, open, highest priority, with a free vote slot.

    A subject that needs k more votes is held by at most k (+ the workflow's redundancy)
    volunteers at once; concurrent callers skip rows another transaction is serving
    (``SKIP LOCKED`` on PostgreSQL), so two volunteers never both take the last slot.

    Until a ranking exists (no open subject has a priority yet: the first seconds after
    ``bin/start``, while the cold-start ranking is queued), subjects come in a random order,
    not by id, so the first volunteers do not all label the same few sources.
    """
    exclude = exclude or []
    if workflow.gold_rate_start > 0 and random.random() < gold_rate(profile or profile_of(volunteer), workflow):
        gold = _serve_gold(volunteer, workflow, exclude)
        if gold is not None:
            hold(volunteer, gold, is_gold=True)
            return Served(gold, is_gold=True)

    explore = workflow.exploration_share > 0 and random.random() < workflow.exploration_share
    if explore:
        served = _serve_exploration(volunteer, workflow, exclude)
        if served is not None:
            return served
    # The ranked order first: when what it serves has a priority, a ranking exists and that
    # was the right order, found without asking first (one statement fewer on the hot path).
    served = _claim(volunteer, workflow, RANKED, exclude)
    open_subjects = Subject.objects.filter(workflow=workflow, retired_at__isnull=True)
    if served is None or served.subject.priority > 0 or open_subjects.filter(priority__gt=0).exists():
        return served
    # No ranking yet: give the slot back and serve in a random order instead.
    release(volunteer, served.subject.source_id, workflow)
    return _claim(volunteer, workflow, UNRANKED, exclude)


def _serve_exploration(volunteer: User, workflow: Workflow, exclude: list[int]) -> Served | None:
    """A subject drawn uniformly at random, whatever the policy thinks of it (the audit share).

    Explored subjects that still need votes come first, so each gets its consensus label;
    otherwise the first open subject at or after a uniform draw of the random key (wrapping
    round), so which subjects are explored does not depend on what they look like.
    """
    draw = random.random()
    for candidates in (
        Candidates("s.explored = %s", [True], "s.vote_count DESC, s.explore_key"),
        Candidates("s.explore_key >= %s", [draw], "s.explore_key"),
        Candidates("s.explore_key < %s", [draw], "s.explore_key"),
    ):
        served = _claim(volunteer, workflow, candidates, exclude, explore=True)
        if served is not None:
            return served
    return None


@dataclass(frozen=True)
class Candidates:
    """Which open subjects of a workflow may be served, and in what order (SQL over ``s``, the subject)."""

    where: str = ""
    params: list[Any] = field(default_factory=list)
    order: str = "s.id"


#: The queue's orders: by the stored ranking (the partial index), and at random before one exists.
RANKED = Candidates(order="s.priority DESC, s.vote_count ASC, s.id ASC")
UNRANKED = Candidates(order="s.vote_count ASC, RANDOM()")
#: The source columns the labelling page shows (the rest of a served source loads on demand).
SERVED_SOURCE_FIELDS = ("id", "name", "ra_deg", "dec_deg", "angular_size_arcsec")


def _claim(
    volunteer: User, workflow: Workflow, candidates: Candidates, exclude: list[int], *, explore: bool = False
) -> Served | None:
    """Hold the first of ``candidates`` the volunteer has not seen and that has a free vote slot.

    The hot path of serving, in two statements: one query finds and locks the subject (with the
    source columns the page shows), one upsert holds it (:func:`_hold_if_free`). The query is
    written as SQL because building it with the ORM cost more CPU than the rest of the request.
    """
    now = timezone.now()
    slots = workflow.retire_after + workflow.redundancy
    rejected: list[int] = []
    skip_locked = True
    for _ in range(5):
        with transaction.atomic():
            sql, params = _candidates_sql(volunteer, workflow, candidates, [*exclude], rejected, slots, now)
            subject = _first_locked(sql, params, skip_locked=True) if skip_locked else _wait_for_first(sql, params)
            if subject is None and skip_locked and _any(sql, params):
                # Every candidate is locked by someone else's write (a queue refresh storing its
                # ranking, another volunteer's claim): wait for one briefly rather than telling
                # the volunteer there is nothing to label.
                skip_locked = False
                continue
            if subject is None:
                return None
            # The query above judged the load from a snapshot taken before it held the lock;
            # the hold counts again as it is written, so a hold committed meanwhile counts.
            if _hold_if_free(volunteer, subject, slots, explore=explore, now=now):
                if explore and not subject.explored:
                    Subject.objects.filter(pk=subject.pk).update(explored=True)
                    subject.explored = True
                return Served(subject, is_gold=False, explore=explore)
            rejected.append(subject.pk)
    return None


def _candidates_sql(
    volunteer: User,
    workflow: Workflow,
    candidates: Candidates,
    exclude: list[int],
    rejected: list[int],
    slots: int,
    now,
) -> tuple[str, list[Any]]:
    """The query of :func:`_claim`: open subjects the volunteer has not voted on, not excluded or
    rejected, whose votes plus other volunteers' current holds leave a slot, first first."""
    from django.db import connection

    adapt = connection.ops.adapt_datetimefield_value
    subjects, sources = rows.table(Subject), rows.table(Source)
    where = [
        "s.workflow_id = %s",
        "s.retired_at IS NULL",
        f"NOT EXISTS (SELECT 1 FROM {rows.table(Classification)} c "
        "WHERE c.volunteer_id = %s AND c.source_id = s.source_id)",
        f"s.vote_count + (SELECT COUNT(*) FROM {rows.table(Assignment)} a "
        "WHERE a.subject_id = s.id AND a.expires_at > %s AND a.volunteer_id <> %s) < %s",
    ]
    params: list[Any] = [workflow.pk, volunteer.pk, adapt(now), volunteer.pk, slots]
    if candidates.where:
        where.append(candidates.where)
        params += candidates.params
    for column, ids in (("s.source_id", exclude), ("s.id", rejected)):
        if ids:
            where.append(f"{column} NOT IN ({', '.join(['%s'] * len(ids))})")
            params += ids
    sql = (
        f"SELECT {rows.columns('s', Subject)}, {rows.columns('src', Source, SERVED_SOURCE_FIELDS)} "
        f"FROM {subjects} s JOIN {sources} src ON src.id = s.source_id "
        f"WHERE {' AND '.join(where)} ORDER BY {candidates.order} LIMIT 1"
    )
    return sql, params


def _first_locked(sql: str, params: list[Any], *, skip_locked: bool) -> Subject | None:
    """The subject the candidates query finds, its row locked (``FOR UPDATE``, skipping rows others
    hold when ``skip_locked``; SQLite locks the whole database instead), its source attached."""
    from django.db import connection

    if connection.features.has_select_for_update:
        sql += " FOR UPDATE OF s" + (" SKIP LOCKED" if skip_locked else "")
    found = rows.first_row(sql, params, (Subject, None), (Source, SERVED_SOURCE_FIELDS))
    if found is None:
        return None
    subject, source = found
    subject.source = source
    return subject


def _any(sql: str, params: list[Any]) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS ({sql})", params)
        return bool(cursor.fetchone()[0])


#: The longest a volunteer's request waits for a subject row another transaction holds (ms).
CLAIM_LOCK_WAIT_MS = 2000


def _wait_for_first(sql: str, params: list[Any]) -> Subject | None:
    """Lock the first candidate, waiting at most CLAIM_LOCK_WAIT_MS for it (None after that).

    Runs inside the caller's transaction. On SQLite, which locks the whole database rather than
    rows, the query simply runs.
    """
    from django.db import OperationalError, connection

    if connection.vendor != "postgresql":
        return _first_locked(sql, params, skip_locked=False)
    try:
        with transaction.atomic():  # a savepoint: a lock timeout rolls back only this attempt
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{int(CLAIM_LOCK_WAIT_MS)}ms'")
            subject = _first_locked(sql, params, skip_locked=False)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = DEFAULT")
            return subject
    except OperationalError:
        return None


def _hold_if_free(volunteer: User, subject: Subject, slots: int, *, explore: bool, now) -> bool:
    """Hold ``subject`` (locked by the caller) for ``volunteer`` if it still has a free vote slot.

    One statement: the upsert of :func:`hold`, written only when the subject's votes plus the
    other volunteers' current holds, counted by this statement's own snapshot, leave a slot.
    """
    from django.db import connection

    adapt = connection.ops.adapt_datetimefield_value
    assignments = rows.table(Assignment)
    sql = (
        f"INSERT INTO {assignments} (volunteer_id, subject_id, is_gold, explore, served_at, expires_at) "
        "SELECT %s, %s, %s, %s, %s, %s WHERE %s + (SELECT COUNT(*) FROM "
        f"{assignments} WHERE subject_id = %s AND expires_at > %s AND volunteer_id <> %s) < %s "
        "ON CONFLICT (volunteer_id, subject_id) DO UPDATE SET expires_at = excluded.expires_at, "
        "is_gold = excluded.is_gold, explore = excluded.explore, served_at = excluded.served_at"
    )
    params = [
        volunteer.pk, subject.pk, False, explore, adapt(now), adapt(now + ASSIGNMENT_TTL),
        subject.vote_count, subject.pk, adapt(now), volunteer.pk, slots,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def hold(volunteer: User, subject: Subject, *, is_gold: bool, explore: bool = False) -> None:
    """Hold a vote slot of ``subject`` for ``volunteer`` (one upsert: served again, held anew)."""
    expires_at = timezone.now() + ASSIGNMENT_TTL
    Assignment.objects.bulk_create(
        [Assignment(volunteer=volunteer, subject=subject, is_gold=is_gold, explore=explore, expires_at=expires_at)],
        update_conflicts=True,
        unique_fields=["volunteer", "subject"],
        update_fields=["expires_at", "is_gold", "explore", "served_at"],
    )


def release(volunteer: User, source_id: int, workflow: Workflow) -> None:
    """Give back a served subject (a skip), freeing its slot for someone else."""
    Assignment.objects.filter(volunteer=volunteer, subject__workflow=workflow, subject__source_id=source_id).delete()


#: A page the volunteer leaves gives back its subjects, but not one served again this recently:
#: on a reload the new page may be served the same subject before the old page's release arrives.
LEAVING_GRACE = timedelta(seconds=3)


def release_many(volunteer: User, source_ids: list[int], workflow: Workflow, *, leaving: bool = False) -> int:
    """Give back several served subjects at once (a page's unanswered queue); returns how many were held.

    ``leaving``: the page is being closed or reloaded; holds renewed within :data:`LEAVING_GRACE`
    belong to the page that replaced it and stay.
    """
    holds = Assignment.objects.filter(
        volunteer=volunteer, subject__workflow=workflow, subject__source_id__in=source_ids
    )
    if leaving:
        holds = holds.filter(served_at__lt=timezone.now() - LEAVING_GRACE)
    deleted, _ = holds.delete()
    return deleted


# --- voting ---------------------------------------------------------------------------------------
def _lock_volunteer(volunteer: User) -> VolunteerProfile:
    """Lock the volunteer's profile row for the rest of the transaction.

    Every write of one volunteer's votes takes this lock first (before any subject's), so
    their requests run one at a time: the rate limit's count and the insert that follows it
    cannot interleave with another of their requests, and the lock order never inverts.
    """
    from django.db import connection

    fields = ("id", "user", "gold_answered", "gold_correct")
    sql = f"SELECT {rows.columns('p', VolunteerProfile, fields)} FROM {rows.table(VolunteerProfile)} p "
    sql += "WHERE p.user_id = %s"
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    # As SQL, the common case costs one short statement to build; a new volunteer's profile is made.
    found = rows.first_row(sql, [volunteer.pk], (VolunteerProfile, fields))
    if found is not None:
        return found[0]
    profile, _ = VolunteerProfile.objects.select_for_update().get_or_create(user=volunteer)
    return profile


def record_classification(volunteer: User, source_id: int, label: str, workflow: Workflow | str) -> VoteOutcome:
    """Record one vote; count it, update consensus and retire the subject, all atomically.

    Only a subject served to the volunteer (held by a current :class:`Assignment`) takes
    their vote, so nobody can pick which sources to vote on. A repeated submission for the
    same source returns the vote already stored (answered as success), so two clicks or a
    retried request never count twice. ``workflow`` may be given by its slug: it is then read
    with the subject, in the statement that locks it (the labelling API's hot path).

    The common path is six statements: lock the volunteer's profile; lock the subject (with
    its workflow); take the volunteer's hold, counting their votes of the last minute for the
    rate limit in the same statement; insert the vote; read the subject's votes; write its
    count, consensus and retirement.
    """
    try:
        with transaction.atomic():
            profile = _lock_volunteer(volunteer)
            # Lock the subject: concurrent votes on it serialise here, so its count,
            # consensus and retirement are exact.
            subject = _lock_subject(source_id, workflow)
            if subject is None:
                name = workflow.name if isinstance(workflow, Workflow) else workflow
                raise VoteRejected(f"source {source_id} is not in the {name} workflow")
            current = subject.workflow
            if label not in current.class_keys:
                raise VoteRejected(f"unknown label {label!r}; this workflow offers {', '.join(current.class_keys)}")
            if current.experts_only and not volunteer.is_staff:
                raise VoteRejected(f"the {current.name} workflow is for experts")
            if subject.retired_at is not None and subject.retire_reason != "gold":
                existing = Classification.objects.filter(volunteer=volunteer, source_id=source_id).first()
                if existing is not None:
                    return _repeated(existing, current, profile)
                raise VoteRejected(f"{_source_name(source_id)} is already retired: it has all the votes it needs")
            taken = _take_hold(volunteer, subject)
            if taken is None:
                existing = Classification.objects.filter(volunteer=volunteer, source_id=source_id).first()
                if existing is not None:
                    return _repeated(existing, current, profile)
                raise VoteRejected(
                    f"source {source_id} is not being shown to you (or was shown more than "
                    f"{ASSIGNMENT_TTL.seconds // 60} minutes ago); vote on the source the page serves you"
                )
            explored, recent = taken
            limit = settings.RGZ_VOTES_PER_MINUTE
            if limit and recent >= limit:
                raise RateLimited(f"slow down: at most {limit} votes a minute")
            if subject.retired_at is not None:  # a gold subject: answered for feedback
                gold = GoldLabel.objects.get(workflow=current, source_id=source_id)
                outcome = _record_gold(volunteer, subject, label, gold)
            else:
                classification = Classification.objects.create(
                    volunteer=volunteer, source_id=source_id, workflow=current, label=label, explore=explored
                )
                outcome = VoteOutcome(classification, created=True, retired=_count_vote(subject, current))
    except IntegrityError:
        # The same volunteer's other request won the race; report its vote.
        existing = Classification.objects.select_related("workflow").get(volunteer=volunteer, source_id=source_id)
        return _repeated(existing, existing.workflow, None)
    return VoteOutcome(
        outcome.classification, outcome.created, outcome.retired, outcome.gold, workflow=current, profile=profile
    )


def _lock_subject(source_id: int, workflow: Workflow | str) -> Subject | None:
    """Lock the subject of ``source_id`` in ``workflow`` (an instance or a slug); its workflow read
    in the same statement, fresh. Concurrent votes on the subject wait here, one at a time."""
    from django.db import connection

    sql = (
        f"SELECT {rows.columns('s', Subject)}, {rows.columns('w', Workflow)} FROM {rows.table(Subject)} s "
        f"JOIN {rows.table(Workflow)} w ON w.id = s.workflow_id WHERE s.source_id = %s AND "
        + ("w.id = %s" if isinstance(workflow, Workflow) else "w.slug = %s")
    )
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE OF s"
    key = workflow.pk if isinstance(workflow, Workflow) else workflow
    found = rows.first_row(sql, [source_id, key], (Subject, None), (Workflow, None))
    if found is None:
        return None
    subject, current = found
    subject.workflow = current
    return subject


def _source_name(source_id: int) -> str:
    return Source.objects.filter(pk=source_id).values_list("name", flat=True).first() or f"source {source_id}"


def _repeated(existing: Classification, workflow: Workflow, profile: VolunteerProfile | None) -> VoteOutcome:
    """The answer to a repeated submission: the vote already stored."""
    return VoteOutcome(existing, created=False, gold=_gold_feedback(existing), workflow=workflow, profile=profile)


def _take_hold(volunteer: User, subject: Subject) -> tuple[bool, int] | None:
    """Delete the volunteer's current hold on ``subject``; None when there is none.

    Returns whether the hold came from random exploration, and how many votes the volunteer
    cast in the last minute (for the rate limit), counted in the same statement. The caller
    holds the volunteer's lock, so that count cannot change before the vote is inserted; a
    refused vote rolls back and the hold stays.
    """
    from django.db import connection

    adapt = connection.ops.adapt_datetimefield_value
    now = timezone.now()
    sql = (
        f"DELETE FROM {rows.table(Assignment)} WHERE volunteer_id = %s AND subject_id = %s AND expires_at > %s "
        f"RETURNING explore, (SELECT COUNT(*) FROM {rows.table(Classification)} "
        "WHERE volunteer_id = %s AND created_at >= %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [volunteer.pk, subject.pk, adapt(now), volunteer.pk, adapt(now - timedelta(minutes=1))])
        row = cursor.fetchone()
    return None if row is None else (bool(row[0]), int(row[1]))


def _record_gold(volunteer: User, subject: Subject, label: str, gold: GoldLabel) -> VoteOutcome:
    classification = Classification.objects.create(
        volunteer=volunteer, source_id=subject.source_id, workflow=subject.workflow, label=label, is_gold=True
    )
    correct = label == gold.label
    profile_of(volunteer)
    VolunteerProfile.objects.filter(user=volunteer).update(
        gold_answered=F("gold_answered") + 1, gold_correct=F("gold_correct") + int(correct)
    )
    return VoteOutcome(classification, created=True, gold=_gold_feedback(classification, gold))


def _gold_feedback(classification: Classification, gold: GoldLabel | None = None) -> dict[str, Any] | None:
    if not classification.is_gold:
        return None
    gold = gold or GoldLabel.objects.get(workflow_id=classification.workflow_id, source_id=classification.source_id)
    return {"correct": classification.label == gold.label, "expert_label": gold.label, "feedback": gold.feedback}


def _count_vote(subject: Subject, workflow: Workflow) -> bool:
    """Update a locked subject after a new vote; return True when the vote retired it."""
    from ml.consensus import majority

    votes = _votes_on(workflow, subject.source_id)
    labels = [label for label, _ in votes]
    subject.vote_count = len(labels)
    subject.consensus_label, subject.consensus_confidence = majority(labels)
    reason = retirement_reason(workflow, labels)
    if reason:
        subject.retired_at = timezone.now()
        subject.retire_reason = reason
        if (
            workflow.expert_workflow_id
            and workflow.disagreement_threshold
            and subject.consensus_confidence < workflow.disagreement_threshold
        ):
            subject.retire_reason = "to expert"
            Subject.objects.get_or_create(workflow_id=workflow.expert_workflow_id, source_id=subject.source_id)
    # As the refit labels it: by the class an early retirement decided, else by the consensus.
    subject.weighted_label, subject.weighted_confidence = weighted_consensus(
        votes, workflow, subject.retire_reason if subject.retired_at is not None else ""
    )
    subject.save(
        update_fields=[
            "vote_count",
            "consensus_label",
            "consensus_confidence",
            "weighted_label",
            "weighted_confidence",
            "retired_at",
            "retire_reason",
            "assisted_label",
            "assisted_confidence",
            "assisted_by",
            "updated_at",
        ]
    )
    return bool(reason)


def _votes_on(workflow: Workflow, source_id: int) -> list[tuple[str, dict | None]]:
    """A subject's votes in order, each with its volunteer's stored confusion matrices (or None).

    Written as SQL, as the ORM query it replaces cost more CPU to build than to run; the matrices
    are decoded by the model field's own converter, as the ORM would.
    """
    from django.db import connection

    sql = (
        f"SELECT c.label, p.confusion FROM {rows.table(Classification)} c "
        f"LEFT JOIN {rows.table(VolunteerProfile)} p ON p.user_id = c.volunteer_id "
        "WHERE c.workflow_id = %s AND c.source_id = %s ORDER BY c.created_at, c.id"
    )
    field = VolunteerProfile._meta.get_field("confusion")
    assert isinstance(field, JSONField)
    with connection.cursor() as cursor:
        cursor.execute(sql, [workflow.pk, source_id])
        found = cursor.fetchall()
    return [(label, field.from_db_value(confusion, field.cached_col, connection)) for label, confusion in found]


def retirement_reason(workflow: Workflow, labels: list[str]) -> str:
    """Why the votes so far (in order) retire a subject, or '' when they do not
    (:meth:`Workflow.retirement_rule`: vote count, agreement, margin)."""
    return workflow.retirement_rule().reason(labels)


def volunteer_posterior(votes: list[tuple[str, dict | None]], workflow: Workflow):
    """P(true class | one subject's votes) over ``workflow.class_keys``, each voter weighed by their matrix.

    The class prior is the last refit's at the workflow's ``consensus_prior_strength``
    (:meth:`Workflow.class_prior`), so a vote's consensus and the refit's agree.
    """
    import numpy as np

    from ml.consensus import posterior, prior_confusion

    keys = workflow.class_keys
    prior = prior_confusion(len(keys))
    confusions = []
    for _, stored in votes:
        matrix = np.asarray(stored.get(workflow.slug), dtype=float) if stored else None
        confusions.append(matrix if matrix is not None and matrix.shape == prior.shape else prior)
    return posterior([keys.index(label) for label, _ in votes], confusions, workflow.class_prior())


def votes_with_reliability(workflow: Workflow, source_ids) -> dict[int, list[tuple[str, dict | None]]]:
    """Each source's non-gold votes, oldest first, with the voter's stored confusion matrices
    (what :func:`volunteer_posterior` weighs them by)."""
    votes: dict[int, list[tuple[str, dict | None]]] = {}
    for source_id, label, confusion in (
        Classification.objects.filter(workflow=workflow, source_id__in=list(source_ids), is_gold=False)
        .order_by("created_at", "id")
        .values_list("source_id", "label", "volunteer__profile__confusion")
    ):
        votes.setdefault(source_id, []).append((label, confusion))
    return votes


def weighted_consensus(votes: list[tuple[str, dict | None]], workflow: Workflow, reason: str = "") -> tuple[str, float]:
    """A subject's label and its Dawid-Skene probability, from (label, voter's stored confusion
    matrices) pairs: the class its votes decided when they retired it early (``reason`` agreement or
    margin, :func:`ml.retirement.decided_class`), else the posterior's most probable class."""
    post = volunteer_posterior(votes, workflow)
    keys = workflow.class_keys
    decided = decided_class(reason, [label for label, _ in votes])
    best = keys.index(decided) if decided in keys else int(post.argmax())
    return keys[best], float(post[best])


# --- machine-assisted retirement ------------------------------------------------------------------
#: The retire reason of a subject retired because its volunteers and the classifier agreed.
MACHINE_ASSISTED_REASON = "machine-assisted"


@dataclass
class AssistedRetirement:
    checked: int = 0
    retired: list[int] = field(default_factory=list)  # source ids
    unseen: int = 0  # of those, retired with no volunteer vote (only where the workflow allows it)


def machine_assisted_retire(
    workflow: Workflow, source_ids, classes: list[str], probabilities, *, classifier_id: int | None = None
) -> AssistedRetirement:
    """Retire open subjects whose volunteers' evidence and the classifier's probability agree.

    ``probabilities[i]`` is the classifier's probability over ``classes`` for ``source_ids[i]``.
    A subject retires when the volunteers' Dawid-Skene class, the classifier's and the
    combined one (:func:`ml.consensus.assisted_decision`) are the same and the combined
    probability reaches ``workflow.machine_retire_confidence``. Never retired this way: gold
    sources, subjects drawn by random exploration (their labels are the unbiased audit set, so
    they must stay the volunteers' alone), subjects with fewer than
    ``workflow.machine_retire_min_votes`` votes (0 lets the classifier retire unseen sources).
    A vote that arrives meanwhile wins: the update only applies to a subject whose vote count
    is still the one judged. Such retirements are not volunteer consensus, so the classifier
    never trains on its own agreement (:data:`NOT_VOLUNTEER_CONSENSUS`).
    """
    import numpy as np

    from ml.consensus import assisted_decision

    report = AssistedRetirement()
    threshold = workflow.machine_retire_confidence
    if threshold <= 0 or len(source_ids) == 0:
        return report
    keys = workflow.class_keys
    usable = [i for i, c in enumerate(classes) if c in keys]
    if len(usable) < 2:
        return report
    columns = [keys.index(classes[i]) for i in usable]
    proba_of = {int(s): np.asarray(p, dtype=float)[usable] for s, p in zip(source_ids, probabilities, strict=True)}
    gold = set(GoldLabel.objects.filter(workflow=workflow).values_list("source_id", flat=True))
    candidates = dict(
        Subject.objects.filter(
            workflow=workflow,
            retired_at__isnull=True,
            explored=False,
            vote_count__gte=workflow.machine_retire_min_votes,
            source_id__in=list(proba_of),
        )
        .exclude(source_id__in=gold)
        .values_list("source_id", "vote_count")
    )
    votes = votes_with_reliability(workflow, candidates)
    decided: list[tuple[int, int, str, float]] = []
    for source_id, count in candidates.items():
        report.checked += 1
        these = votes.get(source_id, [])
        if len(these) != count:
            continue  # a vote is being recorded: judge it at the next refresh
        if these:
            post = volunteer_posterior(these, workflow)
            if keys[int(post.argmax())] not in classes:
                continue  # the volunteers lean to a class the classifier does not know (e.g. unsure)
            restricted = post[columns] / post[columns].sum()
        else:
            restricted = None
        best, confidence = assisted_decision(restricted, proba_of[source_id], threshold)
        if best >= 0:
            decided.append((source_id, count, classes[usable[best]], confidence))
    now = timezone.now()
    for source_id, count, label, confidence in decided:
        # One conditional update per subject: nothing is locked, and a vote that came in since
        # the count was read (vote_count changed) or a retirement by votes wins.
        if Subject.objects.filter(
            workflow=workflow, source_id=source_id, retired_at__isnull=True, vote_count=count
        ).update(
            retired_at=now,
            retire_reason=MACHINE_ASSISTED_REASON,
            assisted_label=label,
            assisted_confidence=round(confidence, 6),
            assisted_by=classifier_id,
            updated_at=now,
        ):
            report.retired.append(source_id)
            report.unseen += count == 0
    return report


def undo_last_vote(volunteer: User, workflow: Workflow) -> Served | None:
    """Take back the volunteer's latest vote if it is recent enough.

    Returns the subject again (held for the volunteer, so they can answer it anew), or
    None when there is no vote within the workflow's undo window.
    """
    cutoff = timezone.now() - timedelta(seconds=workflow.undo_window_s)
    with transaction.atomic():
        _lock_volunteer(volunteer)
        last = (
            Classification.objects.select_for_update()
            .filter(volunteer=volunteer, workflow=workflow, created_at__gte=cutoff)
            .order_by("-created_at", "-id")
            .first()
        )
        if last is None:
            return None
        subject = Subject.objects.select_for_update().get(workflow=workflow, source_id=last.source_id)
        last.delete()
        if last.is_gold:
            gold = GoldLabel.objects.get(workflow=workflow, source_id=last.source_id)
            VolunteerProfile.objects.filter(user=volunteer).update(
                gold_answered=F("gold_answered") - 1, gold_correct=F("gold_correct") - int(last.label == gold.label)
            )
            hold(volunteer, subject, is_gold=True)
            return Served(subject, is_gold=True)
        _recount(subject, workflow)
        hold(volunteer, subject, is_gold=False)
    return Served(subject, is_gold=False)


def _recount(subject: Subject, workflow: Workflow) -> None:
    """Bring a locked subject up to date after a vote on it was removed (it may reopen)."""
    if subject.retire_reason in {VOTE_COUNT, AGREEMENT, MARGIN, "to expert", MACHINE_ASSISTED_REASON}:
        if subject.retire_reason == "to expert" and workflow.expert_workflow_id is not None:
            Subject.objects.filter(
                workflow_id=workflow.expert_workflow_id, source_id=subject.source_id, vote_count=0
            ).delete()
        subject.retired_at, subject.retire_reason = None, ""
        subject.assisted_label, subject.assisted_confidence, subject.assisted_by = "", None, None
    if Classification.objects.filter(workflow=workflow, source_id=subject.source_id).exists():
        _count_vote(subject, workflow)
    else:
        subject.vote_count, subject.consensus_label, subject.consensus_confidence = 0, "", None
        subject.weighted_label, subject.weighted_confidence = "", None
        subject.save()


def remove_votes(classification_ids: list[int]) -> int:
    """Delete votes (moderation, e.g. a ballot-stuffing account) and recount what they touched.

    Each vote goes in its own transaction under the same locks as a vote (volunteer, then
    subject): the subject's count, consensus and retirement are recomputed, and a gold answer
    comes off the volunteer's gold record. Returns how many votes were deleted.
    """
    removed = 0
    for vote in Classification.objects.filter(pk__in=classification_ids).select_related("workflow", "volunteer"):
        with transaction.atomic():
            _lock_volunteer(vote.volunteer)
            subject = (
                Subject.objects.select_for_update().filter(workflow=vote.workflow, source_id=vote.source_id).first()
            )
            deleted, _ = Classification.objects.filter(pk=vote.pk).delete()
            if not deleted:
                continue  # removed meanwhile (an undo)
            removed += 1
            if vote.is_gold:
                gold = GoldLabel.objects.filter(workflow=vote.workflow, source_id=vote.source_id).first()
                VolunteerProfile.objects.filter(user=vote.volunteer).update(
                    gold_answered=F("gold_answered") - 1,
                    gold_correct=F("gold_correct") - int(gold is not None and vote.label == gold.label),
                )
            elif subject is not None:
                _recount(subject, vote.workflow)
    return removed


# --- flags: "this one is interesting" ----------------------------------------------------------
def flag_source(volunteer: User, source_id: int, note: str) -> tuple[Flag, bool]:
    """Store (or edit) ``volunteer``'s note that a source is interesting; True when new.

    The note is checked before anything is written, and the write is one statement, so a
    refused flag leaves nothing behind.
    """
    text = " ".join(str(note or "").split())  # one short line: newlines and runs of spaces collapse
    if not text:
        raise FlagRejected("note: say in a few words what is interesting about this source")
    if len(text) > Flag.NOTE_MAX_LENGTH:
        raise FlagRejected(f"note: at most {Flag.NOTE_MAX_LENGTH} characters, this one has {len(text)}")
    if not Source.objects.filter(pk=source_id).exists():
        raise FlagRejected(f"source: there is no source {source_id}")
    with transaction.atomic():
        flag, created = Flag.objects.update_or_create(volunteer=volunteer, source_id=source_id, defaults={"note": text})
    return flag, created


def remove_flag(volunteer: User, source_id: int) -> bool:
    """Withdraw ``volunteer``'s own flag on a source; False when there was none."""
    deleted, _ = Flag.objects.filter(volunteer=volunteer, source_id=source_id).delete()
    return bool(deleted)


def flags_of(volunteer: User) -> list[Flag]:
    """A volunteer's own flags, newest first (never anyone else's)."""
    return list(Flag.objects.filter(volunteer=volunteer).select_related("source").order_by("-updated_at", "-id"))


# --- what the page shows around the image --------------------------------------------------------
#: Catalogue labels whose sources illustrate each class in the field guide.
FIELD_GUIDE_LABELS = {"FRI": ["FRI"], "FRII": ["FRII"], "hybrid": ["hybrid"], "unsure": ["compact", "bent"]}
#: The subjects shown as field-guide examples are retired with this reason: never served, never
#: counted as consensus labels, so no volunteer is asked to classify an example they were shown.
FIELD_GUIDE_REASON = "field guide"
#: Retired subjects whose label is not a volunteer consensus (training and retrain triggers skip them).
NOT_VOLUNTEER_CONSENSUS = ("gold", FIELD_GUIDE_REASON, "to expert", MACHINE_ASSISTED_REASON)
#: What counts as the source in an example: patches of at least 20 pixels carrying 15 % of the
#: brightness (stricter than the catalogue's angular size, so faint neighbours do not count).
FIELD_GUIDE_MIN_PIXELS, FIELD_GUIDE_MIN_SHARE = 20, 0.15
#: The largest extent an example may have (arcsec): 55 % of the 270-arcsec cutout, so the
#: source is whole inside the image and not a crowded field.
FIELD_GUIDE_MAX_EXTENT_ARCSEC = 150.0
#: Candidates measured per class: the largest by stored angular size.
FIELD_GUIDE_CANDIDATES = 300


def field_guide_extent(source_id: int) -> float:
    """The example criterion: extent (arcsec) of the source's substantial emission (see constants above)."""
    from ml.preprocess import angular_extent_arcsec
    from rgzlabel.catalog.models import Cutout

    cutout = Cutout.objects.get(source_id=source_id)
    return angular_extent_arcsec(
        cutout.as_array(),
        cutout.pixel_scale_arcsec,
        min_pixels=FIELD_GUIDE_MIN_PIXELS,
        min_share=FIELD_GUIDE_MIN_SHARE,
    )


def choose_field_guide_examples(workflow: Workflow, per_class: int = 3) -> int:
    """Pick the field guide's examples per class and take them out of the queue; returns how many were added.

    Candidates carry the class in a literature catalogue (provenance labels, the same that
    seed the gold set), are not gold sources and have no votes yet. The criterion is measured
    on the image: the extent of the substantial emission (patches of at least
    ``FIELD_GUIDE_MIN_PIXELS`` pixels and ``FIELD_GUIDE_MIN_SHARE`` of the brightness), the
    largest that stays within ``FIELD_GUIDE_MAX_EXTENT_ARCSEC``, i.e. the best-resolved source
    that is whole in the cutout, never a dot nor a field of scattered neighbours. Re-running
    tops up classes that lack examples (e.g. after hybrids were ingested) and keeps chosen ones.
    """
    added = 0
    for item in workflow.classes:
        labels = FIELD_GUIDE_LABELS.get(item["key"], [item["key"]])
        chosen = Subject.objects.filter(
            workflow=workflow, retire_reason=FIELD_GUIDE_REASON, source__provenances__catalogue_label__in=labels
        )
        needed = per_class - chosen.values("source").distinct().count()
        if needed <= 0:
            continue
        pool = (
            Source.objects.filter(
                provenances__catalogue_label__in=labels, cutout__isnull=False, angular_size_arcsec__gt=0
            )
            .exclude(gold_labels__workflow=workflow)
            .exclude(classifications__workflow=workflow)
            .exclude(subjects__workflow=workflow, subjects__retired_at__isnull=False)
            .distinct()
            .order_by("-angular_size_arcsec", "id")
            .values_list("id", flat=True)[:FIELD_GUIDE_CANDIDATES]
        )
        measured = [(field_guide_extent(source_id), source_id) for source_id in pool]
        fitting = sorted(
            ((extent, source_id) for extent, source_id in measured if 0 < extent <= FIELD_GUIDE_MAX_EXTENT_ARCSEC),
            key=lambda pair: (-pair[0], pair[1]),
        )
        candidates = [source_id for _, source_id in fitting[:needed]]
        with transaction.atomic():
            for source_id in candidates:
                Subject.objects.update_or_create(
                    workflow=workflow,
                    source_id=source_id,
                    defaults={"retired_at": timezone.now(), "retire_reason": FIELD_GUIDE_REASON},
                )
            Assignment.objects.filter(subject__workflow=workflow, subject__source_id__in=candidates).delete()
        added += len(candidates)
    return added


def field_guide(workflow: Workflow, per_class: int = 3) -> list[dict[str, Any]]:
    """The chosen example sources per class (see :func:`choose_field_guide_examples`)."""
    guide = []
    for item in workflow.classes:
        labels = FIELD_GUIDE_LABELS.get(item["key"], [item["key"]])
        examples = list(
            Source.objects.filter(
                subjects__workflow=workflow,
                subjects__retire_reason=FIELD_GUIDE_REASON,
                provenances__catalogue_label__in=labels,
            )
            .distinct()
            .order_by("-angular_size_arcsec", "id")
            .values_list("id", "name", "angular_size_arcsec")[:per_class]
        )
        guide.append({**item, "examples": [{"id": i, "name": n, "size": size} for i, n, size in examples]})
    return guide


def gold_message(gold: dict[str, Any]) -> str:
    """The feedback line after a gold-standard answer."""
    verdict = "Spot on!" if gold["correct"] else f"Experts said {gold['expert_label']}."
    return f"{verdict} {gold['feedback']}".strip()


# --- background consensus ---------------------------------------------------------------------
@dataclass
class ConsensusReport:
    subjects: int = 0
    volunteers: int = 0
    changed: int = 0
    details: dict[str, Any] = field(default_factory=dict)


#: Rows written per transaction by :func:`recompute_consensus` (each batch holds its row locks
#: for milliseconds, so votes and the queue never wait on a whole refit).
CONSENSUS_WRITE_BATCH = 200


def recompute_consensus(workflow: Workflow) -> ConsensusReport:
    """Fit Dawid-Skene over every vote of a workflow; store labels and volunteers' matrices.

    Answers to gold subjects take part with their expert label held fixed: they measure each
    volunteer against the truth, so a volunteer proven on gold weighs more than a new one.
    """
    import numpy as np

    from ml.consensus import Votes, dawid_skene, temper_prior

    keys = workflow.class_keys
    rows = list(
        Classification.objects.filter(workflow=workflow, label__in=keys).values_list(
            "source_id", "volunteer_id", "label", "is_gold"
        )
    )
    report = ConsensusReport()
    if not any(not is_gold for *_, is_gold in rows):
        return report
    gold = dict(GoldLabel.objects.filter(workflow=workflow, label__in=keys).values_list("source_id", "label"))
    source_ids = sorted({r[0] for r in rows})
    volunteer_ids = sorted({r[1] for r in rows})
    s_index = {s: i for i, s in enumerate(source_ids)}
    v_index = {v: i for i, v in enumerate(volunteer_ids)}
    votes = Votes(
        subjects=np.array([s_index[r[0]] for r in rows]),
        volunteers=np.array([v_index[r[1]] for r in rows]),
        labels=np.array([keys.index(r[2]) for r in rows]),
        n_subjects=len(source_ids),
        n_volunteers=len(volunteer_ids),
        n_classes=len(keys),
    )
    known = np.array([keys.index(gold[s]) if s in gold else -1 for s in source_ids])
    fitted, confusions, fitted_prior = dawid_skene(votes, known=known)
    # The decision weighs the fitted prior at the workflow's strength (the refit's posterior
    # carries it whole), as a vote's own consensus does with the prior stored here.
    post = temper_prior(fitted, fitted_prior, workflow.consensus_prior_strength)
    workflow.consensus_class_prior = {key: round(float(p), 6) for key, p in zip(keys, fitted_prior, strict=True)}
    Workflow.objects.filter(pk=workflow.pk).update(consensus_class_prior=workflow.consensus_class_prior)
    voted = sorted({r[0] for r in rows if not r[3]} - set(gold))
    answers: dict[int, list[str]] = {}  # each voted subject's answers, for the class an early retirement decided
    for source_id, _, label, is_gold in rows:
        if not is_gold:
            answers.setdefault(source_id, []).append(label)
    chosen = post.argmax(axis=1)
    # Written in short batches, each its own transaction, touching only the derived columns:
    # one transaction over every row held them all locked for seconds, and while it did, the
    # queue (which skips locked rows) told every volunteer there was nothing to label and
    # every vote waited on its volunteer's profile (found by bench/campaign.py).
    for start in range(0, len(volunteer_ids), CONSENSUS_WRITE_BATCH):
        batch = volunteer_ids[start : start + CONSENSUS_WRITE_BATCH]
        with transaction.atomic():
            for user_id in batch:
                VolunteerProfile.objects.get_or_create(user_id=user_id)
            profiles = list(VolunteerProfile.objects.filter(user_id__in=batch).order_by("user_id"))
            for profile in profiles:
                matrix = confusions[v_index[profile.user_id]].round(4).tolist()
                profile.confusion = {**profile.confusion, workflow.slug: matrix}
            VolunteerProfile.objects.bulk_update(profiles, ["confusion"])
    retired = []  # rows of the subjects retired by their votes, for the campaign's curve
    for start in range(0, len(voted), CONSENSUS_WRITE_BATCH):
        subjects = list(
            Subject.objects.filter(workflow=workflow, source_id__in=voted[start : start + CONSENSUS_WRITE_BATCH])
            .only("id", "source_id", "weighted_label", "retired_at", "retire_reason")
            .order_by("id")
        )
        retired += [
            s_index[s.source_id] for s in subjects if s.retired_at is not None and s.retire_reason not in NOT_BY_VOTES
        ]
        for subject in subjects:
            i = s_index[subject.source_id]
            decided = decided_class(subject.retire_reason, answers.get(subject.source_id, []))
            if subject.retired_at is not None and decided in keys:
                chosen[i] = keys.index(decided)
            label = keys[int(chosen[i])]
            report.changed += label != subject.weighted_label
            subject.weighted_label, subject.weighted_confidence = label, float(post[i, chosen[i]])
        with transaction.atomic():
            Subject.objects.bulk_update(subjects, ["weighted_label", "weighted_confidence"])
    report.subjects, report.volunteers = len(voted), len(volunteer_ids)
    record_consensus_snapshot(workflow, rows, gold, fitted[retired], chosen[retired])
    return report


#: Retire reasons of subjects that are not the volunteers' consensus.
NOT_BY_VOTES = ("gold", "field guide", MACHINE_ASSISTED_REASON)


def record_consensus_snapshot(workflow: Workflow, rows, gold: dict[int, str], fitted, labels):
    """One point of the live campaign's curve (:class:`ConsensusSnapshot`).

    ``fitted`` holds the retired subjects' posteriors as Dawid-Skene fitted them and ``labels``
    the class index each was labelled with (the tempered posterior's best class, or the class an
    early retirement decided); the model's own estimate that a label is right is ``fitted``'s
    probability of it.
    """
    import numpy as np

    keys = workflow.class_keys
    answers = [(source_id, label) for source_id, _, label, is_gold in rows if is_gold and source_id in gold]
    return ConsensusSnapshot.objects.create(
        workflow=workflow,
        n_votes=len(rows),
        n_retired=len(labels),
        estimated_accuracy=float(fitted[np.arange(len(labels)), labels].mean()) if len(labels) else None,
        gold_accuracy=(sum(label == gold[s] for s, label in answers) / len(answers)) if answers else None,
        class_counts={key: int(n) for key, n in zip(keys, np.bincount(labels, minlength=len(keys)), strict=True)},
        prior_strength=workflow.consensus_prior_strength,
    )


# --- the volunteer's own page --------------------------------------------------------------------
#: What later apps add to a volunteer's page: name -> function of the volunteer. The learning
#: app registers the model's effect here (in its AppConfig.ready), so labelling never imports it.
SUMMARY_EXTRAS: dict[str, Callable[[User], Any]] = {}


def volunteer_summary(volunteer: User, workflow: Workflow) -> dict[str, Any]:
    """What a volunteer sees about themselves: counts, streak, gold accuracy and confusion."""
    votes = Classification.objects.filter(volunteer=volunteer)
    days = sorted({d.date() for d in votes.values_list("created_at", flat=True)}, reverse=True)
    streak = 0
    expected = timezone.now().date()
    for day in days:
        if day == expected or (streak == 0 and day == expected - timedelta(days=1)):
            streak += 1
            expected = day - timedelta(days=1)
        else:
            break
    keys = workflow.class_keys
    confusion = [[0] * len(keys) for _ in keys]
    gold = {g.source_id: g.label for g in GoldLabel.objects.filter(workflow=workflow)}
    for source_id, label in votes.filter(is_gold=True, workflow=workflow).values_list("source_id", "label"):
        if source_id in gold and gold[source_id] in keys and label in keys:
            confusion[keys.index(gold[source_id])][keys.index(label)] += 1
    profile = profile_of(volunteer)
    return {
        **{name: extra(volunteer) for name, extra in SUMMARY_EXTRAS.items()},
        "n_votes": votes.count(),
        "n_today": votes.filter(created_at__date=timezone.now().date()).count(),
        "streak_days": streak,
        "gold_answered": profile.gold_answered,
        "gold_accuracy": profile.gold_accuracy,
        "confusion": list(zip(keys, confusion, strict=True)),
        "classes": keys,
        "retired_with_you": Subject.objects.filter(
            workflow=workflow, retired_at__isnull=False, source__classifications__volunteer=volunteer
        ).count(),
    }
