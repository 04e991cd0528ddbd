"""The users list in the admin, with actions to grant or revoke the scientist role."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from rgzlabel.science.roles import SCIENTISTS_GROUP, grant_scientist_role, revoke_scientist_role

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ScientistRoleUserAdmin(UserAdmin):
    actions = ["grant_scientist", "revoke_scientist"]

    @admin.action(description=f"Grant the scientist role ('{SCIENTISTS_GROUP}' group)")
    def grant_scientist(self, request, queryset) -> None:
        changed = sum(grant_scientist_role(user) for user in queryset)
        self.message_user(request, f"{changed} user(s) made scientists; {queryset.count() - changed} already were.")

    @admin.action(description="Revoke the scientist role")
    def revoke_scientist(self, request, queryset) -> None:
        changed = sum(revoke_scientist_role(user) for user in queryset)
        self.message_user(request, f"{changed} user(s) are no longer scientists.")
