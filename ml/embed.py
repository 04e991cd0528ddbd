"""Frozen-encoder embeddings, computed with torch and streamed into the on-disk store.

The store itself (reading and writing embedding-set folders) is :mod:`ml.embedding_store`,
which needs no torch; its names are re-exported here for callers that embed too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ml.augment import ImageArray, TestViews, as_image_tensor, eval_views, view_poses
from ml.config import ViewConfig
from ml.device import resolve_device
from ml.embedding_store import (
    IDS_FILE,
    MATRIX_FILE,
    EmbeddingSet,
    check_ids,
    read_embeddings,
    write_embeddings,
    write_folder,
)
from ml.encoder import RadioEncoder
from ml.errors import EmptyDataError, ShapeMismatchError

__all__ = [
    "IDS_FILE",
    "MATRIX_FILE",
    "EmbeddingSet",
    "embed",
    "embed_poses",
    "embed_to_folder",
    "map_batches",
    "read_embeddings",
    "write_embeddings",
]


@torch.inference_mode()
def map_batches(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: ImageArray,
    view: ViewConfig,
    out: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    views: TestViews = "centre",
) -> np.ndarray:
    """Write ``model(test view)`` of each batch of ``images`` into the rows of ``out``.

    With ``views="dihedral"`` the row is the mean of ``model`` over the eight poses of
    ``ml.augment.view_poses``.
    """
    poses = view_poses(views)
    for start in range(0, len(images), batch_size):
        batch = as_image_tensor(images[start : start + batch_size], device)
        total = model(eval_views(batch, view, *poses[0])).float()
        for pose in poses[1:]:
            total += model(eval_views(batch, view, *pose)).float()
        out[start : start + len(batch)] = (total / len(poses)).cpu().numpy()
    return out


def embed(
    encoder: RadioEncoder,
    images: ImageArray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    out: np.ndarray | None = None,
    views: TestViews = "centre",
) -> np.ndarray:
    """Embed images with a frozen encoder (the paper's representation for linear evaluation).

    The encoder sees the deterministic test view (centre crop, normalisation) in eval mode
    and float32, so the same images always give the same rows. ``views="dihedral"``
    averages the features of the eight rotations/flips of that view: rows that do not
    depend on the source's orientation, at eight times the cost; an invariant encoder
    (``encoder.invariant``, the p4m one) gives those rows from the centre view alone.

    Args:
        encoder: A trained encoder; it is switched to eval mode and moved to ``device``.
        images: uint8 cutouts (N, 150, 150), e.g. a memory map.
        batch_size: Images per forward pass.
        device: Where to run; CUDA when available by default.
        out: Optional (N, D) float32 array (e.g. a memory map) to write into.
        views: ``"centre"`` (the paper's) or ``"dihedral"``.

    Returns:
        float32 features (N, encoder.feature_dim); ``out`` when it was given.

    Raises:
        EmptyDataError: No images.
        ShapeMismatchError: ``out`` has the wrong shape or dtype.
        ValueError: Unknown ``views``.
    """
    view_poses(views)  # an unknown name fails before any work
    if len(images) == 0:
        raise EmptyDataError("no images to embed")
    shape = (len(images), encoder.feature_dim)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ShapeMismatchError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    device = resolve_device(device)
    encoder.eval().to(device)
    if encoder.invariant:  # the eight poses give the same rows (to float precision): one pass, not eight
        views = "centre"
    return map_batches(encoder, images, encoder.config.view, out, batch_size=batch_size, device=device, views=views)


@torch.inference_mode()
def embed_poses(
    encoder: RadioEncoder,
    images: ImageArray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The features of each of the eight rotations/flips of the test view, kept apart.

    ``embed(views="dihedral")`` is their mean over the first axis; probes that learn from the
    poses themselves (``ml.probes.view_augmented_probe``) need them one by one. An invariant
    encoder gives eight equal poses, computed once.

    Returns:
        float32 (8, N, encoder.feature_dim), poses in the order of ``view_poses("dihedral")``.

    Raises:
        EmptyDataError: No images.
    """
    if len(images) == 0:
        raise EmptyDataError("no images to embed")
    poses = view_poses("dihedral")
    device = resolve_device(device)
    encoder.eval().to(device)
    out = np.empty((len(poses), len(images), encoder.feature_dim), dtype=np.float32)
    view = encoder.config.view
    for start in range(0, len(images), batch_size):
        batch = as_image_tensor(images[start : start + batch_size], device)
        for index, pose in enumerate(poses[:1] if encoder.invariant else poses):
            out[index, start : start + len(batch)] = encoder(eval_views(batch, view, *pose)).float().cpu().numpy()
    if encoder.invariant:
        out[1:] = out[0]
    return out


def embed_to_folder(
    encoder: RadioEncoder,
    images: ImageArray,
    source_ids: Sequence[int] | np.ndarray,
    path: str | Path,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    views: TestViews = "centre",
) -> Path:
    """Embed images straight into an embedding-set folder (streaming; no copy in memory).

    Raises:
        ShapeMismatchError: ``len(source_ids) != len(images)``.
        DataError: Duplicate source ids.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    ids = check_ids(source_ids, len(images))

    def fill(matrix: np.ndarray) -> None:
        embed(encoder, images, batch_size=batch_size, device=device, out=matrix, views=views)

    return write_folder(path, ids, (len(images), encoder.feature_dim), fill, overwrite)
