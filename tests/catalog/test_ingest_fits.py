"""``manage.py ingest`` on FITS: real SkyView files, bad files, warnings, re-runs."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from ml.datasets import parse_mirabest_name
from ml.skyindex import separation_arcsec, unit_vectors
from rgzlabel.catalog.models import Cutout, Provenance, Source
from tests.catalog.conftest import failure_lines, ingest, radio_image

pytestmark = pytest.mark.django_db

#: Half a unit in the last place of the MiraBest file names' coordinates (3 decimals, degrees).
NAME_ROUNDING_DEG = 0.0005
#: SkyView was queried for this source at a position 9 arcsec north of the one in its name.
OFF_CENTRE_FILE = "310_206.568+036.150_0.2673_0017.89.fits"


def test_the_100_mirabest_fits_files_become_100_sources_where_their_names_say(shared_data) -> None:
    folder = shared_data / "mirabest" / "fits"

    status, out, err = ingest(str(folder))

    assert status == 0, err
    assert "100 ingested" in out and "0 failed" in out
    assert Source.objects.count() == Cutout.objects.count() == 100
    separations = {}
    for provenance in Provenance.objects.filter(dataset="fits").select_related("source"):
        source = provenance.source
        named = parse_mirabest_name(provenance.external_id)
        header = fits.getheader(folder / provenance.external_id)
        # The source sits at the image centre, which in these files is the reference pixel.
        assert (header["CRPIX1"], header["CRPIX2"]) == (150.5, 150.5)
        assert arcsec_between(source, header["CRVAL1"], header["CRVAL2"]) < 0.01, provenance.external_id
        assert source.name == f"FIRST J{_truncated_hms(source.ra_deg)}{_truncated_dms(source.dec_deg)}"
        separations[provenance.external_id] = arcsec_between(source, named["ra_deg"], named["dec_deg"])
        if provenance.external_id != OFF_CENTRE_FILE:
            # The names round each coordinate to 0.001 deg; within that, the position is exact.
            cos_dec = np.cos(np.radians(source.dec_deg))
            assert abs((source.ra_deg - named["ra_deg"]) * cos_dec) <= NAME_ROUNDING_DEG * cos_dec + 1e-9
            assert abs(source.dec_deg - named["dec_deg"]) <= NAME_ROUNDING_DEG + 1e-9

    # 98 of the 99 are within 2 arcsec of their names; one is 2.02 arcsec away only because
    # both of its coordinates round by 0.0004 deg (CRVAL 10.8036, -10.6656 -> "010.804-010.666").
    beyond_2_arcsec = {name: round(sep, 2) for name, sep in separations.items() if sep > 2.0}
    assert beyond_2_arcsec == {"110_010.804-010.666_0.1275_0095.51.fits": 2.02, OFF_CENTRE_FILE: 9.0}


def test_the_header_warnings_of_real_files_are_recorded_and_reported(shared_data) -> None:
    status, out, _ = ingest(str(shared_data / "mirabest" / "fits" / OFF_CENTRE_FILE))

    assert status == 0
    warnings = Provenance.objects.get().extra["warnings"]
    assert any("VerifyWarning" in warning and "Unprintable string" in warning for warning in warnings)
    assert "1 file(s) ingested with header warnings" in out
    assert "1 file(s): VerifyWarning: Card N: Unprintable string '...'" in out


def test_a_rerun_skips_unchanged_files_and_updates_changed_ones(tmp_path, write_fits) -> None:
    first = write_fits(tmp_path / "a.fits", ra_deg=150.0)
    write_fits(tmp_path / "deeper" / "b.fits.gz", ra_deg=151.0, seed=1)
    assert ingest(str(tmp_path))[0] == 0
    checksum = Cutout.objects.get(source__provenances__external_id="a.fits").checksum

    status, out, _ = ingest(str(tmp_path))
    assert status == 0
    assert "0 ingested, 0 merged by position, 0 updated, 2 skipped (unchanged)" in out

    write_fits(first, ra_deg=150.0, seed=7)  # new pixels, same file name
    status, out, _ = ingest(str(tmp_path))
    assert status == 0
    assert "0 ingested, 0 merged by position, 1 updated, 1 skipped (unchanged)" in out
    assert Source.objects.count() == Provenance.objects.count() == Cutout.objects.count() == 2
    assert Cutout.objects.get(source__provenances__external_id="a.fits").checksum != checksum


def test_fits_gz_and_fit_files_are_found_in_subfolders(tmp_path, write_fits) -> None:
    write_fits(tmp_path / "x" / "one.fit", ra_deg=10.0)
    raw = write_fits(tmp_path / "raw.fits", ra_deg=20.0)
    (tmp_path / "x" / "y").mkdir()
    with gzip.open(tmp_path / "x" / "y" / "two.fits.gz", "wb") as compressed:
        compressed.write(raw.read_bytes())
    raw.unlink()
    (tmp_path / "notes.txt").write_text("not an image")

    status, out, _ = ingest(str(tmp_path))

    assert status == 0, out
    assert set(Provenance.objects.values_list("external_id", flat=True)) == {"one.fit", "two.fits.gz"}


def test_a_pixel_scale_other_than_first_is_resampled_and_recorded(tmp_path, write_fits) -> None:
    path = write_fits(tmp_path / "fine.fits", radio_image(scale_arcsec=0.9, size=600), scale_arcsec=0.9)

    status, out, _ = ingest(str(path))

    assert status == 0
    provenance = Provenance.objects.get()
    assert "pixel scale 0.9 arcsec: resampled to 1.8 arcsec/pixel" in provenance.extra["warnings"]
    assert provenance.extra["pixel_scale_arcsec"] == pytest.approx(0.9)
    assert Cutout.objects.get().size == 150
    assert "pixel scale 0.9 arcsec: resampled" in out


def test_an_unexpected_unit_or_none_is_a_warning_not_a_failure(tmp_path, write_fits) -> None:
    write_fits(tmp_path / "mjy.fits", BUNIT="mJy/beam", ra_deg=10.0)
    write_fits(tmp_path / "none.fits", BUNIT=None, ra_deg=20.0)

    status, _, _ = ingest(str(tmp_path))

    assert status == 0
    warnings = {p.external_id: p.extra["warnings"] for p in Provenance.objects.all()}
    assert any("BUNIT is 'mJy/beam', not Jy/beam" in warning for warning in warnings["mjy.fits"])
    assert "no BUNIT: assumed Jy/beam" in warnings["none.fits"]


def test_a_file_without_wcs_goes_in_without_a_position_only_when_allowed(tmp_path, write_fits) -> None:
    path = write_fits(tmp_path / "nowcs.fits", wcs=False)

    status, _, err = ingest(str(path))
    assert status == 1
    assert failure_lines(err) == [f"failed: {path}: no celestial WCS: cannot place it on the sky "
                                  "(--allow-no-position ingests it without a position)"]  # fmt: skip

    status, _, err = ingest(str(path), "--allow-no-position")
    assert status == 0, err
    source = Source.objects.get()
    assert (source.name, source.ra_deg, source.dec_deg) == ("fits nowcs", None, None)
    assert any("without a position" in warning for warning in source.provenances.get().extra["warnings"])


def test_survey_and_radius_options_are_used(tmp_path, write_fits) -> None:
    write_fits(tmp_path / "a.fits", ra_deg=150.0, dec_deg=30.0)
    write_fits(tmp_path / "b.fits", ra_deg=150.0, dec_deg=30.0 + 5 / 3600, seed=2)  # 5 arcsec north

    status, out, _ = ingest(str(tmp_path), "--survey", "VLASS", "--radius", "3")

    assert status == 0
    assert "2 ingested, 0 merged" in out  # 5 arcsec apart: two sources at a 3 arcsec radius
    assert set(Source.objects.values_list("survey", flat=True)) == {"VLASS"}
    assert all(name.startswith("VLASS J10") for name in Source.objects.values_list("name", flat=True))


def arcsec_between(source: Source, ra_deg: float, dec_deg: float) -> float:
    return float(separation_arcsec(unit_vectors(source.ra_deg, source.dec_deg), unit_vectors(ra_deg, dec_deg)))


def _truncated_hms(ra_deg: float) -> str:
    tenths = int(ra_deg / 15 * 36000)
    return f"{tenths // 36000:02d}{tenths // 600 % 60:02d}{tenths // 10 % 60:02d}.{tenths % 10}"


def _truncated_dms(dec_deg: float) -> str:
    seconds = int(abs(dec_deg) * 3600)
    return f"{'-' if dec_deg < 0 else '+'}{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def test_ingest_records_the_angular_size_of_the_emission(tmp_path, write_fits) -> None:
    from ml.preprocess import angular_extent_arcsec

    write_fits(tmp_path / "a.fits", ra_deg=150.0)
    assert ingest(str(tmp_path))[0] == 0
    source = Source.objects.get()
    assert source.angular_size_arcsec is not None and source.angular_size_arcsec > 0
    assert source.angular_size_arcsec == pytest.approx(angular_extent_arcsec(source.cutout.as_array()), abs=0.05)


def test_the_migration_backfills_sizes_of_sources_ingested_before(make_source) -> None:
    import importlib

    from django.apps import apps

    sources = [make_source() for _ in range(3)]
    Source.objects.update(angular_size_arcsec=None)
    migration = importlib.import_module("rgzlabel.catalog.migrations.0002_backfill_angular_size")
    migration.backfill_angular_sizes(apps, None)
    sizes = dict(Source.objects.values_list("pk", "angular_size_arcsec"))
    assert all(sizes[s.pk] and sizes[s.pk] > 0 for s in sources), sizes
