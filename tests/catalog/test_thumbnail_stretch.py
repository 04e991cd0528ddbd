"""The thumbnail endpoint's ``?stretch=``: astropy stretches rendered on the server, cached, validated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse
from PIL import Image

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    # The factory's checksums repeat from test to test; real ones are sha256 of the pixels.
    cache.clear()
    yield
    cache.clear()


def pixels_of(response) -> np.ndarray:
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture)


def test_each_stretch_gives_different_pixels_and_asinh_is_the_default(client, make_source) -> None:
    url = reverse("catalog:thumbnail", args=[make_source().pk])
    default = pixels_of(client.get(url))
    stretched = {name: pixels_of(client.get(url, {"stretch": name})) for name in ("asinh", "sqrt", "log", "linear")}
    assert np.array_equal(stretched["asinh"], default)
    names = sorted(stretched)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(stretched[a], stretched[b]), f"{a} and {b} render the same pixels"
    # Faint emission: log brightest, linear darkest; the background stays black in all.
    faint = default > 0
    means = {name: float(p[faint].mean()) for name, p in stretched.items()}
    assert min(means, key=means.get) == "linear" and max(means, key=means.get) == "log", means
    assert all(int(p[0, 0]) == 0 for p in stretched.values())


@pytest.mark.parametrize("value", ["histeq", "ASINH", "log;drop", "0"])
def test_an_unknown_stretch_is_a_clear_400(client, make_source, value) -> None:
    response = client.get(reverse("catalog:thumbnail", args=[make_source().pk]), {"stretch": value})
    assert response.status_code == 400
    message = response.content.decode()
    assert "stretch" in message and repr(value) in message
    assert "asinh, sqrt, log, linear" in message


def test_a_stretch_is_rendered_once_then_served_from_the_cache(client, make_source, django_assert_num_queries) -> None:
    url = reverse("catalog:thumbnail", args=[make_source().pk])
    with django_assert_num_queries(2):  # the cutout row, then its pixels to render
        first = client.get(url, {"stretch": "sqrt"})
    with django_assert_num_queries(1):  # the cutout row only: the PNG comes from the cache
        again = client.get(url, {"stretch": "sqrt"})
    assert first.content == again.content


def test_each_stretch_has_its_own_etag_and_revalidates(client, make_source) -> None:
    url = reverse("catalog:thumbnail", args=[make_source().pk])
    tags = {name: client.get(url, {"stretch": name})["ETag"] for name in ("asinh", "sqrt", "log", "linear")}
    assert len(set(tags.values())) == 4
    assert tags["asinh"] == client.get(url)["ETag"]
    assert client.get(url, {"stretch": "log"}, headers={"If-None-Match": tags["log"]}).status_code == 304
    assert client.get(url, {"stretch": "log"}, headers={"If-None-Match": tags["sqrt"]}).status_code == 200
