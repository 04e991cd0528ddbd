"""Approximate similarity search (ml.ann): exact below the threshold, a faiss index above it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.ann import INDEX_FILE, METHOD, build_index, exact_neighbours, index_lists, open_search
from ml.embedding_store import read_unit_rows, write_embeddings
from ml.errors import DataError, ShapeMismatchError
from ml.similarity import top_k


def clustered(rows: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Rows around ``clusters`` random centres: each row's neighbours are mostly its cluster's."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, rows)
    return (centres[labels] + 0.35 * rng.normal(size=(rows, dim))).astype(np.float32)


def embedding_set(folder: Path, matrix: np.ndarray) -> Path:
    return write_embeddings(folder, np.arange(len(matrix)) + 1000, matrix)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, dict]:
    """3000 clustered rows with an index (threshold 500): 76 lists, 32 probed per query."""
    folder = embedding_set(tmp_path_factory.mktemp("ann") / "set", clustered(3000))
    return folder, build_index(folder, exact_max_rows=500, seed=0)


def test_a_set_at_or_below_the_threshold_is_searched_exactly_like_top_k(tmp_path) -> None:
    folder = embedding_set(tmp_path / "set", clustered(400))
    built = build_index(folder, exact_max_rows=400)
    assert built["method"] == "exact" and built["rows"] == 400
    assert not (folder / INDEX_FILE).exists()
    search = open_search(folder)
    unit = read_unit_rows(folder)
    assert search.method == "exact"
    for row in (0, 17, 399):
        rows, scores = search.search(unit[row], 7, exclude=np.array([row]))
        expected_rows, expected_scores = top_k(unit, unit[row], 7, exclude=np.array([row]))
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(scores, expected_scores)


def test_above_the_threshold_an_index_finds_the_true_neighbours_and_reports_its_recall(indexed) -> None:
    folder, built = indexed
    assert built["method"] == METHOD and (folder / INDEX_FILE).stat().st_size == built["index_bytes"]
    # 2 sqrt(3000) rounds to 128 lists, capped at 3000 // 39 = 76 so k-means has 39 rows per list.
    assert built["rows"] == 3000 and built["lists"] == index_lists(3000) == 76 and built["probes"] == 32
    search = open_search(folder)
    assert search.method == METHOD and search.index is not None
    unit = read_unit_rows(folder)
    sample = np.arange(0, 3000, 15)
    truth = exact_neighbours(unit, sample, 10)
    hits = []
    for row, true_rows in zip(sample, truth, strict=True):
        rows, scores = search.search(unit[row], 10, exclude=np.array([row]))
        assert rows.dtype == np.int64 and scores.dtype == np.float32 and len(rows) == 10
        np.testing.assert_allclose(scores, unit[rows] @ unit[row], rtol=0, atol=1e-5)  # cosines, best first
        assert np.all(np.diff(scores) <= 0)
        hits.append(len(set(rows.tolist()) & set(true_rows.tolist())) / 10)
    assert np.mean(hits) >= 0.9
    # The build measured its own recall the same way, on its own sample of rows.
    assert 0.9 <= built["recall_at_10"] <= 1.0 and built["recall_queries"] == 200
    assert abs(built["recall_at_10"] - np.mean(hits)) < 0.05


def test_exact_neighbours_agree_with_top_k_per_row(indexed) -> None:
    unit = read_unit_rows(indexed[0])
    rows = np.array([3, 1500, 2999])
    found = exact_neighbours(unit, rows, 5, chunk_rows=700)  # several chunks, the own row in one
    for row, neighbours in zip(rows, found, strict=True):
        np.testing.assert_array_equal(neighbours, top_k(unit, unit[row], 5, exclude=np.array([row]))[0])


def test_excluded_rows_are_never_returned_and_k_is_capped(indexed, tmp_path) -> None:
    folder, _ = indexed
    search = open_search(folder)
    unit = read_unit_rows(folder)
    nearest = top_k(unit, unit[42], 6)[0]  # the row itself and its 5 nearest
    rows, _ = search.search(unit[42], 10, exclude=nearest)
    assert len(rows) == 10 and not set(rows.tolist()) & set(nearest.tolist())
    # A tiny indexed set: k larger than what is left after the exclusions.
    small = embedding_set(tmp_path / "small", clustered(100, clusters=3))
    assert build_index(small, exact_max_rows=10)["method"] == METHOD
    rows, scores = open_search(small).search(read_unit_rows(small)[0], 500, exclude=np.arange(90))
    assert sorted(rows.tolist()) == list(range(90, 100)) and len(scores) == 10


def test_bad_queries_and_exclusions_are_refused_by_name(indexed) -> None:
    search = open_search(indexed[0])
    with pytest.raises(DataError, match="query has 31 features, the embeddings 32"):
        search.search(np.ones(31, dtype=np.float32), 5)
    with pytest.raises(DataError, match="NaN or infinity"):
        search.search(np.full(32, np.nan, dtype=np.float32), 5)
    with pytest.raises(DataError, match="outside 0..2999"):
        search.search(np.ones(32, dtype=np.float32), 5, exclude=np.array([3000]))
    with pytest.raises(DataError, match="k must be at least 1"):
        search.search(np.ones(32, dtype=np.float32), 0)
    with pytest.raises(DataError, match="exact_max_rows must be at least 1"):
        build_index(indexed[0], exact_max_rows=0)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_index_file_is_named_in_the_error(indexed, tmp_path, damage: str) -> None:
    folder = embedding_set(tmp_path / "set", read_unit_rows(indexed[0]))
    good = (indexed[0] / INDEX_FILE).read_bytes()
    (folder / INDEX_FILE).write_bytes(b"not an index" * 100 if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(DataError, match=rf"{folder / INDEX_FILE}: not a readable faiss IVF index"):
        open_search(folder)


def test_an_index_of_another_set_is_refused(indexed, tmp_path) -> None:
    other = embedding_set(tmp_path / "other", clustered(2000, seed=1))
    (other / INDEX_FILE).write_bytes((indexed[0] / INDEX_FILE).read_bytes())
    with pytest.raises(ShapeMismatchError, match=rf"{other / INDEX_FILE}: the index holds 3000 rows of 32 features"):
        open_search(other)


def test_a_stopped_build_leaves_no_index_and_no_partial_file(tmp_path) -> None:
    folder = embedding_set(tmp_path / "set", clustered(1000))
    messages: list[str] = []

    def stop_at_writing(fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("writing"):
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        build_index(folder, exact_max_rows=100, progress=stop_at_writing)
    assert messages[0].startswith("k-means") and any("recall@10" in m for m in messages)
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "source_ids.npy", "unit.npy"]
    built = build_index(folder, exact_max_rows=100)
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", INDEX_FILE, "source_ids.npy", "unit.npy"]
    assert built["method"] == METHOD


def test_raising_the_threshold_past_the_set_removes_its_index(tmp_path) -> None:
    folder = embedding_set(tmp_path / "set", clustered(800))
    assert build_index(folder, exact_max_rows=100)["method"] == METHOD
    assert open_search(folder).method == METHOD
    built = build_index(folder, exact_max_rows=1000)
    assert built["method"] == "exact" and built["removed_stale_index"] is True
    assert not (folder / INDEX_FILE).exists() and open_search(folder).method == "exact"


def test_the_index_build_is_deterministic_for_a_seed(tmp_path) -> None:
    matrix = clustered(1200)
    first = embedding_set(tmp_path / "a", matrix)
    second = embedding_set(tmp_path / "b", matrix)
    assert (
        build_index(first, exact_max_rows=100, seed=3)["recall_at_10"]
        == build_index(second, exact_max_rows=100, seed=3)["recall_at_10"]
    )
    assert (first / INDEX_FILE).read_bytes() == (second / INDEX_FILE).read_bytes()
