from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from rgzlabel.science.roles import is_scientist


def roles(request: HttpRequest) -> dict[str, Callable[[], bool]]:
    """Lets templates show scientists' links; evaluated lazily, only by pages that ask."""
    return {"is_scientist": lambda: is_scientist(request.user)}
