"""Instances built from hand-written SQL (the hot path's) equal what the ORM reads, on either backend."""

from __future__ import annotations

import pytest
from django.utils import timezone

from rgzlabel.labelling import rows
from rgzlabel.labelling.models import Subject, VolunteerProfile, Workflow

pytestmark = pytest.mark.django_db


def values(instance, names=None) -> dict:
    fields = instance._meta.concrete_fields if names is None else [instance._meta.get_field(n) for n in names]
    return {f.attname: getattr(instance, f.attname) for f in fields}


def test_a_row_of_two_models_converts_as_the_orm_does(make_source, workflow, volunteer) -> None:
    """Datetimes, booleans, floats and JSON come back as the ORM gives them; left-out fields load on demand."""
    source = make_source()
    Subject.objects.filter(source=source).update(
        retired_at=timezone.now(), retire_reason="vote count", explored=True, weighted_confidence=0.75, priority=0.5
    )
    workflow.classes = [*workflow.classes, {"key": "X", "label": "Exotic ünïcode", "help": "a JSON value"}]
    workflow.save()
    sql = (
        f"SELECT {rows.columns('s', Subject)}, {rows.columns('w', Workflow, ['id', 'classes'])} "
        f"FROM {rows.table(Subject)} s JOIN {rows.table(Workflow)} w ON w.id = s.workflow_id WHERE s.source_id = %s"
    )

    subject, partial = rows.first_row(sql, [source.pk], (Subject, None), (Workflow, ["id", "classes"]))

    assert values(subject) == values(Subject.objects.get(source=source))
    assert isinstance(subject.retired_at, type(timezone.now())) and subject.explored is True
    assert partial.classes == Workflow.objects.get(pk=workflow.pk).classes and partial.classes[-1]["key"] == "X"
    assert partial.get_deferred_fields() >= {"retire_after", "slug"}
    assert partial.retire_after == workflow.retire_after  # a deferred field loads when read
    assert rows.first_row(sql, [source.pk + 1000], (Subject, None), (Workflow, ["id", "classes"])) is None


def test_a_json_field_with_content_round_trips(volunteer) -> None:
    VolunteerProfile.objects.create(user=volunteer, confusion={"fr-morphology": [[0.9, 0.1], [0.2, 0.8]]})
    sql = f"SELECT {rows.columns('p', VolunteerProfile)} FROM {rows.table(VolunteerProfile)} p WHERE p.user_id = %s"
    (profile,) = rows.first_row(sql, [volunteer.pk], (VolunteerProfile, None))
    assert values(profile) == values(VolunteerProfile.objects.get(user=volunteer))
    assert profile.confusion["fr-morphology"][1] == [0.2, 0.8]
