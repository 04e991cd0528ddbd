"""Volunteers flag sources as interesting with a note; scientists read the flags (list, source page, exports)."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from rgzlabel.labelling.models import Flag
from rgzlabel.science.roles import SCIENTISTS_GROUP

pytestmark = pytest.mark.django_db

NASTY = '<script>alert("x")</script> =HYPERLINK("http://evil") giant?'


@pytest.fixture
def scientist(django_user_model):
    user = django_user_model.objects.create_user("carol", password="correct horse battery")
    user.groups.add(Group.objects.get_or_create(name=SCIENTISTS_GROUP)[0])
    return user


def flag(client, source_id, note):
    return client.post(reverse("labelling:api-flag"), {"source": source_id, "note": note})


def test_a_volunteer_flags_a_source_and_flagging_again_edits_the_note(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = flag(client, source.pk, "  looks   like a\ngiant ")
    assert response.status_code == 200 and response.json()["created"] is True
    assert Flag.objects.get().note == "looks like a giant"  # one line, spaces collapsed
    response = flag(client, source.pk, "a hybrid, I think")
    assert response.json()["created"] is False
    assert list(Flag.objects.values_list("volunteer__username", "source_id", "note")) == [
        ("alice", source.pk, "a hybrid, I think")
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"note": "x" * 281}, "note: at most 280 characters, this one has 281"),
        ({"note": "   "}, "note: say in a few words"),
        ({"note": "fine", "source": 999999}, "source: there is no source 999999"),
        ({"note": "fine", "source": "abc"}, "source: the flag named no source"),
    ],
)
def test_a_bad_flag_is_refused_clearly_and_writes_nothing(client, volunteer, make_source, data, message) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = client.post(reverse("labelling:api-flag"), {"source": source.pk, **data})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Flag.objects.exists()


def test_a_too_long_edit_keeps_the_old_note(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    flag(client, source.pk, "bent lobes")
    assert flag(client, source.pk, "y" * 300).status_code == 400
    assert Flag.objects.get().note == "bent lobes"


def test_flagging_needs_a_volunteer(client, make_source) -> None:
    assert flag(client, make_source().pk, "hello").status_code == 401


def test_the_form_path_flags_without_javascript(client, volunteer, make_source) -> None:
    source = make_source()
    client.force_login(volunteer)
    response = client.post(reverse("labelling:flag"), {"source": source.pk, "note": "odd"}, follow=True)
    assert "Flagged for the scientists" in response.content.decode()
    response = client.post(reverse("labelling:flag"), {"source": source.pk, "note": ""}, follow=True)
    assert "Not flagged: note:" in response.content.decode()
    assert Flag.objects.get().note == "odd"


def test_a_volunteer_sees_only_their_own_notes(client, volunteer, other_volunteer, make_source) -> None:
    source = make_source()
    Flag.objects.create(volunteer=other_volunteer, source=source, note="bob's secret hunch")
    client.force_login(volunteer)
    flag(client, source.pk, NASTY)
    page = client.get(reverse("labelling:me")).content.decode()
    assert "bob&#x27;s secret hunch" not in page and "bob's secret hunch" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "<script>alert" not in page
    client.post(reverse("labelling:unflag"), {"source": source.pk})
    assert list(Flag.objects.values_list("note", flat=True)) == ["bob's secret hunch"]
    # The scientists' list is not for volunteers.
    assert client.get(reverse("science:flags")).status_code == 403


def test_scientists_see_flags_in_the_list_on_the_source_page_and_in_the_exports(
    client, volunteer, other_volunteer, scientist, make_source
) -> None:
    flagged, plain = make_source(), make_source()
    Flag.objects.create(volunteer=volunteer, source=flagged, note=NASTY)
    Flag.objects.create(volunteer=other_volunteer, source=flagged, note="Ça ressemble à un FRII 🌌")
    client.force_login(scientist)

    listing = client.get(reverse("science:flags")).content.decode()
    assert flagged.name in listing and plain.name not in listing
    assert "&lt;script&gt;" in listing and "<script>alert" not in listing
    assert "alice" not in listing  # volunteers are pseudonymous
    source_page = client.get(reverse("science:source", args=[flagged.pk])).content.decode()
    assert "&lt;script&gt;" in source_page and "Ça ressemble à un FRII" in source_page

    rows = list(
        csv.DictReader(io.StringIO(b"".join(client.get("/science/exports/flags.csv").streaming_content).decode()))
    )
    assert sorted(r["note"] for r in rows) == sorted([NASTY, "Ça ressemble à un FRII 🌌"])
    assert {r["source_id"] for r in rows} == {str(flagged.pk)} and "alice" not in str(rows)
    sources = {
        r["source_id"]: r["n_flags"]
        for r in csv.DictReader(
            io.StringIO(b"".join(client.get("/science/exports/sources.csv").streaming_content).decode())
        )
    }
    assert (sources[str(flagged.pk)], sources[str(plain.pk)]) == ("2", "0")

    from astropy.table import Table

    fits = Table.read(io.BytesIO(b"".join(client.get("/science/exports/flags.fits").streaming_content)), format="fits")
    assert len(fits) == 2 and any("\\U0001f30c" in str(note) for note in fits["note"])
    votable = Table.read(
        io.BytesIO(b"".join(client.get("/science/exports/flags.vot").streaming_content)), format="votable"
    )
    assert "Ça ressemble à un FRII 🌌" in [str(n) for n in votable["note"]]


def test_a_note_that_looks_like_a_formula_cannot_run_in_a_spreadsheet(
    client, volunteer, scientist, make_source
) -> None:
    Flag.objects.create(volunteer=volunteer, source=make_source(), note='=HYPERLINK("http://evil")')
    client.force_login(scientist)
    text = b"".join(client.get("/science/exports/flags.csv").streaming_content).decode()
    assert next(csv.DictReader(io.StringIO(text)))["note"] == '\'=HYPERLINK("http://evil")'
