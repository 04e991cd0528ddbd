"""Similarity search past what exact search answers in time: an approximate index per embedding set.

Exact search (:func:`ml.similarity.top_k` over the unit rows) reads every row for every query,
so its time grows with the set: on a shared 2-core machine its p95 passes 50 ms between 150k
and 200k rows of 512 floats, and is about 450 ms at 1M (``docs/benchmarks.md``, "Similarity
search past one million"). Above ``exact_max_rows`` rows the index job builds a faiss
inverted-file index (IVF-Flat, inner product of unit rows = cosine): k-means splits the rows
into about ``2 sqrt(N)`` lists, and a query scans only the :data:`PROBES` lists nearest to it.
faiss was chosen on that benchmark: at 1M x 512 it built in about 2-2.5 minutes where the
HNSW libraries (usearch, hnswlib) were projected at 15 minutes or more on the same 2 cores;
its file opens as a zero-copy memory map (hnswlib's loads into each process); recall@10 was
0.99 at 1M and 0.97 at 100k, query p95 3-26 ms at 1M depending on the machine's load.

What each process holds:

- exact: nothing of its own beyond one (N,) float32 score vector per query; the unit rows
  are a read-only memory map of ``unit.npy``, shared between processes in the page cache.
- approximate: the index file opened with ``IO_FLAG_MMAP_IFC`` (zero-copy): a few MB of
  private memory (centroids, list headers; 4-9 MB measured at 1M rows), the lists themselves
  (every row again, N x (4 D + 8) bytes, 2 GB at 1M x 512) memory-mapped and shared like the
  unit rows; a query touches only its probed lists, and the unit rows not at all.

The index is derived data: built once per set by :func:`build_index` (the index job), read
by every web process through :func:`open_search`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.embedding_store import read_unit_rows
from ml.errors import DataError, ShapeMismatchError
from ml.similarity import top_k

#: The index file in an embedding-set folder; absent while the set is searched exactly.
INDEX_FILE = "search.faiss"
#: The method an approximate index reports (``build_index``'s ``"method"``).
METHOD = "faiss-ivf-flat"
#: Lists scanned per query: recall@10 0.97 (100k) to 0.99 (1M) on the benchmark's clustered rows;
#: 16 lost 1-2 points at 100k, 64 doubled the query time for 1 point.
PROBES = 32
#: Training rows per list for k-means (faiss asks for at least 39).
TRAIN_ROWS_PER_LIST = 50
#: Rows of the set whose exact neighbours check each built index (its reported recall@10).
RECALL_QUERIES = 200
#: Rows handed to faiss at once while adding: bounds the copy of the memory-mapped rows.
ADD_ROWS = 65_536
#: An index query returns at most this many rows (k plus the excluded ones); past it, exact.
MAX_FETCH = 2_048

Progress = Callable[[float, str], None]


def index_lists(rows: int) -> int:
    """The number of inverted lists for ``rows`` rows: the power of two nearest ``2 sqrt(rows)``,
    with at least 39 training rows per list (fewer makes faiss's k-means warn and wander)."""
    if rows < 1:
        raise DataError(f"an index needs rows, got {rows}")
    lists = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(rows))))
    return max(1, min(lists, rows // 39))


def exact_neighbours(unit: np.ndarray, query_rows: np.ndarray, k: int, *, chunk_rows: int = 65_536) -> np.ndarray:
    """(Q, k) indices of each query row's ``k`` most similar rows (itself excluded), best first.

    Many queries at once, in chunks of rows: one pass over the set for all of them, instead of
    one :func:`ml.similarity.top_k` per query. Fewer than ``k`` other rows: padded with -1.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    queries = np.asarray(unit[query_rows], dtype=np.float32)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(unit), chunk_rows):
        block = np.asarray(unit[start : start + chunk_rows], dtype=np.float32)
        scores = queries @ block.T
        own = (query_rows >= start) & (query_rows < start + len(block))
        scores[np.flatnonzero(own), query_rows[own] - start] = -np.inf
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_rows = np.concatenate(
            [best_rows, np.broadcast_to(np.arange(start, start + len(block)), scores.shape)], axis=1
        )
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_rows = np.take_along_axis(best_rows, order, axis=1)
    best_rows[np.take_along_axis(best_scores, order, axis=1) == -np.inf] = -1
    return best_rows


def build_index(
    folder: str | Path, *, exact_max_rows: int, progress: Progress | None = None, seed: int = 0
) -> dict[str, Any]:
    """Build the set's approximate search index, or leave it to exact search if it is small.

    Above ``exact_max_rows`` rows: k-means on a seeded sample, every row added in chunks, then
    recall@10 against exact search on :data:`RECALL_QUERIES` of the set's own rows, and the
    file written under a partial name and renamed into place (readers see the old state or
    the whole index, never half of one). At or below it: nothing is written, and an index left
    from an earlier, lower threshold is removed, so the set is searched exactly.

    Args:
        folder: An embedding-set folder (its unit rows are written first if missing).
        exact_max_rows: The largest set searched exactly.
        progress: Called as ``progress(fraction, message)``; may raise to stop the build
            (nothing is left behind).
        seed: Seeds the training sample, k-means and the recall sample.

    Returns:
        ``{"method": "exact" | METHOD, "rows", "dim", "build_s", ...}``; an index adds
        ``"lists"``, ``"probes"``, ``"recall_at_10"``, ``"recall_queries"``, ``"index_file"``
        and ``"index_bytes"``.

    Raises:
        DataError: ``exact_max_rows`` below 1.
        FileNotFoundError: Not an embedding-set folder.
    """
    if exact_max_rows < 1:
        raise DataError(f"exact_max_rows must be at least 1, got {exact_max_rows}")
    report = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    folder = Path(folder)
    unit = read_unit_rows(folder)
    rows, dim = unit.shape
    target = folder / INDEX_FILE
    if rows <= exact_max_rows:
        stale = target.exists()
        target.unlink(missing_ok=True)
        report(1.0, f"{rows} rows: searched exactly (up to {exact_max_rows})")
        return {
            "method": "exact",
            "rows": rows,
            "dim": dim,
            "exact_max_rows": exact_max_rows,
            "build_s": time.perf_counter() - started,
            "removed_stale_index": stale,
        }

    import faiss

    lists = index_lists(rows)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rows, size=min(rows, TRAIN_ROWS_PER_LIST * lists), replace=False))
    report(0.0, f"k-means: {lists} lists from {len(sample)} of {rows} rows")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(np.ascontiguousarray(unit[sample], dtype=np.float32))
    for start in range(0, rows, ADD_ROWS):
        report(0.2 + 0.6 * start / rows, f"indexing rows {start}-{min(rows, start + ADD_ROWS)} of {rows}")
        index.add(np.ascontiguousarray(unit[start : start + ADD_ROWS], dtype=np.float32))
    index.nprobe = min(PROBES, lists)

    report(0.8, f"recall@10 on {min(rows, RECALL_QUERIES)} rows against exact search")
    query_rows = np.sort(rng.choice(rows, size=min(rows, RECALL_QUERIES), replace=False))
    truth = exact_neighbours(unit, query_rows, 10)
    _, found = index.search(np.ascontiguousarray(unit[query_rows], dtype=np.float32), 11)
    hits = [
        len(set(f[(f >= 0) & (f != row)][:10].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t, row in zip(found, truth, query_rows, strict=True)
    ]

    report(0.95, f"writing {target.name}")
    partial = folder / f".{INDEX_FILE}.{os.getpid()}.partial"
    try:
        faiss.write_index(index, str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    report(1.0, f"{METHOD}: {lists} lists, recall@10 {np.mean(hits):.3f}")
    return {
        "method": METHOD,
        "rows": rows,
        "dim": dim,
        "exact_max_rows": exact_max_rows,
        "lists": lists,
        "probes": int(index.nprobe),
        "recall_at_10": float(np.mean(hits)),
        "recall_queries": len(query_rows),
        "build_s": time.perf_counter() - started,
        "index_file": target.name,
        "index_bytes": target.stat().st_size,
    }


@dataclass
class Search:
    """Cosine top-k over one embedding set: through its index file if it has one, else exact.

    Attributes:
        unit: The set's unit rows (a read-only memory map).
        index: The faiss index, memory-mapped; ``None`` for exact search.
        index_path: Where the index came from; ``None`` for exact search.
    """

    unit: np.ndarray
    index: Any = None
    index_path: Path | None = None

    @property
    def method(self) -> str:
        return "exact" if self.index is None else METHOD

    @property
    def rows(self) -> int:
        return int(self.unit.shape[0])

    def search(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most similar to ``query``, best first; same contract as :func:`ml.similarity.top_k`.

        Args:
            query: (D,) vector (normalised here).
            k: How many neighbours; fewer when the set minus ``exclude`` is smaller.
            exclude: Row indices never returned (e.g. the query's own row).

        Returns:
            (row indices int64, cosine similarities float32), both of length
            min(k, N - excluded). Through the index, the rows are those of the probed lists;
            should they hold fewer than that (or ``k`` plus ``exclude`` pass
            :data:`MAX_FETCH`), the answer is exact.

        Raises:
            DataError: A query of the wrong width or not finite, ``k`` below 1, or excluded
                indices outside the set.
        """
        excluded = np.unique(np.asarray([] if exclude is None else exclude, dtype=np.int64).reshape(-1))
        if len(excluded) and (excluded[0] < 0 or excluded[-1] >= self.rows):
            raise DataError(f"exclude holds row indices outside 0..{self.rows - 1}")
        if self.index is None or k + len(excluded) > MAX_FETCH:
            return top_k(self.unit, query, k, exclude=excluded)
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.unit.shape[1]:
            raise DataError(f"query has {vector.shape[0]} features, the embeddings {self.unit.shape[1]}")
        if not np.isfinite(vector).all():
            raise DataError("the query embedding contains NaN or infinity")
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        wanted = min(k, self.rows - len(excluded))
        if wanted == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm > 0 else vector
        scores, found = self.index.search(vector[None], min(self.rows, k + len(excluded)))
        keep = found[0] >= 0
        if len(excluded):
            keep &= ~np.isin(found[0], excluded)
        rows, similarities = found[0][keep][:wanted], scores[0][keep][:wanted]
        if len(rows) < wanted:
            return top_k(self.unit, query, k, exclude=excluded)
        return rows.astype(np.int64), similarities.astype(np.float32)


def open_search(folder: str | Path) -> Search:
    """The search of an embedding set: its index (memory-mapped) when the folder has one, else exact.

    Raises:
        FileNotFoundError: Not an embedding-set folder.
        DataError: The index file cannot be read as a faiss IVF inner-product index (the
            message names the file); rebuild it with an index job.
        ShapeMismatchError: The index does not hold the set's rows (another set's, or stale).
    """
    folder = Path(folder)
    unit = read_unit_rows(folder)
    path = folder / INDEX_FILE
    if not path.exists():
        return Search(unit=unit)

    import faiss

    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable faiss IVF index ({reason}); rebuild it with an index job") from exc
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise DataError(f"{path}: the index does not rank by inner product (cosine); rebuild it with an index job")
    if (index.ntotal, index.d) != unit.shape:
        raise ShapeMismatchError(
            f"{path}: the index holds {index.ntotal} rows of {index.d} features, the set {unit.shape[0]} of "
            f"{unit.shape[1]}; rebuild it with an index job"
        )
    ivf.nprobe = min(PROBES, ivf.nlist)
    return Search(unit=unit, index=index, index_path=path)
