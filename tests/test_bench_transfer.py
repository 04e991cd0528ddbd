"""The transfer command: few-label evaluation of an encoder on a labelled set it never saw."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from bench import transfer
from ml.evaluation import per_class_subset
from tests.synthetic import morphology_image

#: Three classes told apart by their pixels (tests.synthetic.morphology_image families).
FAMILIES = {"FRI": "1", "FRII": "2", "hybrid": "3"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def flux_image(rng: np.random.Generator, label: str) -> np.ndarray:
    """A raw (Jy/beam-like) image: the class's morphology on thermal noise."""
    return (morphology_image(rng, FAMILIES[label]) * 4e-5 + rng.normal(0, 1e-4, (150, 150))).astype(np.float32)


@pytest.fixture
def fits_set(tmp_path: Path) -> Path:
    """18 FITS cutouts of 3 classes (4 train + 2 test each, by a 'subset' column) and a broken file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cutouts"
    folder.mkdir()
    rows = []
    for label in FAMILIES:
        for i in range(6):
            name = f"{label}_{i}.fits"
            fits.PrimaryHDU(flux_image(rng, label)).writeto(folder / name)
            # The test sources are the first two of each class: a stratified draw would differ.
            rows.append([name, label, "TEST" if i < 2 else "train"])
    (folder / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    rows.append(["broken.fits", "FRII", "train"])
    write_csv(folder / "labels.csv", ["filename", "morph", "subset"], rows)
    return folder


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised encoder of the tiny preset (32-pixel views), saved as a checkpoint."""
    from ml.checkpoint import save_checkpoint
    from ml.config import get_config
    from ml.encoder import build_encoder

    return save_checkpoint(tmp_path / "encoder.pt", build_encoder(get_config("tiny").encoder, seed=0))


def fits_argv(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--format",
        "fits",
        "--data",
        str(folder / "labels.csv"),
        "--file-column",
        "filename",
        "--label-column",
        "morph",
        "--split-column",
        "subset",
        "--seeds",
        "0",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_fits_catalogue_uses_its_own_split_and_skips_a_broken_file(fits_set, checkpoint, tmp_path, capsys):
    out = tmp_path / "transfer.json"
    argv = fits_argv(fits_set, out, "--checkpoint", str(checkpoint), "--methods", "pca,linear", "--budgets", "6,100")

    assert transfer.main(argv) == 0

    record = json.loads(out.read_text())
    streams = capsys.readouterr()
    # The split column's test rows, and only they, are tested; none is ever trained on.
    expected_test = {f"{label}_{i}.fits" for label in FAMILIES for i in range(2)}
    assert record["split"]["kind"] == "data"
    assert set(record["split"]["test"]) == expected_test
    assert not expected_test & set(record["split"]["train"])
    assert len(record["split"]["train"]) == 12
    # The broken file is reported with its row and left out; the others are all read.
    assert record["data"]["skipped"]["count"] == 1
    [skipped] = record["data"]["skipped"]["inputs"]
    assert skipped["name"] == "broken.fits" and skipped["row"] == 20 and "broken.fits" in skipped["reason"]
    assert "broken.fits" not in record["split"]["train"]
    assert "skipped 1 unreadable input" in streams.err
    # One row per method for the budget that fits; 100 labels is more than the 12 training sources.
    assert sorted((r["method"], r["budget"], r["seed"]) for r in record["results"]) == [("linear", 6, 0), ("pca", 6, 0)]
    assert record["skipped_budgets"] == [{"budget": 100, "reason": "100 labels: more than the 12 training sources"}]
    assert all(0 <= r["error"] <= 1 for r in record["results"])
    assert record["data"]["classes"] == ["FRI", "FRII", "hybrid"]
    for method in ("linear", "pca"):
        assert f"| {method} | " in streams.out and "(n=1)" in streams.out
        recall = record["recall"]["methods"][method]
        assert set(recall) == {"FRI", "FRII", "hybrid"}
        # Recall is per class: two test sources each, so 0, 0.5 or 1.
        assert all(cell["mean"] in (0.0, 0.5, 1.0) for cell in recall.values())
    assert "| method | FRI (2 test) | FRII (2 test) | hybrid (2 test) |" in streams.out


def test_a_missing_label_column_is_a_clear_error(fits_set, tmp_path, capsys):
    argv = fits_argv(fits_set, tmp_path / "transfer.json", "--methods", "pca", "--budgets", "6")
    argv[argv.index("morph")] = "morphology"

    assert transfer.main(argv) == 2

    error = capsys.readouterr().err
    assert "labels.csv" in error and "no label column 'morphology'" in error and "'morph'" in error
    assert not (tmp_path / "transfer.json").exists()


def test_a_bad_split_value_names_its_row(fits_set, tmp_path, capsys):
    lines = (fits_set / "labels.csv").read_text().splitlines()
    lines[3] = lines[3].replace("train", "later")
    (fits_set / "labels.csv").write_text("\n".join(lines) + "\n")

    assert transfer.main(fits_argv(fits_set, tmp_path / "out.json", "--methods", "pca")) == 2

    assert "row 4, column 'subset': split 'later' is not train or test" in capsys.readouterr().err


@pytest.fixture
def png_set(tmp_path: Path) -> Path:
    """30 PNG cutouts, 10 of each class, with a CSV of name/ra/dec/label/file and no split."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "pngs"
    folder.mkdir()
    rows = []
    for k, label in enumerate(FAMILIES):
        for i in range(10):
            name = f"src{k}{i}"
            Image.fromarray(morphology_image(rng, FAMILIES[label])).save(folder / f"{name}.png")
            rows.append([name, 150.0 + i / 10, 2.0 + k, label, f"{name}.png"])
    rows.append(["gone", 150.0, 9.0, "FRI", "gone.png"])  # no such image
    write_csv(folder / "catalogue.csv", ["name", "ra", "dec", "label", "file"], rows)
    return folder


def test_png_catalogue_without_a_split_gets_a_stratified_one(png_set, tmp_path, capsys):
    out = tmp_path / "png.json"
    argv = ["--format", "png", "--data", str(png_set), "--methods", "pca", "--budgets", "9", "--seeds", "0"]

    assert transfer.main([*argv, "--threads", "1", "--out", str(out)]) == 0

    record = json.loads(out.read_text())
    train, test = set(record["split"]["train"]), set(record["split"]["test"])
    assert record["split"]["kind"] == "stratified" and "no split of its own" in record["split"]["description"]
    assert len(test) == 6 and len(train) == 24 and not train & test  # 20 % of 30, stratified
    assert {counts["test"] for counts in record["split"]["class_counts"].values()} == {2}
    assert record["data"]["skipped"]["count"] == 1 and "gone.png" in record["data"]["skipped"]["inputs"][0]["reason"]
    assert [(r["method"], r["budget"]) for r in record["results"]] == [("pca", 9)]
    out_text = capsys.readouterr().out
    assert "| method | 9 labels |" in out_text and "| pca | " in out_text and "stratified" in out_text


def test_a_class_with_one_training_source_rules_out_larger_per_class_budgets(png_set, tmp_path, capsys):
    rows = list(csv.reader((png_set / "catalogue.csv").open()))
    # hybrid (src2*) keeps one training source; every class keeps three test sources.
    header, body = rows[0] + ["part"], [row + ["test" if row[0][-1] in "012" else "train"] for row in rows[1:]]
    for row in body:
        if row[0].startswith("src2") and row[0] != "src23" and row[-1] == "train":
            row[3] = "FRII" if row[0] == "src24" else ""  # one relabelled, the rest unlabelled
    write_csv(png_set / "catalogue.csv", header, body)
    out = tmp_path / "rare.json"
    argv = ["--format", "png", "--data", str(png_set / "catalogue.csv"), "--split-column", "part"]
    argv += ["--methods", "pca", "--budgets", "1,2", "--budget-unit", "per-class", "--seeds", "0,1"]

    assert transfer.main([*argv, "--out", str(out)]) == 0

    record = json.loads(out.read_text())
    assert record["split"]["class_counts"]["hybrid"] == {"train": 1, "test": 3}
    assert record["data"]["left_out"] == {"no label": 5}
    assert record["budgets"] == [1]
    [skip] = record["skipped_budgets"]
    assert skip["budget"] == 2 and "'hybrid' (1)" in skip["reason"]
    assert any("'hybrid' has 1 training source" in note for note in record["notes"])
    assert [(r["budget"], r["seed"]) for r in record["results"]] == [(1, 0), (1, 1)]
    streams = capsys.readouterr()
    assert "| method | 1 per class |" in streams.out and "Skipped budget: 2 labels per class" in streams.out


def test_per_class_subsets_are_balanced_and_nested():
    labels = np.array([0] * 20 + [1] * 5 + [2] * 9)

    small, large = per_class_subset(labels, 2, seed=3), per_class_subset(labels, 5, seed=3)

    assert np.bincount(labels[small]).tolist() == [2, 2, 2]
    assert np.bincount(labels[large]).tolist() == [5, 5, 5]
    assert set(small) < set(large)
    assert not np.array_equal(large, per_class_subset(labels, 5, seed=4))
    with pytest.raises(ValueError, match="smallest class"):
        per_class_subset(labels, 6, seed=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "fits", "--methods", "pca"], "needs --data"),
        (["--format", "griese", "--methods", "linear"], "use an encoder: pass --checkpoint"),
        (["--format", "frdeep", "--data", "x.tar.gz", "--label-column", "y"], "only for --format fits or png"),
        (["--format", "griese", "--methods", "pca", "--classes", "FRI"], "two or more"),
    ],
)
def test_contradictory_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        transfer.parse_args(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
