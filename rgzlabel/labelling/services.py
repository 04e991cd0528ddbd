"""Volunteer-facing writes and reads: which source comes next, and recording a vote."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Classification, Workflow

DEFAULT_WORKFLOW_SLUG = "fr-morphology"


class VoteRejected(ValueError):
    """A vote that cannot be recorded; the message is fit to show the volunteer."""


@dataclass(frozen=True)
class VoteOutcome:
    classification: Classification
    created: bool  # False when this was a repeat of an earlier submission (double click, retry)
    retired: bool


def default_workflow() -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(
        slug=DEFAULT_WORKFLOW_SLUG,
        defaults={"name": "Fanaroff-Riley morphology", "retire_after": settings.RGZ_RETIRE_AFTER},
    )
    return workflow


def next_source(volunteer: AbstractBaseUser, workflow: Workflow, *, exclude: list[int] | None = None) -> Source | None:
    """The next open source this volunteer has not classified, fewest votes first.

    An indexed query (``source_open_idx``) rather than a scan of the votes table; the
    active-learning queue will order the candidates once it exists.
    """
    candidates = (
        Source.objects.filter(retired_at__isnull=True, cutout__isnull=False)
        .exclude(classifications__volunteer=volunteer)
        .order_by("vote_count", "id")
    )
    if exclude:
        candidates = candidates.exclude(pk__in=exclude)
    return candidates.first()


def record_classification(volunteer: AbstractBaseUser, source_id: int, label: str, workflow: Workflow) -> VoteOutcome:
    """Record one vote, counting it and retiring the source in the same transaction.

    A repeated submission for the same source returns the vote already stored (answered as
    success), so two clicks or a retried request never count twice.
    """
    if label not in workflow.class_keys:
        raise VoteRejected(f"unknown label {label!r}; this workflow offers {', '.join(workflow.class_keys)}")
    existing = Classification.objects.filter(volunteer=volunteer, source_id=source_id).first()
    if existing is not None:
        return VoteOutcome(existing, created=False, retired=False)
    try:
        with transaction.atomic():
            # Lock the source row: concurrent votes on one source serialise here, so the
            # vote count and the retirement decision are exact.
            source = Source.objects.select_for_update().filter(pk=source_id).first()
            if source is None:
                raise VoteRejected(f"source {source_id} does not exist")
            if source.retired_at is not None:
                raise VoteRejected(f"{source.name} is already retired: it has all the votes it needs")
            classification = Classification.objects.create(
                volunteer=volunteer, source=source, workflow=workflow, label=label
            )
            retire = source.vote_count + 1 >= workflow.retire_after
            Source.objects.filter(pk=source.pk).update(
                vote_count=F("vote_count") + 1, retired_at=timezone.now() if retire else None
            )
    except IntegrityError:
        # The same volunteer's other request won the race; report its vote.
        existing = Classification.objects.get(volunteer=volunteer, source_id=source_id)
        return VoteOutcome(existing, created=False, retired=False)
    return VoteOutcome(classification, created=True, retired=retire)
