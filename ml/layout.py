"""The embedding map: a 2-D layout of an embedding set (PCA to ~50 dimensions, then UMAP).

As in the paper (Slijepcevic et al. 2023, the representation shown through PCA then UMAP,
McInnes et al. 2018, arXiv:1802.03426): the unit rows (cosine geometry) are reduced by PCA
to their directions of most variance, which drops noise and makes the neighbour search cheap,
then laid out by umap-learn. The layout is computed once per embedding set, by a job (never in a web
request), and kept in the set's folder as ``map_umap.npy`` (float32 N x 2, row i for the
set's row i) with ``map_umap.json`` beside it (how it was made), both written atomically.

Torch-free and Django-free; umap-learn (and numba, which it compiles with) is imported only
by :func:`build_map`, so the web process that reads a map never loads it.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ml.embedding_store import IDS_FILE, read_unit_rows
from ml.errors import DataError, EmptyDataError, NonFiniteError, ShapeMismatchError

MAP_FILE = "map_umap.npy"
#: How the map was made: the dict :func:`build_map` returns (method, rows, parameters, seconds).
MAP_INFO_FILE = "map_umap.json"

#: ``progress(fraction, message)``: fraction in [0, 1]; it may raise to stop the build.
Progress = Callable[[float, str], None]

#: Up to this many rows the neighbours are found exactly (brute force, about a second at 10k
#: rows), which also spares pynndescent's compilation (about a minute in a fresh process).
EXACT_NEIGHBOURS_MAX_ROWS = 10_000

# Shares of the build's time, as measured at 100k rows (docs/benchmarks.md): the layout is 90 %.
_PCA_AT, _NEIGHBOURS_AT, _LAYOUT_AT, _LAYOUT_END = 0.02, 0.07, 0.12, 0.98


def build_map(
    folder: str | Path,
    *,
    seed: int | None = 0,
    pca_dim: int = 50,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    exact_neighbours_max_rows: int = EXACT_NEIGHBOURS_MAX_ROWS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Lay out an embedding set in 2-D and store it in the set's folder as ``map_umap.npy``.

    Steps: the unit rows (:func:`ml.embedding_store.read_unit_rows`), PCA to ``pca_dim``
    (skipped when the rows are no wider), nearest neighbours (exact up to
    ``exact_neighbours_max_rows``, pynndescent's approximate ones above), then UMAP's
    layout, initialised from PCA rather than umap's default spectral embedding: at 100k
    rows that spectral step is the slowest part and the least stable, while a PCA start is
    cheap, deterministic and keeps the large-scale arrangement.

    With an integer ``seed`` the map is reproducible (the same set and seed give the same
    file), which costs umap-learn its parallelism (a fixed ``random_state`` makes it run
    single-threaded). On the 2-core machines this runs on that costs little (measured in
    docs/benchmarks.md), and a map that does not move when the job is run again is worth
    more to people who have learnt where things are on it. ``seed=None`` uses every core and
    gives a different map each run.

    Sets with no more rows than ``n_neighbors`` (or with 1-dimensional rows) cannot be laid
    out by UMAP; they get the first two principal components instead, and the returned
    ``method`` says ``"pca"`` (with the ``reason``).

    Args:
        folder: An embedding-set folder (:mod:`ml.embedding_store`).
        seed: Random seed of PCA and UMAP, or None for a parallel, unseeded run.
        pca_dim: Dimensions kept by PCA before UMAP (at least 2).
        n_neighbors: UMAP's neighbourhood size (at least 2): larger keeps more global
            structure, smaller more local detail.
        min_dist: UMAP's minimum distance between laid-out points (0 to 1).
        n_epochs: UMAP's optimisation epochs; None for umap-learn's default (500 up to 10k
            rows, 200 above).
        exact_neighbours_max_rows: Up to this many rows the neighbours are found exactly;
            above it approximately, by pynndescent.
        progress: Called as ``progress(fraction, message)`` between steps and every few
            seconds of the layout; an exception it raises stops the build (nothing is written).

    Returns:
        What was done, also written to ``map_umap.json``: ``method`` (``"umap"``, or ``"pca"``
        for a set too small for UMAP, with ``reason``), ``rows``, ``dim``, ``pca_dim``,
        ``n_neighbors``, ``min_dist``, ``seed``, ``deterministic``, how the ``neighbours``
        were found, ``seconds`` and the ``timings`` of each step, ``file``.

    Raises:
        FileNotFoundError: ``folder`` is not an embedding set.
        DataError: A parameter out of range (named in the message), no rows, or rows with
            NaN or infinity.
    """
    _check_parameters(
        pca_dim=pca_dim,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_epochs=n_epochs,
        seed=seed,
        exact_neighbours_max_rows=exact_neighbours_max_rows,
    )
    report = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    folder = Path(folder)
    report(0.0, f"reading the unit rows of {folder.name}")
    rows = read_unit_rows(folder)
    n_rows, dim = rows.shape
    if n_rows == 0:
        raise EmptyDataError(f"{folder}: the embedding set has no rows to map")
    _check_finite(rows, folder)
    timings: dict[str, float] = {}
    info: dict[str, Any] = {
        "rows": int(n_rows),
        "dim": int(dim),
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "seed": seed,
        "deterministic": seed is not None,
        "file": MAP_FILE,
    }

    if n_rows <= n_neighbors or dim < 2:
        reason = (
            f"{n_rows} rows: UMAP needs more rows than n_neighbors={n_neighbors}"
            if n_rows <= n_neighbors
            else "1-dimensional rows: there is nothing for UMAP to lay out"
        )
        report(_PCA_AT, f"PCA to 2 dimensions of {n_rows} rows ({reason})")
        mark = time.perf_counter()
        coords = _principal_components(rows, 2, seed)
        timings["pca"] = time.perf_counter() - mark
        info.update(method="pca", pca_dim=2, reason=reason)
    else:
        kept = min(pca_dim, dim, n_rows)
        report(_PCA_AT, f"PCA of {n_rows} rows from {dim} to {kept} dimensions")
        mark = time.perf_counter()
        reduced = _principal_components(rows, kept, seed) if kept < dim else np.array(rows, dtype=np.float32)
        timings["pca"] = time.perf_counter() - mark
        epochs = n_epochs or (500 if n_rows <= 10_000 else 200)  # umap-learn's own default
        exact = n_rows <= exact_neighbours_max_rows
        coords = _umap(reduced, seed, n_neighbors, min_dist, epochs, exact, report, timings)
        info.update(
            method="umap",
            pca_dim=int(kept),
            n_epochs=epochs,
            neighbours="exact" if exact else "approximate (pynndescent)",
        )

    coords = np.ascontiguousarray(coords, dtype=np.float32)
    if coords.shape != (n_rows, 2) or not np.isfinite(coords).all():
        raise DataError(f"{folder}: the layout came out {coords.shape} or not finite; expected ({n_rows}, 2)")
    info["timings"] = {name: round(seconds, 3) for name, seconds in timings.items()}
    info["seconds"] = round(time.perf_counter() - started, 3)
    # The description first: whoever finds the map file finds how it was made beside it.
    _write_atomically(folder / MAP_INFO_FILE, lambda handle: handle.write(json.dumps(info, indent=1).encode()))
    _write_atomically(folder / MAP_FILE, lambda handle: np.save(handle, coords))
    report(1.0, f"map of {n_rows} rows by {info['method']} in {info['seconds']:.0f} s")
    return info


def read_map(folder: str | Path) -> np.ndarray | None:
    """The stored map of an embedding set (float32 N x 2, row i for the set's row i), or None.

    None when no map has been built for the set yet (:func:`build_map`, run by a job).

    Raises:
        ShapeMismatchError: The map file does not fit the set (wrong shape, dtype or length).
    """
    folder = Path(folder)
    path = folder / MAP_FILE
    try:
        coords = np.load(path)
    except FileNotFoundError:
        return None
    n_rows = np.load(folder / IDS_FILE, mmap_mode="r").shape[0]
    if coords.dtype != np.float32 or coords.shape != (n_rows, 2):
        raise ShapeMismatchError(f"{path}: expected float32 ({n_rows}, 2), got {coords.dtype} {coords.shape}")
    return coords


def read_map_info(folder: str | Path) -> dict[str, Any] | None:
    """How the stored map was made (what :func:`build_map` returned), or None without one."""
    try:
        info = json.loads((Path(folder) / MAP_INFO_FILE).read_text())
    except FileNotFoundError:
        return None
    return info if isinstance(info, dict) else None


# --- the steps --------------------------------------------------------------------------------------
def _check_parameters(
    *,
    pca_dim: int,
    n_neighbors: int,
    min_dist: float,
    n_epochs: int | None,
    seed: int | None,
    exact_neighbours_max_rows: int,
) -> None:
    if not isinstance(pca_dim, int) or pca_dim < 2:
        raise DataError(f"pca_dim must be an integer of at least 2, got {pca_dim!r}")
    if not isinstance(n_neighbors, int) or n_neighbors < 2:
        raise DataError(f"n_neighbors must be an integer of at least 2, got {n_neighbors!r}")
    if not 0.0 <= float(min_dist) <= 1.0:
        raise DataError(f"min_dist must be between 0 and 1, got {min_dist!r}")
    if n_epochs is not None and (not isinstance(n_epochs, int) or n_epochs < 1):
        raise DataError(f"n_epochs must be a positive integer or None, got {n_epochs!r}")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise DataError(f"seed must be a non-negative integer or None, got {seed!r}")
    if not isinstance(exact_neighbours_max_rows, int) or exact_neighbours_max_rows < 0:
        raise DataError(f"exact_neighbours_max_rows must be a non-negative integer, got {exact_neighbours_max_rows!r}")


def _check_finite(rows: np.ndarray, folder: Path, chunk_rows: int = 16384) -> None:
    for start in range(0, len(rows), chunk_rows):
        block = np.asarray(rows[start : start + chunk_rows])
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise NonFiniteError(f"{folder}: row {bad} of the embedding set has NaN or infinity")


def _principal_components(rows: np.ndarray, n_components: int, seed: int | None) -> np.ndarray:
    """The first ``n_components`` principal components (float32), padded with zeros if fewer exist."""
    from sklearn.decomposition import PCA

    n_rows, dim = rows.shape
    possible = min(n_components, n_rows, dim)
    out = np.zeros((n_rows, n_components), dtype=np.float32)
    if n_rows < 2:
        return out
    # Randomised SVD: at 100k x 512 it needs seconds and no full covariance; exact below that.
    solver = "randomized" if possible < min(n_rows, dim) // 2 else "full"
    pca = PCA(n_components=possible, svd_solver=solver, random_state=seed)
    out[:, :possible] = pca.fit_transform(np.asarray(rows, dtype=np.float32))
    return out


def _umap(
    reduced: np.ndarray,
    seed: int | None,
    n_neighbors: int,
    min_dist: float,
    epochs: int,
    exact: bool,
    report: Progress,
    timings: dict[str, float],
) -> np.ndarray:
    # Imported here: numba compiles umap's functions on first use (tens of seconds in a fresh
    # process), which is the job's to pay, never a web process's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ImportWarning)  # its optional TensorFlow part
        import umap
        from umap.umap_ import nearest_neighbors

    n_rows = len(reduced)
    n_jobs = 1 if seed is not None else -1
    random_state = np.random.RandomState(seed) if seed is not None else None
    report(_NEIGHBOURS_AT, f"{n_neighbors} nearest neighbours of {n_rows} rows")
    mark = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # umap's notes on n_jobs and seeds
        if exact:
            neighbours = _exact_neighbours(reduced, n_neighbors)
        else:
            neighbours = nearest_neighbors(
                reduced,
                n_neighbors,
                "euclidean",  # on PCA of unit rows: the order of cosine distances
                {},
                False,
                random_state,
                low_memory=True,
                n_jobs=n_jobs,
                verbose=False,
            )
        timings["neighbours"] = time.perf_counter() - mark
        report(_LAYOUT_AT, f"UMAP layout of {n_rows} rows ({epochs} epochs)")
        mark = time.perf_counter()
        model = umap.UMAP(
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            n_components=2,
            n_epochs=epochs,
            init="pca",
            precomputed_knn=neighbours,
            low_memory=True,
            random_state=seed,
            n_jobs=n_jobs,
            # umap-learn reports epochs through tqdm only: read its count from a plain format.
            tqdm_kwds={
                "disable": False,
                "file": _EpochReader(report, epochs),
                "bar_format": "{n} {total}\n",
                "mininterval": 2.0,
            },
        )
        coords = model.fit_transform(reduced)
    timings["layout"] = time.perf_counter() - mark
    return np.asarray(coords, dtype=np.float32)


def _exact_neighbours(reduced: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32, distances float32), N x n_neighbors, each row's own first, as umap expects."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(reduced)
    distances, indices = search.kneighbors(reduced)
    return indices.astype(np.int32), distances.astype(np.float32)


class _EpochReader(io.TextIOBase):
    """A stream for tqdm that turns its "<done> <total>" lines into ``progress`` calls."""

    _COUNT = re.compile(r"(\d+) (\d+)\s*$")

    def __init__(self, report: Progress, epochs: int) -> None:
        self.report, self.epochs = report, epochs

    def write(self, text: str) -> int:
        match = self._COUNT.search(text.strip("\r\n") + "\n")
        if match and int(match[2]) > 0:
            done, total = int(match[1]), int(match[2])
            share = _LAYOUT_AT + (_LAYOUT_END - _LAYOUT_AT) * done / total
            self.report(share, f"UMAP layout: epoch {done} of {total}")
        return len(text)

    def flush(self) -> None:
        return None


def _write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``target`` through a partial file renamed into place: readers see all or nothing."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
