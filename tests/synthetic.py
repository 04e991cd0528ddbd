"""Data sets generated in the tests, in the published formats, so a fresh clone needs no ``../shared``.

- MiraBest: a tar.gz of CIFAR-style pickles (``batches.meta`` with the ten MiraBest codes,
  ``data_batch_N`` and ``test_batch`` with ``data`` (N x 22500 uint8), ``labels``, ``filenames``
  named ``code_RA±Dec_z_size.png``), as ``MiraBest_F_batches.tar.gz``.
- FR-DEEP: the same pickles with label names ``FRI`` / ``FRII``, as ``FIRST_PNG_dataset.tar.gz``.
- FITS: raw FIRST-like flux images (Jy/beam, two lobes on noise) with a TAN WCS, named like the
  MiraBest FITS cutouts.

:func:`write_shared_layout` lays these out like the real shared folder (``mirabest/``,
``frdeep/``, ``firstgalaxydata/`` with the zip the ``firstgalaxydata`` package ships).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from ml.datasets import MIRABEST_CODES, griese_package_archive

SIZE = 150


def lobe_image(rng: np.random.Generator, size: int = SIZE, n_lobes: int = 2) -> np.ndarray:
    """A preprocessed-looking uint8 image: Gaussian lobes on a zero background."""
    y, x = np.mgrid[:size, :size]
    image = np.zeros((size, size), dtype=np.float64)
    for _ in range(n_lobes):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        width = rng.uniform(2, 8)
        image += rng.uniform(0.3, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    return np.round(255 * image / image.max()).astype(np.uint8)


def morphology_image(rng: np.random.Generator, family: str, size: int = SIZE) -> np.ndarray:
    """A uint8 image with the family's morphology, along a random axis: ``"1"`` (FRI) brightest at
    the core, jets fading outwards; ``"2"`` (FRII) no core, bright compact lobes at the ends;
    ``"3"`` (hybrid) one side of each. Learnable from pixels, unlike :func:`lobe_image`."""
    y, x = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    angle = rng.uniform(0, np.pi)
    along, across = np.cos(angle), np.sin(angle)

    def blob(offset: float, width: float, peak: float) -> np.ndarray:
        cx, cy = centre + offset * along, centre + offset * across
        return peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))

    extent = rng.uniform(22, 34)
    image = np.zeros((size, size))
    for side in (-1, 1):
        fr_one = family == "1" or (family == "3" and side < 0)
        if fr_one:  # a jet: a chain of blobs fading with distance from the core
            for step in np.linspace(0.2, 1.0, 5):
                image += blob(side * step * extent, 3 + 3 * step, 0.7 * (1.1 - step))
        else:  # an edge-brightened lobe: a hotspot at the end of a fainter lobe
            image += blob(side * extent, 2.5, 1.0) + blob(side * 0.8 * extent, 6, 0.3)
    if family == "1":
        image += blob(0, 3, 1.0)
    return np.round(255 * image / image.max()).astype(np.uint8)


def radio_image(seed: int = 0, size: int = 300, scale_arcsec: float = 1.8) -> np.ndarray:
    """A raw flux image (Jy/beam): two Gaussian lobes on thermal noise, as FIRST shows them."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    image = rng.normal(0.0, 1.5e-4, (size, size))
    centre = (size - 1) / 2
    for dx, dy, peak in ((-10, 4, 0.02), (12, -5, 0.012)):
        # Lobe offsets and widths in arcsec, so that another pixel scale shows the same sky.
        cx, cy = centre + dx * 1.8 / scale_arcsec, centre + dy * 1.8 / scale_arcsec
        width = 3.0 * 1.8 / scale_arcsec
        image += peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
    return image.astype(np.float32)


def sky_header(ra_deg: float, dec_deg: float, shape: tuple[int, int], scale_arcsec: float = 1.8) -> fits.Header:
    """A SkyView-like header: RA---TAN/DEC--TAN centred on (ra, dec), Jy/beam."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = ra_deg, dec_deg
    # FITS pixels are 1-based: the centre of an n-pixel axis is (n + 1) / 2.
    header["CRPIX1"], header["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    header["CDELT1"], header["CDELT2"] = -scale_arcsec / 3600, scale_arcsec / 3600
    header["RADESYS"], header["EQUINOX"] = "FK5", 2000.0
    header["BUNIT"] = "JY/BEAM"
    return header


@dataclass(frozen=True)
class MiraBestEntry:
    """One generated MiraBest source: where it is, its code and its published image."""

    name: str
    code: str
    ra_deg: float
    dec_deg: float
    split: str
    image: np.ndarray

    @property
    def label_index(self) -> int:
        return MIRABEST_CODES.index(self.code)


def mirabest_entries(per_code: int = 6, seed: int = 0, *, morphology: bool = False) -> list[MiraBestEntry]:
    """``per_code`` sources for each of the ten codes, one in three in the test split, 0.5 deg apart.

    ``morphology``: images with their class's morphology (:func:`morphology_image`) instead of
    random lobes (one for FRI, two otherwise)."""
    rng = np.random.default_rng(seed)
    entries = []
    n = 0
    for code in MIRABEST_CODES:
        for i in range(per_code):
            ra, dec = 120.0 + 0.5 * (n % 40), 5.0 + 0.5 * (n // 40)
            name = f"{code}_{ra:07.3f}{dec:+08.3f}_0.{1000 + n:04d}_{50 + n:04d}.00"
            split = "test" if i % 3 == 2 else "train"
            image = morphology_image(rng, code[0]) if morphology else lobe_image(rng, n_lobes=1 + (code[0] != "1"))
            entries.append(MiraBestEntry(name, code, ra, dec, split, image))
            n += 1
    return entries


def _add(archive: tarfile.TarFile, name: str, content: object) -> None:
    payload = pickle.dumps(content)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def write_cifar_archive(
    path: Path, folder: str, label_names: tuple[str, ...], items: list[tuple[str, int, np.ndarray, str]]
) -> Path:
    """A CIFAR-style tar.gz: (filename, label index, 150x150 uint8 image, split) per item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    train = [item for item in items if item[3] == "train"]
    test = [item for item in items if item[3] == "test"]
    batches = {f"{folder}/data_batch_{i + 1}": train[i::2] for i in range(2)}
    batches[f"{folder}/test_batch"] = test
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, f"{folder}/batches.meta", {"label_names": list(label_names)})
        for name, members in batches.items():
            _add(
                archive,
                name,
                {
                    "batch_label": name,
                    "labels": [item[1] for item in members],
                    "data": np.stack([item[2].reshape(-1) for item in members]).astype(np.uint8),
                    "filenames": [item[0] for item in members],
                },
            )
    return path


def write_mirabest_archive(path: Path, entries: list[MiraBestEntry] | None = None) -> Path:
    """``MiraBest_F_batches.tar.gz`` in the published format."""
    entries = mirabest_entries() if entries is None else entries
    items = [(f"{e.name}.png", e.label_index, e.image, e.split) for e in entries]
    return write_cifar_archive(path, "batches", MIRABEST_CODES, items)


def write_frdeep_archive(path: Path, n_per_class: int = 8, seed: int = 1) -> Path:
    """``FIRST_PNG_dataset.tar.gz`` in the published format (names repeat between the classes)."""
    rng = np.random.default_rng(seed)
    items = [
        (f"{i}_example.png", label, lobe_image(rng, n_lobes=1 + label), "test" if i % 4 == 3 else "train")
        for label in (0, 1)
        for i in range(n_per_class)
    ]
    return write_cifar_archive(path, "FIRST_PNG_dataset", ("FRI", "FRII"), items)


def write_fits_image(path: Path, ra_deg: float, dec_deg: float, seed: int = 0) -> Path:
    """A 300x300 FIRST-like FITS cutout with a full WCS centred on (ra, dec)."""
    image = radio_image(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(image, header=sky_header(ra_deg, dec_deg, image.shape)).writeto(path, overwrite=True)
    return path


def write_mirabest_fits(folder: Path, entries: list[MiraBestEntry]) -> list[Path]:
    """FITS cutouts named like the MiraBest ones, at the positions their names say."""
    return [write_fits_image(folder / f"{e.name}.fits", e.ra_deg, e.dec_deg, seed=i) for i, e in enumerate(entries)]


def write_shared_layout(root: Path, n_fits: int = 5) -> Path:
    """A folder laid out like ``../shared/data`` with generated MiraBest, FR-DEEP and FITS files.

    ``firstgalaxydata/galaxy_data_h5.zip`` links to the copy inside the installed package.
    """
    entries = mirabest_entries()
    write_mirabest_archive(root / "mirabest" / "MiraBest_F_batches.tar.gz", entries)
    write_mirabest_fits(root / "mirabest" / "fits", entries[:n_fits])
    write_frdeep_archive(root / "frdeep" / "FIRST_PNG_dataset.tar.gz")
    (root / "firstgalaxydata").mkdir(parents=True, exist_ok=True)
    (root / "firstgalaxydata" / "galaxy_data_h5.zip").symlink_to(griese_package_archive())
    return root
