"""Embedding the pool: loading cutouts, writing an embedding set per encoder, activating it."""

from __future__ import annotations

import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from django.conf import settings
from django.db import transaction

from rgzlabel.catalog.models import Cutout
from rgzlabel.learning.jobs import JobContext, row_param
from rgzlabel.learning.loop import after_new_embedding
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job, JobChunk

if TYPE_CHECKING:
    from ml.augment import TestViews
    from rgzlabel.learning.chunks import ChunkContext


def torch_device(context: JobContext | ChunkContext, *, warn: bool = True) -> str | None:
    """The configured device (None = auto); warns in the job when training falls back to the CPU."""
    import torch

    if settings.RGZ_TORCH_THREADS:
        torch.set_num_threads(settings.RGZ_TORCH_THREADS)
    configured = settings.RGZ_TORCH_DEVICE
    if configured == "auto":
        if warn and not torch.cuda.is_available():
            context.warn("no CUDA device on this worker: running on the CPU")
        return None
    return configured


def load_pool(
    *,
    chunk_size: int = 2000,
    context: JobContext | None = None,
    source_ids: np.ndarray | None = None,
    progress_share: float | None = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """All preprocessed cutouts (or those of ``source_ids``) as (ids int64 (N,), images uint8 (N, S, S)).

    Loading reports the first ``progress_share`` of the job's progress; ``None`` reports the
    message only (training jobs, whose percentage is the training's own).

    Streams rows in chunks into one preallocated array, so a 100k pool costs its uint8
    size (2.25 GB at 150x150) and not a Python object per row on top.
    """
    rows = Cutout.objects.order_by("source_id")
    wanted: set[int] | None = None
    if source_ids is not None:
        unique = np.unique(np.asarray(source_ids, dtype=np.int64))
        if len(unique) == 0:
            raise ValueError("no source ids to load")
        wanted = set(unique.tolist())
        # A range, not an IN list (SQLite caps a statement's parameters); rows outside ``wanted`` are
        # skipped as they stream, so memory holds the wanted rows only (a sparse sample of a big pool).
        rows = rows.filter(source_id__gte=int(unique[0]), source_id__lte=int(unique[-1]))
    total = rows.count()
    if total == 0:
        raise ValueError("the pool is empty: ingest some sources first (manage.py ingest)")
    sizes = set(rows.values_list("size", flat=True).distinct())
    if len(sizes) != 1:
        raise ValueError(f"cutouts of different sizes in the pool: {sorted(sizes)}")
    size = sizes.pop()
    capacity = total if wanted is None else min(total, len(wanted))
    ids = np.empty(capacity, dtype=np.int64)
    images = np.empty((capacity, size, size), dtype=np.uint8)
    count = seen = 0
    for source_id, pixels in rows.values_list("source_id", "pixels").iterator(chunk_size=chunk_size):
        if seen == total or count == capacity:  # rows added while we read: take the snapshot we counted
            break
        seen += 1
        if context is not None and seen % chunk_size == 0:
            share = None if progress_share is None else progress_share * seen / total
            context.progress(share, f"loaded {seen}/{total} cutouts")
        if wanted is not None and source_id not in wanted:
            continue
        ids[count] = source_id
        images[count] = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(size, size)
        count += 1
    return ids[:count], images[:count]


def pool_ids() -> np.ndarray:
    """The ids of every source with a cutout, ascending (the row order of an embedding set)."""
    rows = Cutout.objects.order_by("source_id").values_list("source_id", flat=True)
    return np.fromiter(rows.iterator(chunk_size=20_000), dtype=np.int64)


def embeddings_folder() -> Path:
    """A new, not yet existing folder for one embedding set (written atomically by ml.embed)."""
    parent = settings.DATA_DIR / "embeddings"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / uuid.uuid4().hex[:12]


def activate_embedding_set(embedding_set: EmbeddingSet) -> None:
    """Make ``embedding_set`` the one the active-learning policy reads, atomically."""
    with transaction.atomic():
        EmbeddingSet.objects.filter(is_active=True).exclude(pk=embedding_set.pk).update(is_active=False)
        EmbeddingSet.objects.filter(pk=embedding_set.pk).update(is_active=True)


def embed_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Embed every ingested source, store the matrix on disk and activate it.

    ``params``: ``method`` = ``"pca"`` (pixel PCA, seconds on a CPU: the cold start) or
    ``"encoder"`` with ``encoder`` = an EncoderVersion id, and optional ``views`` (``"dihedral"``
    or ``"centre"``, default ``RGZ_EMBED_VIEWS``), ``chunk_rows`` (default ``RGZ_EMBED_CHUNK_ROWS``):
    an encoder embedding of a larger pool is split into chunks of that many rows, run by any
    workers on the queue (``rgzlabel.learning.chunks``), with the same rows as one worker's.
    ``chain`` (default true): queue the retrain or refresh and the index job that follow.
    """
    from ml.embed import embed_to_folder, write_embeddings

    method = job.params.get("method", "pca")
    if method not in {"pca", "encoder"}:
        raise ValueError(f"unknown embedding method {method!r}: expected 'pca' or 'encoder'")
    encoder_version = row_param(job.params, "encoder", EncoderVersion) if method == "encoder" else None
    views = "centre" if encoder_version is None else job.params.get("views", settings.RGZ_EMBED_VIEWS)
    if views not in ("centre", "dihedral"):
        raise ValueError(f'parameter "views" must be "centre" or "dihedral", not {views!r}')
    if encoder_version is not None:
        ids = pool_ids()
        rows = chunk_rows(job.params)
        if len(ids) > rows:
            return _hand_off_embedding(job, ids, encoder_version, views, rows)
    ids, images = load_pool(context=context)
    folder = embeddings_folder()
    if encoder_version is None:
        from ml.baseline import pixel_pca_embeddings

        context.progress(0.25, f"projecting {len(ids)} cutouts onto pixel principal components", force=True)
        matrix = pixel_pca_embeddings(images, dim=int(job.params.get("dim", 64)), seed=int(job.params.get("seed", 0)))
        write_embeddings(folder, ids, matrix)
        dim = int(matrix.shape[1])
    else:
        from ml.checkpoint import load_encoder

        context.progress(0.25, f"embedding {len(ids)} cutouts with {encoder_version.name} ({views} views)", force=True)
        encoder = load_encoder(encoder_version.checkpoint_path)
        embed_to_folder(
            encoder, images, ids, folder, batch_size=BATCH, device=torch_device(context), views=cast("TestViews", views)
        )
        dim = int(encoder.feature_dim)
    return _record_embedding_set(job, encoder_version, method, views, folder, len(ids), dim)


#: Images per forward pass when embedding; chunks start at multiples of it, so a chunked embedding
#: passes the encoder exactly the batches a single worker would (the same rows, bit for bit).
BATCH = 256


def chunk_rows(params: dict[str, Any]) -> int:
    """Rows per chunk: the job's ``chunk_rows`` or ``RGZ_EMBED_CHUNK_ROWS``, a multiple of ``BATCH``."""
    try:
        rows = int(params.get("chunk_rows") or settings.RGZ_EMBED_CHUNK_ROWS)
    except (TypeError, ValueError):
        raise ValueError(f'parameter "chunk_rows" must be a number of rows, not {params.get("chunk_rows")!r}') from None
    if rows < 1:
        raise ValueError(f'parameter "chunk_rows" must be at least 1, not {rows}')
    return -(-rows // BATCH) * BATCH


def _record_embedding_set(
    job: Job, encoder_version: EncoderVersion | None, method: str, views: str, folder: Path, n: int, dim: int
) -> dict[str, Any]:
    """Register a written embedding-set folder, make it active, and queue what follows it."""
    from rgzlabel.learning.jobs import create_job

    embedding_set = EmbeddingSet.objects.create(
        encoder=encoder_version, method=method, views=views, path=str(folder), n_sources=n, dim=dim, job=job
    )
    activate_embedding_set(embedding_set)
    chain = job.params.get("chain", True)
    following = after_new_embedding() if chain else None
    index = create_job(Job.Kind.INDEX, {"embedding_set": embedding_set.pk}) if chain else None
    return {
        "summary": f"embedded {n} sources ({dim}-d, {method})",
        "embedding_set": embedding_set.pk,
        "n_sources": n,
        "dim": dim,
        "next_job": following.pk if following else None,
        "index_job": index.pk if index else None,
    }


def _hand_off_embedding(
    job: Job, ids: np.ndarray, encoder_version: EncoderVersion, views: str, rows: int
) -> dict[str, Any]:
    """Write an empty matrix beside its final folder and hand its row ranges to the workers."""
    from numpy.lib.format import open_memmap

    from ml.checkpoint import load_encoder
    from ml.embedding_store import IDS_FILE, MATRIX_FILE
    from rgzlabel.learning.chunks import hand_off

    dim = int(load_encoder(encoder_version.checkpoint_path).feature_dim)
    folder = embeddings_folder()
    partial = folder.with_name(f".{folder.name}.chunks")
    partial.mkdir(parents=True)
    matrix = open_memmap(partial / MATRIX_FILE, mode="w+", dtype=np.float32, shape=(len(ids), dim))
    del matrix
    np.save(partial / IDS_FILE, ids)
    common = {
        "partial": str(partial),
        "folder": str(folder),
        "checkpoint": encoder_version.checkpoint_path,
        "encoder": encoder_version.pk,
        "views": views,
        "dim": dim,
    }
    pieces = [
        ({**common, "start": start, "stop": min(start + rows, len(ids))}, min(start + rows, len(ids)) - start)
        for start in range(0, len(ids), rows)
    ]
    message = f"embedding {len(ids)} sources with {encoder_version.name} ({views} views) in {len(pieces)} chunks"
    return hand_off(job, pieces, message)


@lru_cache(maxsize=1)
def _chunk_encoder(checkpoint_path: str, stamp: int) -> Any:
    """The encoder a worker's chunks use, loaded once per worker process (``stamp``: the file's mtime)."""
    from ml.checkpoint import load_encoder

    return load_encoder(checkpoint_path)


def embed_chunk(job: Job, chunk: JobChunk, context: ChunkContext) -> dict[str, Any]:
    """Embed one chunk's rows into the job's shared matrix (a memory map only this chunk writes these rows of)."""
    import os

    from numpy.lib.format import open_memmap

    from ml.embed import embed
    from ml.embedding_store import IDS_FILE, MATRIX_FILE

    params = chunk.params
    partial, start, stop = Path(params["partial"]), int(params["start"]), int(params["stop"])
    if not partial.is_dir():
        raise FileNotFoundError(f"{partial}: the job's partial embedding is gone (was the job cancelled?)")
    ids = np.load(partial / IDS_FILE)[start:stop]
    loaded, images = load_pool(source_ids=ids, progress_share=None)
    if not np.array_equal(loaded, ids):
        missing = np.setdiff1d(ids, loaded)[:10].tolist()
        raise ValueError(f"sources {missing} were deleted after the job was planned: embed the pool again")
    checkpoint = params["checkpoint"]
    encoder = _chunk_encoder(checkpoint, os.stat(checkpoint).st_mtime_ns)
    device = torch_device(context, warn=chunk.index == 0)
    matrix = open_memmap(partial / MATRIX_FILE, mode="r+")
    if matrix.shape != (len(np.load(partial / IDS_FILE, mmap_mode="r")), int(params["dim"])):
        raise ValueError(f"{partial / MATRIX_FILE}: shape {matrix.shape} is not the planned one")
    rows = matrix[start:stop]
    step = 4 * BATCH  # a progress report (and a cancel check) every four batches
    for offset in range(0, len(ids), step):
        context.check_cancelled()
        part = images[offset : offset + step]
        embed(
            encoder,
            part,
            batch_size=BATCH,
            device=device,
            out=rows[offset : offset + len(part)],
            views=cast("TestViews", params["views"]),
        )
        context.progress(offset + len(part), f"chunk {chunk.index + 1}: {offset + len(part)}/{len(ids)} rows")
    matrix.flush()
    del rows, matrix
    return {"rows": len(ids)}


def finish_embed_chunks(job: Job, chunks: list[JobChunk], context: JobContext) -> dict[str, Any]:
    """Every chunk is in: move the matrix into place and register it, as a single worker would."""
    import os

    params = chunks[0].params
    partial, folder = Path(params["partial"]), Path(params["folder"])
    n = sum(chunk.size for chunk in chunks)
    os.replace(partial, folder)
    encoder_version = EncoderVersion.objects.get(pk=params["encoder"])
    return _record_embedding_set(job, encoder_version, "encoder", params["views"], folder, n, int(params["dim"]))


def abandon_embed_chunks(job: Job) -> None:
    """A failed or cancelled chunked embedding leaves no partial matrix behind."""
    import shutil

    first = job.chunks.order_by("index").first()
    if first is not None:
        shutil.rmtree(first.params.get("partial", ""), ignore_errors=True)


def index_job(job: Job, context: JobContext) -> dict[str, Any]:
    """Derive what pages read from an embedding set: its unit rows, its 2-D map and its search index.

    ``params``: ``embedding_set`` (an id; default the active set). Each product is a file in
    the set's folder (``unit.npy``, ``map_umap.npy``, the approximate index above
    ``RGZ_EXACT_SEARCH_MAX_ROWS`` rows), computed here once per set and read by every web
    process, never computed in a request.
    """
    from ml.ann import build_index
    from ml.embedding_store import read_unit_rows
    from ml.layout import build_map

    if job.params.get("embedding_set") in (None, ""):
        embedding_set = EmbeddingSet.objects.filter(is_active=True).first()
        if embedding_set is None:
            raise ValueError("there is no active embedding set to index: embed the pool first")
    else:
        embedding_set = row_param(job.params, "embedding_set", EmbeddingSet)
    folder = Path(embedding_set.path)
    context.progress(0.0, f"unit rows of {embedding_set}", force=True)
    read_unit_rows(folder)
    context.check_cancelled()

    def share(start: float, width: float) -> Any:
        def report(fraction: float, message: str) -> None:
            context.progress(start + width * fraction, message)
            context.check_cancelled()

        return report

    layout = build_map(folder, progress=share(0.05, 0.6))
    index = build_index(folder, exact_max_rows=settings.RGZ_EXACT_SEARCH_MAX_ROWS, progress=share(0.65, 0.35))
    return {
        "summary": f"indexed {embedding_set}: map {layout.get('method', '?')}, search {index.get('method', '?')}",
        "embedding_set": embedding_set.pk,
        "map": layout,
        "search": index,
    }
