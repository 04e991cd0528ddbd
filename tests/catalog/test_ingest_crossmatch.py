"""The same source from several datasets becomes one Source with one provenance per dataset."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Count

from rgzlabel.catalog.models import Provenance, Source
from tests.catalog.conftest import failure_lines, ingest

pytestmark = pytest.mark.django_db


def test_mirabest_griese_and_the_fits_files_merge_by_position(shared_data) -> None:
    status, out, err = ingest(
        str(shared_data / "mirabest" / "MiraBest_F_batches.tar.gz"),
        str(shared_data / "firstgalaxydata" / "galaxy_data_h5.zip"),
        str(shared_data / "mirabest" / "fits"),
    )

    # One Griese image has an all-zero centre: reported, not loaded (as by bootstrap).
    assert status == 1
    [line] = failure_lines(err)
    assert "galaxy_data_h5.zip (22.446_0.776_3_Proctor_Tab1): the central 150x150 cutout is all zero" in line
    assert "2606 ingested, 907 merged by position, 0 updated, 0 skipped (unchanged), 1 failed" in out
    assert dict(Counter(Provenance.objects.values_list("dataset", flat=True))) == {
        "mirabest": 1256,
        "griese": 2157,
        "fits": 100,
    }
    assert Source.objects.count() == 2606
    combinations = Counter(
        tuple(sorted(source.provenances.values_list("dataset", flat=True)))
        for source in Source.objects.annotate(n=Count("provenances")).filter(n__gt=1)
    )
    assert combinations == {
        ("griese", "mirabest"): 758,
        ("fits", "mirabest"): 52,
        ("fits", "griese", "mirabest"): 48,
        # Two MiraBest entries 7.6 arcsec apart (codes 100 and 102, z 0.218 / 0.220).
        ("mirabest", "mirabest"): 1,
    }
    # Every Griese source taken from MiraBest found its MiraBest twin (the README's ~745),
    # and every FITS file its batch entry: they are the same sources before preprocessing.
    griese_from_mirabest = Provenance.objects.filter(dataset="griese", extra__catalogue="MiraBest")
    assert griese_from_mirabest.count() == 745
    assert all(p.source.provenances.filter(dataset="mirabest").exists() for p in griese_from_mirabest)
    # Catalogue labels stay on their provenances, side by side.
    merged = Source.objects.get(provenances__external_id="100_010.451-009.284_0.0529_0080.60")
    assert dict(merged.provenances.values_list("dataset", "catalogue_label")) == {
        "mirabest": "FRI",
        "griese": "FRI",
        "fits": "",
    }

    status, out, _ = ingest(str(shared_data / "mirabest" / "fits"))
    assert status == 0
    assert "0 ingested, 0 merged by position, 0 updated, 100 skipped (unchanged)" in out
    assert Source.objects.count() == 2606


def test_generated_mirabest_batches_and_fits_files_merge_by_position(generated_data) -> None:
    """The same merge on files generated in the published formats (no shared data needed)."""
    from tests.synthetic import mirabest_entries

    entries = mirabest_entries()
    fits_folder = generated_data / "mirabest" / "fits"
    n_fits = len(list(fits_folder.glob("*.fits")))
    status, out, err = ingest(str(generated_data / "mirabest" / "MiraBest_F_batches.tar.gz"), str(fits_folder))

    assert status == 0, err
    assert f"{len(entries)} ingested, {n_fits} merged by position, 0 updated" in out
    assert dict(Counter(Provenance.objects.values_list("dataset", flat=True))) == {
        "mirabest": len(entries),
        "fits": n_fits,
    }
    for entry in entries[:n_fits]:
        merged = Source.objects.get(provenances__external_id=f"{entry.name}.fits")
        assert set(merged.provenances.values_list("dataset", flat=True)) == {"fits", "mirabest"}
        assert merged.provenances.get(dataset="mirabest").external_id == entry.name

    status, out, _ = ingest(str(fits_folder))
    assert status == 0
    assert f"0 ingested, 0 merged by position, 0 updated, {n_fits} skipped (unchanged)" in out
