from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from rgzlabel.catalog.models import Source
from rgzlabel.labelling.models import Classification, Subject
from rgzlabel.learning.models import EmbeddingSet, EncoderVersion, Job


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The campaign at a glance, including the progress of background training."""
    context = {
        "n_sources": Source.objects.count(),
        "n_retired": Subject.objects.filter(retired_at__isnull=False).exclude(retire_reason="gold").count(),
        "n_votes": Classification.objects.count(),
        "n_volunteers": get_user_model().objects.filter(classifications__isnull=False).distinct().count(),
        "embedding_set": EmbeddingSet.objects.filter(is_active=True).select_related("encoder").first(),
        "encoder": EncoderVersion.objects.first(),
        "active_jobs": Job.objects.filter(state__in=Job.ACTIVE_STATES).order_by("created_at"),
        "recent_jobs": Job.objects.exclude(state__in=Job.ACTIVE_STATES)[:5],
    }
    return render(request, "science/home.html", context)
