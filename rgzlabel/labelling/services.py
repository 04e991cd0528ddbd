"""The volunteer flow: which subject comes next, recording and undoing votes, consensus.

Every write here is one transaction that locks the subject's row, so vote counts,
retirement and consensus stay exact under any number of concurrent volunteers.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Assignment, Classification, GoldLabel, Subject, VolunteerProfile, Workflow

DEFAULT_WORKFLOW_SLUG = "fr-morphology"
#: How long a served subject holds its vote slot for the volunteer who got it.
ASSIGNMENT_TTL = timedelta(minutes=10)


class VoteRejected(ValueError):
    """A vote that cannot be recorded; the message is fit to show the volunteer."""


class RateLimited(VoteRejected):
    """Too many votes in the last minute."""


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


# --- workflows and subjects ---------------------------------------------------------------------
def default_workflow() -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(
        slug=DEFAULT_WORKFLOW_SLUG,
        defaults={"name": "Fanaroff-Riley morphology", "retire_after": settings.RGZ_RETIRE_AFTER},
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


def profile_of(volunteer: AbstractBaseUser) -> VolunteerProfile:
    profile, _ = VolunteerProfile.objects.get_or_create(user=volunteer)
    return profile


def create_guest() -> AbstractBaseUser:
    """A volunteer who has not signed up yet; signing up later keeps their votes."""
    user = get_user_model().objects.create_user(f"guest-{uuid.uuid4().hex[:12]}")
    user.set_unusable_password()
    user.save(update_fields=["password"])
    VolunteerProfile.objects.create(user=user, is_guest=True)
    return user


def promote_guest(guest: AbstractBaseUser, username: str, password: str, email: str = "") -> AbstractBaseUser:
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


def _serve_gold(volunteer: AbstractBaseUser, workflow: Workflow, exclude: list[int]) -> Subject | None:
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


def next_subject(volunteer: AbstractBaseUser, workflow: Workflow, *, exclude: list[int] | None = None) -> Served | None:
    """The next subject for ``volunteer``: unseen, open, highest priority, with a free vote slot.

    A subject that needs k more votes is held by at most k (+ the workflow's redundancy)
    volunteers at once; concurrent callers skip rows another transaction is serving
    (``SKIP LOCKED`` on PostgreSQL), so two volunteers never both take the last slot.
    """
    exclude = exclude or []
    if workflow.gold_rate_start > 0 and random.random() < gold_rate(profile_of(volunteer), workflow):
        gold = _serve_gold(volunteer, workflow, exclude)
        if gold is not None:
            hold(volunteer, gold, is_gold=True)
            return Served(gold, is_gold=True)

    explore = workflow.exploration_share > 0 and random.random() < workflow.exploration_share
    if explore:
        served = _serve_exploration(volunteer, workflow, exclude)
        if served is not None:
            return served
    open_subjects = Subject.objects.filter(workflow=workflow, retired_at__isnull=True)
    return _claim(volunteer, workflow, open_subjects.order_by("-priority", "vote_count", "id"), exclude)


def _serve_exploration(volunteer: AbstractBaseUser, workflow: Workflow, exclude: list[int]) -> Served | None:
    """A subject drawn uniformly at random, whatever the policy thinks of it (the audit share).

    Explored subjects that still need votes come first, so each gets its consensus label;
    otherwise the first open subject at or after a uniform draw of the random key (wrapping
    round), so which subjects are explored does not depend on what they look like.
    """
    open_subjects = Subject.objects.filter(workflow=workflow, retired_at__isnull=True)
    draw = random.random()
    for candidates in (
        open_subjects.filter(explored=True).order_by("-vote_count", "explore_key"),
        open_subjects.filter(explore_key__gte=draw).order_by("explore_key"),
        open_subjects.filter(explore_key__lt=draw).order_by("explore_key"),
    ):
        served = _claim(volunteer, workflow, candidates, exclude, explore=True)
        if served is not None:
            return served
    return None


def _claim(
    volunteer: AbstractBaseUser, workflow: Workflow, ordered, exclude: list[int], *, explore: bool = False
) -> Served | None:
    """Hold the first subject of ``ordered`` the volunteer has not seen and that has a free vote slot."""
    now = timezone.now()
    held = (
        Assignment.objects.filter(subject=OuterRef("pk"), expires_at__gt=now)
        .exclude(volunteer=volunteer)
        .order_by()
        .values("subject")
        .annotate(n=Count("*"))
        .values("n")
    )
    slots = workflow.retire_after + workflow.redundancy
    rejected: list[int] = []
    for _ in range(5):
        with transaction.atomic():
            subject = (
                ordered.exclude(source__classifications__volunteer=volunteer)
                .exclude(source_id__in=exclude)
                .exclude(pk__in=rejected)
                .annotate(load=F("vote_count") + Coalesce(Subquery(held, output_field=IntegerField()), Value(0)))
                .filter(load__lt=slots)
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if subject is None:
                return None
            # The query above judged the load from a snapshot taken before it waited for
            # the lock; count again now that we hold it, so a hold committed meanwhile counts.
            holders = Assignment.objects.filter(subject=subject, expires_at__gt=now).exclude(volunteer=volunteer)
            if subject.vote_count + holders.count() < slots:
                if explore and not subject.explored:
                    Subject.objects.filter(pk=subject.pk).update(explored=True)
                    subject.explored = True
                hold(volunteer, subject, is_gold=False, explore=explore)
                return Served(subject, is_gold=False, explore=explore)
            rejected.append(subject.pk)
    return None


def hold(volunteer: AbstractBaseUser, subject: Subject, *, is_gold: bool, explore: bool = False) -> None:
    """Hold a vote slot of ``subject`` for ``volunteer`` (one upsert: served again, held anew)."""
    expires_at = timezone.now() + ASSIGNMENT_TTL
    Assignment.objects.bulk_create(
        [Assignment(volunteer=volunteer, subject=subject, is_gold=is_gold, explore=explore, expires_at=expires_at)],
        update_conflicts=True,
        unique_fields=["volunteer", "subject"],
        update_fields=["expires_at", "is_gold", "explore", "served_at"],
    )


def release(volunteer: AbstractBaseUser, source_id: int, workflow: Workflow) -> None:
    """Give back a served subject (a skip), freeing its slot for someone else."""
    Assignment.objects.filter(volunteer=volunteer, subject__workflow=workflow, subject__source_id=source_id).delete()


# --- voting ---------------------------------------------------------------------------------------
def _within_rate(volunteer: AbstractBaseUser) -> bool:
    limit = settings.RGZ_VOTES_PER_MINUTE
    recent = Classification.objects.filter(volunteer=volunteer, created_at__gte=timezone.now() - timedelta(minutes=1))
    return not limit or recent.count() < limit


def record_classification(volunteer: AbstractBaseUser, source_id: int, label: str, workflow: Workflow) -> VoteOutcome:
    """Record one vote; count it, update consensus and retire the subject, all atomically.

    A repeated submission for the same source returns the vote already stored (answered as
    success), so two clicks or a retried request never count twice.
    """
    if label not in workflow.class_keys:
        raise VoteRejected(f"unknown label {label!r}; this workflow offers {', '.join(workflow.class_keys)}")
    if workflow.experts_only and not volunteer.is_staff:
        raise VoteRejected(f"the {workflow.name} workflow is for experts")
    try:
        with transaction.atomic():
            # Lock the subject: concurrent votes on it serialise here, so its count,
            # consensus and retirement are exact.
            subject = Subject.objects.select_for_update().filter(workflow=workflow, source_id=source_id).first()
            if subject is None:
                raise VoteRejected(f"source {source_id} is not in the {workflow.name} workflow")
            within_rate = _within_rate(volunteer)
            if subject.retired_at is not None or not within_rate:
                # Rare paths, kept off the common one: a repeat of a stored vote is
                # answered as success before any refusal.
                existing = Classification.objects.filter(volunteer=volunteer, source_id=source_id).first()
                if existing is not None:
                    return VoteOutcome(existing, created=False, gold=_gold_feedback(existing))
                if not within_rate:
                    raise RateLimited(f"slow down: at most {settings.RGZ_VOTES_PER_MINUTE} votes a minute")
                if subject.retire_reason != "gold":
                    raise VoteRejected(f"{subject.source.name} is already retired: it has all the votes it needs")
                gold = GoldLabel.objects.get(workflow=workflow, source_id=source_id)
                outcome = _record_gold(volunteer, subject, label, gold)
            else:
                explored = Assignment.objects.filter(volunteer=volunteer, subject=subject, explore=True).exists()
                classification = Classification.objects.create(
                    volunteer=volunteer, source_id=source_id, workflow=workflow, label=label, explore=explored
                )
                outcome = VoteOutcome(classification, created=True, retired=_count_vote(subject, workflow))
            Assignment.objects.filter(volunteer=volunteer, subject=subject).delete()
    except IntegrityError:
        # The same volunteer's other request won the race; report its vote.
        existing = Classification.objects.get(volunteer=volunteer, source_id=source_id)
        return VoteOutcome(existing, created=False, gold=_gold_feedback(existing))
    return outcome


def _record_gold(volunteer: AbstractBaseUser, subject: Subject, label: str, gold: GoldLabel) -> VoteOutcome:
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

    votes = list(
        Classification.objects.filter(workflow=workflow, source_id=subject.source_id)
        .order_by("created_at", "id")
        .values_list("label", "volunteer__profile__confusion")
    )
    labels = [label for label, _ in votes]
    subject.vote_count = len(labels)
    subject.consensus_label, subject.consensus_confidence = majority(labels)
    subject.weighted_label, subject.weighted_confidence = weighted_consensus(votes, workflow)
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
    subject.save(
        update_fields=[
            "vote_count",
            "consensus_label",
            "consensus_confidence",
            "weighted_label",
            "weighted_confidence",
            "retired_at",
            "retire_reason",
            "updated_at",
        ]
    )
    return bool(reason)


def retirement_reason(workflow: Workflow, labels: list[str]) -> str:
    """Why the votes so far (in order) retire a subject, or '' when they do not."""
    agree = workflow.retire_on_agreement
    if agree and len(labels) >= agree and len(set(labels[:agree])) == 1:
        return "agreement"
    if len(labels) >= workflow.retire_after:
        return "vote count"
    return ""


def weighted_consensus(votes: list[tuple[str, dict | None]], workflow: Workflow) -> tuple[str, float]:
    """Dawid-Skene posterior of one subject from (label, voter's stored confusion matrices) pairs."""
    import numpy as np

    from ml.consensus import posterior, prior_confusion

    keys = workflow.class_keys
    prior = prior_confusion(len(keys))
    confusions = []
    for _, stored in votes:
        matrix = np.asarray(stored.get(workflow.slug), dtype=float) if stored else None
        confusions.append(matrix if matrix is not None and matrix.shape == prior.shape else prior)
    post = posterior([keys.index(label) for label, _ in votes], confusions, np.full(len(keys), 1.0 / len(keys)))
    best = int(np.argmax(post))
    return keys[best], float(post[best])


def undo_last_vote(volunteer: AbstractBaseUser, workflow: Workflow) -> Served | None:
    """Take back the volunteer's latest vote if it is recent enough.

    Returns the subject again (held for the volunteer, so they can answer it anew), or
    None when there is no vote within the workflow's undo window.
    """
    cutoff = timezone.now() - timedelta(seconds=workflow.undo_window_s)
    with transaction.atomic():
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
        if subject.retire_reason in {"vote count", "agreement", "to expert"}:
            if subject.retire_reason == "to expert":
                Subject.objects.filter(
                    workflow_id=workflow.expert_workflow_id, source_id=subject.source_id, vote_count=0
                ).delete()
            subject.retired_at, subject.retire_reason = None, ""
        if Classification.objects.filter(workflow=workflow, source_id=subject.source_id).exists():
            _count_vote(subject, workflow)
        else:
            subject.vote_count, subject.consensus_label, subject.consensus_confidence = 0, "", None
            subject.weighted_label, subject.weighted_confidence = "", None
            subject.save()
        hold(volunteer, subject, is_gold=False)
    return Served(subject, is_gold=False)


# --- what the page shows around the image --------------------------------------------------------
#: Catalogue labels whose sources illustrate each class in the field guide.
FIELD_GUIDE_LABELS = {"FRI": ["FRI"], "FRII": ["FRII"], "hybrid": ["hybrid"], "unsure": ["compact", "bent"]}


def field_guide(workflow: Workflow, per_class: int = 3) -> list[dict[str, Any]]:
    """Real example sources per class, chosen from catalogue (provenance) labels."""
    from rgzlabel.catalog.models import Provenance

    guide = []
    for item in workflow.classes:
        labels = FIELD_GUIDE_LABELS.get(item["key"], [item["key"]])
        examples = list(
            Provenance.objects.filter(catalogue_label__in=labels, source__cutout__isnull=False)
            .order_by("source_id")
            .values_list("source_id", "source__name")[:per_class]
        )
        guide.append({**item, "examples": [{"id": i, "name": n} for i, n in examples]})
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


def recompute_consensus(workflow: Workflow) -> ConsensusReport:
    """Fit Dawid-Skene over every vote of a workflow; store labels and volunteers' matrices."""
    import numpy as np

    from ml.consensus import Votes, dawid_skene

    keys = workflow.class_keys
    rows = list(
        Classification.objects.filter(workflow=workflow, is_gold=False).values_list(
            "source_id", "volunteer_id", "label"
        )
    )
    report = ConsensusReport()
    if not rows:
        return report
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
    post, confusions, _ = dawid_skene(votes)
    with transaction.atomic():
        subjects = Subject.objects.select_for_update().filter(workflow=workflow, source_id__in=source_ids)
        for subject in subjects:
            row = post[s_index[subject.source_id]]
            label, confidence = keys[int(np.argmax(row))], float(row.max())
            if label != subject.weighted_label:
                report.changed += 1
            Subject.objects.filter(pk=subject.pk).update(weighted_label=label, weighted_confidence=confidence)
        for volunteer_id, i in v_index.items():
            profile, _ = VolunteerProfile.objects.get_or_create(user_id=volunteer_id)
            profile.confusion = {**profile.confusion, workflow.slug: confusions[i].round(4).tolist()}
            profile.save(update_fields=["confusion"])
    report.subjects, report.volunteers = len(source_ids), len(volunteer_ids)
    return report


# --- the volunteer's own page --------------------------------------------------------------------
def volunteer_summary(volunteer: AbstractBaseUser, workflow: Workflow) -> dict[str, Any]:
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
        "model_effect": model_effect(volunteer),
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


def model_effect(volunteer: AbstractBaseUser) -> str:
    """How the classifier's accuracy moved since the volunteer's first vote, in words ('' if unknown)."""
    from rgzlabel.learning.models import ClassifierVersion

    first_vote = (
        Classification.objects.filter(volunteer=volunteer, is_gold=False)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if first_vote is None:
        return ""
    evaluated = ClassifierVersion.objects.filter(metrics__accuracy__isnull=False)
    before = evaluated.filter(created_at__lt=first_vote).order_by("-created_at").first()
    after = evaluated.filter(created_at__gt=first_vote).order_by("-created_at").first()
    if before is None or after is None:
        return ""
    start, now = 100 * before.metrics["accuracy"], 100 * after.metrics["accuracy"]
    return (
        f"Since your first vote the model has been retrained on {after.n_labels} consensus labels, yours among "
        f"them: its accuracy moved from {start:.0f} % to {now:.0f} %."
    )
