from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from rgzlabel.learning.models import Job


@staff_member_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    return render(request, "learning/jobs.html", {"jobs": Job.objects.select_related("triggered_by")[:100]})


@require_GET
def job_status(request: HttpRequest, job_id: int) -> JsonResponse:
    """Progress of one job, polled by pages; errors and tracebacks are for staff only."""
    job = get_object_or_404(Job, pk=job_id)
    data = {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "metrics": job.metrics,
    }
    if request.user.is_staff:
        data.update(error=job.error, traceback=job.traceback, result=job.result, warnings=job.warnings)
    return JsonResponse(data)
