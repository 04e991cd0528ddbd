"""Factories for ingest tests: synthetic FITS files, good and bad, written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from django.core.management import CommandError, call_command


def radio_image(seed: int = 0, size: int = 300, scale_arcsec: float = 1.8) -> np.ndarray:
    """A raw flux image (Jy/beam): two Gaussian lobes on thermal noise, as FIRST shows them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    image = rng.normal(0.0, 1.5e-4, (size, size))
    centre = (size - 1) / 2
    for dx, dy, peak in ((-10, 4, 0.02), (12, -5, 0.012)):
        # Lobe offsets and widths in arcsec, so that another pixel scale shows the same sky.
        cx, cy = centre + dx * 1.8 / scale_arcsec, centre + dy * 1.8 / scale_arcsec
        width = 3.0 * 1.8 / scale_arcsec
        image += peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
    return image.astype(np.float32)


def sky_header(ra_deg: float, dec_deg: float, shape: tuple[int, int], scale_arcsec: float = 1.8) -> fits.Header:
    """A SkyView-like header: RA---TAN/DEC--TAN centred on (ra, dec), Jy/beam."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = ra_deg, dec_deg
    # FITS pixels are 1-based: the centre of an n-pixel axis is (n + 1) / 2.
    header["CRPIX1"], header["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    header["CDELT1"], header["CDELT2"] = -scale_arcsec / 3600, scale_arcsec / 3600
    header["RADESYS"], header["EQUINOX"] = "FK5", 2000.0
    header["BUNIT"] = "JY/BEAM"
    return header


@pytest.fixture
def write_fits() -> Callable[..., Path]:
    """Write a FITS file; by default a good 300x300 FIRST-like image with a full WCS."""

    def factory(
        path: Path,
        data: np.ndarray | None = None,
        *,
        ra_deg: float = 150.0,
        dec_deg: float = 30.0,
        scale_arcsec: float = 1.8,
        wcs: bool = True,
        seed: int = 0,
        **cards: object,
    ) -> Path:
        image = radio_image(seed, scale_arcsec=scale_arcsec) if data is None else data
        header = sky_header(ra_deg, dec_deg, image.shape[-2:], scale_arcsec) if wcs else fits.Header()
        for keyword, value in cards.items():
            if value is None:
                header.remove(keyword, ignore_missing=True)
            else:
                header[keyword] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU(image, header=header).writeto(path, overwrite=True)
        return path

    return factory


def ingest(*args: str) -> tuple[int, str, str]:
    """Run ``manage.py ingest``; (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("ingest", *args, stdout=out, stderr=err)
    except CommandError as exc:
        err.write(f"CommandError: {exc}\n")
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed: ")]
