"""Hostile FITS files (generated here, never committed): each fails alone, fast, and the rest goes in.

A header declaring a huge image, a gzip bomb, a gzip stream that expands past any allowed
image; through ``manage.py ingest``, the ingest page's upload limit and search by image.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from rgzlabel.catalog.models import Source
from rgzlabel.learning.models import Job
from tests.catalog.conftest import ingest

pytestmark = pytest.mark.django_db


def huge_header_file(path: Path, side: int = 100_000) -> Path:
    """A ~31 KB file whose header declares a side x side float32 image (40 GB for 100000)."""
    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
    header["NAXIS1"] = header["NAXIS2"] = side
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"], header["CDELT1"], header["CDELT2"] = 10.0, 10.0, -0.0005, 0.0005
    path.write_bytes(header.tostring().encode("ascii") + b"\0" * 28_800)
    return path


def gzip_bomb(path: Path, side: int) -> Path:
    """A .fits.gz of a side x side float32 image of zeros: tiny on disk, side^2 * 4 bytes unpacked."""
    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
    header["NAXIS1"] = header["NAXIS2"] = side
    block = b"\0" * 2**20
    total = side * side * 4 + (-side * side * 4) % 2880
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.tostring().encode("ascii"))
        for offset in range(0, total, len(block)):
            stream.write(block[: min(len(block), total - offset)])
    return path


def gzip_with_a_huge_table_first(path: Path, rows: int) -> Path:
    """A small image behind a table of ``rows`` kB: declared sizes are all modest, the stream is not."""
    table_header = fits.Header()
    for keyword, value in [
        ("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 1000), ("NAXIS2", rows),
        ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", 1), ("TFORM1", "1000B"),
    ]:  # fmt: skip
        table_header[keyword] = value
    primary = fits.Header()
    primary["SIMPLE"], primary["BITPIX"], primary["NAXIS"], primary["EXTEND"] = True, 8, 0, True
    image = fits.ImageHDU(np.ones((200, 200), dtype=np.float32))
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
    with path.open("wb") as handle:
        handle.write(compressor.compress(primary.tostring().encode("ascii")))
        handle.write(compressor.compress(table_header.tostring().encode("ascii")))
        block = b"\0" * 2**20
        total = 1000 * rows + (-1000 * rows) % 2880
        for offset in range(0, total, len(block)):
            handle.write(compressor.compress(block[: min(len(block), total - offset)]))
        handle.write(compressor.compress(image.header.tostring().encode("ascii")))
        handle.write(compressor.compress(image.data.astype(">f4").tobytes() + b"\0" * ((-200 * 200 * 4) % 2880)))
        handle.write(compressor.flush())
    return path


def test_a_header_declaring_a_huge_image_fails_alone_and_fast(tmp_path, write_fits) -> None:
    write_fits(tmp_path / "good.fits")
    huge_header_file(tmp_path / "huge.fits")
    assert (tmp_path / "huge.fits").stat().st_size < 40_000

    tracemalloc.start()
    started = time.monotonic()
    status, out, err = ingest(str(tmp_path))
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert status == 1
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert failed == [
        f"failed: {tmp_path / 'huge.fits'}: HDU 0 declares a 100000 x 100000 image (10,000,000,000 pixels): "
        "over the limit of 100,000,000 pixels"
    ]
    assert "1 ingested" in out and Source.objects.count() == 1  # the rest still goes in
    assert peak < 200 * 2**20 and elapsed < 60


def test_a_gzip_bomb_fails_alone(tmp_path, write_fits, settings) -> None:
    settings.RGZ_MAX_IMAGE_PIXELS = 1_000_000  # a 4000x4000 bomb (64 MB unpacked) then stands for a 4 GB one
    write_fits(tmp_path / "good.fits")
    bomb = gzip_bomb(tmp_path / "bomb.fits.gz", side=4000)
    assert bomb.stat().st_size < 400_000

    tracemalloc.start()
    status, out, err = ingest(str(tmp_path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert status == 1
    assert f"failed: {bomb}: HDU 0 declares a 4000 x 4000 image" in err
    assert "1 ingested" in out
    assert peak < 32 * 2**20  # the 64 MB of zeros were never unpacked


def test_decompression_is_bounded_whatever_the_headers_declare(tmp_path, write_fits, settings) -> None:
    settings.RGZ_MAX_IMAGE_PIXELS = 1_000_000  # at most 8 MB of pixels + 16 MB of headers unpacked
    write_fits(tmp_path / "good.fits")
    sneaky = gzip_with_a_huge_table_first(tmp_path / "sneaky.fits.gz", rows=40_000)  # 40 MB table

    status, out, err = ingest(str(tmp_path))

    assert status == 1
    assert (
        f"failed: {sneaky}: " in err
        and "decompresses to more than 24,777,216 bytes (the largest allowed image and its headers)" in err
    )
    assert "1 ingested" in out


def test_the_ingest_page_refuses_an_upload_over_the_limit(client, admin_user, settings, tmp_path, write_fits) -> None:
    settings.RGZ_MAX_UPLOAD_BYTES = 100_000
    settings.DATA_DIR = tmp_path / "data"
    client.force_login(admin_user)
    big = SimpleUploadedFile("big.fits", b"\0" * 200_000)
    small = SimpleUploadedFile("small.fits", write_fits(tmp_path / "small.fits").read_bytes()[:90_000])

    response = client.post(reverse("learning:ingest"), {"files": [big, small]})

    assert response.status_code == 200
    assert "big.fits: larger than the upload limit of 0.0953674 MiB (RGZ_MAX_UPLOAD_BYTES)" in response.content.decode()
    assert not Job.objects.exists()
    assert not (tmp_path / "data" / "uploads").exists()


@pytest.mark.parametrize("name", ["huge.fits", "bomb.fits.gz"])
def test_search_by_image_refuses_a_hostile_file_with_a_4xx(client, admin_user, settings, tmp_path, name) -> None:
    settings.RGZ_MAX_IMAGE_PIXELS = 1_000_000
    path = huge_header_file(tmp_path / name) if name == "huge.fits" else gzip_bomb(tmp_path / name, side=4000)
    client.force_login(admin_user)
    started = time.monotonic()
    response = client.post(reverse("science:search"), {"fits": SimpleUploadedFile(name, path.read_bytes())})
    assert response.status_code == 400
    assert f"{name}: HDU 0 declares a " in response.content.decode()
    assert time.monotonic() - started < 30


def test_search_by_image_refuses_an_upload_over_the_limit(client, admin_user, settings) -> None:
    settings.RGZ_MAX_UPLOAD_BYTES = 1000
    client.force_login(admin_user)
    response = client.post(reverse("science:search"), {"fits": SimpleUploadedFile("big.fits", b"\0" * 5000)})
    assert response.status_code == 413
    assert "big.fits: larger than the upload limit" in response.content.decode()
