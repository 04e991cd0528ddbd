"""Scientists' pages: dashboard, plots, embedding map, source page; personas and content."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from rgzlabel.learning.models import EmbeddingSet
from tests.voting import served_vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def scientist_user(django_user_model):
    user = django_user_model.objects.create_user("sci", password="x")
    user.groups.add(Group.objects.get_or_create(name="scientists")[0])
    return user


@pytest.fixture
def embedded(make_source):
    """Ten sources with embeddings: two tight pairs of look-alikes, the rest far apart."""
    from ml.embed import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder

    sources = [make_source(ra_deg=150.0 + i, dec_deg=2.0) for i in range(10)]
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(10, 16)).astype(np.float32)
    matrix[1] = matrix[0] + 0.01  # source 1 looks like source 0
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=10, dim=16))
    return sources


def plotted(data: dict) -> list[dict]:
    """The map's columns (ids, names, x, y, values coded by categories) as one dict per point."""
    categories = data["categories"] or []
    columns = zip(data["ids"], data["names"], data["x"], data["y"], data["values"], strict=True)
    return [
        {"id": i, "name": name, "x": x, "y": y, "v": categories[v] if categories and v is not None else v}
        for i, name, x, y, v in columns
    ]


def page_urls(source_id: int) -> list[str]:
    return [
        reverse("science:dashboard"),
        reverse("science:plot", args=["accuracy"]),
        reverse("science:plot", args=["loss"]),
        reverse("science:plot", args=["campaign"]),
        reverse("science:map"),
        reverse("science:map-data"),
        reverse("science:source", args=[source_id]),
    ]


def test_outsiders_are_sent_to_log_in(client, embedded) -> None:
    for url in page_urls(embedded[0].pk):
        response = client.get(url)
        assert response.status_code == 302 and "login" in response["Location"], url


def test_volunteers_are_refused(client, volunteer, embedded) -> None:
    client.force_login(volunteer)
    for url in page_urls(embedded[0].pk):
        assert client.get(url).status_code == 403, url


@pytest.mark.parametrize("persona", ["scientist_user", "admin_user"])
def test_scientists_and_admins_see_every_page(client, request, persona, embedded) -> None:
    client.force_login(request.getfixturevalue(persona))
    for url in page_urls(embedded[0].pk):
        response = client.get(url)
        assert response.status_code == 200, url
    assert client.get(reverse("science:plot", args=["accuracy"])).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_source_page_shows_position_votes_and_look_alikes(
    client, scientist_user, embedded, workflow, volunteer, other_volunteer
) -> None:
    source = embedded[0]
    served_vote(volunteer, source.pk, "FRII", workflow)
    served_vote(other_volunteer, source.pk, "FRII", workflow)
    client.force_login(scientist_user)
    page = client.get(reverse("science:source", args=[source.pk])).content.decode()
    assert "10h00m00.0s +02d00m00.0s" in page  # RA 150 deg, Dec 2 deg in sexagesimal
    assert "2 votes: FRII 2" in page
    assert volunteer.username not in page and other_volunteer.username not in page  # votes are anonymous
    look_alike = reverse("science:source", args=[embedded[1].pk])
    assert page.index(look_alike) < page.index(reverse("science:source", args=[embedded[2].pk]))
    assert "third.ucllnl.org" in page


def test_similar_sources_rank_the_look_alike_first(embedded) -> None:
    from rgzlabel.science.services import similar_sources

    neighbours = similar_sources(embedded[0], k=3)
    assert neighbours[0][0] == embedded[1] and neighbours[0][1] > 0.99
    assert embedded[0] not in [s for s, _ in neighbours]


def test_the_map_gives_a_point_per_source_coloured_by_consensus(
    client, scientist_user, embedded, workflow, volunteer
) -> None:
    served_vote(volunteer, embedded[3].pk, "hybrid", workflow)
    client.force_login(scientist_user)
    data = client.get(reverse("science:map-data"), {"colour": "consensus"}).json()
    assert data["method"] == "PCA" and data["count"] == 10 and len(plotted(data)) == 10
    values = {p["id"]: p["v"] for p in plotted(data)}
    assert values[embedded[3].pk] == "hybrid" and values[embedded[4].pk] is None
    names = {p["id"]: p["name"] for p in plotted(data)}  # the map's text alternative lists them
    assert names[embedded[3].pk] == embedded[3].name
    assert client.get(reverse("science:map-data"), {"colour": "nonsense"}).status_code == 400


def test_the_science_link_shows_for_scientists_only(client, scientist_user, volunteer) -> None:
    client.force_login(volunteer)
    assert reverse("science:dashboard") not in client.get(reverse("home")).content.decode()
    client.force_login(scientist_user)
    assert reverse("science:dashboard") in client.get(reverse("home")).content.decode()


def test_the_dashboard_reads_the_simulated_random_curve(settings, tmp_path) -> None:
    import json

    from rgzlabel.science.services import accuracy_plot, simulated_random_curve

    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"curves": {"volunteers": {"random": {"labels": [10, 20], "error": [40.0, 35.5]}}}}))
    settings.RGZ_SIMULATION_CURVES = str(path)
    curve = simulated_random_curve()
    assert curve == {"labels": [10, 20], "error": [40.0, 35.5]}
    assert accuracy_plot(curve)[:4] == b"\x89PNG"
    settings.RGZ_SIMULATION_CURVES = str(tmp_path / "missing.json")
    assert simulated_random_curve() is None


def test_the_source_page_and_map_show_the_active_classifiers_prediction(client, scientist_user, embedded) -> None:
    import pickle

    from ml.classifier import fit_classifier
    from ml.embed import read_embeddings
    from rgzlabel.learning.models import ClassifierVersion

    embedding_set = EmbeddingSet.objects.get(is_active=True)
    stored = read_embeddings(embedding_set.path)
    labels = np.array([0, 1] * 5)  # indices into the classes below: FRI and FRII, never hybrid
    model = fit_classifier(stored.matrix, labels)
    path = f"{embedding_set.path}-classifier.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "committee": None, "classes": ["FRI", "FRII", "hybrid"]}, handle)
    classifier = ClassifierVersion.objects.create(
        embedding_set=embedding_set, classes=["FRI", "FRII", "hybrid"], n_labels=10, path=path, is_active=True
    )
    client.force_login(scientist_user)
    page = client.get(reverse("science:source", args=[embedded[0].pk])).content.decode()
    assert f"Classifier {classifier.pk} (active):" in page and "hybrid 0.000" in page
    data = client.get(reverse("science:map-data"), {"colour": "prediction"}).json()
    assert {p["v"] for p in plotted(data)} <= {"FRI", "FRII"} and len(plotted(data)) == 10


def test_the_dashboard_states_which_encoder_and_views_the_embeddings_come_from(
    client, scientist_user, embedded
) -> None:
    from rgzlabel.learning.embedding import activate_embedding_set
    from rgzlabel.learning.models import EncoderVersion

    client.force_login(scientist_user)
    page = client.get(reverse("science:dashboard")).content.decode()
    pca = EmbeddingSet.objects.get(is_active=True)
    assert f"Embeddings {pca.pk} in use: pixel PCA (cold start) of the images; 16 dimensions, 10 sources." in page
    folder = pca.path
    for architecture, name, views, said in (
        ("p4m-resnet10", "byol-cpu-p4m", "dihedral", "(p4m-resnet10, invariant to rotations and flips), mean of 8"),
        ("resnet18", "byol-cpu-quick", "centre", "(resnet18), centre view"),
    ):
        encoder = EncoderVersion.objects.create(name=name, architecture=architecture, checkpoint_path="x.pt")
        active = EmbeddingSet.objects.create(
            encoder=encoder, method="encoder", views=views, path=folder, n_sources=10, dim=96
        )
        activate_embedding_set(active)
        page = client.get(reverse("science:dashboard")).content.decode()
        assert f"Embeddings {active.pk} in use: encoder {name} {said}" in page
        assert "96 dimensions" in page and "pixel PCA" not in page


def test_each_consensus_refit_adds_a_point_to_the_campaigns_curve_on_the_dashboard(
    client, scientist_user, django_user_model, make_source, workflow
) -> None:
    from rgzlabel.labelling.models import ConsensusSnapshot, GoldLabel
    from rgzlabel.labelling.services import recompute_consensus

    workflow.retire_after = 2
    workflow.save()
    client.force_login(scientist_user)
    assert "No consensus refit yet" in client.get(reverse("science:dashboard")).content.decode()
    volunteers = [django_user_model.objects.create_user(f"v{i}") for i in range(2)]
    gold = make_source()
    GoldLabel.objects.create(workflow=workflow, source=gold, label="FRII")
    served_vote(volunteers[0], gold.pk, "FRII", workflow)  # right
    served_vote(volunteers[1], gold.pk, "FRI", workflow)  # wrong
    sources = [make_source() for _ in range(4)]
    for source, label in zip(sources[:3], ["FRI", "FRII", "FRII"], strict=True):
        for volunteer in volunteers:
            served_vote(volunteer, source.pk, label, workflow)
    served_vote(volunteers[0], sources[3].pk, "hybrid", workflow)  # voted, not retired
    recompute_consensus(workflow)
    served_vote(volunteers[1], sources[3].pk, "hybrid", workflow)  # now retired
    recompute_consensus(workflow)

    first, second = ConsensusSnapshot.objects.filter(workflow=workflow)
    assert (first.n_votes, first.n_retired, second.n_votes, second.n_retired) == (9, 3, 10, 4)
    assert first.class_counts == {"FRI": 1, "FRII": 2, "hybrid": 0, "unsure": 0}
    assert second.class_counts["hybrid"] == 1 and second.gold_accuracy == 0.5
    assert 0.25 < second.estimated_accuracy <= 1.0
    page = client.get(reverse("science:dashboard")).content.decode()
    assert "10 votes):\n  <b>4</b> sources retired by their votes" in page
    assert "FRI 25.0 %, FRII 50.0 %, hybrid 25.0 %, unsure 0.0 %" in page and "<b>50 %</b> of gold" in page
    plot = client.get(reverse("science:plot", args=["campaign"]))
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_a_long_campaign_curve_is_thinned_evenly_and_keeps_its_newest_point(workflow) -> None:
    from rgzlabel.labelling.models import ConsensusSnapshot
    from rgzlabel.science.services import CAMPAIGN_CURVE_POINTS, campaign_curve

    ConsensusSnapshot.objects.bulk_create(
        ConsensusSnapshot(workflow=workflow, n_votes=10 * i, n_retired=i, prior_strength=0.25) for i in range(1000)
    )
    points = campaign_curve(workflow)
    votes = [p.n_votes for p in points]
    assert len(points) == CAMPAIGN_CURVE_POINTS and votes == sorted(votes)
    assert votes[0] == 0 and votes[-1] == 9990
    assert max(np.diff(votes)) <= 30  # no gap much wider than 1000 / 400 snapshots
