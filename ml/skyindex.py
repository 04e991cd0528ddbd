"""An incremental nearest-neighbour index of sky positions, for cross-matching during ingest.

Positions are unit vectors on the sphere in a KD-tree, so a match is a chord-length query
(exact for any radius, no RA wrap-around or pole special cases). New positions go to a
small buffer searched by brute force and are folded into the tree in batches, which keeps
ingesting N sources O(N log N) instead of rebuilding a catalogue per file.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(N, 3) Cartesian unit vectors for RA/Dec in degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def chord_for(radius_arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def separation_arcsec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular separation between unit vectors, in arcsec (stable for tiny angles)."""
    chord = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)
    return np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))) * 3600.0


class SkyIndex:
    """Nearest-position lookup over a growing set of (key, RA, Dec)."""

    def __init__(
        self, keys: np.ndarray | list[int], ra_deg: np.ndarray, dec_deg: np.ndarray, *, rebuild_every: int = 512
    ):
        self._keys = [int(k) for k in keys]
        self._vectors = unit_vectors(ra_deg, dec_deg).reshape(-1, 3)
        self._tree = cKDTree(self._vectors) if len(self._vectors) else None
        self._pending: list[np.ndarray] = []
        self._rebuild_every = rebuild_every

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: int, ra_deg: float, dec_deg: float) -> None:
        self._keys.append(int(key))
        self._pending.append(unit_vectors(np.array([ra_deg]), np.array([dec_deg]))[0])
        if len(self._pending) >= self._rebuild_every:
            self._vectors = np.vstack([self._vectors, np.array(self._pending)])
            self._pending = []
            self._tree = cKDTree(self._vectors)

    def nearest(self, ra_deg: float, dec_deg: float, radius_arcsec: float) -> tuple[int, float] | None:
        """The closest indexed key within ``radius_arcsec``, with its separation; else None."""
        query = unit_vectors(np.array([ra_deg]), np.array([dec_deg]))[0]
        best: tuple[int, float] | None = None
        if self._tree is not None:
            distance, index = self._tree.query(query, k=1, distance_upper_bound=chord_for(radius_arcsec))
            if np.isfinite(distance):
                best = (self._keys[int(index)], float(separation_arcsec(query, self._vectors[int(index)])))
        if self._pending:
            separations = separation_arcsec(np.array(self._pending), query)
            i = int(np.argmin(separations))
            if separations[i] <= radius_arcsec and (best is None or separations[i] < best[1]):
                best = (self._keys[len(self._vectors) + i], float(separations[i]))
        return best
