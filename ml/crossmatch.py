"""Find the same radio source twice: by sky position, or by image when there is none.

Positions are matched with astropy ``SkyCoord`` (KD-tree, fine for 100k+ sources). Images
are compared by normalised correlation over the eight flips and 90-degree rotations,
as matrix products in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from numpy.typing import ArrayLike
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: FIRST positions are good to <1 arcsec, but catalogues place extended sources by
#: host galaxy, radio centroid or core, which differ by several arcsec.
DEFAULT_RADIUS_ARCSEC = 10.0
#: Above this correlation two images are treated as copies of one source (PAPER.md).
DEFAULT_IMAGE_THRESHOLD = 0.98
#: The same for copies that may be re-centred (:func:`shifted_near_duplicates`): the best of 8 x 81
#: alignments lifts look-alikes too. On the real sets, compact doubles elsewhere on the sky reached
#: 0.980-0.987 against MiraBest test images, while the two shifted FR-DEEP copies scored 0.9987-0.9988.
SHIFTED_IMAGE_THRESHOLD = 0.99


def crossmatch(
    ra1: ArrayLike,
    dec1: ArrayLike,
    ra2: ArrayLike,
    dec2: ArrayLike,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    *,
    nearest_only: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match positions in catalogue 1 to catalogue 2 within a radius.

    Coordinates are degrees in ICRS; FK5 J2000 positions (FIRST, SkyView) differ from
    ICRS by well under an arcsecond, far below any useful radius.

    Args:
        ra1, dec1: catalogue 1 (degrees).
        ra2, dec2: catalogue 2 (degrees).
        radius_arcsec: maximum separation.
        nearest_only: for each source in 1, only its nearest neighbour in 2 (if within
            the radius); otherwise every pair within the radius.

    Returns:
        ``(idx1, idx2, sep_arcsec)``: matched indices into 1 and 2 and their separations,
        sorted by ``idx1`` then ``idx2``.

    Raises:
        ValueError: mismatched lengths or non-finite coordinates.
    """
    coords1, coords2 = _sky_coords(ra1, dec1), _sky_coords(ra2, dec2)
    if len(coords1) == 0 or len(coords2) == 0:
        return _no_matches()
    radius = radius_arcsec * u.arcsec
    if nearest_only:
        nearest, separation, _ = coords1.match_to_catalog_sky(coords2)
        within = np.flatnonzero(separation < radius)
        return within, np.asarray(nearest[within], dtype=np.intp), separation[within].to_value(u.arcsec)
    idx1, idx2, separation, _ = search_around_sky(coords1, coords2, radius)
    order = np.lexsort((idx2, idx1))
    return idx1[order].astype(np.intp), idx2[order].astype(np.intp), separation[order].to_value(u.arcsec)


def group_by_position(ra: ArrayLike, dec: ArrayLike, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC) -> np.ndarray:
    """Group positions that lie within ``radius_arcsec`` of each other.

    Friends-of-friends: two positions share a group when a chain of pairs, each closer
    than the radius, joins them. At 10 arcsec chains are rare among radio galaxies (a few
    per square degree), and a chain is then usually one extended source anyway.

    Args:
        ra, dec: positions in degrees.
        radius_arcsec: linking length.

    Returns:
        Integer group id per position, numbered in order of first appearance, so the
        first member of each group (``np.unique(groups, return_index=True)[1]``) is the
        one listed first: put the preferred catalogue first to keep its entries.
    """
    coords = _sky_coords(ra, dec)
    count = len(coords)
    if count == 0:
        return np.zeros(0, dtype=np.intp)
    idx1, idx2, _, _ = search_around_sky(coords, coords, radius_arcsec * u.arcsec)
    graph = coo_matrix((np.ones(len(idx1), dtype=np.int8), (idx1, idx2)), shape=(count, count))
    _, components = connected_components(graph, directed=False)
    # Renumber so group ids follow the first appearance of each group.
    _, first_index, inverse = np.unique(components, return_index=True, return_inverse=True)
    rank = np.empty(len(first_index), dtype=np.intp)
    rank[np.argsort(first_index)] = np.arange(len(first_index))
    return rank[inverse]


def near_duplicates(
    images_a: np.ndarray,
    images_b: np.ndarray | None = None,
    threshold: float = DEFAULT_IMAGE_THRESHOLD,
    *,
    stretch: Literal["sqrt", "linear"] = "sqrt",
    chunk_size: int = 512,
    max_shift: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of images that are copies of each other up to a flip or 90-degree rotation.

    With ``max_shift`` > 0 the copies may also be shifted by up to that many pixels in each
    axis (:func:`shifted_near_duplicates`: cutouts of one source centred a few pixels apart).

    The score is Pearson correlation, maximised over the eight dihedral transforms of
    ``images_b`` (four for non-square images). With ``stretch="sqrt"`` (default) the
    images are square-rooted first: in raw 0..255 images a bright central core dominates
    the correlation, and on the real FR-DEEP vs MiraBest test set unrelated core-jet
    sources reached 0.987 while the real copies scored 0.994-0.9998; after the square
    root the unrelated ones drop below 0.976 and the copies stay above 0.99.

    Cost: ``8 * len(a) * len(b) * pixels`` multiply-adds in float32 BLAS; 600 x 104
    images of 150x150 take about 1 s on two cores. Blank images correlate with nothing.

    Args:
        images_a: ``(n_a, H, W)`` images.
        images_b: ``(n_b, H, W)`` images; ``None`` compares ``images_a`` with itself and
            reports each pair once (``idx_a < idx_b``).
        threshold: report pairs whose best correlation is strictly above this.
        stretch: ``"sqrt"`` or ``"linear"`` (raw pixels).
        chunk_size: images per block; memory is about ``2 * chunk_size * H * W * 4`` bytes.

    Returns:
        ``(idx_a, idx_b, correlation)`` sorted by ``idx_a`` then ``idx_b``.
    """
    if max_shift:
        return shifted_near_duplicates(
            images_a, images_b, threshold, max_shift=max_shift, stretch=stretch, chunk_size=chunk_size
        )
    same = images_b is None
    unit_a = _unit_vectors(images_a, stretch)
    unit_b = unit_a if images_b is None else _unit_vectors(images_b, stretch)
    if unit_a.shape[1:] != unit_b.shape[1:]:
        raise ValueError(f"image shapes differ: {unit_a.shape[1:]} vs {unit_b.shape[1:]}")
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    found_corr: list[np.ndarray] = []
    for start_b in range(0, len(unit_b), chunk_size):
        block_b = unit_b[start_b : start_b + chunk_size]
        transformed = [np.ascontiguousarray(view).reshape(len(block_b), -1) for view in _dihedral_views(block_b)]
        for start_a in range(0, len(unit_a), chunk_size):
            if same and start_a >= start_b + len(block_b):
                break  # only the upper triangle is needed
            block_a = unit_a[start_a : start_a + chunk_size].reshape(-1, transformed[0].shape[1])
            best = np.full((len(block_a), len(block_b)), -1.0, dtype=np.float32)
            for flat_b in transformed:
                np.maximum(best, block_a @ flat_b.T, out=best)
            rows, cols = np.nonzero(best > threshold)
            rows, cols = rows + start_a, cols + start_b
            keep = rows < cols if same else np.ones(len(rows), dtype=bool)
            found_a.append(rows[keep])
            found_b.append(cols[keep])
            found_corr.append(best[rows[keep] - start_a, cols[keep] - start_b])
    if not found_a:
        return _no_matches()
    idx_a, idx_b, correlation = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_corr)
    order = np.lexsort((idx_b, idx_a))
    return idx_a[order].astype(np.intp), idx_b[order].astype(np.intp), correlation[order].astype(np.float64)


def shifted_near_duplicates(
    images_a: np.ndarray,
    images_b: np.ndarray | None = None,
    threshold: float = DEFAULT_IMAGE_THRESHOLD,
    *,
    max_shift: int = 4,
    stretch: Literal["sqrt", "linear"] = "sqrt",
    chunk_size: int = 512,
    coarse_margin: float = 0.06,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies up to a flip, a 90-degree rotation and a shift of up to ``max_shift`` pixels.

    The score is the Pearson correlation of the overlapping region (each image cropped by
    ``max_shift`` on every side, the other's crop moved by the shift), maximised over the
    eight dihedral transforms and every shift. A copy shifted by a few pixels can correlate
    at only 0.6 without the shift (an outside check found two FR-DEEP images shifted by 1
    and 4 pixels from MiraBest test sources) and at 0.999 with it.

    Two passes keep it affordable: both stacks are binned 2x2 and compared over shifts of
    up to ``ceil(max_shift / 2)`` binned pixels (a quarter of the pixels and of the shifts);
    pairs above ``threshold - coarse_margin`` there are then scored at full resolution over
    every shift. A copy shifted by an odd number of pixels is half a binned pixel off, so it
    scores lower in the first pass: the two real shifted copies scored 0.95-0.97 there
    (0.999 at full resolution), hence the default margin of 0.06. Arguments and return
    value as :func:`near_duplicates`.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    same = images_b is None
    stack_a = _stretched(images_a, stretch)
    stack_b = stack_a if images_b is None else _stretched(images_b, stretch)
    if stack_a.shape[1:] != stack_b.shape[1:]:
        raise ValueError(f"image shapes differ: {stack_a.shape[1:]} vs {stack_b.shape[1:]}")
    height, width = stack_a.shape[1:]
    if min(height, width) <= 4 * max_shift + 4:
        raise ValueError(f"max_shift {max_shift} is too large for {height}x{width} images")
    coarse_shift = -(-max_shift // 2)
    binned_a, binned_b = _binned(stack_a), (_binned(stack_b) if not same else None)
    rows, cols = _shifted_candidates(binned_a, binned_b, threshold - coarse_margin, coarse_shift, chunk_size=chunk_size)
    found_a, found_b, found_corr = [], [], []
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        best = _best_shifted_correlation(stack_a[i], stack_b[j], max_shift)
        if best > threshold:
            found_a.append(i)
            found_b.append(j)
            found_corr.append(best)
    if not found_a:
        return _no_matches()
    idx_a, idx_b, correlation = np.array(found_a), np.array(found_b), np.array(found_corr)
    order = np.lexsort((idx_b, idx_a))
    return idx_a[order].astype(np.intp), idx_b[order].astype(np.intp), correlation[order].astype(np.float64)


def _stretched(images: np.ndarray, stretch: str) -> np.ndarray:
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"expected a stack of 2-D images (n, H, W), got shape {stack.shape}")
    if stretch == "sqrt":
        return np.sqrt(np.clip(stack, 0.0, None))
    if stretch != "linear":
        raise ValueError(f"unknown stretch {stretch!r}; choose 'sqrt' or 'linear'")
    return stack


def _binned(stack: np.ndarray) -> np.ndarray:
    """2x2 mean binning (an odd last row or column is dropped)."""
    n, height, width = stack.shape
    trimmed = stack[:, : height // 2 * 2, : width // 2 * 2]
    return trimmed.reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4))


def _normalised(stack: np.ndarray) -> np.ndarray:
    """Flattened zero-mean, unit-norm rows (blank rows stay zero: they correlate with nothing)."""
    flat = stack.reshape(len(stack), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1)
    norms[norms == 0] = np.inf
    return np.ascontiguousarray(flat / norms[:, None], dtype=np.float32)


def _shifts(max_shift: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]


def _shifted_candidates(
    stack_a: np.ndarray, stack_b: np.ndarray | None, threshold: float, max_shift: int, *, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose best correlation over views and shifts (of ``stack_b``'s crop) exceeds ``threshold``."""
    same = stack_b is None
    other = stack_a if stack_b is None else stack_b
    height, width = stack_a.shape[1:]
    m = max_shift
    centre_a = _normalised(stack_a[:, m : height - m, m : width - m])
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    for start_b in range(0, len(other), chunk_size):
        block_b = other[start_b : start_b + chunk_size]
        best = np.full((len(centre_a), len(block_b)), -1.0, dtype=np.float32)
        for view in _dihedral_views(block_b):
            for dy, dx in _shifts(m):
                crop = _normalised(view[:, m + dy : height - m + dy, m + dx : width - m + dx])
                for start_a in range(0, len(centre_a), chunk_size):
                    part = best[start_a : start_a + chunk_size]
                    np.maximum(part, centre_a[start_a : start_a + chunk_size] @ crop.T, out=part)
        rows, cols = np.nonzero(best > threshold)
        cols = cols + start_b
        keep = rows < cols if same else np.ones(len(rows), dtype=bool)
        found_a.append(rows[keep])
        found_b.append(cols[keep])
    if not found_a:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(found_a), np.concatenate(found_b)


def _best_shifted_correlation(image_a: np.ndarray, image_b: np.ndarray, max_shift: int) -> float:
    """Full-resolution correlation of one pair, maximised over the dihedral views and shifts of ``image_b``."""
    height, width = image_a.shape
    m = max_shift
    centre = _normalised(image_a[None, m : height - m, m : width - m])[0]
    best = -1.0
    for view in _dihedral_views(image_b[None]):
        crops = np.stack([view[0, m + dy : height - m + dy, m + dx : width - m + dx] for dy, dx in _shifts(m)])
        best = max(best, float((_normalised(crops) @ centre).max()))
    return best


def _unit_vectors(images: np.ndarray, stretch: str) -> np.ndarray:
    """Images as zero-mean, unit-norm float32 ``(n, H, W)``: dot products are correlations.

    Mean and norm do not change under flips and rotations, so ``images_b`` is
    normalised once and then transformed.
    """
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"expected a stack of 2-D images (n, H, W), got shape {stack.shape}")
    if stretch == "sqrt":
        stack = np.sqrt(np.clip(stack, 0.0, None))
    elif stretch != "linear":
        raise ValueError(f"unknown stretch {stretch!r}; choose 'sqrt' or 'linear'")
    stack = stack - stack.mean(axis=(1, 2), keepdims=True)
    norms = np.sqrt(np.einsum("nij,nij->n", stack, stack))
    norms[norms == 0] = np.inf  # blank or constant images become all-zero vectors
    return stack / norms[:, None, None]


def _dihedral_views(stack: np.ndarray) -> Iterator[np.ndarray]:
    """The eight flips/rotations of each image (four if the images are not square)."""
    square = stack.shape[1] == stack.shape[2]
    for flipped in (stack, stack[:, :, ::-1]):
        if square:
            for quarter_turns in range(4):
                yield np.rot90(flipped, quarter_turns, axes=(1, 2))
        else:
            yield flipped
            yield flipped[:, ::-1, ::-1]


def _sky_coords(ra: ArrayLike, dec: ArrayLike) -> SkyCoord:
    ra_deg = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec_deg = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra_deg.shape != dec_deg.shape:
        raise ValueError(f"ra and dec differ in length: {ra_deg.shape} vs {dec_deg.shape}")
    if not (np.all(np.isfinite(ra_deg)) and np.all(np.isfinite(dec_deg))):
        raise ValueError("coordinates must be finite (drop sources without a position first)")
    return SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs")


def _no_matches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros(0, dtype=np.intp)
    return empty, empty.copy(), np.zeros(0, dtype=np.float64)
