"""Who counts as a scientist: staff, or members of the ``scientists`` group."""

from __future__ import annotations

SCIENTISTS_GROUP = "scientists"


def is_scientist(user) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.groups.filter(name=SCIENTISTS_GROUP).exists()))


def grant_scientist_role(user) -> bool:
    """Put ``user`` in the scientists group; False when they already were in it."""
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name=SCIENTISTS_GROUP)
    if user.groups.filter(pk=group.pk).exists():
        return False
    user.groups.add(group)
    return True


def revoke_scientist_role(user) -> bool:
    """Take ``user`` out of the scientists group; False when they were not in it.

    Staff keep seeing the science pages: that comes with staff status, not the group.
    """
    from django.contrib.auth.models import Group

    group = Group.objects.filter(name=SCIENTISTS_GROUP).first()
    if group is None or not user.groups.filter(pk=group.pk).exists():
        return False
    user.groups.remove(group)
    return True
