from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotModified
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from rgzlabel.catalog.forms import IngestForm
from rgzlabel.catalog.models import Cutout
from rgzlabel.catalog.services import start_ingest_job
from rgzlabel.catalog.thumbnails import UnknownStretch, parse_stretch, thumbnail_etag, thumbnail_png
from rgzlabel.catalog.uploads import oversized_upload_error
from rgzlabel.learning.dispatch import BrokerUnavailable
from rgzlabel.learning.models import Job


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


@staff_member_required
@require_http_methods(["GET", "POST"])
def ingest(request: HttpRequest) -> HttpResponse:
    """Staff page: start an ingest of server paths or uploaded FITS files; recent ingest jobs."""
    form = IngestForm(request.POST, request.FILES) if request.method == "POST" else IngestForm()
    too_large = oversized_upload_error(request) if form.is_bound else None
    if too_large:
        form.add_error("files", too_large)
    if form.is_bound and form.is_valid():
        options = form.cleaned_data
        try:
            job = start_ingest_job(
                request.user,
                paths=options["paths"],
                uploads=options["files"],
                dataset=options["dataset"] or None,
                survey=options["survey"] or None,
                radius_arcsec=options["radius_arcsec"],
                allow_no_position=options["allow_no_position"],
            )
        except BrokerUnavailable as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Ingest job #{job.pk} queued.")
            return redirect("catalog:ingest")
    jobs = Job.objects.filter(kind=Job.Kind.INGEST).select_related("triggered_by")[:20]
    return render(request, "catalog/ingest.html", {"form": form, "jobs": jobs})
