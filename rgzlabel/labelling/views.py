"""Volunteer pages and the small JSON API the labelling page uses: parse, authorise, call, render."""

from __future__ import annotations

from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from rgzlabel.labelling import services, throttle
from rgzlabel.labelling.forms import SignupForm, ThrottledAuthenticationForm
from rgzlabel.labelling.models import Flag, VolunteerProfile


def _source_json(served: services.Served) -> dict[str, Any]:
    source = served.subject.source
    return {
        "id": source.pk,
        "name": source.name,
        "ra_deg": source.ra_deg,
        "dec_deg": source.dec_deg,
        "angular_size_arcsec": source.angular_size_arcsec,
        "thumbnail": reverse("catalog:thumbnail", args=[source.pk]),
    }


def api_login_required(view):
    """Like login_required, but answers JSON 401 instead of redirecting a fetch() to a page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"error": "log in or start as a guest to label"}, status=401)
        return view(request, *args, **kwargs)

    return wrapper


def volunteer_of(request: HttpRequest) -> User:
    """The signed-in volunteer of a view behind ``login_required`` / ``api_login_required``."""
    return cast(User, request.user)


def _source_id(request: HttpRequest) -> int | None:
    try:
        return int(request.POST.get("source", ""))
    except ValueError:
        return None


# --- accounts ----------------------------------------------------------------------------------------
class LoginView(auth_views.LoginView):
    """Django's log-in page with failed attempts limited per account and per client (429 when refused)."""

    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, "throttled"):
            response.status_code = 429
        return response


_TOO_MANY_ACCOUNTS = "Too many new accounts from your network."


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Sign up; a guest who signs up keeps the votes they already cast."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        guest = request.user if request.user.is_authenticated and _is_guest(request.user) else None
        if guest is not None:
            data = form.cleaned_data
            user = services.promote_guest(guest, data["username"], data["password1"], data.get("email", ""))
        else:
            try:
                throttle.consume(throttle.accounts_per_client(), throttle.client_address(request), _TOO_MANY_ACCOUNTS)
            except throttle.Throttled as exc:
                form.add_error(None, str(exc))
                return render(request, "registration/signup.html", {"form": form}, status=429)
            user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome aboard! Your votes are saved to your account.")
        return redirect("labelling:label")
    return render(request, "registration/signup.html", {"form": form})


def _is_guest(user) -> bool:
    return VolunteerProfile.objects.filter(user=user, is_guest=True).exists()


@require_POST
def start_as_guest(request: HttpRequest) -> HttpResponse:
    if not settings.RGZ_ALLOW_GUESTS:
        messages.error(request, "Please sign up or log in to label.")
        return redirect("signup")
    if not request.user.is_authenticated:
        try:
            throttle.consume(throttle.accounts_per_client(), throttle.client_address(request), _TOO_MANY_ACCOUNTS)
        except throttle.Throttled as exc:
            messages.error(request, f"{exc} Log in if you have an account.")
            return render(
                request,
                "labelling/start.html",
                {"workflow": services.default_workflow(), "allow_guests": settings.RGZ_ALLOW_GUESTS},
                status=429,
            )
        login(request, services.create_guest(), backend="django.contrib.auth.backends.ModelBackend")
    return redirect("labelling:label")


# --- the labelling page ---------------------------------------------------------------------------------
def label(request: HttpRequest) -> HttpResponse:
    workflow = services.default_workflow()
    if not request.user.is_authenticated:
        return render(
            request, "labelling/start.html", {"workflow": workflow, "allow_guests": settings.RGZ_ALLOW_GUESTS}
        )
    served = services.next_subject(request.user, workflow)
    profile = services.profile_of(request.user)
    return render(
        request,
        "labelling/label.html",
        {
            "workflow": workflow,
            "served": served,
            "source": served.subject.source if served else None,
            "source_data": _source_json(served) if served else None,
            "first_visit": profile.tutorial_seen_at is None,
            "is_guest": profile.is_guest,
            "field_guide": services.field_guide(workflow),
            "votes_cast": request.user.classifications.count(),
            "note_max_length": Flag.NOTE_MAX_LENGTH,
        },
    )


@login_required
@require_POST
def vote(request: HttpRequest) -> HttpResponse:
    """The no-JavaScript path: a form post, then back to the page."""
    workflow = services.default_workflow()
    source_id = _source_id(request)
    if source_id is None:
        messages.error(request, "The vote named no source.")
        return redirect("labelling:label")
    try:
        outcome = services.record_classification(
            volunteer_of(request), source_id, request.POST.get("label", ""), workflow
        )
    except services.VoteRejected as exc:
        messages.error(request, str(exc))
    else:
        if outcome.gold:
            messages.info(request, services.gold_message(outcome.gold))
    return redirect("labelling:label")


#: The most source ids a request may name in ``exclude`` (what the page already holds) or release.
MAX_HELD_IDS = 20


def _ids(values: list[str]) -> list[int]:
    return [int(x) for x in values if x.isdigit()][:MAX_HELD_IDS]


def _next_json(request: HttpRequest, workflow=None, profile=None) -> dict[str, Any] | None:
    """The next subject for the requesting volunteer, as ``api/next`` answers it (``exclude``: ids
    the page already holds, from the query string or the posted form)."""
    exclude = _ids(request.POST.getlist("exclude") if request.method == "POST" else request.GET.getlist("exclude"))
    served = services.next_subject(
        volunteer_of(request), workflow or services.default_workflow(), exclude=exclude, profile=profile
    )
    return _source_json(served) if served is not None else None


@require_GET
@api_login_required
def api_next(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"source": _next_json(request)})


@require_POST
@api_login_required
def api_vote(request: HttpRequest) -> JsonResponse:
    """Record a vote and answer with the next subject (``next``), so a classification is one round trip."""
    source_id = _source_id(request)
    if source_id is None:
        return JsonResponse({"error": "the vote named no source"}, status=400)
    try:
        outcome = services.record_classification(
            volunteer_of(request), source_id, request.POST.get("label", ""), services.DEFAULT_WORKFLOW_SLUG
        )
    except services.RateLimited as exc:
        return JsonResponse({"error": str(exc)}, status=429)
    except services.VoteRejected as exc:
        # The page moves on from a source it cannot vote on (e.g. retired meanwhile): give it the next.
        return JsonResponse({"error": str(exc), "next": _next_json(request)}, status=400)
    return JsonResponse(
        {
            "ok": True,
            "created": outcome.created,
            "retired": outcome.retired,
            "gold": outcome.gold,
            "gold_message": services.gold_message(outcome.gold) if outcome.gold else None,
            # The feedback is about this source, not the next one: the page shows its image beside it.
            "gold_source": _gold_source_json(outcome.classification) if outcome.gold else None,
            "next": _next_json(request, outcome.workflow, outcome.profile),
        }
    )


def _gold_source_json(classification) -> dict[str, Any]:
    return {
        "id": classification.source_id,
        "name": classification.source.name,
        "thumbnail": reverse("catalog:thumbnail", args=[classification.source_id]),
    }


@require_POST
@api_login_required
def api_flag(request: HttpRequest) -> JsonResponse:
    """Flag a source as interesting with a short note (again: edit the note)."""
    source_id = _source_id(request)
    if source_id is None:
        return JsonResponse({"error": "source: the flag named no source"}, status=400)
    try:
        flag, created = services.flag_source(volunteer_of(request), source_id, request.POST.get("note", ""))
    except services.FlagRejected as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"ok": True, "created": created, "source": flag.source_id, "note": flag.note})


@login_required
@require_POST
def flag(request: HttpRequest) -> HttpResponse:
    """The no-JavaScript path of flagging: a form post, then back to the page."""
    source_id = _source_id(request)
    try:
        if source_id is None:
            raise services.FlagRejected("source: the flag named no source")
        services.flag_source(volunteer_of(request), source_id, request.POST.get("note", ""))
    except services.FlagRejected as exc:
        messages.error(request, f"Not flagged: {exc}")
    else:
        messages.success(request, "Flagged for the scientists. Thank you!")
    return redirect("labelling:me" if request.POST.get("next") == "me" else "labelling:label")


@login_required
@require_POST
def unflag(request: HttpRequest) -> HttpResponse:
    source_id = _source_id(request)
    if source_id is not None and services.remove_flag(volunteer_of(request), source_id):
        messages.success(request, "Flag removed.")
    return redirect("labelling:me")


@login_required
@require_http_methods(["GET"])
def guest_logout(request: HttpRequest) -> HttpResponse:
    """Before a guest logs out: their votes stay with the guest account, which they cannot reopen."""
    volunteer = volunteer_of(request)
    if not services.profile_of(volunteer).is_guest:
        return redirect("labelling:me")
    return render(request, "labelling/guest_logout.html", {"votes_cast": volunteer.classifications.count()})


@require_POST
@api_login_required
def api_undo(request: HttpRequest) -> JsonResponse:
    served = services.undo_last_vote(volunteer_of(request), services.default_workflow())
    if served is None:
        return JsonResponse({"undone": None, "error": "nothing recent to undo"}, status=409)
    return JsonResponse({"undone": served.subject.source_id, "source": _source_json(served)})


@require_POST
@api_login_required
def api_skip(request: HttpRequest) -> JsonResponse:
    """Give back the shown subject and answer with the next one (``next``, as after a vote)."""
    source_id = _source_id(request)
    if source_id is None:
        return JsonResponse({"error": "the skip named no source"}, status=400)
    workflow = services.default_workflow()
    services.release(volunteer_of(request), source_id, workflow)
    return JsonResponse({"ok": True, "next": _next_json(request, workflow)})


@require_POST
@api_login_required
def api_release(request: HttpRequest) -> JsonResponse:
    """Give back subjects the page held but will not show (its prefetched queue, when the volunteer
    leaves the page or undoes a vote), so their vote slots free at once, not at the hold's timeout."""
    source_ids = _ids(request.POST.getlist("source"))
    if not source_ids:
        return JsonResponse({"error": "source: the release named no source"}, status=400)
    leaving = request.POST.get("leaving") == "1"  # sent as the page closes or reloads
    released = services.release_many(volunteer_of(request), source_ids, services.default_workflow(), leaving=leaving)
    return JsonResponse({"ok": True, "released": released})


@require_POST
@api_login_required
def api_tutorial_seen(request: HttpRequest) -> JsonResponse:
    VolunteerProfile.objects.filter(user=volunteer_of(request), tutorial_seen_at__isnull=True).update(
        tutorial_seen_at=timezone.now()
    )
    return JsonResponse({"ok": True})


@login_required
@require_GET
def me(request: HttpRequest) -> HttpResponse:
    workflow = services.default_workflow()
    return render(
        request,
        "labelling/me.html",
        {
            "summary": services.volunteer_summary(volunteer_of(request), workflow),
            "workflow": workflow,
            "flags": services.flags_of(volunteer_of(request)),
        },
    )
