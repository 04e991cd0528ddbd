"""The pretraining pool holds no MiraBest Confident test source, by any route."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ml.crossmatch import SHIFTED_IMAGE_THRESHOLD, crossmatch, group_by_position, near_duplicates
from ml.datasets import SourceRecord, mirabest_confident, read_mirabest
from ml.pools import PoolSource, build_pretraining_pool


@pytest.fixture(scope="module")
def pool(shared_data: Path) -> tuple[np.ndarray, list[PoolSource], dict[str, int]]:
    return build_pretraining_pool(
        shared_data / "mirabest/MiraBest_F_batches.tar.gz",
        shared_data / "firstgalaxydata/galaxy_data_h5.zip",
        shared_data / "frdeep/FIRST_PNG_dataset.tar.gz",
    )


@pytest.fixture(scope="module")
def test_sources(shared_data: Path) -> list[SourceRecord]:
    records = read_mirabest(shared_data / "mirabest/MiraBest_F_batches.tar.gz")
    return [record for record in mirabest_confident(records) if record.split == "test"]


def test_the_report_counts_every_step(pool: tuple[np.ndarray, list[PoolSource], dict[str, int]]) -> None:
    images, provenance, report = pool
    assert report["test_sources"] == 104
    assert report["mirabest_test_removed_by_name"] == 104
    assert report["griese_test_removed_by_position"] == 93  # README: "90 of the 104"
    # 5 aligned copies, and 2 re-centred by 1 and 4 pixels (found by an outside check) that only
    # the shift-tolerant comparison finds; look-alike compact doubles elsewhere stay (0.980-0.987).
    assert report["frdeep_test_removed_by_image"] == 7
    assert report["griese_test_removed_by_image"] == report["mirabest_test_removed_by_image"] == 0
    assert report["union_after_test_removal"] == 1256 + 2158 + 600 - 104 - 93 - 7  # PAPER.md: "about 3,800"
    assert report["pool_size"] == len(images) == len(provenance)
    assert report["pool_size"] == (
        report["union_after_test_removal"] - report["blank_removed"] - report["position_duplicates_removed"]
    )
    assert images.shape[1:] == (150, 150)
    assert images.dtype == np.uint8
    assert Counter(source.dataset for source in provenance).keys() == {"mirabest", "griese", "frdeep"}


def test_no_test_source_is_in_the_pool_by_name_position_or_image(
    pool: tuple[np.ndarray, list[PoolSource], dict[str, int]], test_sources: list[SourceRecord]
) -> None:
    images, provenance, _ = pool
    assert len(test_sources) == 104
    test_names = {record.name for record in test_sources}
    assert not any(source.dataset == "mirabest" and source.name in test_names for source in provenance)

    placed = [source for source in provenance if source.ra_deg is not None]
    matches, _, _ = crossmatch(
        [source.ra_deg for source in placed],
        [source.dec_deg for source in placed],
        [record.ra_deg for record in test_sources],
        [record.dec_deg for record in test_sources],
        radius_arcsec=10,
    )
    assert len(matches) == 0

    test_images = np.stack([record.image for record in test_sources])
    assert len(near_duplicates(images, test_images)[0]) == 0
    assert len(near_duplicates(images, test_images, SHIFTED_IMAGE_THRESHOLD, max_shift=4)[0]) == 0


def test_the_pool_has_no_positional_duplicates_and_no_blank_images(
    pool: tuple[np.ndarray, list[PoolSource], dict[str, int]],
) -> None:
    images, provenance, _ = pool
    placed = [source for source in provenance if source.ra_deg is not None]
    groups = group_by_position([source.ra_deg for source in placed], [source.dec_deg for source in placed])
    assert len(np.unique(groups)) == len(placed)
    assert images.reshape(len(images), -1).any(axis=1).all()


def test_a_generated_pool_holds_no_confident_test_source(generated_data: Path) -> None:
    """The same guarantees on generated MiraBest / FR-DEEP batches and the package's Griese zip."""
    images, provenance, report = build_pretraining_pool(
        generated_data / "mirabest/MiraBest_F_batches.tar.gz",
        generated_data / "firstgalaxydata/galaxy_data_h5.zip",
        generated_data / "frdeep/FIRST_PNG_dataset.tar.gz",
    )
    records = list(read_mirabest(generated_data / "mirabest/MiraBest_F_batches.tar.gz"))
    test_names = {record.name for record in mirabest_confident(records) if record.split == "test"}

    assert report["test_sources"] == report["mirabest_test_removed_by_name"] == len(test_names) > 0
    assert not any(source.dataset == "mirabest" and source.name in test_names for source in provenance)
    assert report["pool_size"] == len(images) == len(provenance)
    assert Counter(source.dataset for source in provenance).keys() == {"mirabest", "griese", "frdeep"}
