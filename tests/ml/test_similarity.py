import numpy as np
import pytest

from ml.errors import DataError
from ml.similarity import normalise, top_k


def test_it_finds_the_nearest_directions_best_first() -> None:
    matrix = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    rows, scores = top_k(normalise(matrix), np.array([1.0, 0.0]), 3)
    assert rows.tolist() == [0, 1, 2]
    assert scores[0] == pytest.approx(1.0) and scores[0] > scores[1] > scores[2]


def test_it_ignores_scale_and_skips_excluded_rows() -> None:
    matrix = np.array([[10, 0], [0.1, 0.001], [0, 3]], dtype=np.float32)
    rows, _ = top_k(normalise(matrix), matrix[0], 2, exclude=np.array([0]))
    assert rows.tolist() == [1, 2]


def test_it_returns_fewer_when_the_pool_is_small() -> None:
    rows, scores = top_k(normalise(np.eye(3, dtype=np.float32)), np.ones(3), 10, exclude=np.array([1]))
    assert sorted(rows.tolist()) == [0, 2] and len(scores) == 2


def test_it_agrees_with_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(500, 16)).astype(np.float32)
    query = rng.normal(size=16)
    rows, _ = top_k(normalise(matrix), query, 5)
    cosine = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    assert rows.tolist() == np.argsort(-cosine)[:5].tolist()


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [(np.ones(3), 2, "3 features"), (np.array([np.nan, 1.0]), 2, "NaN"), (np.ones(2), 0, "at least 1")],
)
def test_bad_queries_are_clear_errors(query, k, message) -> None:
    with pytest.raises(DataError, match=message):
        top_k(normalise(np.eye(2, dtype=np.float32)), query, k)
