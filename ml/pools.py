"""The pretraining pool: every usable image except the benchmark's test sources.

The RGZ DR1 images cannot be downloaded here, so BYOL pretrains on the union of MiraBest,
the Griese et al. 2023 FIRST set and FR-DEEP (PAPER.md). The MiraBest Confident test
sources (104) must not be in it, or the benchmark would train on its test set, and they
hide in the other sets: Griese holds 93 of them (found by position, within 3 arcsec;
only 16 of those copies correlate above 0.98 with the MiraBest image, because Griese
processed them differently), FR-DEEP has no positions and holds near-copies of 7
(found by image: 5 aligned, 2 re-centred by 1 and 4 pixels, which an aligned comparison
misses).

Steps, each counted in the report:

1. MiraBest Confident test sources leave MiraBest by name.
2. Griese sources within ``match_radius_arcsec`` of a test source are removed.
3. Every remaining image (all three sets) with a near-copy among the test images is
   removed (:func:`ml.crossmatch.near_duplicates`, over the 8 flips/rotations, aligned above
   ``image_threshold`` or re-centred by up to ``image_max_shift`` pixels above
   ``shifted_threshold``): this is the only check FR-DEEP can have, and a safety net for
   the others.
4. Blank images (a few published cutouts are all zero) are dropped.
5. Sources with a position are de-duplicated by position (714 duplicates, nearly all
   MiraBest sources that Griese also holds); the MiraBest copy, listed first, is kept.
   FR-DEEP has no positions and is not de-duplicated against the others: its images
   correlate with many look-alike compact sources, so an image threshold cannot tell a
   copy from a twin there (it can against the 104 test images, where the gap is clear).

Without step 5 the union is the "about 3,800 images" of PAPER.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.crossmatch import (
    DEFAULT_IMAGE_THRESHOLD,
    DEFAULT_RADIUS_ARCSEC,
    SHIFTED_IMAGE_THRESHOLD,
    crossmatch,
    group_by_position,
    near_duplicates,
)
from ml.datasets import SourceRecord, mirabest_confident, read_frdeep, read_griese, read_mirabest


@dataclass(frozen=True)
class PoolSource:
    """Where one pool image came from.

    Attributes:
        dataset: ``"mirabest"``, ``"griese"`` or ``"frdeep"``.
        name: the record name within its dataset.
        ra_deg: J2000 right ascension (degrees), ``None`` for FR-DEEP.
        dec_deg: J2000 declination (degrees), ``None`` for FR-DEEP.
        label: the dataset's label (unused by pretraining, kept for inspection).
        split: the dataset's own split.
    """

    dataset: str
    name: str
    ra_deg: float | None
    dec_deg: float | None
    label: str | None
    split: str | None

    @classmethod
    def of(cls, record: SourceRecord) -> PoolSource:
        """Provenance of a dataset record."""
        return cls(record.dataset, record.name, record.ra_deg, record.dec_deg, record.label, record.split)


def build_pretraining_pool(
    mirabest_path: str | Path,
    griese_path: str | Path | None,
    frdeep_path: str | Path,
    *,
    match_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    image_threshold: float = DEFAULT_IMAGE_THRESHOLD,
    image_max_shift: int = 4,
    shifted_threshold: float = SHIFTED_IMAGE_THRESHOLD,
) -> tuple[np.ndarray, list[PoolSource], dict[str, int]]:
    """Build the BYOL pretraining pool with the MiraBest Confident test set held out.

    Takes about 5 s on two cores (reading Griese and the image comparison dominate).

    Args:
        mirabest_path: ``MiraBest_F_batches.tar.gz``.
        griese_path: ``galaxy_data_h5.zip`` (or ``.h5``); ``None`` uses the copy inside
            the installed ``firstgalaxydata`` package.
        frdeep_path: ``FIRST_PNG_dataset.tar.gz``.
        match_radius_arcsec: radius for test-source removal and de-duplication.
        image_threshold: correlation above which an image is a copy of a test image.
        image_max_shift: pixels by which a copy may be re-centred (0: aligned copies only).
        shifted_threshold: correlation above which a re-centred image is a copy.

    Returns:
        ``(images, provenance, report)``: uint8 ``(N, 150, 150)`` images, one
        :class:`PoolSource` per image, and counts of what each step removed.
    """
    mirabest = list(read_mirabest(mirabest_path))
    test = [record for record in mirabest_confident(mirabest) if record.split == "test"]
    test_names = {record.name for record in test}
    griese = list(read_griese(griese_path))
    frdeep = list(read_frdeep(frdeep_path))
    report = {
        "mirabest_read": len(mirabest),
        "griese_read": len(griese),
        "frdeep_read": len(frdeep),
        "test_sources": len(test),
    }

    candidates = [record for record in mirabest if record.name not in test_names]
    report["mirabest_test_removed_by_name"] = len(mirabest) - len(candidates)

    test_ra = np.array([record.ra_deg for record in test], dtype=np.float64)
    test_dec = np.array([record.dec_deg for record in test], dtype=np.float64)
    griese_ra = np.array([record.ra_deg for record in griese], dtype=np.float64)
    griese_dec = np.array([record.dec_deg for record in griese], dtype=np.float64)
    near_test, _, _ = crossmatch(griese_ra, griese_dec, test_ra, test_dec, match_radius_arcsec)
    near_test_set = set(near_test.tolist())
    candidates += [record for index, record in enumerate(griese) if index not in near_test_set]
    report["griese_test_removed_by_position"] = len(near_test_set)
    candidates += frdeep

    candidate_images = np.stack([record.image for record in candidates])
    test_images = np.stack([record.image for record in test])
    copies, _, _ = near_duplicates(candidate_images, test_images, image_threshold)
    copy_set = set(copies.tolist())
    if image_max_shift:
        shifted, _, _ = near_duplicates(candidate_images, test_images, shifted_threshold, max_shift=image_max_shift)
        copy_set |= set(shifted.tolist())
    for dataset in ("mirabest", "griese", "frdeep"):
        report[f"{dataset}_test_removed_by_image"] = sum(candidates[index].dataset == dataset for index in copy_set)
    candidates = [record for index, record in enumerate(candidates) if index not in copy_set]
    report["union_after_test_removal"] = len(candidates)

    kept = [record for record in candidates if record.image.any()]
    report["blank_removed"] = len(candidates) - len(kept)

    kept = _dedupe_by_position(kept, match_radius_arcsec)
    report["position_duplicates_removed"] = report["union_after_test_removal"] - report["blank_removed"] - len(kept)
    report["pool_size"] = len(kept)
    images = np.stack([record.image for record in kept]) if kept else np.zeros((0, 150, 150), np.uint8)
    return images, [PoolSource.of(record) for record in kept], report


def _dedupe_by_position(records: list[SourceRecord], radius_arcsec: float) -> list[SourceRecord]:
    """Keep the first record of each positional group; records without a position all stay."""
    placed = [index for index, record in enumerate(records) if record.ra_deg is not None and record.dec_deg is not None]
    groups = group_by_position(
        np.array([records[index].ra_deg for index in placed], dtype=np.float64),
        np.array([records[index].dec_deg for index in placed], dtype=np.float64),
        radius_arcsec,
    )
    _, first_in_group = np.unique(groups, return_index=True)
    keep = {placed[position] for position in first_in_group.tolist()}
    keep |= set(range(len(records))) - set(placed)
    return [record for index, record in enumerate(records) if index in keep]
