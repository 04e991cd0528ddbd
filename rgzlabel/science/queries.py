"""Read-only querysets shared by the REST API and the exports."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, FilteredRelation, Q, QuerySet

from rgzlabel.catalog.models import Source
from rgzlabel.catalog.search import within_cone
from rgzlabel.labelling.models import Workflow

#: The consensus fields of a source's subject in one workflow, annotated onto each source.
CONSENSUS_FIELDS = (
    "vote_count",
    "retired_at",
    "consensus_label",
    "consensus_confidence",
    "weighted_label",
    "weighted_confidence",
    "retire_reason",
    "assisted_label",
    "assisted_confidence",
)


@dataclass(frozen=True)
class SourceFilters:
    """What a scientist may narrow sources (or subjects) by; None means no condition."""

    label: str | None = None
    min_confidence: float | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    radius_arcsec: float | None = None

    @property
    def has_cone(self) -> bool:
        return self.ra_deg is not None and self.dec_deg is not None and self.radius_arcsec is not None


def sources_with_consensus(workflow: Workflow) -> QuerySet[Source]:
    """Every source, with its subject's consensus in ``workflow`` annotated (one LEFT JOIN)."""
    return Source.objects.annotate(
        in_workflow=FilteredRelation("subjects", condition=Q(subjects__workflow=workflow))
    ).annotate(**{name: F(f"in_workflow__{name}") for name in CONSENSUS_FIELDS})


def filter_by_consensus(rows: QuerySet, filters: SourceFilters) -> QuerySet:
    """Keep rows whose ``consensus_label`` / ``consensus_confidence`` meet ``filters``.

    Works on subjects and on :func:`sources_with_consensus` alike (same field names).
    """
    if filters.label is not None:
        rows = rows.filter(consensus_label=filters.label)
    if filters.min_confidence is not None:
        rows = rows.filter(consensus_confidence__gte=filters.min_confidence)
    return rows


def find_sources(workflow: Workflow, filters: SourceFilters) -> QuerySet[Source]:
    """Sources with their consensus in ``workflow``, narrowed by ``filters``; nearest first in a cone."""
    sources = filter_by_consensus(sources_with_consensus(workflow), filters)
    if filters.ra_deg is not None and filters.dec_deg is not None and filters.radius_arcsec is not None:
        return within_cone(sources, filters.ra_deg, filters.dec_deg, filters.radius_arcsec)
    return sources.order_by("pk")
