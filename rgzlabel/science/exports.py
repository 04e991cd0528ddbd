"""Catalogue exports for scientists: per-source labels and predictions, and every vote.

An export is a list of typed columns and a generator of row chunks, read from the database
with a server-side cursor (``iterator``), and every format is streamed with memory bounded by
a chunk, whatever the number of rows (a million votes built as one astropy table took 1.5-2 GB
in the web process, and past gunicorn's timeout):

- CSV: written chunk by chunk as it is read.
- VOTable: TABLEDATA, written chunk by chunk as it is read.
- FITS: a binary table needs its row count and fixed string widths in its header, so the rows
  are spooled chunk by chunk to a temporary file (one read of the database), then the header
  and the rows are streamed from it.

:func:`build_table` (one astropy table in memory) remains for small tables and tests.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from django.db.models import Count, QuerySet
from django.utils.crypto import salted_hmac

from rgzlabel.labelling.models import Classification, Flag, Workflow
from rgzlabel.science.catalogue import SubjectState, catalogue_entries
from rgzlabel.science.predictions import active_classifier, predict_sources

CHUNK_SIZE = 2000
#: Formats, with their file extension and media type.
FORMATS = {
    "csv": ("csv", "text/csv; charset=utf-8"),
    "votable": ("vot", "application/x-votable+xml"),
    "fits": ("fits", "application/fits"),
}
DATASETS = ("sources", "classifications", "flags")
_NUMPY_TYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_, "str": np.str_}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # one of _NUMPY_TYPES
    description: str
    unit: str | None = None


@dataclass(frozen=True)
class Export:
    """A table to write: its columns and a fresh generator of row chunks (tuples in column order).

    Missing values are None in the rows; tables write them as NaN (floats) or "" (strings).
    """

    name: str
    columns: list[Column]
    chunks: Callable[[], Iterator[list[tuple]]]
    description: str


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- what is exported ------------------------------------------------------------------------------
def export_sources(sources: QuerySet, workflow: Workflow, chunk_size: int = CHUNK_SIZE) -> Export:
    """Per source: position, consensus in ``workflow`` and the active classifier's probabilities.

    ``sources`` must come from :func:`rgzlabel.science.queries.find_sources` (it carries the
    consensus annotations).
    """
    classifier = active_classifier()
    classes = list(classifier.classes) if classifier else []
    columns = [
        Column("source_id", "int", "rgzlabel source id"),
        Column("name", "str", "source name"),
        Column("ra_deg", "float", "J2000 right ascension", "deg"),
        Column("dec_deg", "float", "J2000 declination", "deg"),
        Column("survey", "str", "radio survey of the image"),
        Column("angular_size_arcsec", "float", "angular size", "arcsec"),
        Column("n_votes", "int", f"volunteer votes in workflow {workflow.slug}"),
        Column("retired", "bool", "the subject has all the votes it needs"),
        Column("consensus_label", "str", "majority label of the volunteers"),
        Column("consensus_confidence", "float", "majority share of the votes"),
        Column(
            "weighted_label",
            "str",
            "Dawid-Skene label (volunteers weighted by reliability, class prior at strength "
            f"{workflow.consensus_prior_strength:g}); a subject retired by agreement or margin keeps the "
            "class its votes agreed on or led with",
        ),
        Column("weighted_confidence", "float", "Dawid-Skene probability of weighted_label"),
        Column("retire_reason", "str", "why the subject retired: vote count, agreement, margin, machine-assisted, ..."),
        Column("assisted_label", "str", "class volunteers and classifier agreed on (machine-assisted retirement)"),
        Column("assisted_confidence", "float", "combined probability of assisted_label"),
        Column("predicted_label", "str", f"most probable class of classifier {classifier.pk if classifier else '-'}"),
        Column("catalogue_label", "str", "best label: consensus if retired, else votes so far and classifier"),
        Column("catalogue_confidence", "float", "probability of catalogue_label (open sources only)"),
        Column("catalogue_basis", "str", "volunteers, machine-assisted, votes+classifier, classifier or votes"),
        *[Column(f"p_{c}", "float", f"classifier probability of {c}") for c in classes],
        Column("n_flags", "int", "volunteers who flagged the source as interesting (notes in the flags export)"),
    ]
    fields = (
        "pk", "name", "ra_deg", "dec_deg", "survey", "angular_size_arcsec",
        "vote_count", "retired_at", "consensus_label", "consensus_confidence", "weighted_label", "weighted_confidence",
        "retire_reason", "assisted_label", "assisted_confidence",
    )  # fmt: skip

    def chunks() -> Iterator[list[tuple]]:
        for chunk in batched(sources.values_list(*fields).iterator(chunk_size=chunk_size), chunk_size):
            predictions = predict_sources([row[0] for row in chunk], classifier) if classifier else None
            flag_counts = dict(
                Flag.objects.filter(source_id__in=[row[0] for row in chunk])
                .values("source_id")
                .annotate(n=Count("id"))
                .values_list("source_id", "n")
            )
            entries = catalogue_entries(workflow, [_subject_state(row) for row in chunk], predictions)
            rows = []
            for (
                pk, name, ra, dec, survey, size, votes, retired_at, label, confidence, weighted, wconf,
                reason, assisted, aconf,
            ) in chunk:  # fmt: skip
                probabilities = predictions.by_source.get(pk) if predictions else None
                entry = entries[pk]
                rows.append(
                    (
                        pk, name, ra, dec, survey, size, votes or 0, retired_at is not None,
                        label or "", confidence, weighted or "", wconf, reason or "", assisted or "", aconf,
                        predictions.label_of(pk) if predictions else "",
                        entry.label, entry.confidence, entry.basis,
                        *(probabilities.tolist() if probabilities is not None else [None] * len(classes)),
                        flag_counts.get(pk, 0),
                    )
                )  # fmt: skip
            yield rows

    description = f"rgzlabel sources: consensus in {workflow.slug}" + (
        f", predictions of classifier {classifier.pk}" if classifier else ""
    )
    return Export("sources", columns, chunks, description)


def _subject_state(row: tuple) -> SubjectState:
    """The catalogue's view of one row of :func:`export_sources`'s query."""
    pk, _name, _ra, _dec, _survey, _size, votes, retired_at, label, _conf, weighted, _wconf, reason, assisted, _ac = row
    retired = retired_at is not None
    return SubjectState(pk, retired, reason or "", label or "", weighted or "", assisted or "", votes or 0)


def anonymise_volunteer(volunteer_id: int) -> str:
    """A stable pseudonym for a volunteer: a keyed hash of the user id (never the username).

    Keyed with SECRET_KEY, so the same volunteer has the same pseudonym in every export while
    the key is unchanged, and pseudonyms cannot be reversed by hashing candidate ids.
    """
    return salted_hmac("rgzlabel.science.exports.volunteer", str(volunteer_id)).hexdigest()[:16]


def export_classifications(chunk_size: int = CHUNK_SIZE) -> Export:
    """One row per vote: pseudonymous volunteer, source, workflow, label, gold flag and time."""
    columns = [
        Column("volunteer", "str", "pseudonymous volunteer id (stable keyed hash)"),
        Column("source_id", "int", "rgzlabel source id"),
        Column("source_name", "str", "source name"),
        Column("workflow", "str", "workflow slug"),
        Column("label", "str", "the volunteer's answer"),
        Column("is_gold", "bool", "an answer to a gold-standard (expert-labelled) subject"),
        Column("created_at", "str", "time of the vote, UTC, ISO 8601"),
    ]
    votes = Classification.objects.order_by("pk").values_list(
        "volunteer_id", "source_id", "source__name", "workflow__slug", "label", "is_gold", "created_at"
    )

    return Export(
        "classifications",
        columns,
        _pseudonymous_chunks(votes, chunk_size),
        "rgzlabel classifications: one row per volunteer vote",
    )


def export_flags(chunk_size: int = CHUNK_SIZE) -> Export:
    """One row per flag: pseudonymous volunteer, source, position and the volunteer's note."""
    columns = [
        Column("volunteer", "str", "pseudonymous volunteer id (stable keyed hash)"),
        Column("source_id", "int", "rgzlabel source id"),
        Column("source_name", "str", "source name"),
        Column("ra_deg", "float", "J2000 right ascension", "deg"),
        Column("dec_deg", "float", "J2000 declination", "deg"),
        Column("note", "str", "the volunteer's note (plain text, one line)"),
        Column("flagged_at", "str", "time of the flag (or its last edit), UTC, ISO 8601"),
    ]
    flags = Flag.objects.order_by("pk").values_list(
        "volunteer_id", "source_id", "source__name", "source__ra_deg", "source__dec_deg", "note", "updated_at"
    )

    return Export(
        "flags",
        columns,
        _pseudonymous_chunks(flags, chunk_size),
        "rgzlabel flags: sources volunteers marked as interesting, with notes",
    )


# --- writing ------------------------------------------------------------------------------------------
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # Free text from volunteers (notes) must never run as a formula when the CSV is opened.
        return "'" + value
    return value


def iter_csv(export: Export) -> Iterator[str]:
    """The export as CSV text, one piece per chunk (a header line first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in export.columns])
    for chunk in export.chunks():
        writer.writerows([_csv_value(v) for v in row] for row in chunk)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()  # the header alone when there are no rows


def _column_array(values: list[Any], kind: str) -> np.ndarray:
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if kind == "str":
        return np.array(["" if v is None else v for v in values], dtype=np.str_)
    return np.array(values, dtype=_NUMPY_TYPES[kind])


def build_table(export: Export):  # -> astropy.table.Table
    """The export as an astropy Table with units and descriptions, built chunk by chunk."""
    from astropy.table import Table

    parts: list[list[np.ndarray]] = [[] for _ in export.columns]
    for chunk in export.chunks():
        for i, column in enumerate(export.columns):
            parts[i].append(_column_array([row[i] for row in chunk], column.kind))
    table = Table(meta={"description": export.description})  # VOTable's DESCRIPTION
    for column, pieces in zip(export.columns, parts, strict=True):
        data = np.concatenate(pieces) if pieces else np.array([], dtype=_NUMPY_TYPES[column.kind])
        if column.kind == "str" and data.dtype.itemsize == 0:
            data = data.astype("U1")  # FITS cannot hold a zero-width string column
        table.add_column(data, name=column.name)
        table[column.name].description = column.description
        table[column.name].unit = column.unit
    return table


def write_table(export: Export, file_format: str) -> IO[bytes]:
    """The export written as ``votable`` or ``fits`` to a temporary file, rewound for reading
    (the same bytes as :func:`iter_table`, for callers that want a file)."""
    output = tempfile.TemporaryFile()  # noqa: SIM115 - the caller reads and closes it
    for piece in iter_table(export, file_format):
        output.write(piece)
    output.seek(0)
    return output


def iter_table(export: Export, file_format: str) -> Iterator[bytes]:
    """The export as ``votable`` or ``fits`` bytes, piece by piece, memory bounded by a chunk."""
    if file_format == "votable":
        return iter_votable(export)
    if file_format == "fits":
        return iter_fits(export)
    raise ValueError(f"format must be votable or fits, not {file_format!r}")


# --- VOTable, streamed ---------------------------------------------------------------------------
_VOTABLE_TYPES = {"int": "long", "float": "double", "bool": "boolean", "str": "unicodeChar"}
#: Characters XML 1.0 cannot carry at all (C0 controls but tab, newline and return).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _votable_cell(value: Any, kind: str) -> str:
    if value is None:
        return "NaN" if kind == "float" else ""
    if kind == "bool":
        return "T" if value else "F"
    if kind == "float":
        return repr(float(value))
    if kind == "str":
        return escape(_NOT_XML.sub("\ufffd", str(value)))
    return str(value)


def iter_votable(export: Export) -> Iterator[bytes]:
    """VOTable 1.4 with TABLEDATA: the header, then the rows of each chunk as it is read."""
    fields = []
    for column in export.columns:
        unit = f" unit={quoteattr(column.unit)}" if column.unit else ""
        size = ' arraysize="*"' if column.kind == "str" else ""
        fields.append(
            f'   <FIELD name={quoteattr(column.name)} datatype="{_VOTABLE_TYPES[column.kind]}"{size}{unit}>\n'
            f"    <DESCRIPTION>{escape(column.description)}</DESCRIPTION>\n   </FIELD>\n"
        )
    yield (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        ' <RESOURCE type="results">\n'
        f"  <TABLE name={quoteattr(export.name)}>\n"
        f"   <DESCRIPTION>{escape(export.description)}</DESCRIPTION>\n"
        + "".join(fields)
        + "   <DATA>\n    <TABLEDATA>\n"
    ).encode()
    kinds = [column.kind for column in export.columns]
    for chunk in export.chunks():
        yield "".join(
            "     <TR>"
            + "".join(f"<TD>{_votable_cell(v, k)}</TD>" for v, k in zip(row, kinds, strict=True))
            + "</TR>\n"
            for row in chunk
        ).encode()
    yield b"    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n"


# --- FITS, spooled then streamed -----------------------------------------------------------------
_FITS_BLOCK = 2880


def _fits_column(values: list[Any], kind: str) -> np.ndarray:
    if kind == "str":
        # FITS strings are ASCII: volunteers' accents and emoji kept as \u escapes, not a crash.
        return np.array([("" if v is None else str(v)).encode("ascii", "backslashreplace") for v in values], dtype="S")
    if kind == "bool":
        return np.where(np.array(values, dtype=bool), b"T", b"F").astype("S1")
    return _column_array(values, kind)


def iter_fits(export: Export) -> Iterator[bytes]:
    """A FITS file: an empty primary HDU and one binary table, its rows spooled to disk first."""
    from astropy.io import fits

    formats = {"int": "K", "float": "D", "bool": "L"}
    widths = [1] * len(export.columns)
    n_rows = 0
    with tempfile.TemporaryFile() as spool:
        for chunk in export.chunks():
            for i, column in enumerate(export.columns):
                array = _fits_column([row[i] for row in chunk], column.kind)
                if column.kind == "str":
                    widths[i] = max(widths[i], array.dtype.itemsize)
                np.save(spool, array, allow_pickle=False)
            n_rows += len(chunk)
        columns = [
            fits.Column(
                name=column.name,
                format=f"{width}A" if column.kind == "str" else formats[column.kind],
                unit=column.unit,
            )
            for column, width in zip(export.columns, widths, strict=True)
        ]
        table = fits.BinTableHDU.from_columns(columns, nrows=0)
        table.header["NAXIS2"] = n_rows
        table.header.add_comment(export.description)
        yield fits.PrimaryHDU().header.tostring().encode("ascii")
        yield table.header.tostring().encode("ascii")
        record = np.dtype(
            [
                (f"c{i}", f"S{width}" if column.kind == "str" else ">i8" if column.kind == "int" else
                 ">f8" if column.kind == "float" else "S1")
                for i, (column, width) in enumerate(zip(export.columns, widths, strict=True))
            ]
        )  # fmt: skip
        spool.seek(0)
        written = 0
        while written < n_rows:
            arrays = [np.load(spool, allow_pickle=False) for _ in export.columns]
            rows = np.zeros(len(arrays[0]), dtype=record)
            for i, array in enumerate(arrays):
                rows[f"c{i}"] = array
            written += len(rows)
            yield rows.tobytes()
        data_bytes = n_rows * record.itemsize
        yield b"\0" * (-data_bytes % _FITS_BLOCK)


def file_name(export: Export, file_format: str) -> str:
    """e.g. ``rgzlabel-sources-20260101.vot``."""
    extension = FORMATS[file_format][0]
    return f"rgzlabel-{export.name}-{datetime.now(UTC):%Y%m%d}.{extension}"


def _pseudonymous_chunks(rows: Any, chunk_size: int) -> Callable[[], Iterator[list[tuple]]]:
    """Chunks of ``rows`` (values_list: a volunteer id first, a datetime last), the volunteer
    pseudonymised and the time as ISO 8601 UTC; each volunteer is hashed once per export."""

    def chunks() -> Iterator[list[tuple]]:
        pseudonyms: dict[int, str] = {}
        for chunk in batched(rows.iterator(chunk_size=chunk_size), chunk_size):
            yield [
                (
                    pseudonyms.setdefault(row[0], anonymise_volunteer(row[0])),
                    *row[1:-1],
                    row[-1].astimezone(UTC).isoformat(timespec="seconds"),
                )
                for row in chunk
            ]

    return chunks
