"""Exports: CSV, VOTable and FITS hold the same rows and columns; votes are pseudonymous."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from astropy.table import Table
from django.urls import reverse

from rgzlabel.science.exports import anonymise_volunteer, build_table, export_sources, iter_csv
from rgzlabel.science.queries import SourceFilters, find_sources

pytestmark = pytest.mark.django_db

SOURCE_COLUMNS = [
    "source_id", "name", "ra_deg", "dec_deg", "survey", "angular_size_arcsec", "n_votes", "retired",
    "consensus_label", "consensus_confidence", "weighted_label", "weighted_confidence", "retire_reason",
    "assisted_label", "assisted_confidence", "predicted_label", "catalogue_label", "catalogue_confidence",
    "catalogue_basis", "p_FRI", "p_FRII", "p_hybrid", "n_flags",
]  # fmt: skip


def download(client, dataset: str, file_format: str, **params) -> bytes:
    response = client.get(reverse(f"exports:{dataset}-{file_format}"), params)
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"].startswith(f'attachment; filename="rgzlabel-{dataset}-')
    return b"".join(response.streaming_content)


def cell(value) -> object:
    """One value in a form every format agrees on: None for missing, plain Python types."""
    if value is np.ma.masked or value == "" or (isinstance(value, float | np.floating) and math.isnan(value)):
        return None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return round(float(value), 9)
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def table_rows(table: Table) -> list[tuple]:
    return [tuple(cell(row[name]) for name in table.colnames) for row in table]


def csv_rows(text: str, kinds: dict[str, type]) -> tuple[list[str], list[tuple]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)

    def typed(name: str, value: str) -> object:
        if value == "":
            return None
        if kinds[name] is bool:
            return value == "True"
        return round(float(value), 9) if kinds[name] is float else kinds[name](value)

    return header, [tuple(typed(n, v) for n, v in zip(header, row, strict=True)) for row in reader]


def test_sources_read_back_the_same_from_csv_votable_and_fits(api_as, catalogue) -> None:
    client = api_as("scientist")
    votable = Table.read(io.BytesIO(download(client, "sources", "votable")), format="votable")
    fits = Table.read(io.BytesIO(download(client, "sources", "fits")), format="fits")
    assert votable.colnames == fits.colnames == SOURCE_COLUMNS
    kinds = {name: type(cell(fits[name][0])) for name in SOURCE_COLUMNS}
    kinds.update(consensus_label=str, weighted_label=str, consensus_confidence=float, weighted_confidence=float)
    kinds.update(retire_reason=str, assisted_label=str, assisted_confidence=float)
    header, from_csv = csv_rows(download(client, "sources", "csv").decode(), kinds)
    assert header == SOURCE_COLUMNS
    assert table_rows(votable) == table_rows(fits) == from_csv
    assert len(from_csv) == 6

    first = dict(zip(SOURCE_COLUMNS, from_csv[0], strict=True))
    source = catalogue.sources[0]
    assert (first["source_id"], first["name"], first["ra_deg"], first["dec_deg"]) == (source.pk, source.name, 150, 2)
    assert (first["n_votes"], first["consensus_label"], first["consensus_confidence"]) == (2, "FRII", 1.0)
    assert first["p_hybrid"] == 0 and first["p_FRI"] + first["p_FRII"] == pytest.approx(1.0)
    assert first["predicted_label"] == ("FRI" if first["p_FRI"] > first["p_FRII"] else "FRII")
    assert fits["ra_deg"].unit == "deg" and votable["angular_size_arcsec"].unit == "arcsec"


def test_the_source_export_takes_the_api_filters(api_as, catalogue) -> None:
    client = api_as("scientist")
    text = download(client, "sources", "csv", ra=151.0, dec=2.0, radius=60.0).decode()
    assert [row[0] for row in list(csv.reader(io.StringIO(text)))[1:]] == [str(catalogue.sources[1].pk)]
    response = client.get(reverse("exports:sources-csv"), {"ra": 400, "dec": 0, "radius": 1})
    assert response.status_code == 400 and "ra" in response.json()


def test_votes_are_exported_under_a_stable_pseudonym(api_as, catalogue, volunteer, other_volunteer) -> None:
    client = api_as("admin")
    fits = Table.read(io.BytesIO(download(client, "classifications", "fits")), format="fits")
    votable = Table.read(io.BytesIO(download(client, "classifications", "votable")), format="votable")
    text = download(client, "classifications", "csv").decode()
    assert fits.colnames == ["volunteer", "source_id", "source_name", "workflow", "label", "is_gold", "created_at"]
    assert table_rows(fits) == table_rows(votable)
    assert [cell(v) for v in fits["volunteer"]] == [
        anonymise_volunteer(volunteer.pk),
        anonymise_volunteer(other_volunteer.pk),
    ]
    assert len(set(fits["volunteer"])) == 2
    assert "alice" not in text and "bob" not in text
    assert download(client, "classifications", "csv").decode() == text  # the same pseudonyms every time
    assert list(fits["label"]) == ["FRII", "FRII"] and fits["created_at"][0].endswith("+00:00")


def test_an_empty_catalogue_exports_just_the_columns(api_as) -> None:
    client = api_as("scientist")
    assert download(client, "classifications", "csv").decode().strip() == (
        "volunteer,source_id,source_name,workflow,label,is_gold,created_at"
    )
    assert len(Table.read(io.BytesIO(download(client, "sources", "fits")), format="fits")) == 0


def test_sources_are_read_and_predicted_in_chunks(catalogue, workflow, django_assert_max_num_queries) -> None:
    export = export_sources(find_sources(workflow, SourceFilters()), workflow, chunk_size=2)
    chunks = list(export.chunks())
    assert [len(chunk) for chunk in chunks] == [2, 2, 2]
    assert len(build_table(export)) == 6
    with django_assert_max_num_queries(8):  # per chunk, not per source
        assert sum(piece.count("\n") for piece in iter_csv(export)) == 7


def test_the_weighted_label_column_says_which_consensus_prior_made_it(api_as, workflow) -> None:
    """A scientist reading the file (VOTable DESCRIPTION) knows the consensus rule behind weighted_label."""
    from astropy.io.votable import parse

    for strength in (0.25, 1.0):
        workflow.consensus_prior_strength = strength
        workflow.save()
        votable = parse(io.BytesIO(download(api_as("scientist"), "sources", "votable")))
        field = next(f for f in votable.get_first_table().fields if f.name == "weighted_label")
        assert f"class prior at strength {strength:g})" in str(field.description)


def test_votable_and_fits_are_streamed_chunk_by_chunk_and_read_back_as_built_in_memory() -> None:
    """The streamed writers (a chunk at a time, whatever the rows) give what astropy's own writers
    give for the whole table: the same columns, units, values, missing values and odd text."""
    from rgzlabel.science.exports import Column, Export, iter_table

    rows = [
        (1, 'J0101+0101 <&> "a"', 1.5, True, "FRII"),
        (2, "Zoë's ☄ source", None, False, ""),
        (3, "ctrl\x01char", -2.25e-7, True, "hybrid"),
        (4, "", float("nan"), False, "FRI"),
        (5, "plain", 3.0, True, "FRI"),
    ]
    columns = [
        Column("source_id", "int", "id"),
        Column("name", "str", "name & <note>"),
        Column("flux", "float", "flux", "mJy"),
        Column("retired", "bool", "retired"),
        Column("label", "str", "label"),
    ]
    export = Export("odd", columns, lambda: iter([rows[:2], rows[2:4], rows[4:]]), "an odd <table>")
    votable = Table.read(io.BytesIO(b"".join(iter_table(export, "votable"))), format="votable")
    fits = Table.read(io.BytesIO(b"".join(iter_table(export, "fits"))), format="fits")
    for table in (votable, fits):
        assert table.colnames == [c.name for c in columns] and len(table) == 5
        assert list(table["source_id"]) == [1, 2, 3, 4, 5]
        assert [bool(v) for v in table["retired"]] == [True, False, True, False, True]
        assert table["flux"].unit == "mJy" and table["flux"][0] == 1.5 and table["flux"][2] == -2.25e-7
        assert cell(table["flux"][1]) is None and cell(table["flux"][3]) is None  # missing and NaN
        assert [cell(v) for v in table["label"]] == ["FRII", None, "hybrid", "FRI", "FRI"]  # None: empty
    assert cell(votable["name"][0]) == 'J0101+0101 <&> "a"' and cell(votable["name"][1]) == "Zoë's ☄ source"
    assert cell(votable["name"][2]) == "ctrl\ufffdchar"  # XML cannot carry the control character
    assert cell(fits["name"][1]) == "Zo\\xeb's \\u2604 source"  # FITS is ASCII: escapes, not a crash
