"""Source list and detail: consensus, prediction, filters, cone search and its validation."""

from __future__ import annotations

import math

import pytest
from django.urls import reverse

from rgzlabel.catalog.models import Source
from rgzlabel.catalog.search import within_cone

pytestmark = pytest.mark.django_db

ARCSEC = 1 / 3600


def ids_in(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_a_source_shows_position_names_consensus_and_prediction(api_as, catalogue) -> None:
    source = catalogue.sources[0]
    row = api_as("scientist").get(reverse("api:source-detail", args=[source.pk])).json()
    assert (row["name"], row["ra_deg"], row["dec_deg"]) == (source.name, 150.0, 2.0)
    assert row["names"] == [{"dataset": "mirabest", "id": "42", "catalogue_label": "FRII"}]
    assert row["consensus"]["n_votes"] == 2 and row["consensus"]["label"] == "FRII"
    assert row["consensus"]["confidence"] == 1.0 and row["consensus"]["retired"] is False
    prediction = row["prediction"]
    assert prediction["classifier"] == catalogue.classifier.pk
    assert set(prediction["probabilities"]) == {"FRI", "FRII", "hybrid"}
    assert prediction["probabilities"]["hybrid"] == 0.0  # a class the model never saw
    assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)


def test_the_list_is_paginated_and_predicts_each_row(api_as, catalogue) -> None:
    page = api_as("scientist").get(reverse("api:source-list"), {"page_size": 4}).json()
    assert page["count"] == 6 and len(page["results"]) == 4 and page["next"]
    assert all(row["prediction"] is not None for row in page["results"])


def test_sources_without_a_classifier_have_no_prediction(api_as, make_source) -> None:
    make_source()
    rows = api_as("scientist").get(reverse("api:source-list")).json()["results"]
    assert rows[0]["prediction"] is None and rows[0]["consensus"]["n_votes"] == 0


def test_it_filters_by_label_and_confidence(api_as, catalogue, workflow, volunteer) -> None:
    from tests.voting import served_vote

    served_vote(volunteer, catalogue.sources[1].pk, "FRI", workflow)
    client = api_as("scientist")
    assert ids_in(client.get(reverse("api:source-list"), {"label": "FRII"})) == [catalogue.sources[0].pk]
    assert ids_in(client.get(reverse("api:source-list"), {"label": "FRI", "min_confidence": 0.9})) == [
        catalogue.sources[1].pk
    ]
    assert ids_in(client.get(reverse("api:source-list"), {"min_confidence": 0.5})) == [
        catalogue.sources[0].pk,
        catalogue.sources[1].pk,
    ]


# --- cone search -----------------------------------------------------------------------------------
def test_a_source_just_inside_the_radius_is_found_and_one_just_outside_is_not(api_as, make_source) -> None:
    # Along a line of constant RA the angular distance is exactly the difference in Dec.
    inside = make_source(ra_deg=10.0, dec_deg=45.0 + 9.99 * ARCSEC)
    outside = make_source(ra_deg=10.0, dec_deg=45.0 - 10.01 * ARCSEC)
    # At Dec 45 a step in RA is cos(45 deg) as long on the sky: 19.9 arcsec of RA is 14.07 arcsec.
    east = make_source(ra_deg=10.0 + 19.9 * ARCSEC, dec_deg=45.0)
    response = api_as("scientist").get(reverse("api:source-list"), {"ra": 10.0, "dec": 45.0, "radius": 10.0})
    assert ids_in(response) == [inside.pk]
    assert response.json()["results"][0]["distance_arcsec"] == pytest.approx(9.99, abs=1e-6)
    wider = api_as("scientist").get(reverse("api:source-list"), {"ra": 10.0, "dec": 45.0, "radius": 14.2})
    assert ids_in(wider) == [inside.pk, outside.pk, east.pk]  # nearest first
    assert ids_in(api_as("scientist").get(reverse("api:source-list"), {"ra": 10.0, "dec": 45.0, "radius": 14.0})) == [
        inside.pk,
        outside.pk,
    ]


def test_the_cone_wraps_around_ra_zero(api_as, make_source) -> None:
    before = make_source(ra_deg=360.0 - 3 * ARCSEC, dec_deg=0.0)
    after = make_source(ra_deg=2 * ARCSEC, dec_deg=0.0)
    make_source(ra_deg=180.0, dec_deg=0.0)
    make_source(ra_deg=360.0 - 8 * ARCSEC, dec_deg=0.0)
    client = api_as("scientist")
    assert ids_in(client.get(reverse("api:source-list"), {"ra": 0.0, "dec": 0.0, "radius": 5.0})) == [
        after.pk,
        before.pk,
    ]
    centred_below_360 = client.get(reverse("api:source-list"), {"ra": 360 - ARCSEC, "dec": 0.0, "radius": 5.0})
    assert set(ids_in(centred_below_360)) == {before.pk, after.pk}


def test_a_cone_over_the_pole_covers_every_ra(make_source) -> None:
    near_pole = [make_source(ra_deg=ra, dec_deg=89.999) for ra in (0.0, 90.0, 180.0, 270.0)]
    far = make_source(ra_deg=0.0, dec_deg=89.9)
    found = list(within_cone(Source.objects.all(), 45.0, 90.0, 5.0))
    assert {s.pk for s in found} == {s.pk for s in near_pole} and far not in found
    assert all(s.distance_arcsec == pytest.approx(3.6, abs=1e-6) for s in found)


def test_the_exact_check_drops_the_corners_of_the_box(make_source) -> None:
    corner = make_source(ra_deg=100.0 + 9 * ARCSEC, dec_deg=9 * ARCSEC)  # |d| = 12.7 arcsec
    assert list(within_cone(Source.objects.all(), 100.0, 0.0, 10.0)) == []
    assert [s.pk for s in within_cone(Source.objects.all(), 100.0, 0.0, 13.0)] == [corner.pk]


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"ra": 360, "dec": 0, "radius": 1}, "ra", "below 360"),
        ({"ra": -1, "dec": 0, "radius": 1}, "ra", "greater than or equal to 0"),
        ({"ra": 1, "dec": 91, "radius": 1}, "dec", "less than or equal to 90"),
        ({"ra": 1, "dec": 0, "radius": 0}, "radius", "greater than 0"),
        ({"ra": 1, "dec": 0, "radius": 36001}, "radius", "less than or equal to 36000"),
        ({"ra": "ten", "dec": 0, "radius": 1}, "ra", "valid number"),
        ({"ra": 1, "dec": 0}, "radius", "needs ra, dec and radius"),
        ({"min_confidence": 2}, "min_confidence", "less than or equal to 1"),
    ],
)
def test_bad_search_parameters_are_a_400_naming_the_field(api_as, params, field, words) -> None:
    response = api_as("scientist").get(reverse("api:source-list"), params)
    assert response.status_code == 400
    assert words in " ".join(response.json()[field])


def test_consensus_lists_subjects_with_filters(api_as, catalogue) -> None:
    client = api_as("scientist")
    rows = client.get(reverse("api:consensus-list"), {"label": "FRII"}).json()["results"]
    assert [(r["source"], r["vote_count"], r["workflow"]) for r in rows] == [
        (catalogue.sources[0].pk, 2, "fr-morphology")
    ]
    assert client.get(reverse("api:consensus-list"), {"retired": "true"}).json()["count"] == 0
    assert client.get(reverse("api:consensus-list"), {"workflow": "nope"}).status_code == 400


def test_model_versions_show_metrics_and_jobs_show_logs_to_admins(api_as, catalogue) -> None:
    from rgzlabel.learning.models import Job

    classifiers = api_as("scientist").get(reverse("api:classifier-list")).json()["results"]
    assert classifiers[0]["metrics"]["accuracy"] == 0.83 and classifiers[0]["is_active"] is True
    assert "path" not in classifiers[0]
    job = Job.objects.create(kind=Job.Kind.EMBED, log="epoch 1\n")
    admin = api_as("admin")
    assert "log" not in admin.get(reverse("api:job-list")).json()["results"][0]
    assert admin.get(reverse("api:job-detail", args=[job.pk])).json()["log"] == "epoch 1\n"
