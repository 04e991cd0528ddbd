"""What the classifier's retrains did since a volunteer started: the figures on their own page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.labelling.services import NOT_VOLUNTEER_CONSENSUS
from rgzlabel.learning.models import ClassifierVersion


def model_effect(volunteer: User) -> dict[str, Any] | None:
    """How the classifier changed since the volunteer's first vote, in figures (None before any retrain).

    Compares the newest evaluated classifier trained after the first vote with the one the
    volunteer started with (the newest before the first vote; when they started before any
    classifier existed, the first one trained after). ``your_labels`` counts the consensus
    labels the newest classifier learned from that the volunteer voted on.
    """
    votes = Classification.objects.filter(volunteer=volunteer, is_gold=False)
    first_vote = votes.order_by("created_at").values_list("created_at", flat=True).first()
    if first_vote is None:
        return None
    evaluated = ClassifierVersion.objects.filter(metrics__accuracy__isnull=False).order_by("created_at", "id")
    since = list(evaluated.filter(created_at__gt=first_vote))
    if not since:
        return None
    latest = since[-1]
    baseline = evaluated.filter(created_at__lt=first_vote).last() or (since[0] if len(since) > 1 else None)
    learned = Subject.objects.filter(
        workflow_id__in=votes.values("workflow_id"),
        retired_at__isnull=False,
        source__classifications__in=votes,
    ).exclude(retire_reason__in=NOT_VOLUNTEER_CONSENSUS)
    if latest.labels_until is not None:
        learned = learned.filter(retired_at__lte=latest.labels_until)
    return {
        "retrains": len(since),
        "n_labels": latest.n_labels,
        "your_labels": learned.distinct().count(),
        "accuracy_now": 100 * float(latest.metrics["accuracy"]),
        "accuracy_before": 100 * float(baseline.metrics["accuracy"]) if baseline is not None else None,
        "evaluated_on": latest.metrics.get("evaluated_on", ""),
        "classifier": latest.pk,
    }
