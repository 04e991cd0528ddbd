"""Model instances from hand-written SQL, converted exactly as the ORM converts them.

The volunteer hot path (serve, vote) runs a handful of short statements per request; building
them with the ORM cost more CPU than running them (issue 17, ``bench.labelling_cpu``). The
statements there are written as SQL, and their rows become model instances here: each value
passes through the converters the ORM's compiler would apply (the backend's, e.g. SQLite's
datetimes and booleans, then the field's own, e.g. JSON), so the instances are the same as a
queryset's. One row can hold several models side by side (a subject with its workflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The model's table name, quoted for the database in use."""
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _fields(model: type[Model], names: tuple[str, ...] | None) -> tuple:
    if names is None:
        return tuple(model._meta.concrete_fields)
    return tuple(model._meta.get_field(name) for name in names)


def columns(alias: str, model: type[Model], names: Sequence[str] | None = None) -> str:
    """The select list of ``model``'s concrete fields (or ``names``) under the table alias ``alias``."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in _fields(model, _key(names)))


def _key(names: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


@cache
def _converters(model: type[Model], names: tuple[str, ...] | None, vendor: str) -> list[tuple[Any, list]]:
    """Per field, its column and the converters the ORM applies (cached per vendor, which decides them)."""
    found = []
    for field in _fields(model, names):
        column = field.cached_col
        found.append((column, connection.ops.get_db_converters(column) + field.get_db_converters(connection)))
    return found


def first_row(sql: str, params: Sequence[Any], *parts: tuple[type[Model], Sequence[str] | None]) -> tuple | None:
    """Run ``sql`` and build one instance per ``(model, field names or None for all)`` part from its
    first row, whose columns are the parts' fields in order (:func:`columns`); None when no row.

    Fields left out of a part are deferred: reading one loads it, as with ``QuerySet.only``.
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        row = cursor.fetchone()
    if row is None:
        return None
    built = []
    start = 0
    for model, names in parts:
        key = _key(names)
        converters = _converters(model, key, connection.vendor)
        values = []
        for (column, functions), value in zip(converters, row[start : start + len(converters)], strict=True):
            for function in functions:
                value = function(value, column, connection)
            values.append(value)
        start += len(converters)
        attnames = [f.attname for f in _fields(model, key)]
        built.append(model.from_db(connection.alias, attnames, values))
    return tuple(built)
