from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from rgzlabel.catalog.models import Cutout


@require_GET
def thumbnail(request: HttpRequest, source_id: int) -> HttpResponse:
    """The PNG thumbnail; cached by the browser and revalidated by the cutout's checksum."""
    cutout = get_object_or_404(Cutout.objects.only("checksum", "thumbnail_png"), source_id=source_id)
    etag = f'"{cutout.checksum}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponseNotModified()
    response = HttpResponse(bytes(cutout.thumbnail_png), content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=86400"
    return response
