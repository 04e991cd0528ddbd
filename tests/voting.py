"""Votes as the labelling page casts them: only on a source served to (held by) the volunteer."""

from __future__ import annotations

from rgzlabel.labelling.models import Subject, Workflow
from rgzlabel.labelling.services import VoteOutcome, hold, record_classification


def serve(volunteer, source_id: int, workflow: Workflow) -> None:
    """Hold ``source_id`` for ``volunteer`` as ``next_subject`` would have (gold subjects as gold)."""
    subject = Subject.objects.get(workflow=workflow, source_id=source_id)
    hold(volunteer, subject, is_gold=subject.retire_reason == "gold")


def served_vote(volunteer, source_id: int, label: str, workflow: Workflow) -> VoteOutcome:
    """Serve ``source_id`` to ``volunteer``, then record their vote through the service."""
    serve(volunteer, source_id, workflow)
    return record_classification(volunteer, source_id, label, workflow)
