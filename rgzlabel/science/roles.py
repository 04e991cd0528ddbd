"""Who counts as a scientist: staff, or members of the ``scientists`` group."""

from __future__ import annotations

SCIENTISTS_GROUP = "scientists"


def is_scientist(user) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.groups.filter(name=SCIENTISTS_GROUP).exists()))
