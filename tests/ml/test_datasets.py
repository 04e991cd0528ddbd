"""Dataset readers on the real archives, and a PNG catalogue with bad rows."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.datasets import (
    DatasetError,
    RowError,
    SourceRecord,
    mirabest_confident,
    parse_mirabest_name,
    read_frdeep,
    read_griese,
    read_mirabest,
    read_png_catalogue,
)


@pytest.fixture(scope="module")
def mirabest(shared_data: Path) -> list[SourceRecord]:
    return list(read_mirabest(shared_data / "mirabest/MiraBest_F_batches.tar.gz"))


@pytest.fixture(scope="module")
def griese() -> list[SourceRecord]:
    return list(read_griese())  # the copy inside the installed firstgalaxydata package


def assert_preprocessed(records: list[SourceRecord]) -> None:
    assert all(record.image.shape == (150, 150) and record.image.dtype == np.uint8 for record in records)
    assert len({record.name for record in records}) == len(records)


# --- MiraBest --------------------------------------------------------------------------


def test_mirabest_has_1256_sources_in_the_official_split(mirabest: list[SourceRecord]) -> None:
    assert len(mirabest) == 1256
    assert Counter(record.split for record in mirabest) == {"train": 1099, "test": 157}
    assert_preprocessed(mirabest)
    assert {record.dataset for record in mirabest} == {"mirabest"}


def test_mirabest_confident_is_729_train_and_104_test(mirabest: list[SourceRecord]) -> None:
    confident = mirabest_confident(mirabest)
    assert Counter(record.split for record in confident) == {"train": 729, "test": 104}
    assert Counter((record.split, record.label) for record in confident) == {
        ("train", "FRI"): 348,
        ("train", "FRII"): 381,
        ("test", "FRI"): 49,
        ("test", "FRII"): 55,
    }
    assert {record.label_code for record in confident} == {"100", "102", "104", "200", "201"}


def test_mirabest_labels_and_extras_come_from_codes_and_names(mirabest: list[SourceRecord]) -> None:
    hybrids = [record for record in mirabest if record.label == "hybrid"]
    assert {record.extra["label_index"] for record in hybrids} == {8, 9}
    record = next(record for record in mirabest if record.name == "100_185.137+000.072_0.1585_0135.33")
    assert (record.ra_deg, record.dec_deg, record.split, record.label_code) == (185.137, 0.072, "test", "100")
    assert record.extra == {
        "label_index": 0,
        "redshift": 0.1585,
        "size_arcsec": 135.33,
        "confidence": "confident",
        "morphology": "standard",
    }


def test_mirabest_names_parse() -> None:
    parsed = parse_mirabest_name("./MiraBest_F/PNG/Scaled_Final/210_010.451-009.284_0.0529_0080.60.png")
    assert parsed == {
        "name": "210_010.451-009.284_0.0529_0080.60",
        "code": "210",
        "ra_deg": 10.451,
        "dec_deg": -9.284,
        "redshift": 0.0529,
        "size_arcsec": 80.6,
    }
    with pytest.raises(DatasetError, match="not a MiraBest name"):
        parse_mirabest_name("141_FRICAT_FR1_example.png")


# --- Griese and FR-DEEP ----------------------------------------------------------------


def test_griese_has_2158_positioned_sources(griese: list[SourceRecord]) -> None:
    assert len(griese) == 2158
    assert Counter(record.split for record in griese) == {"train": 1758, "valid": 200, "test": 200}
    assert Counter(record.label for record in griese) == {"FRI": 495, "FRII": 924, "compact": 391, "bent": 348}
    assert all(0 <= record.ra_deg < 360 and -90 <= record.dec_deg <= 90 for record in griese)  # type: ignore[operator]
    assert Counter(record.extra["catalogue"] for record in griese)["MiraBest"] == 745
    assert_preprocessed(griese)


def test_griese_reads_the_shared_zip_like_the_package_copy(shared_data: Path, griese: list[SourceRecord]) -> None:
    first = list(islice(read_griese(shared_data / "firstgalaxydata/galaxy_data_h5.zip"), 3))
    for ours, theirs in zip(first, griese[:3], strict=True):
        assert (ours.name, ours.ra_deg, ours.dec_deg, ours.label) == (
            theirs.name,
            theirs.ra_deg,
            theirs.dec_deg,
            theirs.label,
        )
        np.testing.assert_array_equal(ours.image, theirs.image)


def test_frdeep_has_600_sources_without_positions(shared_data: Path) -> None:
    frdeep = list(read_frdeep(shared_data / "frdeep/FIRST_PNG_dataset.tar.gz"))
    assert len(frdeep) == 600
    assert all(record.ra_deg is None and record.dec_deg is None for record in frdeep)
    assert Counter(record.split for record in frdeep) == {"train": 550, "test": 50}
    assert Counter(record.label for record in frdeep) == {"FRI": 264, "FRII": 336}
    assert_preprocessed(frdeep)


# --- the same readers on archives generated in the published formats --------------------


def test_generated_mirabest_batches_read_with_names_codes_and_splits(tmp_path: Path) -> None:
    from tests.synthetic import mirabest_entries, write_mirabest_archive

    entries = mirabest_entries(per_code=3)
    records = list(read_mirabest(write_mirabest_archive(tmp_path / "MiraBest_F_batches.tar.gz", entries)))

    assert sorted(record.name for record in records) == sorted(entry.name for entry in entries)
    assert [record.split for record in records] == sorted((r.split for r in records), key=lambda s: s == "test")
    assert_preprocessed(records)
    by_name = {record.name: record for record in records}
    for entry in entries:
        record = by_name[entry.name]
        assert (record.ra_deg, record.dec_deg, record.label_code, record.split) == (
            entry.ra_deg,
            entry.dec_deg,
            entry.code,
            entry.split,
        )
        assert record.label == {"1": "FRI", "2": "FRII", "3": "hybrid"}[entry.code[0]]
        np.testing.assert_array_equal(record.image, entry.image)
    confident = mirabest_confident(records)
    assert {record.label_code for record in confident} == {"100", "102", "104", "200", "201"}


def test_generated_frdeep_batches_read_with_class_prefixed_names(tmp_path: Path) -> None:
    from tests.synthetic import write_frdeep_archive

    frdeep = list(read_frdeep(write_frdeep_archive(tmp_path / "FIRST_PNG_dataset.tar.gz", n_per_class=4)))

    assert len(frdeep) == 8
    assert Counter(record.label for record in frdeep) == {"FRI": 4, "FRII": 4}
    assert Counter(record.split for record in frdeep) == {"train": 6, "test": 2}
    assert "FRI/0_example" in {record.name for record in frdeep} and "FRII/0_example" in {r.name for r in frdeep}
    assert all(record.ra_deg is None for record in frdeep)
    assert_preprocessed(frdeep)


# --- archives that are not what they claim ----------------------------------------------


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.tar.gz"
    write_tar(path, {"F_batches/batches.meta": pickle.dumps({"label_names": Exploit()})})
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        list(read_mirabest(path))


def test_a_corrupt_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DatasetError, match="broken.tar.gz"):
        list(read_frdeep(path))


# --- PNG catalogue ----------------------------------------------------------------------


def save_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def test_png_catalogue_reports_bad_rows_and_reads_the_rest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("good1", "good2", "dup", "tiny", "blank"):
        size = 40 if name == "tiny" else 150
        save_png(tmp_path / f"{name}.png", rng.integers(1, 255, (size, size), dtype=np.uint8))
    save_png(tmp_path / "blank.png", np.zeros((150, 150), np.uint8))
    save_png(tmp_path / "colour.png", rng.integers(1, 255, (200, 200, 3), dtype=np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"this is not a png")
    (tmp_path / "catalogue.csv").write_text(
        "Name,RA,Dec,label\n"
        "good1,150.0,30.0,FRI\n"
        "badra,abc,30.0,FRI\n"
        "missing,150.0,30.0,FRII\n"
        "good2,10.5,-5.25,\n"
        "far_north,150.0,95.0,FRI\n"
        "good1,150.0,30.0,FRI\n"
        "tiny,1.0,1.0,\n"
        "blank,1.0,1.0,\n"
        "corrupt,1.0,1.0,\n"
        "colour,2.0,2.0,bent\n"
        ",3.0,3.0,\n"
    )
    items = list(read_png_catalogue(tmp_path, tmp_path / "catalogue.csv", dataset="survey"))
    records = [item for item in items if isinstance(item, SourceRecord)]
    errors = {item.row: item for item in items if isinstance(item, RowError)}
    assert [record.name for record in records] == ["good1", "good2", "colour"]
    assert records[0].label == "FRI"
    assert records[1].label is None
    assert (records[1].ra_deg, records[1].dec_deg, records[1].dataset) == (10.5, -5.25, "survey")
    assert records[2].image.shape == (150, 150)
    reasons = {row: error.reason for row, error in errors.items()}
    assert "not a number" in reasons[3]
    assert "missing PNG" in reasons[4]
    assert "out of range" in reasons[6]
    assert "duplicate" in reasons[7]
    assert "smaller" in reasons[8]
    assert "all zero" in reasons[9]
    assert "corrupt.png" in reasons[10]
    assert "empty name" in reasons[12]
    assert errors[3].name == "badra"


def test_png_catalogue_without_required_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "catalogue.csv").write_text("name,ra\nx,1.0\n")
    with pytest.raises(DatasetError, match="dec"):
        list(read_png_catalogue(tmp_path, tmp_path / "catalogue.csv"))
