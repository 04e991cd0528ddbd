"""BYOL augmentations as batched tensor ops on the training device.

The paper (Slijepcevic et al. 2023) applies, per image: random rotation in [0, 360),
centre crop 70, random resized crop 70 with scale (0.8, 1), horizontal and vertical
flips, brightness/contrast jitter (0.4, p=0.8), Gaussian blur (p=0.1, sigma 0.1-2) and
normalisation. Here rotation, centre crop, resized crop and flips are composed into one
affine map per sample and resampled once with ``grid_sample`` (one interpolation instead
of three), and every sample of the batch draws its own parameters. Images stay uint8 in
memory (150x150 is 22.5 kB; 100k images are 2.25 GB) and become floats only per batch.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from ml.config import AugmentConfig, ViewConfig
from ml.errors import DataError, EmptyDataError

ImageArray = np.ndarray | torch.Tensor

#: How a frozen encoder looks at an image: the paper's one centre view, or the mean over the
#: eight rotations by multiples of 90 degrees, each with and without a flip. Radio sources
#: have no preferred orientation, so averaging over them removes what BYOL's rotation
#: augmentation could not fully teach the encoder to ignore (docs/benchmarks.md measures it).
TestViews = Literal["centre", "dihedral"]
TEST_VIEWS: tuple[str, ...] = get_args(TestViews)


def view_poses(views: str) -> list[tuple[float, bool]]:
    """The (rotation in radians, horizontal flip) of each view of a ``TestViews`` name.

    Raises:
        ValueError: An unknown name.
    """
    if views == "centre":
        return [(0.0, False)]
    if views == "dihedral":
        return [(k * math.pi / 2, flip) for flip in (False, True) for k in range(4)]
    raise ValueError(f"unknown test views {views!r}; choose from {', '.join(TEST_VIEWS)}")


def as_image_tensor(images: ImageArray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Check a uint8 image stack and return it as a (N, 1, H, W) uint8 tensor on ``device``.

    On the CPU a contiguous numpy array (or memory map) is shared, not copied.

    Raises:
        EmptyDataError: No images.
        DataError: Not uint8, not (N, H, W) or (N, 1, H, W), or not square.
    """
    if isinstance(images, np.ndarray):
        with warnings.catch_warnings():
            # Read-only memory maps are fine: augmentations never write in place.
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.as_tensor(images)
    else:
        tensor = images
    if tensor.dtype != torch.uint8:
        raise DataError(f"images must be uint8 (0..255 preprocessed cutouts), got {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise DataError(f"images must be (N, H, W) or (N, 1, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[2] != tensor.shape[3]:
        raise DataError(f"images must be square, got {tuple(tensor.shape[2:])}")
    if tensor.shape[0] == 0:
        raise EmptyDataError("no images")
    return tensor.to(device)


def random_views(
    images: torch.Tensor,
    view: ViewConfig,
    augment: AugmentConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one random view of every image, each with its own random parameters.

    Args:
        images: uint8 batch (N, 1, H, W) from ``as_image_tensor``, on the training device.
        view: Field of view, output size and normalisation.
        augment: Random parameters.
        generator: RNG on the same device as ``images``; a fixed seed gives fixed views.

    Returns:
        Normalised float32 views (N, 1, view.input_size, view.input_size).
    """
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    def sign(p: float) -> torch.Tensor:
        return torch.where(uniform(0, 1) < p, -1.0, 1.0)

    angle = uniform(0.0, 2 * math.pi) if augment.rotate else torch.zeros(n, device=device)
    area = uniform(*augment.crop_scale)
    ratio = torch.exp(uniform(math.log(augment.crop_ratio[0]), math.log(augment.crop_ratio[1])))
    # Half-extents as fractions of the field; clamping replaces torchvision's rejection
    # sampling for the rare crops wider than the field.
    half_w = torch.sqrt(area * ratio).clamp(max=1.0)
    half_h = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = uniform(-1, 1) * (1 - half_w)
    centre_y = uniform(-1, 1) * (1 - half_h)
    theta = _affine(
        images.shape[-1],
        view.crop_size,
        angle,
        half_w * sign(augment.hflip_p),
        half_h * sign(augment.vflip_p),
        centre_x,
        centre_y,
    )
    views = _resample(images, theta, view.input_size)

    jitter = uniform(0, 1) < augment.jitter_p
    one = torch.ones(n, device=device)
    brightness = torch.where(jitter, uniform(1 - augment.brightness, 1 + augment.brightness), one)
    contrast = torch.where(jitter, uniform(1 - augment.contrast, 1 + augment.contrast), one)
    views = (views * brightness.view(n, 1, 1, 1)).clamp(0, 1)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = ((views - mean) * contrast.view(n, 1, 1, 1) + mean).clamp(0, 1)

    sigma = uniform(*augment.blur_sigma)
    blurred = torch.nonzero(uniform(0, 1) < augment.blur_p).flatten()
    if blurred.numel():
        views = views.index_copy(0, blurred, _gaussian_blur(views[blurred], sigma[blurred], augment.blur_sigma[1]))
    if augment.noise_p > 0:
        # Drawn only when on, so that the other presets' views stay what their seeds gave before.
        std = torch.where(uniform(0, 1) < augment.noise_p, uniform(*augment.noise_std), torch.zeros(n, device=device))
        noise = torch.randn(views.shape, generator=generator, device=device, dtype=views.dtype)
        views = (views + noise * std.view(n, 1, 1, 1)).clamp(0, 1)
    return (views - view.mean) / view.std


def eval_views(images: torch.Tensor, view: ViewConfig, angle: float = 0.0, flip: bool = False) -> torch.Tensor:
    """The paper's deterministic test view: centre crop, resize to the input size, normalise.

    With ``input_size == crop_size`` the grid lands on pixel centres, so this equals a
    plain centre crop; it shares the resampling of ``random_views`` otherwise. ``angle``
    (radians, about the image centre) and ``flip`` give the other poses of ``view_poses``;
    multiples of 90 degrees keep the grid on pixel centres too.
    """
    n, device = images.shape[0], images.device
    zeros, ones = torch.zeros(n, device=device), torch.ones(n, device=device)
    theta = _affine(images.shape[-1], view.crop_size, zeros + angle, -ones if flip else ones, ones, zeros, zeros)
    return (_resample(images, theta, view.input_size) - view.mean) / view.std


def _affine(
    image_size: int,
    crop_size: int,
    angle: torch.Tensor,
    scale_x: torch.Tensor,
    scale_y: torch.Tensor,
    shift_x: torch.Tensor,
    shift_y: torch.Tensor,
) -> torch.Tensor:
    """Per-sample ``affine_grid`` matrices: output -> crop in field -> rotate -> input coords.

    In normalised coordinates the central field of ``crop_size`` pixels spans
    ``crop_size / image_size`` of the input, and rotating about the image centre is a plain
    rotation because the image is square.
    """
    field = crop_size / image_size
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * scale_x, -sin * scale_y, cos * shift_x - sin * shift_y], dim=1),
            torch.stack([sin * scale_x, cos * scale_y, sin * shift_x + cos * shift_y], dim=1),
        ],
        dim=1,
    )
    return theta * field


def _resample(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    pixels = images.float() / 255.0
    grid = F.affine_grid(theta, [images.shape[0], 1, size, size], align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gaussian_blur(views: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Blur each view with its own sigma: a separable kernel per sample via grouped conv."""
    n, _, size, _ = views.shape
    radius = min(math.ceil(3 * max_sigma), size - 1)
    offsets = torch.arange(-radius, radius + 1, device=views.device, dtype=views.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.view(n, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    stacked = F.pad(views.view(1, n, size, size), [radius] * 4, mode="reflect")
    stacked = F.conv2d(stacked, kernel.view(n, 1, -1, 1), groups=n)
    stacked = F.conv2d(stacked, kernel.view(n, 1, 1, -1), groups=n)
    return stacked.view(n, 1, size, size)
