"""Pages for the public home and for scientists: dashboard, embedding map, source pages."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET, require_http_methods

from rgzlabel.catalog.models import Source
from rgzlabel.catalog.uploads import oversized_upload_error
from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job
from rgzlabel.science import services


def scientist_required(view):
    """Scientists (the `scientists` group) and staff only; others are sent to log in or refused.

    A refusal is an answer, not an error: rendered here rather than raised as
    PermissionDenied, which Django would log with a traceback.
    """
    from rgzlabel.science.roles import SCIENTISTS_GROUP, is_scientist

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_scientist(request.user):
            context = {"role": "scientist", "group": SCIENTISTS_GROUP, "path": request.path}
            return render(request, "403.html", context, status=403)
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every page; answer with the static icon."""
    from django.conf import settings

    response = HttpResponse((settings.BASE_DIR / "static" / "favicon.ico").read_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The campaign at a glance, including the progress of background training."""
    context = {
        "n_sources": Source.objects.count(),
        "n_retired": Subject.objects.filter(retired_at__isnull=False)
        .exclude(retire_reason__in=["gold", "field guide"])
        .count(),
        "n_votes": Classification.objects.count(),
        "n_volunteers": get_user_model().objects.filter(classifications__isnull=False).distinct().count(),
        "embedding_set": EmbeddingSet.objects.filter(is_active=True).select_related("encoder").first(),
        "encoder": EncoderVersion.objects.first(),
        "active_jobs": Job.objects.filter(state__in=Job.ACTIVE_STATES).order_by("created_at"),
        "recent_jobs": Job.objects.exclude(state__in=Job.ACTIVE_STATES)[:5],
    }
    return render(request, "science/home.html", context)


@scientist_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "science/dashboard.html", services.campaign_summary())


@scientist_required
@require_GET
def plot(request: HttpRequest, name: str) -> HttpResponse:
    if name == "accuracy":
        png = services.accuracy_plot(services.simulated_random_curve())
    elif name == "campaign":
        png = services.campaign_plot(services.default_workflow())
    elif name == "loss":
        running = Job.objects.filter(kind=Job.Kind.PRETRAIN, state=Job.State.RUNNING).order_by("-started_at").first()
        png = services.loss_plot(EncoderVersion.objects.first(), running)
    else:
        return HttpResponse(status=404)
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response


@scientist_required
@require_GET
def embedding_map(request: HttpRequest) -> HttpResponse:
    # Colouring by size is offered only when some source has one (sizes come from ingest).
    has_sizes = Source.objects.filter(angular_size_arcsec__gt=0).exists()
    return render(request, "science/map.html", {"pretraining": services.pretraining_status(), "has_sizes": has_sizes})


@scientist_required
@require_GET
@gzip_page  # the columns of 100k points: 4.8 MB of JSON, 1.3 MB compressed
def embedding_map_data(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(services.embedding_map(request.GET.get("colour", "consensus")))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)


@scientist_required
@require_GET
def source_page(request: HttpRequest, source_id: int) -> HttpResponse:
    return render(request, "science/source.html", services.source_report(get_object_or_404(Source, pk=source_id)))


@scientist_required
@require_GET
def flagged_sources(request: HttpRequest) -> HttpResponse:
    """Sources volunteers flagged as interesting, newest note first."""
    return render(request, "science/flags.html", {"flagged": services.flagged_sources()})


@scientist_required
@require_http_methods(["GET", "POST"])
def search(request: HttpRequest) -> HttpResponse:
    """ "More like this" from an uploaded FITS cutout."""
    import tempfile
    from pathlib import Path

    context: dict = {"pretraining": services.pretraining_status()}
    status = 200
    upload = request.FILES.get("fits")
    if request.method == "POST":
        too_large = oversized_upload_error(request)
        if too_large:
            context["error"], status = too_large, 413
        elif upload is None:
            context["error"], status = "Choose a FITS file to search with.", 400
        else:
            suffix = "".join(Path(upload.name or "").suffixes[-2:]) or ".fits"
            with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
                for chunk in upload.chunks():
                    handle.write(chunk)
                handle.flush()
                try:
                    context["results"] = services.similar_to_fits(Path(handle.name))
                except services.SearchError as exc:  # the campaign cannot search yet: not the file's fault
                    context["error"] = f"{upload.name}: {exc}"
                except ValueError as exc:  # FitsReadError, PreprocessError: the file is refused
                    # FitsReadError's own text names the temporary file; the reason alone, with the upload's name.
                    context["error"], status = f"{upload.name}: {getattr(exc, 'reason', exc)}", 400
            context["query_name"] = upload.name
    return render(request, "science/search.html", context, status=status)
