"""Reading FITS files: real SkyView cutouts, compressed files, and broken ones."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ml.datasets import parse_mirabest_name
from ml.fits_io import FitsReadError, read_fits


@pytest.fixture(scope="module")
def fits_paths(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / "mirabest/fits").glob("*.fits"))
    assert len(paths) == 100
    return paths


def sky_header(**extra: object) -> fits.Header:
    """A minimal FIRST-like TAN header centred on (150, 30) at 1.8 arcsec/pixel."""
    header = fits.Header()
    for key, value in {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 30.0,
        "CRPIX1": 100.5, "CRPIX2": 100.5, "CDELT1": -0.0005, "CDELT2": 0.0005, "BUNIT": "JY/BEAM",
    }.items():  # fmt: skip
        header[key] = value
    for key, value in extra.items():
        header[key] = value
    return header


#: SkyView was asked for Dec 36.1525 here, 9 arcsec from the 36.150 in the MiraBest name;
#: the header (CRVAL2) agrees with what read_fits reports.
NAME_POSITION_DIFFERS = "310_206.568+036.150_0.2673_0017.89.fits"


def test_all_real_files_read_with_positions_from_their_names(fits_paths: list[Path]) -> None:
    for path in fits_paths:
        image = read_fits(path)
        assert image.data.shape == (300, 300)
        assert image.data.dtype == np.float32
        assert image.unit == "JY/BEAM"
        assert image.hdu_index == 0
        assert image.pixel_scale_arcsec == pytest.approx(1.8)
        # CRPIX is the centre pixel in these files, so the centre is CRVAL.
        header = fits.getheader(path)
        assert image.ra_deg == pytest.approx(header["CRVAL1"], abs=1e-6)
        assert image.dec_deg == pytest.approx(header["CRVAL2"], abs=1e-6)
        if path.name == NAME_POSITION_DIFFERS:
            continue
        expected = parse_mirabest_name(path.name)
        # Names round to 0.001 deg (up to 1.8 arcsec per axis).
        ra_offset = (image.ra_deg - expected["ra_deg"]) * np.cos(np.radians(expected["dec_deg"]))
        assert abs(ra_offset) * 3600 < 2, path.name
        assert abs(image.dec_deg - expected["dec_deg"]) * 3600 < 2, path.name


def test_tab_characters_in_comments_are_recorded_not_fatal(fits_paths: list[Path]) -> None:
    image = read_fits(fits_paths[0])
    assert image.warnings
    assert all(message.startswith("VerifyWarning: Card ") for message in image.warnings)
    assert "Unprintable string" in image.warnings[0]


def test_reading_many_files_leaves_no_file_open(fits_paths: list[Path]) -> None:
    open_before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    for path in fits_paths:
        read_fits(path)
    if open_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= open_before


def test_gzipped_and_fit_files_read_the_same(fits_paths: list[Path], tmp_path: Path) -> None:
    original = read_fits(fits_paths[0])
    gzipped = tmp_path / "source.fits.gz"
    gzipped.write_bytes(gzip.compress(fits_paths[0].read_bytes()))
    short_suffix = tmp_path / "source.fit"
    shutil.copyfile(fits_paths[0], short_suffix)
    for copy in (gzipped, short_suffix):
        image = read_fits(copy)
        np.testing.assert_array_equal(image.data, original.data)
        assert (image.ra_deg, image.dec_deg) == (original.ra_deg, original.dec_deg)


def test_a_truncated_file_is_refused_with_its_name(fits_paths: list[Path], tmp_path: Path) -> None:
    raw = fits_paths[0].read_bytes()
    for name, content in {"half.fits": raw[: len(raw) // 2], "header_only.fits": raw[:1000], "empty.fits": b""}.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FitsReadError, match=name):
            read_fits(path)


def test_a_truncated_gzip_file_is_refused(fits_paths: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "cut.fits.gz"
    path.write_bytes(gzip.compress(fits_paths[0].read_bytes())[:40_000])
    with pytest.raises(FitsReadError, match="cut.fits.gz"):
        read_fits(path)


def test_a_text_file_named_fits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.fits"
    path.write_text("these are observing notes, not an image\n" * 100)
    with pytest.raises(FitsReadError, match="notes.fits.*not a FITS file") as caught:
        read_fits(path)
    assert isinstance(caught.value, ValueError)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FitsReadError, match="absent.fits"):
        read_fits(tmp_path / "absent.fits")


def test_a_file_without_an_image_hdu_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(FitsReadError, match="no HDU with image data"):
        read_fits(path)


def test_the_first_image_hdu_is_used(tmp_path: Path) -> None:
    path = tmp_path / "extension.fits"
    data = np.arange(200 * 200, dtype=np.float32).reshape(200, 200)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=sky_header())]).writeto(path)
    image = read_fits(path)
    assert image.hdu_index == 1
    np.testing.assert_array_equal(image.data, data)
    assert image.ra_deg == pytest.approx(150.0)
    assert image.dec_deg == pytest.approx(30.0)


def test_a_cube_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((3, 50, 50), np.float32)).writeto(path)
    with pytest.raises(FitsReadError, match="cube.fits.*cube"):
        read_fits(path)


def test_degenerate_stokes_and_frequency_axes_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "four_d.fits"
    header = sky_header(
        CTYPE3="FREQ", CRVAL3=1.4e9, CRPIX3=1.0, CDELT3=1e6, CTYPE4="STOKES", CRVAL4=1.0, CRPIX4=1.0, CDELT4=1.0
    )
    data = np.random.default_rng(0).normal(size=(1, 1, 200, 200)).astype(np.float32)
    fits.PrimaryHDU(data, header=header).writeto(path)
    image = read_fits(path)
    assert image.data.shape == (200, 200)
    assert image.ra_deg == pytest.approx(150.0)
    assert image.dec_deg == pytest.approx(30.0)
    assert image.pixel_scale_arcsec == pytest.approx(1.8)


def test_a_file_without_wcs_is_readable_without_position(tmp_path: Path) -> None:
    path = tmp_path / "no_wcs.fits"
    fits.PrimaryHDU(np.ones((200, 200), np.float32)).writeto(path)
    image = read_fits(path)
    assert image.ra_deg is None
    assert image.dec_deg is None
    assert image.pixel_scale_arcsec is None
    assert image.unit is None
    assert any("no celestial WCS" in message for message in image.warnings)


def test_a_broken_wcs_is_recorded_and_the_image_still_read(tmp_path: Path) -> None:
    path = tmp_path / "singular.fits"
    fits.PrimaryHDU(np.ones((200, 200), np.float32), header=sky_header(CDELT1=0.0, CDELT2=0.0)).writeto(path)
    image = read_fits(path)
    assert image.data.shape == (200, 200)
    assert (image.ra_deg, image.dec_deg, image.pixel_scale_arcsec) == (None, None, None)
    assert any("WCS unusable" in message and "singular" in message for message in image.warnings)
