"""Positional cross-matching, grouping, and image near-duplicates."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ml.crossmatch import crossmatch, group_by_position, near_duplicates

ARCSEC = 1 / 3600


def test_it_matches_within_the_radius_only() -> None:
    ra1, dec1 = [150.0, 150.0, 200.0], [30.0, 31.0, -5.0]
    ra2, dec2 = [200.0, 150.0, 150.0], [-5.0 + 15 * ARCSEC, 30.0 + 5 * ARCSEC, 31.0 + 9 * ARCSEC]
    idx1, idx2, sep = crossmatch(ra1, dec1, ra2, dec2, radius_arcsec=10)
    assert idx1.tolist() == [0, 1]
    assert idx2.tolist() == [1, 2]
    np.testing.assert_allclose(sep, [5.0, 9.0], atol=1e-6)
    assert crossmatch(ra1, dec1, ra2, dec2, radius_arcsec=20)[0].tolist() == [0, 1, 2]


def test_it_matches_across_ra_zero() -> None:
    idx1, idx2, sep = crossmatch([359.999], [0.0], [0.001], [0.0])
    assert (idx1.tolist(), idx2.tolist()) == ([0], [0])
    assert sep[0] == pytest.approx(7.2, abs=1e-3)


def test_all_pairs_or_only_the_nearest() -> None:
    ra2, dec2 = [10.0, 10.0], [20.0 + 2 * ARCSEC, 20.0 + 6 * ARCSEC]
    idx1, idx2, _ = crossmatch([10.0], [20.0], ra2, dec2)
    assert (idx1.tolist(), idx2.tolist()) == ([0], [0])
    idx1, idx2, _ = crossmatch([10.0], [20.0], ra2, dec2, nearest_only=False)
    assert (idx1.tolist(), idx2.tolist()) == ([0, 0], [0, 1])


def test_empty_catalogues_match_nothing() -> None:
    for result in (crossmatch([], [], [1.0], [1.0]), crossmatch([1.0], [1.0], [], [])):
        assert all(len(part) == 0 for part in result)


def test_missing_coordinates_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        crossmatch([np.nan], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="length"):
        group_by_position([1.0, 2.0], [1.0])


def test_groups_are_numbered_in_order_of_first_appearance() -> None:
    ra = [50.0, 10.0, 10.0, 10.0, 50.0 + 30 * ARCSEC]
    dec = [0.0, 20.0, 20.0 + 8 * ARCSEC, 20.0 + 16 * ARCSEC, 0.0]  # 1-2-3 chain at 8" steps
    assert group_by_position(ra, dec, radius_arcsec=10).tolist() == [0, 1, 1, 1, 2]
    assert group_by_position(ra, dec, radius_arcsec=5).tolist() == [0, 1, 2, 3, 4]
    assert group_by_position([], []).tolist() == []


def lobes(rng: np.random.Generator, count: int, size: int = 150) -> np.ndarray:
    """Asymmetric two-lobe sources, random per image, as uint8 cutouts."""
    y, x = np.mgrid[:size, :size]
    images = np.zeros((count, size, size))
    for image in images:
        for _ in range(3):
            cy, cx = rng.uniform(30, size - 30, 2)
            width = rng.uniform(2, 6)
            image += rng.uniform(0.2, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    return np.round(255 * images / images.max(axis=(1, 2), keepdims=True)).astype(np.uint8)


def test_it_finds_copies_under_flips_and_rotations() -> None:
    rng = np.random.default_rng(0)
    originals = lobes(rng, 20)
    copies = np.stack(
        [
            np.rot90(originals[3], 1),
            np.fliplr(originals[7]),
            np.rot90(np.flipud(originals[11]), 3),
            originals[15],
            lobes(rng, 1)[0],  # unrelated
        ]
    )
    # A little noise: copies made by another pipeline are not bit-identical.
    noisy = np.clip(copies.astype(int) + rng.integers(-2, 3, copies.shape) * (copies > 0), 0, 255).astype(np.uint8)
    idx_a, idx_b, correlation = near_duplicates(originals, noisy)
    assert list(zip(idx_a.tolist(), idx_b.tolist(), strict=True)) == [(3, 0), (7, 1), (11, 2), (15, 3)]
    assert (correlation > 0.98).all()


def test_within_one_set_each_pair_is_reported_once() -> None:
    rng = np.random.default_rng(1)
    images = lobes(rng, 30)
    images[25] = np.rot90(images[4], 2)
    images[12] = images[2]
    idx_a, idx_b, _ = near_duplicates(images, chunk_size=8)  # pairs span chunk borders
    assert list(zip(idx_a.tolist(), idx_b.tolist(), strict=True)) == [(2, 12), (4, 25)]


def test_blank_images_are_nobody_s_copy() -> None:
    images = np.zeros((3, 150, 150), np.uint8)
    images[2] = lobes(np.random.default_rng(2), 1)[0]
    assert len(near_duplicates(images)[0]) == 0


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="shapes"):
        near_duplicates(np.zeros((2, 150, 150), np.uint8), np.zeros((2, 100, 100), np.uint8))


def test_600_by_104_images_take_seconds_not_minutes() -> None:
    rng = np.random.default_rng(3)
    images_a = rng.integers(0, 255, (600, 150, 150), dtype=np.uint8)
    images_b = rng.integers(0, 255, (104, 150, 150), dtype=np.uint8)
    started = time.perf_counter()
    near_duplicates(images_a, images_b)
    assert time.perf_counter() - started < 20  # ~1 s on two cores; generous for shared CI


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The cutout re-centred ``dy, dx`` pixels away: what is shifted out is lost, the rest is sky (0)."""
    out = np.zeros_like(image)
    height, width = image.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def test_shifted_copies_are_found_only_with_max_shift() -> None:
    rng = np.random.default_rng(3)
    originals = lobes(rng, 24)
    copies = np.stack(
        [
            shifted(originals[5], 1, 0),  # as the two FR-DEEP copies of MiraBest test sources: 1 and 4 pixels
            shifted(np.rot90(originals[9], 1), -4, 3),
            shifted(np.fliplr(originals[17]), 2, -2),
            lobes(rng, 1)[0],  # unrelated
        ]
    )
    noisy = np.clip(copies.astype(int) + rng.integers(-2, 3, copies.shape) * (copies > 0), 0, 255).astype(np.uint8)

    plain, _, _ = near_duplicates(originals, noisy)
    idx_a, idx_b, correlation = near_duplicates(originals, noisy, max_shift=4)

    assert list(zip(idx_a.tolist(), idx_b.tolist(), strict=True)) == [(5, 0), (9, 1), (17, 2)]
    assert (correlation > 0.98).all()
    assert set(plain.tolist()) < {5, 9, 17}  # the aligned check misses the shifted copies
    # Within one set, each pair once; a shift beyond max_shift is not a copy.
    within = np.concatenate([originals[:10], shifted(originals[3], 3, 3)[None], shifted(originals[4], 9, 0)[None]])
    idx_a, idx_b, _ = near_duplicates(within, max_shift=4, chunk_size=4)
    assert list(zip(idx_a.tolist(), idx_b.tolist(), strict=True)) == [(3, 10)]
    with pytest.raises(ValueError, match="max_shift"):
        near_duplicates(originals, noisy, max_shift=-1)
