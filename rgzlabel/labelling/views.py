"""Volunteer pages: parse, authorise, call one service, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from rgzlabel.labelling.services import VoteRejected, default_workflow, next_source, record_classification


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("labelling:label")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def label(request: HttpRequest) -> HttpResponse:
    workflow = default_workflow()
    source = next_source(request.user, workflow)
    return render(
        request,
        "labelling/label.html",
        {"workflow": workflow, "source": source, "votes_cast": request.user.classifications.count()},
    )


@login_required
@require_POST
def vote(request: HttpRequest) -> HttpResponse:
    workflow = default_workflow()
    try:
        source_id = int(request.POST.get("source", ""))
    except ValueError:
        messages.error(request, "The vote named no source.")
        return redirect("labelling:label")
    try:
        outcome = record_classification(request.user, source_id, request.POST.get("label", ""), workflow)
    except VoteRejected as exc:
        messages.error(request, str(exc))
    else:
        if not outcome.created:
            messages.info(request, "That vote was already recorded.")
    return redirect("labelling:label")
