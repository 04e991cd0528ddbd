"""Factories for ingest tests: synthetic FITS files, good and bad, written into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from django.core.management import CommandError, call_command

from tests.synthetic import radio_image, sky_header


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
