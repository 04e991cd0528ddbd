"""Embedding sets on disk, torch-free: the web process reads them without importing torch.

An embedding set is a folder with two ``.npy`` files: ``embeddings.npy`` (float32, N x D,
memory-mappable) and ``source_ids.npy`` (int64, N), row i of one belonging to entry i of
the other. 100k x 512 float32 is 200 MB: it is written batch by batch into a memory map and
read back as one, so no step holds a second copy. Computing embeddings (which needs torch)
lives in :mod:`ml.embed`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from ml.errors import DataError, EmptyDataError, ShapeMismatchError

MATRIX_FILE = "embeddings.npy"
IDS_FILE = "source_ids.npy"
#: The matrix's rows scaled to unit length (float32, N x D), for cosine search: written once
#: beside the matrix and memory-mapped, so every process that searches shares one copy in the
#: page cache instead of holding its own.
UNIT_FILE = "unit.npy"


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
    ids = check_ids(source_ids, len(matrix))

    def fill(target: np.ndarray) -> None:
        for start in range(0, len(matrix), rows_per_write):
            target[start : start + rows_per_write] = matrix[start : start + rows_per_write]

    return write_folder(path, ids, matrix.shape, fill, overwrite)


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


def check_ids(source_ids: Sequence[int] | np.ndarray, n_rows: int) -> np.ndarray:
    ids = np.asarray(source_ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) != n_rows:
        raise ShapeMismatchError(f"{ids.shape} source ids for {n_rows} rows")
    if len(np.unique(ids)) != len(ids):
        raise DataError("source ids must be unique")
    return ids


def write_folder(
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


def read_unit_rows(path: str | Path, *, chunk_rows: int = 16384) -> np.ndarray:
    """The set's rows at unit length, as a read-only memory map of ``unit.npy``.

    Written (atomically, chunk by chunk) the first time it is asked for; afterwards every
    process maps the same file, so N web processes hold one copy between them (in the
    page cache), not one each. Zero rows stay zero.

    Raises:
        FileNotFoundError: Not an embedding-set folder.
        ShapeMismatchError: The unit file does not match the matrix.
    """
    path = Path(path)
    target = path / UNIT_FILE
    if not target.exists():
        matrix = read_embeddings(path).matrix
        partial = path / f".{UNIT_FILE}.{os.getpid()}.partial"
        unit = open_memmap(partial, mode="w+", dtype=np.float32, shape=matrix.shape)
        for start in range(0, len(matrix), chunk_rows):
            block = np.asarray(matrix[start : start + chunk_rows], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            unit[start : start + chunk_rows] = block / np.where(norms > 0, norms, 1.0)
        unit.flush()
        del unit
        os.replace(partial, target)  # two processes racing write the same bytes; either wins
    unit = np.load(target, mmap_mode="r")
    rows = np.load(path / IDS_FILE, mmap_mode="r").shape[0]
    if unit.ndim != 2 or unit.dtype != np.float32 or unit.shape[0] != rows:
        raise ShapeMismatchError(f"{target}: expected float32 ({rows}, D), got {unit.dtype} {unit.shape}")
    return unit
