"""The embedding map's data: the index job's UMAP file when there is one, never UMAP in a request."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from rgzlabel.learning.models import EmbeddingSet, Job
from tests.conftest import ROOT, _database_url

pytestmark = pytest.mark.django_db


def embed(sources, seed: int = 0) -> Path:
    """An active embedding set of ``sources`` in three clusters; returns its folder."""
    from ml.embed import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32)).astype(np.float32)
    matrix = centres[np.arange(len(sources)) % 3] + 0.3 * rng.normal(size=(len(sources), 32)).astype(np.float32)
    folder = embeddings_folder()
    write_embeddings(folder, [s.pk for s in sources], matrix)
    activate_embedding_set(EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=len(sources), dim=32))
    return folder


@pytest.fixture
def mapped(make_source):
    return [make_source() for _ in range(40)]


def map_data(client, **params) -> dict:
    response = client.get(reverse("science:map-data"), params)
    assert response.status_code == 200, response.content[:300]
    return response.json()


def test_the_map_is_the_index_jobs_umap_layout(client, admin_user, mapped) -> None:
    from ml.layout import build_map, read_map

    folder = embed(mapped)
    build_map(folder, n_epochs=50)  # what the index job does
    client.force_login(admin_user)
    data = map_data(client)
    assert data["method"] == "UMAP" and data["count"] == data["n_sources"] == 40
    assert "PCA projection" not in data["note"]
    coords, stored_ids = read_map(folder), np.load(folder / "source_ids.npy")
    assert data["ids"] == stored_ids.tolist()
    extent = float(np.ptp(coords, axis=0).max())
    assert np.allclose(np.c_[data["x"], data["y"]], coords, atol=extent * 1e-4)
    assert not (folder / "map_pca2.npy").exists()  # nothing was projected in the request


def test_a_hand_written_map_file_is_drawn_as_it_is(client, admin_user, mapped) -> None:
    # Points on a circle: no projection of these embeddings would put them there.
    folder = embed(mapped)
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    np.save(folder / "map_umap.npy", np.c_[np.cos(angles), np.sin(angles)].astype(np.float32))
    client.force_login(admin_user)
    data = map_data(client)
    assert data["method"] == "UMAP"
    assert np.allclose(np.hypot(data["x"], data["y"]), 1.0, atol=1e-3)


def test_without_the_umap_file_the_map_is_pca_and_says_an_index_job_makes_it(client, admin_user, mapped) -> None:
    folder = embed(mapped)
    client.force_login(admin_user)
    data = map_data(client)
    assert data["method"] == "PCA" and data["count"] == 40
    assert "no UMAP map of this embedding yet" in data["note"] and "index job" in data["note"]
    assert (folder / "map_pca2.npy").exists() and not (folder / "map_umap.npy").exists()

    job = Job.objects.create(kind=Job.Kind.INDEX, state=Job.State.RUNNING, progress=0.4)
    data = map_data(client)
    assert data["method"] == "PCA"
    assert f"The UMAP map is being computed (index job #{job.pk}, running, 40 %)" in data["note"]
    assert not (folder / "map_umap.npy").exists()


def test_a_map_file_of_another_size_is_not_drawn(client, admin_user, mapped) -> None:
    folder = embed(mapped)
    np.save(folder / "map_umap.npy", np.zeros((39, 2), dtype=np.float32))
    client.force_login(admin_user)
    data = map_data(client)
    assert data["method"] == "PCA" and data["count"] == 40
    assert "does not fit this embedding set" in data["note"]


def test_a_set_too_small_for_umap_shows_the_jobs_pca_and_why(client, admin_user, make_source) -> None:
    from ml.layout import build_map

    folder = embed([make_source() for _ in range(8)])
    build_map(folder)
    client.force_login(admin_user)
    data = map_data(client)
    assert data["method"] == "PCA" and "UMAP needs more rows than n_neighbors=15" in data["note"]
    assert "index job" not in data["note"]


def test_labels_travel_as_indices_into_the_categories(client, admin_user, mapped, workflow) -> None:
    from rgzlabel.labelling.models import Subject

    embed(mapped)
    Subject.objects.filter(source__in=mapped[:5]).update(consensus_label="FRII")
    Subject.objects.filter(source__in=mapped[5:7]).update(consensus_label="FRI")
    client.force_login(admin_user)
    data = map_data(client, colour="consensus")
    assert data["categories"] == ["FRI", "FRII"]
    by_id = dict(zip(data["ids"], data["values"], strict=True))
    assert [by_id[s.pk] for s in mapped[:8]] == [1, 1, 1, 1, 1, 0, 0, None]
    names = dict(zip(data["ids"], data["names"], strict=True))
    assert names[mapped[3].pk] == mapped[3].name


def test_a_map_of_more_sources_than_an_in_list_takes_reads_whole_tables(client, admin_user, workflow) -> None:
    # Above 5,000 points the names and labels are read table-wide, not through an IN list of ids.
    from rgzlabel.catalog.models import Source
    from rgzlabel.labelling.models import Subject

    sources = Source.objects.bulk_create(Source(name=f"BULK J{n:06d}") for n in range(6000))
    Source.objects.create(name="NOT EMBEDDED")
    Subject.objects.bulk_create(
        Subject(source=s, workflow=workflow, consensus_label="FRI" if n % 7 == 0 else "") for n, s in enumerate(sources)
    )
    embed(sources)
    client.force_login(admin_user)
    data = map_data(client)
    assert data["count"] == 6000 and data["ids"] == [s.pk for s in sources]
    assert data["names"][:2] == ["BULK J000000", "BULK J000001"] and "NOT EMBEDDED" not in data["names"]
    assert data["categories"] == ["FRI"]
    assert data["values"][:8] == [0, None, None, None, None, None, None, 0]


def test_the_map_data_is_gzipped_for_browsers_that_accept_it(client, admin_user, mapped) -> None:
    embed(mapped)
    client.force_login(admin_user)
    plain = client.get(reverse("science:map-data"))
    packed = client.get(reverse("science:map-data"), HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert "Content-Encoding" not in plain and packed["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(packed.content)) == plain.json()


# Runs in a fresh interpreter against the test database: asks for the map of a set without a
# UMAP file, then reports whether umap-learn (or numba, which it compiles with) was loaded.
PROBE = r"""
import json, sys
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.test import Client
client = Client()
client.force_login(get_user_model().objects.get(username="root"))
from django.urls import reverse
data = client.get(reverse("science:map-data")).json()
print(json.dumps({"method": data["method"], "count": data["count"],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {"umap", "numba", "pynndescent"})}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_request_never_computes_umap(admin_user, make_source) -> None:
    from django.db import connection

    folder = embed([make_source() for _ in range(30)])
    env = dict(
        os.environ, DATABASE_URL=_database_url(connection.settings_dict), DJANGO_SETTINGS_MODULE="rgzlabel.settings"
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"method": "PCA", "count": 30, "loaded": []}
    assert not (folder / "map_umap.npy").exists()
