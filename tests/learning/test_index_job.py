"""The index job that follows an embedding: unit rows, the UMAP map and the search choice, in the worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rgzlabel.learning.jobs import create_job
from rgzlabel.learning.models import EmbeddingSet, Job
from tests.conftest import wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_an_embedding_is_followed_by_its_index_job(celery_worker, make_source) -> None:
    from ml.ann import INDEX_FILE
    from ml.embedding_store import UNIT_FILE, read_embeddings
    from ml.layout import MAP_FILE

    for _ in range(40):
        make_source()
    embed = wait_for_job(create_job(Job.Kind.EMBED, {"method": "pca", "dim": 8}).pk, celery_worker)
    assert embed.state == Job.State.SUCCEEDED, embed.error + embed.traceback

    index = wait_for_job(embed.result["index_job"], celery_worker, timeout_s=300)

    assert index.state == Job.State.SUCCEEDED, index.error + index.traceback
    embedding_set = EmbeddingSet.objects.get(job=embed)
    assert index.params["embedding_set"] == embedding_set.pk == index.result["embedding_set"]
    folder = Path(embedding_set.path)
    layout = np.load(folder / MAP_FILE)
    assert layout.shape == (40, 2) and np.isfinite(layout).all() and layout.std(axis=0).min() > 0
    assert index.result["map"]["method"] == "umap"
    # 40 rows are searched exactly: no approximate index is built for them.
    assert index.result["search"]["method"] == "exact" and not (folder / INDEX_FILE).exists()
    unit = np.load(folder / UNIT_FILE)
    matrix = read_embeddings(folder).matrix
    np.testing.assert_allclose(unit, matrix / np.linalg.norm(matrix, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
