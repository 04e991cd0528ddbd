"""Bad input: one clear line per bad file or row, nothing half-written, the rest still ingested."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgzlabel.catalog.models import Cutout, Provenance, Source
from tests.catalog.conftest import failure_lines, ingest, radio_image

pytestmark = pytest.mark.django_db


def corrupt(path: Path, write_fits) -> None:
    path.write_bytes(b"SIMPLE  =                    T" + bytes(range(256)) * 20)


def truncated(path: Path, write_fits) -> None:
    write_fits(path)
    path.write_bytes(path.read_bytes()[: 2880 + 50_000])  # the header and a sixth of the pixels


def not_fits(path: Path, write_fits) -> None:
    path.write_text("SOURCE,RA,DEC\nJ1,10.0,20.0\n")


def all_nan(path: Path, write_fits) -> None:
    write_fits(path, np.full((300, 300), np.nan, dtype=np.float32))


def all_zero(path: Path, write_fits) -> None:
    write_fits(path, np.zeros((300, 300), dtype=np.float32))


def cube(path: Path, write_fits) -> None:
    write_fits(path, np.stack([radio_image(seed) for seed in range(3)]))


def too_small(path: Path, write_fits) -> None:
    write_fits(path, radio_image(size=100))


def no_wcs(path: Path, write_fits) -> None:
    write_fits(path, wcs=False)


BAD_FILES: dict[str, tuple[Callable[[Path, Callable], None], str]] = {
    "corrupt": (corrupt, "corrupt, truncated or not a FITS file"),
    "truncated": (truncated, "corrupt, truncated or not a FITS file"),
    "not FITS with a .fits name": (not_fits, "corrupt, truncated or not a FITS file"),
    "all NaN": (all_nan, "all 90000 pixels are NaN or infinite"),
    "all zero": (all_zero, "all pixels are zero"),
    "3-D cube": (cube, "a 3-D cube of shape (3, 300, 300) has 3 axes longer than 1; pass a single 2-D plane"),
    "smaller than the cutout": (too_small, "image of 100x100 pixels is smaller than the 150x150 cutout"),
    "no WCS": (no_wcs, "no celestial WCS: cannot place it on the sky"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_fits_file_fails_alone_with_one_clear_line(kind, tmp_path, write_fits) -> None:
    make_bad, reason = BAD_FILES[kind]
    write_fits(tmp_path / "good_1.fits", ra_deg=10.0)
    bad = tmp_path / "bad.fits"
    make_bad(bad, write_fits)
    write_fits(tmp_path / "good_2.fits", ra_deg=20.0, seed=1)

    status, out, err = ingest(str(tmp_path))

    assert status == 1
    [line] = failure_lines(err)
    assert line.startswith(f"failed: {bad}: {reason}")
    assert "2 ingested, 0 merged by position, 0 updated, 0 skipped (unchanged), 1 failed" in out
    assert "1 input(s) failed" in err
    # Nothing of the bad file was written; both good files were.
    assert set(Provenance.objects.values_list("external_id", flat=True)) == {"good_1.fits", "good_2.fits"}
    assert Source.objects.count() == Cutout.objects.count() == 2


def test_an_unreadable_catalogue_row_fails_alone(tmp_path) -> None:
    for name in ("J1", "J2"):
        Image.fromarray((radio_image(seed=len(name)) > 0.004).astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("name,ra,dec,label\nJ1,10.0,20.0,FRI\nJ3,ten,20.0,FRII\nJ2,11.0,21.0,FRII\n")

    status, out, err = ingest(str(tmp_path))

    assert status == 1
    assert failure_lines(err) == [f"failed: {catalogue} row 3 (J3): ra 'ten' is not a number in degrees"]
    assert "2 ingested" in out
    assert dict(Provenance.objects.values_list("external_id", "catalogue_label")) == {"J1": "FRI", "J2": "FRII"}
    assert set(Provenance.objects.values_list("dataset", flat=True)) == {"png"}


def test_a_missing_path_and_an_unknown_file_fail_alone(tmp_path, write_fits) -> None:
    good = write_fits(tmp_path / "good.fits")
    unknown = tmp_path / "table.dat"
    unknown.write_bytes(b"\x00\x01not anything")
    missing = tmp_path / "nowhere"

    status, out, err = ingest(str(missing), str(unknown), str(good))

    assert status == 1
    assert failure_lines(err) == [
        f"failed: {missing}: no such file or folder",
        f"failed: {unknown}: not a recognised input (FITS, MiraBest or FR-DEEP tar.gz, Griese HDF5 zip, "
        "PNG catalogue CSV); --dataset forces a kind",
    ]
    assert "1 ingested" in out and "2 failed" in out


def test_a_broken_archive_fails_alone(tmp_path, write_fits) -> None:
    archive = tmp_path / "MiraBest_F_batches.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    good = write_fits(tmp_path / "good.fits")

    status, out, err = ingest("--dataset", "mirabest", str(archive))
    assert status == 1
    [line] = failure_lines(err)
    assert line.startswith(f"failed: {archive}: cannot read the archive")

    assert ingest(str(good))[0] == 0
    assert Source.objects.count() == 1
