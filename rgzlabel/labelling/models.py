"""Workflows and volunteers' votes."""

from __future__ import annotations

from django.conf import settings
from django.db import models

DEFAULT_CLASSES = [
    {"key": "FRI", "label": "FRI", "help": "Brightest near the core; jets fade with distance."},
    {"key": "FRII", "label": "FRII", "help": "Brightest at the ends: hotspots at the lobe tips."},
    {"key": "hybrid", "label": "Hybrid", "help": "One side looks FRI, the other FRII."},
    {"key": "unsure", "label": "Not sure / other", "help": "Compact, confused, or none of these."},
]


def default_classes() -> list[dict[str, str]]:
    return [dict(c) for c in DEFAULT_CLASSES]


class Workflow(models.Model):
    """A labelling task: the classes offered to volunteers and when a source is done."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=128)
    classes = models.JSONField(default=default_classes)
    retire_after = models.PositiveSmallIntegerField(default=5, help_text="votes after which a source retires")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def class_keys(self) -> list[str]:
        return [c["key"] for c in self.classes]


class Classification(models.Model):
    """One volunteer's vote on one source. The database allows at most one per pair."""

    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="classifications")
    source = models.ForeignKey("catalog.Source", on_delete=models.CASCADE, related_name="classifications")
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="classifications")
    label = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["volunteer", "source"], name="one_vote_per_volunteer_per_source"),
        ]
        indexes = [models.Index(fields=["source", "label"], name="classification_source_label")]

    def __str__(self) -> str:
        return f"{self.volunteer_id} says {self.label} for {self.source_id}"
