"""Frozen-encoder embeddings and their on-disk store.

An embedding set is a folder with two ``.npy`` files: ``embeddings.npy`` (float32, N x D,
memory-mappable) and ``source_ids.npy`` (int64, N), row i of one belonging to entry i of
the other. 100k x 512 float32 is 200 MB: it is written batch by batch into a memory map and
read back as one, so no step holds a second copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from ml.augment import ImageArray, TestViews, as_image_tensor, eval_views, view_poses
from ml.config import ViewConfig
from ml.device import resolve_device
from ml.encoder import RadioEncoder
from ml.errors import DataError, EmptyDataError, ShapeMismatchError

MATRIX_FILE = "embeddings.npy"
IDS_FILE = "source_ids.npy"


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
    depend on the source's orientation, at eight times the cost.

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
    return map_batches(encoder, images, encoder.config.view, out, batch_size=batch_size, device=device, views=views)


@dataclass
class EmbeddingSet:
    """Embeddings keyed by source id.

    Attributes:
        source_ids: int64 (N,), unique.
        matrix: float32 (N, D), row i for ``source_ids[i]`` (a read-only memory map when
            read with ``mmap=True``).
    """

    source_ids: np.ndarray
    matrix: np.ndarray

    def rows(self, source_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row indices of the given source ids.

        Raises:
            KeyError: Some ids are not in the set.
        """
        wanted = np.asarray(source_ids, dtype=np.int64)
        order = np.argsort(self.source_ids, kind="stable")
        positions = np.searchsorted(self.source_ids, wanted, sorter=order)
        positions = np.minimum(positions, len(order) - 1)
        found = order[positions]
        missing = self.source_ids[found] != wanted
        if missing.any():
            raise KeyError(f"source ids not embedded: {wanted[missing][:10].tolist()}")
        return found

    def vectors(self, source_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The embedding rows of the given source ids, in that order."""
        return np.asarray(self.matrix[self.rows(source_ids)])


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
    ids = _check_ids(source_ids, len(images))

    def fill(matrix: np.ndarray) -> None:
        embed(encoder, images, batch_size=batch_size, device=device, out=matrix, views=views)

    return _write_folder(path, ids, (len(images), encoder.feature_dim), fill, overwrite)


def write_embeddings(
    path: str | Path,
    source_ids: Sequence[int] | np.ndarray,
    matrix: np.ndarray,
    *,
    overwrite: bool = False,
    rows_per_write: int = 8192,
) -> Path:
    """Store an (N, D) matrix with its source ids as an embedding-set folder.

    The folder is assembled beside ``path`` and renamed into place, so readers never see a
    half-written set.

    Raises:
        ShapeMismatchError: Not 2-D, or ids and rows differ in number.
        DataError: Duplicate source ids.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if matrix.ndim != 2:
        raise ShapeMismatchError(f"embeddings must be 2-D, got shape {matrix.shape}")
    ids = _check_ids(source_ids, len(matrix))

    def fill(target: np.ndarray) -> None:
        for start in range(0, len(matrix), rows_per_write):
            target[start : start + rows_per_write] = matrix[start : start + rows_per_write]

    return _write_folder(path, ids, matrix.shape, fill, overwrite)


def read_embeddings(path: str | Path, *, mmap: bool = True) -> EmbeddingSet:
    """Read an embedding-set folder; with ``mmap`` the matrix stays on disk until touched.

    Raises:
        FileNotFoundError: Not an embedding-set folder.
        ShapeMismatchError: Files that disagree in length or have the wrong dtype.
    """
    path = Path(path)
    matrix = np.load(path / MATRIX_FILE, mmap_mode="r" if mmap else None)
    source_ids = np.load(path / IDS_FILE)
    if matrix.ndim != 2 or matrix.dtype != np.float32 or source_ids.dtype != np.int64:
        raise ShapeMismatchError(f"{path}: expected float32 (N, D) and int64 ids")
    if len(source_ids) != len(matrix):
        raise ShapeMismatchError(f"{path}: {len(source_ids)} ids for {len(matrix)} rows")
    return EmbeddingSet(source_ids=source_ids, matrix=matrix)


def _check_ids(source_ids: Sequence[int] | np.ndarray, n_rows: int) -> np.ndarray:
    ids = np.asarray(source_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) != n_rows:
        raise ShapeMismatchError(f"{ids.shape} source ids for {n_rows} rows")
    if len(np.unique(ids)) != len(ids):
        raise DataError("source ids must be unique")
    return ids


def _write_folder(
    path: str | Path,
    ids: np.ndarray,
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray], None],
    overwrite: bool,
) -> Path:
    path = Path(path)
    if shape[0] == 0:
        raise EmptyDataError("no embeddings to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    matrix = open_memmap(partial / MATRIX_FILE, mode="w+", dtype=np.float32, shape=shape)
    fill(matrix)
    matrix.flush()
    del matrix
    np.save(partial / IDS_FILE, ids)
    if path.exists():
        # Directories cannot be replaced atomically; move the old set aside first.
        stale = path.with_name(f".{path.name}.{os.getpid()}.stale")
        os.replace(path, stale)
        os.replace(partial, path)
        shutil.rmtree(stale)
    else:
        os.replace(partial, path)
    return path
