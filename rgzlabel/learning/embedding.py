"""Embedding the pool: loading cutouts, writing an embedding set per encoder, activating it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from django.conf import settings
from django.db import transaction

from rgzlabel.catalog.models import Cutout
from rgzlabel.learning.jobs import JobContext, row_param
from rgzlabel.learning.loop import after_new_embedding
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job

if TYPE_CHECKING:
    from ml.augment import TestViews


def torch_device(context: JobContext) -> str | None:
    """The configured device (None = auto); warns in the job when training falls back to the CPU."""
    import torch

    if settings.RGZ_TORCH_THREADS:
        torch.set_num_threads(settings.RGZ_TORCH_THREADS)
    configured = settings.RGZ_TORCH_DEVICE
    if configured == "auto":
        if not torch.cuda.is_available():
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
    if source_ids is not None:
        rows = rows.filter(source_id__in=[int(i) for i in source_ids])
    total = rows.count()
    if total == 0:
        raise ValueError("the pool is empty: ingest some sources first (manage.py ingest)")
    sizes = set(rows.values_list("size", flat=True).distinct())
    if len(sizes) != 1:
        raise ValueError(f"cutouts of different sizes in the pool: {sorted(sizes)}")
    size = sizes.pop()
    ids = np.empty(total, dtype=np.int64)
    images = np.empty((total, size, size), dtype=np.uint8)
    count = 0
    for source_id, pixels in rows.values_list("source_id", "pixels").iterator(chunk_size=chunk_size):
        if count == total:  # rows added while we read: take the snapshot we counted
            break
        ids[count] = source_id
        images[count] = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(size, size)
        count += 1
        if context is not None and count % chunk_size == 0:
            share = None if progress_share is None else progress_share * count / total
            context.progress(share, f"loaded {count}/{total} cutouts")
    return ids[:count], images[:count]


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
    or ``"centre"``, default ``RGZ_EMBED_VIEWS``).
    """
    from ml.embed import embed_to_folder, write_embeddings

    method = job.params.get("method", "pca")
    if method not in {"pca", "encoder"}:
        raise ValueError(f"unknown embedding method {method!r}: expected 'pca' or 'encoder'")
    encoder_version = row_param(job.params, "encoder", EncoderVersion) if method == "encoder" else None
    views = "centre" if encoder_version is None else job.params.get("views", settings.RGZ_EMBED_VIEWS)
    if views not in ("centre", "dihedral"):
        raise ValueError(f'parameter "views" must be "centre" or "dihedral", not {views!r}')
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
        embed_to_folder(encoder, images, ids, folder, device=torch_device(context), views=cast("TestViews", views))
        dim = int(encoder.feature_dim)
    embedding_set = EmbeddingSet.objects.create(
        encoder=encoder_version,
        method=method,
        views=views,
        path=str(folder),
        n_sources=len(ids),
        dim=dim,
        job=job,
    )
    activate_embedding_set(embedding_set)
    following = after_new_embedding() if job.params.get("chain", True) else None
    return {
        "summary": f"embedded {len(ids)} sources ({dim}-d, {method})",
        "embedding_set": embedding_set.pk,
        "n_sources": len(ids),
        "dim": dim,
        "next_job": following.pk if following else None,
    }
