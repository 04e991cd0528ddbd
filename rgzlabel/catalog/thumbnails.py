"""Thumbnails in each display stretch, for the labelling page's Contrast button.

The stored ``Cutout.thumbnail_png`` is rendered once at ingest with the default stretch
(asinh). The other astropy stretches are rendered on request from the cutout's pixels and
kept in Django's cache under the cutout's checksum, so a changed cutout never serves a
stale picture and a volunteer cycling through the stretches costs one render per image.
"""

from __future__ import annotations

from django.core.cache import cache

from ml.thumbnail import DEFAULT_STRETCH, STRETCHES, render_thumbnail
from rgzlabel.catalog.models import Cutout

#: How long a rendered stretch stays in the cache (the key changes with the cutout anyway).
CACHE_SECONDS = 24 * 3600


class UnknownStretch(ValueError):
    """A ``stretch`` parameter that is not one of ``STRETCHES``."""


def parse_stretch(value: str | None) -> str:
    """The stretch a request asked for (``None`` or empty: the default), or ``UnknownStretch``."""
    if value is None or value == "":
        return DEFAULT_STRETCH
    if value not in STRETCHES:
        raise UnknownStretch(f"stretch: unknown value {value!r}; use one of {', '.join(STRETCHES)}")
    return value


def thumbnail_etag(cutout: Cutout, stretch: str) -> str:
    """The HTTP ETag of ``cutout``'s thumbnail in ``stretch`` (the default keeps the bare checksum)."""
    return f'"{cutout.checksum}"' if stretch == DEFAULT_STRETCH else f'"{cutout.checksum}-{stretch}"'


def thumbnail_png(cutout: Cutout, stretch: str) -> bytes:
    """The PNG of ``cutout`` in ``stretch`` (one of ``STRETCHES``): stored, cached or rendered."""
    if stretch == DEFAULT_STRETCH:
        return bytes(cutout.thumbnail_png)
    key = f"thumbnail:{cutout.checksum}:{stretch}"
    png = cache.get(key)
    if png is None:
        png = render_thumbnail(cutout.as_array(), stretch=stretch)  # type: ignore[arg-type]
        cache.set(key, png, CACHE_SECONDS)
    return png
