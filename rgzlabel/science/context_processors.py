from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from rgzlabel.science.roles import is_scientist


def roles(request: HttpRequest) -> dict[str, Callable[[], bool]]:
    """Lets templates show scientists' links and guests' notes; evaluated lazily, only by pages that ask."""

    def is_guest() -> bool:
        from rgzlabel.labelling.models import VolunteerProfile

        user = request.user
        return bool(user.is_authenticated and VolunteerProfile.objects.filter(user=user, is_guest=True).exists())

    return {"is_scientist": lambda: is_scientist(request.user), "is_guest_account": is_guest}
