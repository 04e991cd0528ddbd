"""The embedding map (ml.layout): PCA then UMAP, stored atomically beside the embedding set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.embedding_store import write_embeddings
from ml.errors import DataError, NonFiniteError, ShapeMismatchError
from ml.layout import MAP_FILE, MAP_INFO_FILE, build_map, read_map, read_map_info


def clustered_set(folder: Path, *, clusters: int = 4, per_cluster: int = 100, dim: int = 512, seed: int = 0):
    """An embedding set of tight clusters around random directions; returns (folder, cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = np.repeat(np.arange(clusters), per_cluster)
    rng.shuffle(labels)
    matrix = centres[labels] + 0.35 * rng.normal(size=(len(labels), dim)).astype(np.float32)
    write_embeddings(folder, np.arange(1000, 1000 + len(labels)), matrix)
    return folder, labels


def neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other rows of each row (Euclidean)."""
    squared = (points**2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * points @ points.T
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1)[:, :k]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_it_writes_a_float32_row_per_source_and_says_how(tmp_path) -> None:
    folder, _ = clustered_set(tmp_path / "set", per_cluster=60)
    info = build_map(folder, n_epochs=100)
    coords = read_map(folder)
    assert coords is not None and coords.shape == (240, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all() and coords.std(axis=0).min() > 0
    assert info["method"] == "umap" and info["rows"] == 240 and info["dim"] == 512 and info["pca_dim"] == 50
    assert read_map_info(folder) == json.loads(json.dumps(info))
    assert leftovers(folder) == []


def test_the_same_seed_gives_the_same_map_and_another_seed_another(tmp_path) -> None:
    folder, _ = clustered_set(tmp_path / "set", per_cluster=50)
    build_map(folder, seed=3, n_epochs=100)
    first = read_map(folder)
    build_map(folder, seed=3, n_epochs=100)
    assert np.array_equal(first, read_map(folder))
    build_map(folder, seed=4, n_epochs=100)
    assert not np.array_equal(first, read_map(folder))


def test_clusters_of_the_embedding_stay_together_and_apart_on_the_map(tmp_path) -> None:
    folder, labels = clustered_set(tmp_path / "set")
    build_map(folder, n_epochs=200)
    coords = read_map(folder)
    # Each point's 10 nearest points on the map are of its own cluster (chance: a quarter)...
    agreement = (labels[neighbours(coords, 10)] == labels[:, None]).mean()
    assert agreement > 0.97, agreement
    # ...and the clusters lie apart: every point is nearer its own cluster's centre than any other's.
    centres = np.stack([coords[labels == c].mean(axis=0) for c in range(4)])
    nearest_centre = np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest_centre == labels).mean() > 0.99


def test_neighbours_in_the_embedding_stay_near_on_the_map(tmp_path) -> None:
    # One smooth curve through 512-d space: no clusters to lean on, only local neighbourhoods.
    t = np.linspace(0, 1, 300)
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(6, 512)).astype(np.float32)
    curve = np.stack([np.cos(3 * t), np.sin(3 * t), np.cos(5 * t), np.sin(5 * t), t, t**2], axis=1)
    write_embeddings(tmp_path / "set", np.arange(300), (curve @ basis + 5 * basis[0]).astype(np.float32))
    build_map(tmp_path / "set", n_epochs=200)
    coords = read_map(tmp_path / "set")
    # Of each point's 10 nearest rows in the embedding, most are among its 20 nearest on the map
    # (a random layout would keep 20 / 299, about 7 %).
    from ml.embedding_store import read_unit_rows

    before, after = neighbours(np.asarray(read_unit_rows(tmp_path / "set")), 10), neighbours(coords, 20)
    kept = np.mean([len(set(b) & set(a)) / 10 for b, a in zip(before, after, strict=True)])
    assert kept > 0.7, kept


def test_large_sets_find_neighbours_approximately_with_the_same_result(tmp_path) -> None:
    # Above exact_neighbours_max_rows pynndescent finds the neighbours (the path 100k rows take).
    folder, labels = clustered_set(tmp_path / "set", per_cluster=60)
    info = build_map(folder, n_epochs=100, exact_neighbours_max_rows=100)
    coords = read_map(folder)
    assert info["neighbours"] == "approximate (pynndescent)"
    assert (labels[neighbours(coords, 10)] == labels[:, None]).mean() > 0.97


def test_a_stopped_build_leaves_the_previous_map_whole(tmp_path) -> None:
    folder, _ = clustered_set(tmp_path / "set", per_cluster=50)
    build_map(folder, n_epochs=50)
    before = (folder / MAP_FILE).read_bytes()

    class Stop(Exception):
        pass

    def stop_in_the_layout(fraction: float, message: str) -> None:
        if message.startswith("UMAP layout: epoch"):  # from inside umap-learn's epoch loop
            raise Stop(message)

    with pytest.raises(Stop, match="epoch 0 of 50"):
        build_map(folder, seed=9, n_epochs=50, progress=stop_in_the_layout)
    assert (folder / MAP_FILE).read_bytes() == before
    assert leftovers(folder) == []


def test_progress_runs_from_zero_to_one_through_the_layout(tmp_path) -> None:
    folder, _ = clustered_set(tmp_path / "set", per_cluster=40)
    reports: list[tuple[float, str]] = []
    build_map(folder, n_epochs=50, progress=lambda fraction, message: reports.append((fraction, message)))
    fractions = [f for f, _ in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("epoch 50 of 50" in message for _, message in reports)


def test_a_set_too_small_for_umap_gets_its_principal_components_and_says_so(tmp_path) -> None:
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(12, 8)).astype(np.float32)
    write_embeddings(tmp_path / "set", np.arange(12), matrix)
    info = build_map(tmp_path / "set")
    assert info["method"] == "pca" and "n_neighbors=15" in info["reason"]
    coords = read_map(tmp_path / "set")
    assert coords.shape == (12, 2) and coords[:, 0].std() >= coords[:, 1].std() > 0
    write_embeddings(tmp_path / "one", [7], matrix[:1])
    assert build_map(tmp_path / "one")["method"] == "pca"
    assert read_map(tmp_path / "one").tolist() == [[0.0, 0.0]]


def test_read_map_is_none_before_a_build_and_refuses_a_map_of_another_set(tmp_path) -> None:
    folder, _ = clustered_set(tmp_path / "set", clusters=2, per_cluster=10)
    assert read_map(folder) is None and read_map_info(folder) is None
    np.save(folder / MAP_FILE, np.zeros((19, 2), dtype=np.float32))
    with pytest.raises(ShapeMismatchError, match=r"expected float32 \(20, 2\)"):
        read_map(folder)
    assert not (folder / MAP_INFO_FILE).exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pca_dim", 1),
        ("n_neighbors", 1),
        ("min_dist", 2.0),
        ("n_epochs", 0),
        ("seed", -1),
        ("exact_neighbours_max_rows", -1),
    ],
)
def test_parameters_out_of_range_are_refused_by_name(tmp_path, option, value) -> None:
    folder, _ = clustered_set(tmp_path / "set", clusters=2, per_cluster=10)
    with pytest.raises(DataError, match=option):
        build_map(folder, **{option: value})
    assert read_map(folder) is None


def test_rows_with_nan_and_missing_sets_are_refused(tmp_path) -> None:
    matrix = np.ones((30, 4), dtype=np.float32)
    matrix[17, 2] = np.nan
    write_embeddings(tmp_path / "set", np.arange(30), matrix)
    with pytest.raises(NonFiniteError, match="row 17"):
        build_map(tmp_path / "set")
    with pytest.raises(FileNotFoundError):
        build_map(tmp_path / "absent")
