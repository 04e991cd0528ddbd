from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from rgzlabel.catalog.models import Cutout
from rgzlabel.catalog.thumbnails import UnknownStretch, parse_stretch, thumbnail_etag, thumbnail_png


@require_GET
def thumbnail(request: HttpRequest, source_id: int) -> HttpResponse:
    """The PNG thumbnail, in the astropy stretch ``?stretch=asinh|sqrt|log|linear`` (default asinh).

    Cached by the browser and revalidated by the cutout's checksum; an unknown stretch is a 400.
    """
    try:
        stretch = parse_stretch(request.GET.get("stretch"))
    except UnknownStretch as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    cutout = get_object_or_404(Cutout.objects.only("checksum", "size", "thumbnail_png"), source_id=source_id)
    etag = thumbnail_etag(cutout, stretch)
    if request.headers.get("If-None-Match") == etag:
        return HttpResponseNotModified()
    response = HttpResponse(thumbnail_png(cutout, stretch), content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=86400"
    return response
