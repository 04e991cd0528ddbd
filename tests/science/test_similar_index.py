""" "More like this" through the embedding set's approximate index once the index job has built one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rgzlabel.learning.models import EmbeddingSet

pytestmark = pytest.mark.django_db


@pytest.fixture
def embedded(make_source) -> tuple[list, EmbeddingSet]:
    """240 sources embedded in 16 dimensions around 12 cluster centres, the active set."""
    from ml.embedding_store import write_embeddings
    from rgzlabel.learning.embedding import activate_embedding_set, embeddings_folder

    sources = [make_source() for _ in range(240)]
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, 16))
    matrix = (centres[rng.integers(0, 12, len(sources))] + 0.3 * rng.normal(size=(len(sources), 16))).astype(np.float32)
    folder = write_embeddings(embeddings_folder(), [s.pk for s in sources], matrix)
    embedding_set = EmbeddingSet.objects.create(method="pca", path=str(folder), n_sources=len(sources), dim=16)
    activate_embedding_set(embedding_set)
    return sources, embedding_set


def exact_neighbours(embedding_set: EmbeddingSet, source, k: int) -> list[int]:
    from ml.embedding_store import read_embeddings, read_unit_rows
    from ml.similarity import top_k

    ids = read_embeddings(embedding_set.path).source_ids
    unit = read_unit_rows(embedding_set.path)
    row = int(np.flatnonzero(ids == source.pk)[0])
    return [int(ids[r]) for r in top_k(unit, unit[row], k, exclude=np.array([row]))[0]]


def test_similar_sources_use_the_index_once_built_and_agree_with_exact_search(embedded) -> None:
    from ml.ann import METHOD, build_index
    from rgzlabel.science import services

    sources, embedding_set = embedded
    before = {s.pk: [n.pk for n, _ in services.similar_sources(s, k=5)] for s in sources[:30]}
    assert services._similarity_search(embedding_set).method == "exact"
    built = build_index(embedding_set.path, exact_max_rows=60)
    assert built["method"] == METHOD and built["recall_at_10"] == 1.0
    # The same web process picks the new index up (its file's mtime keys the opened search).
    assert services._similarity_search(embedding_set).method == METHOD
    for source in sources[:30]:
        after = [n.pk for n, _ in services.similar_sources(source, k=5)]
        assert after == before[source.pk] == exact_neighbours(embedding_set, source, 5)


def test_an_unusable_index_is_logged_by_name_and_the_set_searched_exactly(embedded, caplog) -> None:
    from ml.ann import INDEX_FILE
    from rgzlabel.science.services import similar_sources

    sources, embedding_set = embedded
    index = Path(embedding_set.path) / INDEX_FILE
    index.write_bytes(b"not a faiss index" * 64)
    with caplog.at_level(logging.ERROR, logger="rgzlabel.science.services"):
        neighbours = [n.pk for n, _ in similar_sources(sources[3], k=5)]
    assert f"{index}: not a readable faiss IVF index" in caplog.text
    assert neighbours == exact_neighbours(embedding_set, sources[3], 5)
