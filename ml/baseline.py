"""Raw-pixel PCA features: the cold-start embedding and the paper's weakest baseline.

Computed in seconds on a CPU, so volunteers can start labelling (and a first classifier can
be fitted) while the BYOL encoder is still pretraining in the background.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


def centre_crop(images: np.ndarray, crop: int) -> np.ndarray:
    """Centre-crop a stack of square images (N, H, W) to (N, crop, crop)."""
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {images.shape}")
    height, width = images.shape[1:]
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the images ({height}x{width})")
    top, left = (height - crop) // 2, (width - crop) // 2
    return images[:, top : top + crop, left : left + crop]


def pixel_pca_embeddings(
    images: np.ndarray,
    *,
    dim: int = 64,
    crop: int = 70,
    seed: int = 0,
    batch_size: int = 4096,
    fit_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Project centre-cropped pixels onto their first ``dim`` principal components.

    Args:
        images: uint8 cutouts (N, H, W), the ``ml.preprocess`` convention.
        dim: number of components; reduced to N - 1 (or the pixel count) for tiny pools.
        crop: side of the centre crop, 70 as in the paper's test view.
        seed: seed of the randomised SVD, so the embedding is reproducible.
        batch_size: images converted to float at a time when projecting, which bounds memory.
        fit_rows: indices of the images the components are fitted on (all by default); the
            benchmark fits on training images only so the test images stay unseen.

    Returns:
        float32 array (N, dim') with dim' <= dim.
    """
    candidates = np.arange(len(images)) if fit_rows is None else np.asarray(fit_rows, dtype=np.int64)
    if len(candidates) < 2:
        raise ValueError(f"need at least 2 images to fit a PCA embedding, got {len(candidates)}")
    pixels = centre_crop(images, crop).reshape(len(images), -1)
    n_components = min(dim, len(candidates) - 1, pixels.shape[1])
    # Fit on at most 20k images: the leading components are stable long before that, and
    # fitting on a 100k pool would need the whole float matrix in memory at once.
    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(candidates, size=min(len(candidates), 20_000), replace=False)
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
    pca.fit(pixels[np.sort(fit_rows)].astype(np.float32) / 255.0)
    out = np.empty((len(pixels), n_components), dtype=np.float32)
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size].astype(np.float32) / 255.0
        out[start : start + batch_size] = pca.transform(chunk)
    return out
