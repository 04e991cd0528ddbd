"""PNG thumbnails for the browser."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.preprocess import NotAnImageError
from ml.thumbnail import render_thumbnail


def ramp() -> np.ndarray:
    """A 150x150 cutout whose columns run through the uint8 levels."""
    return np.tile(np.linspace(0, 255, 150).astype(np.uint8), (150, 1))


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG"
        assert picture.mode == "L"
        return np.asarray(picture)


def test_it_renders_a_greyscale_png_of_the_requested_size() -> None:
    pixels = decode(render_thumbnail(ramp(), size=300))
    assert pixels.shape == (300, 300)
    assert decode(render_thumbnail(ramp(), size=150)).shape == (150, 150)


def test_stretches_keep_black_and_white_and_brighten_faint_emission() -> None:
    cutout = np.zeros((150, 150), np.uint8)
    cutout[:, 50:100] = 10  # faint lobe
    cutout[:, 100:] = 255  # core
    faint = {}
    for stretch in ("linear", "sqrt", "asinh", "log"):
        pixels = decode(render_thumbnail(cutout, size=150, stretch=stretch))
        assert pixels[75, 10] == 0
        assert pixels[75, 140] == 255
        faint[stretch] = int(pixels[75, 75])
    assert faint["linear"] == 10
    assert faint["linear"] < faint["asinh"]
    assert faint["linear"] < faint["sqrt"]
    assert faint["asinh"] < faint["log"]  # log lifts the faintest emission most


def test_invert_shows_dark_sources_on_white() -> None:
    pixels = decode(render_thumbnail(ramp(), size=150, invert=True))
    assert pixels[0, 0] == 255
    assert pixels[0, -1] == 0


@pytest.mark.parametrize(
    "cutout",
    [np.zeros((150, 150), np.float32), np.zeros((2, 150, 150), np.uint8)],
    ids=["float", "3-d"],
)
def test_it_refuses_anything_but_a_2d_uint8_cutout(cutout: np.ndarray) -> None:
    with pytest.raises(NotAnImageError):
        render_thumbnail(cutout)


def test_it_refuses_an_unknown_stretch_or_size() -> None:
    with pytest.raises(ValueError, match="stretch"):
        render_thumbnail(ramp(), stretch="histeq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        render_thumbnail(ramp(), size=0)


def test_a_faint_cutout_is_shown_at_full_brightness() -> None:
    """A cutout whose peak is 8 of 255 (normalised over a larger field) must not render black."""
    import io

    import numpy as np
    from PIL import Image

    from ml.thumbnail import render_thumbnail

    cutout = np.zeros((150, 150), dtype=np.uint8)
    cutout[70:80, 70:80] = 8
    cutout[60, 60] = 2
    picture = np.asarray(Image.open(io.BytesIO(render_thumbnail(cutout, size=150))))
    assert picture.max() == 255
    assert 0 < picture[60, 60] < 255
