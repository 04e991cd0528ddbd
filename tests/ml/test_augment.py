import numpy as np
import pytest
import torch

from ml.augment import as_image_tensor, eval_views, random_views
from ml.config import PIXEL_MEAN, PIXEL_STD, AugmentConfig, ViewConfig
from ml.errors import DataError, EmptyDataError

NO_RANDOMNESS = AugmentConfig(
    rotate=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0, vflip_p=0, jitter_p=0, blur_p=0
)


def noise_images(n: int = 4, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return as_image_tensor(rng.integers(0, 256, (n, 150, 150), dtype=np.uint8))


def blob_image() -> torch.Tensor:
    """A centred, round source: rotations leave it (almost) unchanged."""
    yy, xx = np.mgrid[:150, :150] - 74.5
    return as_image_tensor((255 * np.exp(-(xx**2 + yy**2) / (2 * 12**2)))[None].astype(np.uint8))


def test_views_are_normalised_float_crops_of_the_configured_size():
    views = random_views(noise_images(), ViewConfig(input_size=64), AugmentConfig())
    assert views.shape == (4, 1, 64, 64)
    assert views.dtype == torch.float32


def test_each_sample_gets_its_own_view_of_the_same_image():
    same = noise_images(1).expand(8, -1, -1, -1)
    views = random_views(same, ViewConfig(), AugmentConfig(), torch.Generator().manual_seed(0))
    distinct = {tuple(v.flatten()[:50].tolist()) for v in views}
    assert len(distinct) == 8


def test_a_seeded_generator_makes_views_reproducible():
    images = noise_images()
    first = random_views(images, ViewConfig(), AugmentConfig(), torch.Generator().manual_seed(7))
    again = random_views(images, ViewConfig(), AugmentConfig(), torch.Generator().manual_seed(7))
    other = random_views(images, ViewConfig(), AugmentConfig(), torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_the_test_view_is_the_normalised_centre_crop():
    images = noise_images()
    expected = (images[:, :, 40:110, 40:110].float() / 255 - PIXEL_MEAN) / PIXEL_STD
    assert torch.allclose(eval_views(images, ViewConfig()), expected, atol=1e-3)


def test_without_randomness_a_training_view_equals_the_test_view():
    images = noise_images()
    assert torch.allclose(
        random_views(images, ViewConfig(), NO_RANDOMNESS), eval_views(images, ViewConfig()), atol=1e-4
    )


def test_flips_mirror_the_view():
    images = noise_images()
    both = AugmentConfig(**{**NO_RANDOMNESS.__dict__, "hflip_p": 1.0, "vflip_p": 1.0})
    flipped = random_views(images, ViewConfig(), both)
    assert torch.allclose(flipped, eval_views(images, ViewConfig()).flip(-1, -2), atol=1e-4)


def test_rotation_turns_the_image_about_its_centre():
    rotate_only = AugmentConfig(**{**NO_RANDOMNESS.__dict__, "rotate": True})
    blob_views = random_views(blob_image().expand(6, -1, -1, -1), ViewConfig(), rotate_only)
    reference = eval_views(blob_image(), ViewConfig())
    # A round source looks the same at any angle (up to interpolation) ...
    assert (blob_views - reference).abs().max() < 0.05 * reference.abs().max()
    # ... while an irregular one does not.
    noise_views = random_views(noise_images(1).expand(6, -1, -1, -1), ViewConfig(), rotate_only)
    assert (noise_views[0] - noise_views[1]).abs().mean() > 1.0


def test_blur_lowers_the_peak_and_keeps_the_flux():
    blur_only = AugmentConfig(**{**NO_RANDOMNESS.__dict__, "blur_p": 1.0, "blur_sigma": (2.0, 2.0)})
    sharp = as_image_tensor(np.zeros((1, 150, 150), dtype=np.uint8))
    sharp[0, 0, 75, 75] = 255
    blurred = random_views(sharp, ViewConfig(), blur_only) * PIXEL_STD + PIXEL_MEAN
    plain = eval_views(sharp, ViewConfig()) * PIXEL_STD + PIXEL_MEAN
    assert blurred.max() < 0.2 * plain.max()
    assert blurred.sum().item() == pytest.approx(plain.sum().item(), rel=1e-3)


def test_noise_has_the_drawn_rms_on_the_background_and_is_off_by_default():
    # A blank field with a bright source in a corner: the background is 0, as in a clipped radio image.
    image = np.zeros((1, 150, 150), dtype=np.uint8)
    image[0, 40:50, 40:50] = 200
    images = as_image_tensor(image).expand(64, -1, -1, -1)
    noisy_config = AugmentConfig(**{**NO_RANDOMNESS.__dict__, "noise_p": 1.0, "noise_std": (0.04, 0.04)})
    noisy = random_views(images, ViewConfig(), noisy_config, torch.Generator().manual_seed(0)) * PIXEL_STD + PIXEL_MEAN
    clean = eval_views(images, ViewConfig()) * PIXEL_STD + PIXEL_MEAN
    background = noisy[:, :, 30:, 30:]  # away from the source (the view is the central 70 pixels)
    # Clipped at 0 as the image is: half the draws vanish, the rest are the positive half of N(0, 0.04).
    assert (background == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert background.pow(2).mean().sqrt().item() == pytest.approx(0.04 / 2**0.5, rel=0.05)
    assert noisy.mean(dim=0).sub(clean[0]).abs()[:, 30:, 30:].max() < 0.05
    # With probability 0 the noise level does nothing.
    off = AugmentConfig(**{**noisy_config.__dict__, "noise_p": 0.0})
    quiet = random_views(images, ViewConfig(), off, torch.Generator().manual_seed(0)) * PIXEL_STD + PIXEL_MEAN
    assert torch.allclose(quiet, clean, atol=1e-4)


def test_images_must_be_uint8_square_stacks():
    with pytest.raises(DataError, match="uint8"):
        as_image_tensor(np.zeros((2, 150, 150), dtype=np.float32))
    with pytest.raises(DataError, match="square"):
        as_image_tensor(np.zeros((2, 150, 100), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        as_image_tensor(np.zeros((150, 150), dtype=np.uint8))
    with pytest.raises(EmptyDataError):
        as_image_tensor(np.zeros((0, 150, 150), dtype=np.uint8))


def test_numpy_images_are_shared_not_copied_on_the_cpu():
    images = np.zeros((2, 150, 150), dtype=np.uint8)
    tensor = as_image_tensor(images)
    images[0, 0, 0] = 9
    assert tensor[0, 0, 0, 0] == 9
