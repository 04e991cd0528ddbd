"""The shared preprocessing recipe: threshold, scale, resample, crop, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from ml.preprocess import (
    AllNaNError,
    BlankImageError,
    CubeError,
    ImageTooSmallError,
    NotAnImageError,
    PreprocessError,
    centre_crop,
    from_preprocessed,
    preprocess,
    resample,
)


def noisy_source(size: int = 300, rms: float = 1.0, seed: int = 0, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Gaussian noise of known rms plus a bright Gaussian blob near the centre."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, rms, (size, size))
    y, x = np.mgrid[:size, :size]
    cy, cx = (size - 1) / 2 + offset[0], (size - 1) / 2 + offset[1]
    image += 50.0 * rms * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 3.0**2))
    return image.astype(np.float32)


def test_it_returns_a_150_pixel_uint8_cutout_peaking_at_255() -> None:
    cutout = preprocess(noisy_source())
    assert cutout.shape == (150, 150)
    assert cutout.dtype == np.uint8
    assert cutout.max() == 255


def test_it_zeroes_pixels_at_or_below_three_sigma() -> None:
    image = noisy_source(rms=0.5)
    _, _, rms = sigma_clipped_stats(image, sigma=3.0)
    assert rms == pytest.approx(0.5, rel=0.05)  # the clipped rms ignores the source
    cutout = preprocess(image)
    raw = centre_crop(image, 150)
    assert not cutout[raw <= 3 * rms].any()
    assert (raw[cutout > 0] > 3 * rms).all()
    # Noise alone exceeds 3 sigma in ~0.1 % of pixels; the source fills the rest.
    assert (cutout > 0).sum() < 0.05 * cutout.size


def test_the_threshold_follows_sigma() -> None:
    image = noisy_source()
    assert (preprocess(image, sigma=5.0) > 0).sum() < (preprocess(image, sigma=3.0) > 0).sum()


def test_it_scales_linearly_by_the_peak() -> None:
    image = np.zeros((200, 200), dtype=np.float32)
    image[100, 100] = 4.0
    image[100, 101] = 2.0
    image[:, :5] = np.tile([0.001, -0.001], 500).reshape(200, 5)  # a little "noise"
    cutout = preprocess(image)
    assert cutout[75, 75] == 255
    assert cutout[75, 76] == 127  # floor(255 * 2 / 4)


def test_nan_and_inf_pixels_become_zero() -> None:
    image = noisy_source()
    image[10:20, 10:20] = np.nan
    image[150, 40] = np.inf
    image[150, 110] = -np.inf
    cutout = preprocess(image)
    assert cutout[150 - 75, 110 - 75] == 0
    assert cutout.max() == 255


def test_it_does_not_modify_the_input() -> None:
    image = noisy_source()
    image[0, 0] = np.nan
    before = image.copy()
    preprocess(image)
    np.testing.assert_array_equal(image, before)


def test_degenerate_axes_are_squeezed() -> None:
    image = noisy_source()
    np.testing.assert_array_equal(preprocess(image[np.newaxis, np.newaxis]), preprocess(image))


def test_resampling_from_3_6_arcsec_doubles_the_size() -> None:
    assert resample(np.ones((100, 80), np.float32), 3.6, 1.8).shape == (200, 160)
    assert resample(np.ones((100, 100), np.float32), 0.9, 1.8).shape == (50, 50)


def test_resampling_keeps_sky_positions() -> None:
    # A source 20 pixels right of centre at 3.6"/px is 72" away: 40 pixels at 1.8"/px.
    image = noisy_source(size=120, offset=(0, 20))
    cutout = preprocess(image, pixel_scale_arcsec=3.6)
    row, col = np.unravel_index(np.argmax(cutout), cutout.shape)
    assert abs(row - 74.5) <= 1
    assert abs(col - (74.5 + 40)) <= 1


def test_no_resampling_at_the_target_scale() -> None:
    image = noisy_source()
    np.testing.assert_array_equal(preprocess(image, pixel_scale_arcsec=1.8), preprocess(image))


def test_centre_crop_takes_the_middle() -> None:
    image = np.arange(300 * 300).reshape(300, 300)
    crop = centre_crop(image, 150)
    assert crop[0, 0] == image[75, 75]
    assert crop[-1, -1] == image[224, 224]


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        (np.full((200, 200), np.nan, np.float32), AllNaNError, "NaN"),
        (np.zeros((200, 200), np.float32), BlankImageError, "zero"),
        (np.full((200, 200), 3.0, np.float32), BlankImageError, "constant"),
        (np.ones((3, 200, 200), np.float32), CubeError, "cube"),
        (noisy_source(size=100), ImageTooSmallError, "smaller"),
        (np.ones(500, np.float32), NotAnImageError, "2-D"),
        (np.zeros((0, 0), np.float32), NotAnImageError, "empty"),
        (np.pad(np.ones((5, 5), np.float32), ((0, 195), (0, 195))), BlankImageError, "central"),
    ],
    ids=["all-nan", "all-zero", "constant", "cube", "too-small", "1-d", "empty", "source-outside-cutout"],
)
def test_bad_images_raise_clear_errors(image: np.ndarray, error: type[PreprocessError], words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        preprocess(image)
    assert isinstance(caught.value, ValueError)


def test_an_image_too_small_after_resampling_is_refused() -> None:
    with pytest.raises(ImageTooSmallError):
        preprocess(noisy_source(size=200), pixel_scale_arcsec=1.0)  # 111 pixels at 1.8"


def test_from_preprocessed_only_crops() -> None:
    image = np.random.default_rng(1).integers(0, 200, (300, 300), dtype=np.uint8)
    cutout = from_preprocessed(image)
    np.testing.assert_array_equal(cutout, image[75:225, 75:225])
    assert cutout.flags.c_contiguous
    np.testing.assert_array_equal(from_preprocessed(cutout), cutout)


def test_from_preprocessed_refuses_raw_blank_and_small_images() -> None:
    with pytest.raises(NotAnImageError, match="uint8"):
        from_preprocessed(np.ones((150, 150), np.float32))
    with pytest.raises(BlankImageError):
        from_preprocessed(np.zeros((150, 150), np.uint8))
    assert not from_preprocessed(np.zeros((150, 150), np.uint8), allow_blank=True).any()
    with pytest.raises(ImageTooSmallError):
        from_preprocessed(np.ones((100, 100), np.uint8))


def test_real_fits_files_reproduce_the_mirabest_images(shared_data: Path) -> None:
    """Ingest and training agree: FITS -> preprocess() gives the official MiraBest pixels.

    The residual differences sit in a few sources whose FIRST maps changed after
    MiraBest was made (they differ in the raw data, not in the recipe).
    """
    from ml.datasets import read_mirabest
    from ml.fits_io import read_fits

    official = {
        record.name: record.image for record in read_mirabest(shared_data / "mirabest/MiraBest_F_batches.tar.gz")
    }
    correlations, identical = [], []
    for path in sorted((shared_data / "mirabest/fits").glob("*.fits")):
        fits_image = read_fits(path)
        ours = preprocess(fits_image.data, fits_image.pixel_scale_arcsec).astype(np.float64)
        theirs = official[path.stem].astype(np.float64)
        correlations.append(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
        identical.append(np.mean(ours == theirs))
    assert len(correlations) == 100
    assert np.median(correlations) > 0.999
    assert np.sum(np.array(correlations) > 0.99) >= 85
    assert np.median(identical) > 0.999


# --- angular size ----------------------------------------------------------------------------------
def test_the_extent_spans_both_lobes_and_ignores_noise_peaks() -> None:
    from ml.preprocess import angular_extent_arcsec

    cutout = np.zeros((150, 150), dtype=np.uint8)
    cutout[70:80, 40:50] = 200  # one lobe
    cutout[70:80, 100:110] = 100  # the other, 50 pixels away, no bridge between them
    cutout[3, 3] = 255  # a lone noise peak above the threshold in the corner
    # From the left edge of one lobe to the right edge of the other: 70 pixels wide, 10 high.
    expected = (np.hypot(69, 9) + 1) * 1.8
    assert angular_extent_arcsec(cutout, 1.8) == pytest.approx(expected, rel=1e-3)


def test_an_empty_cutout_has_no_extent_and_a_cube_is_refused() -> None:
    from ml.preprocess import NotAnImageError, angular_extent_arcsec

    assert angular_extent_arcsec(np.zeros((150, 150), dtype=np.uint8)) == 0.0
    with pytest.raises(NotAnImageError, match="2-D"):
        angular_extent_arcsec(np.zeros((2, 150, 150), dtype=np.uint8))
