"""REST API permissions built on the roles of :mod:`rgzlabel.science.roles`."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from rgzlabel.science.roles import is_scientist


class IsScientist(BasePermission):
    """Scientists (the ``scientists`` group) and staff."""

    message = "This is for scientists: ask an admin to add you to the scientists group."

    def has_permission(self, request, view) -> bool:
        return is_scientist(request.user)
