"""Staff pages for the learning loop: trigger, watch, cancel and re-run jobs; promote classifiers."""

from __future__ import annotations

from typing import cast

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from rgzlabel.catalog.forms import IngestForm
from rgzlabel.catalog.uploads import oversized_upload_error
from rgzlabel.learning.classifiers import pin_classifier, unpin_classifier
from rgzlabel.learning.dispatch import BrokerUnavailable
from rgzlabel.learning.forms import TriggerForm
from rgzlabel.learning.ingest import start_ingest_job
from rgzlabel.learning.jobs import create_job, request_cancel, rerun_job
from rgzlabel.learning.models import ClassifierVersion, Job


def staff_of(request: HttpRequest) -> User:
    """The signed-in staff member of a view behind ``staff_member_required``."""
    return cast(User, request.user)


@staff_member_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "learning/jobs.html",
        {
            "jobs": Job.objects.select_related("triggered_by")[:100],
            "form": TriggerForm(),
            "classifiers": ClassifierVersion.objects.select_related("embedding_set")[:20],
        },
    )


@staff_member_required
@require_POST
def trigger(request: HttpRequest) -> HttpResponse:
    form = TriggerForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(map(str, errors))}")
        return redirect("learning:jobs")
    try:
        job = create_job(form.cleaned_data["kind"], form.cleaned_data["params"], user=staff_of(request))
    except BrokerUnavailable as exc:
        messages.error(request, str(exc))
        return redirect("learning:jobs")
    if getattr(job, "joined", False):
        messages.info(request, f"{job.get_kind_display()} is already {job.state} (job {job.pk}); not queued twice.")
    return redirect("learning:job", job_id=job.pk)


@staff_member_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    return render(request, "learning/job.html", {"job": get_object_or_404(Job, pk=job_id)})


@staff_member_required
@require_POST
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    if request_cancel(job):
        messages.info(request, f"Asked job {job.pk} to stop; it stops at its next step.")
    else:
        messages.error(request, f"Job {job.pk} is {job.state}: nothing to cancel.")
    return redirect("learning:job", job_id=job.pk)


@staff_member_required
@require_POST
def rerun(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        new = rerun_job(job, user=staff_of(request))
    except (ValueError, BrokerUnavailable) as exc:
        messages.error(request, str(exc))
        return redirect("learning:job", job_id=job.pk)
    return redirect("learning:job", job_id=new.pk)


@staff_member_required
@require_POST
def promote(request: HttpRequest, classifier_id: int) -> HttpResponse:
    classifier = get_object_or_404(ClassifierVersion, pk=classifier_id)
    try:
        pin_classifier(classifier)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Classifier {classifier.pk} is now active and pinned: retrains will not replace it.")
    return redirect("learning:jobs")


@staff_member_required
@require_POST
def unpin(request: HttpRequest, classifier_id: int) -> HttpResponse:
    classifier = get_object_or_404(ClassifierVersion, pk=classifier_id)
    unpin_classifier(classifier)
    messages.success(request, f"Classifier {classifier.pk} is unpinned: the next better retrain may replace it.")
    return redirect("learning:jobs")


@require_GET
def job_status(request: HttpRequest, job_id: int) -> JsonResponse:
    """Progress of one job, polled by the staff pages (messages name server paths and files)."""
    if not (request.user.is_authenticated and request.user.is_staff):
        # JSON, not a redirect to the login page: this is polled by scripts.
        return JsonResponse({"error": "staff only"}, status=403)
    job = get_object_or_404(Job, pk=job_id)
    return JsonResponse(
        {
            "id": job.pk,
            "kind": job.kind,
            "state": job.state,
            "progress": job.progress,
            "message": job.message,
            "metrics": job.metrics,
            "error": job.error,
            "traceback": job.traceback,
            "result": job.result,
            "warnings": job.warnings,
        }
    )


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
                staff_of(request),
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
            return redirect("learning:ingest")
    jobs = Job.objects.filter(kind=Job.Kind.INGEST).select_related("triggered_by")[:20]
    return render(request, "catalog/ingest.html", {"form": form, "jobs": jobs})
