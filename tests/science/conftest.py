"""Personas for the science app (volunteer, scientist, admin, outsider) and a small labelled catalogue."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rgzlabel.science.roles import grant_scientist_role

PERSONAS = ["outsider", "volunteer", "scientist", "admin"]


@pytest.fixture
def scientist(django_user_model):
    """A member of the scientists group, put there the way admins do it.

    Through the service, not ``Group.objects.get``: a transactional test's flush (PostgreSQL
    in CI) deletes the group the data migration made, and the service makes it again.
    """
    user = django_user_model.objects.create_user("carol", password="correct horse battery")
    assert grant_scientist_role(user)
    return user


@pytest.fixture
def api_as(request) -> Callable[[str], APIClient]:
    """An API client authenticated by token as a persona: outsider, volunteer, scientist or admin."""
    fixture_of = {"volunteer": "volunteer", "scientist": "scientist", "admin": "admin_user"}

    def client_for(persona: str) -> APIClient:
        client = APIClient()
        if persona != "outsider":
            user = request.getfixturevalue(fixture_of[persona])
            client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        return client

    return client_for


@dataclass
class Catalogue:
    sources: list
    classifier: object
    classes: list[str]


@pytest.fixture
def catalogue(make_source, workflow, volunteer, other_volunteer, tmp_path) -> Catalogue:
    """Six sources on a line of RA, embedded, an active classifier over them, and two votes on the first."""
    from ml.classifier import fit_classifier
    from ml.embed import write_embeddings
    from rgzlabel.catalog.models import Provenance
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder
    from rgzlabel.learning.models import ClassifierVersion, EmbeddingSet
    from tests.voting import served_vote

    sources = [make_source(ra_deg=150.0 + i, dec_deg=2.0, angular_size_arcsec=20.0 + i) for i in range(6)]
    Provenance.objects.create(source=sources[0], dataset="mirabest", external_id="42", catalogue_label="FRII")
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(6, 8)).astype(np.float32)
    folder = write_embeddings(embeddings_folder(), [s.pk for s in sources], matrix)
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=6, dim=8)
    activate_embedding_set(embedding_set)
    classes = ["FRI", "FRII", "hybrid"]
    # Only FRI and FRII among the training labels: hybrid's column must come out as 0.
    model = fit_classifier(matrix, np.array([0, 1, 0, 1, 0, 1]))
    path = tmp_path / "classifier.pkl"
    path.write_bytes(pickle.dumps({"model": model, "committee": [], "classes": classes}))
    classifier = ClassifierVersion.objects.create(
        embedding_set=embedding_set,
        classes=classes,
        n_labels=6,
        metrics={"evaluated": True, "accuracy": 0.83},
        path=str(path),
        is_active=True,
    )
    served_vote(volunteer, sources[0].pk, "FRII", workflow)
    served_vote(other_volunteer, sources[0].pk, "FRII", workflow)
    return Catalogue(sources=sources, classifier=classifier, classes=classes)
