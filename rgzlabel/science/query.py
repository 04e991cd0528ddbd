"""Search by image in two halves: the web process preprocesses the upload and sends its pixels;
the ``query`` worker embeds them with the active encoder (torch and the checkpoint stay there).

Pixels travel as base64 uint8 in the task's JSON (a preprocessed 150 x 150 cutout is ~30 kB) and the
answer is the embedding as a list of floats.
"""

from __future__ import annotations

import base64
import logging
import os
from functools import lru_cache
from typing import Any

import numpy as np

from ml.errors import DataError

logger = logging.getLogger(__name__)

#: Largest cutout side a query may send (the preprocessed cutouts are 150 px).
MAX_SIDE = 1024


def pack_pixels(cutout: np.ndarray) -> tuple[str, list[int]]:
    """(base64 of the uint8 pixels of a preprocessed cutout, shape) for the task's arguments."""
    array = np.ascontiguousarray(cutout)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise DataError(f"a query cutout is a 2-D uint8 preprocessed image, got {array.dtype} {array.shape}")
    return base64.b64encode(array.tobytes()).decode("ascii"), list(array.shape)


def unpack_pixels(pixels: str, shape: list[int]) -> np.ndarray:
    if len(shape) != 2 or not all(0 < int(n) <= MAX_SIDE for n in shape):
        raise DataError(f"a query cutout must be 2-D and at most {MAX_SIDE} px a side, got shape {shape}")
    raw = base64.b64decode(pixels.encode("ascii"), validate=True)
    if len(raw) != int(shape[0]) * int(shape[1]):
        raise DataError(f"a query cutout of shape {shape} needs {shape[0] * shape[1]} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(int(shape[0]), int(shape[1]))


@lru_cache(maxsize=2)
def _encoder(checkpoint_path: str, stamp: int) -> Any:
    """The encoder of a checkpoint, loaded once per worker process (``stamp``: the file's mtime)."""
    from ml.checkpoint import load_encoder

    return load_encoder(checkpoint_path).eval()


def embed_cutout(checkpoint: str, views: str, pixels: str, shape: list[int]) -> list[float]:
    """The embedding of one cutout, looked at the way the stored rows were (``views``)."""
    from ml.embed import embed

    cutout = unpack_pixels(pixels, shape)
    encoder = _encoder(checkpoint, os.stat(checkpoint).st_mtime_ns)
    return [float(v) for v in embed(encoder, cutout[None], device="cpu", views=views)[0]]  # type: ignore[arg-type]


def warm_up() -> str | None:
    """Import torch and load the active encoder now (at a query worker's start); returns its checkpoint.

    Never raises: a worker that cannot warm up still answers queries, each saying what is wrong.
    """
    try:
        import ml.embed  # noqa: F401 - torch and the encoder code
        from rgzlabel.learning.models import EmbeddingSet

        active = EmbeddingSet.objects.filter(is_active=True, encoder__isnull=False).select_related("encoder").first()
        if active is None or active.encoder is None:
            return None
        checkpoint = active.encoder.checkpoint_path
        _encoder(checkpoint, os.stat(checkpoint).st_mtime_ns)
        return checkpoint
    except Exception:  # noqa: BLE001 - a cold start is slower, never broken
        logger.warning("the query worker could not load the active encoder ahead of the first query", exc_info=True)
        return None
