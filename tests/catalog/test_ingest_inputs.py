"""Recognising what an input is, by name and by content, and forcing it with --dataset."""

from __future__ import annotations

import pytest

from rgzlabel.catalog.inputs import InputError, InputKind, plan_ingest, recognise_input
from rgzlabel.catalog.services import position_name


@pytest.mark.parametrize("data", ["generated_data", "shared_data"])
def test_it_recognises_the_datasets_by_name(data, request) -> None:
    shared_data = request.getfixturevalue(data)
    n_fits = len(list((shared_data / "mirabest" / "fits").glob("*.fits")))
    assert recognise_input(shared_data / "mirabest" / "MiraBest_F_batches.tar.gz").kind is InputKind.MIRABEST
    assert recognise_input(shared_data / "frdeep" / "FIRST_PNG_dataset.tar.gz").kind is InputKind.FRDEEP
    assert recognise_input(shared_data / "firstgalaxydata" / "galaxy_data_h5.zip").kind is InputKind.GRIESE
    fits_folder = recognise_input(shared_data / "mirabest" / "fits")
    assert (fits_folder.kind, fits_folder.expected) == (InputKind.FITS, n_fits)
    assert n_fits == (100 if data == "shared_data" else 5)


def test_no_path_means_the_griese_set_of_the_installed_package() -> None:
    plan = plan_ingest([])
    assert [(ingest_input.kind, ingest_input.path) for ingest_input in plan.inputs] == [(InputKind.GRIESE, None)]


def test_it_recognises_files_with_uninformative_names_by_content(generated_data, tmp_path, write_fits) -> None:
    shared_data = generated_data
    (tmp_path / "batches.bin").symlink_to(shared_data / "mirabest" / "MiraBest_F_batches.tar.gz")
    (tmp_path / "first.bin").symlink_to(shared_data / "frdeep" / "FIRST_PNG_dataset.tar.gz")
    (tmp_path / "galaxies.bin").symlink_to(shared_data / "firstgalaxydata" / "galaxy_data_h5.zip")
    image = write_fits(tmp_path / "image.dat")

    assert recognise_input(tmp_path / "batches.bin").kind is InputKind.MIRABEST
    assert recognise_input(tmp_path / "first.bin").kind is InputKind.FRDEEP
    assert recognise_input(tmp_path / "galaxies.bin").kind is InputKind.GRIESE
    assert recognise_input(image).kind is InputKind.FITS


def test_dataset_forces_the_kind_and_an_impossible_one_is_refused(tmp_path, write_fits) -> None:
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="not a recognised input"):
        recognise_input(odd)
    assert recognise_input(odd, InputKind.FITS).files == (odd,)
    with pytest.raises(InputError, match="mirabest is read from its archive file, not a folder"):
        recognise_input(tmp_path, InputKind.MIRABEST)
    with pytest.raises(InputError, match="unknown dataset 'cifar'"):
        plan_ingest([str(odd)], kind="cifar")


def test_a_png_folder_needs_one_catalogue(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("name,ra,dec\n")
    (tmp_path / "b.csv").write_text("name,ra,dec\n")
    with pytest.raises(InputError, match="exactly one catalogue CSV"):
        recognise_input(tmp_path)
    assert recognise_input(tmp_path / "a.csv").catalogue == tmp_path / "a.csv"


@pytest.mark.parametrize(
    ("ra_deg", "dec_deg", "name"),
    [
        (10.8036, -10.6656, "FIRST J004312.8-103956"),
        (359.99999, -0.00001, "FIRST J235959.9-000000"),  # truncated: never J240000.0, keeps the sign
        (0.0, 90.0, "FIRST J000000.0+900000"),
        (187.7059308, 12.3911233, "FIRST J123049.4+122328"),  # M87 (NED: 12h30m49.42s +12d23m28.0s)
    ],
)
def test_names_follow_the_iau_rule_of_truncated_coordinates(ra_deg, dec_deg, name) -> None:
    assert position_name(ra_deg, dec_deg) == name
