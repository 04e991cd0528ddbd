"""One label per source for the catalogue: the best estimate from everything the project knows.

A retired subject's label is its volunteers' consensus (or the label a machine-assisted
retirement gave it). An open subject's label combines what is known so far: the Dawid-Skene
posterior of the votes it already has (each volunteer weighed by their reliability) and the
active classifier's probability, as independent evidence (:func:`ml.consensus.assisted_posterior`,
the rule machine-assisted retirement uses). Before this, an open source with two votes was
labelled by the classifier alone, and on a weak encoder one or two votes are worth more than
the classifier (docs/benchmarks.md, "Campaign replay").

``catalogue_basis`` says where each label came from, so a scientist can select only the
volunteer-retired rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rgzlabel.labelling.models import Subject, Workflow
from rgzlabel.labelling.services import MACHINE_ASSISTED_REASON, volunteer_posterior, votes_with_reliability
from rgzlabel.science.predictions import Predictions

#: Values of ``catalogue_basis``.
BASIS_VOLUNTEERS = "volunteers"  # retired by its votes
BASIS_ASSISTED = MACHINE_ASSISTED_REASON  # retired because volunteers and classifier agreed
BASIS_COMBINED = "votes+classifier"  # open: its votes so far and the classifier
BASIS_CLASSIFIER = "classifier"  # open, no vote yet
BASIS_VOTES = "votes"  # open, no classifier prediction


@dataclass(frozen=True)
class SubjectState:
    """What the catalogue needs of one subject (None fields: no subject in the workflow)."""

    source_id: int
    retired: bool
    retire_reason: str
    majority_label: str
    weighted_label: str
    assisted_label: str
    vote_count: int

    @classmethod
    def of(cls, subject: Subject) -> SubjectState:
        """The state of a loaded subject."""
        return cls(
            subject.source_id,
            subject.retired_at is not None,
            subject.retire_reason,
            subject.consensus_label,
            subject.weighted_label,
            subject.assisted_label,
            subject.vote_count,
        )


@dataclass(frozen=True)
class CatalogueEntry:
    label: str
    confidence: float | None
    basis: str


NO_ENTRY = CatalogueEntry("", None, "")


def catalogue_entries(
    workflow: Workflow, subjects: Sequence[SubjectState], predictions: Predictions | None
) -> dict[int, CatalogueEntry]:
    """The catalogue label of each subject (see the module's docstring), keyed by source id.

    One query reads the votes of the open subjects that have any; the rest is arithmetic.
    """
    from ml.consensus import assisted_posterior

    keys = workflow.class_keys
    classes = list(predictions.classes) if predictions is not None else []
    shared = [c for c in classes if c in keys]
    voted_open = [s.source_id for s in subjects if not s.retired and s.vote_count > 0]
    votes = votes_with_reliability(workflow, voted_open) if voted_open else {}
    entries: dict[int, CatalogueEntry] = {}
    for subject in subjects:
        if subject.retired:
            if subject.retire_reason == MACHINE_ASSISTED_REASON:
                entries[subject.source_id] = CatalogueEntry(subject.assisted_label, None, BASIS_ASSISTED)
            else:
                label = subject.weighted_label or subject.majority_label
                entries[subject.source_id] = CatalogueEntry(label, None, BASIS_VOLUNTEERS)
            continue
        proba = predictions.by_source.get(subject.source_id) if predictions is not None else None
        these = votes.get(subject.source_id, [])
        volunteers = volunteer_posterior(these, workflow) if these else None
        if proba is None or len(shared) < 2:
            if volunteers is None:
                entries[subject.source_id] = NO_ENTRY
            else:
                best = int(volunteers.argmax())
                entries[subject.source_id] = CatalogueEntry(keys[best], float(volunteers[best]), BASIS_VOTES)
            continue
        machine = np.asarray([proba[classes.index(c)] for c in shared], dtype=float)
        if volunteers is None:
            combined, basis = assisted_posterior(None, machine), BASIS_CLASSIFIER
        else:
            # The votes' posterior over the classes the classifier knows; a vote for another key
            # (e.g. "unsure") only shifts the others' weights.
            restricted = np.asarray([volunteers[keys.index(c)] for c in shared], dtype=float)
            total = restricted.sum()
            restricted = restricted / total if total > 0 else np.full(len(shared), 1.0 / len(shared))
            combined, basis = assisted_posterior(restricted, machine), BASIS_COMBINED
        best = int(combined.argmax())
        entries[subject.source_id] = CatalogueEntry(shared[best], float(combined[best]), basis)
    return entries
