"""Grant or revoke the scientist role (the ``scientists`` group): ``manage.py scientist --grant alice``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rgzlabel.science.roles import SCIENTISTS_GROUP, grant_scientist_role, is_scientist, revoke_scientist_role


class Command(BaseCommand):
    help = f"Grant or revoke the scientist role (membership of the '{SCIENTISTS_GROUP}' group), or list who has it."

    def add_arguments(self, parser) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--grant", nargs="+", metavar="USERNAME", help="usernames to make scientists")
        action.add_argument("--revoke", nargs="+", metavar="USERNAME", help="usernames to take the role from")
        action.add_argument("--list", action="store_true", dest="list_members", help="list the members of the group")

    def handle(self, *args, grant=None, revoke=None, list_members=False, **options) -> None:
        users = get_user_model().objects
        if list_members:
            for username in (
                users.filter(groups__name=SCIENTISTS_GROUP).order_by("username").values_list("username", flat=True)
            ):
                self.stdout.write(username)
            return
        usernames = grant or revoke
        # Check every name before changing anything, so a typo leaves no half-done change.
        found = {u.username: u for u in users.filter(username__in=usernames)}
        missing = [name for name in usernames if name not in found]
        if missing:
            raise CommandError(f"no such user: {', '.join(missing)} (nothing was changed)")
        for name in usernames:
            user = found[name]
            if grant:
                changed = grant_scientist_role(user)
                self.stdout.write(f"{name}: {'now a scientist' if changed else 'already a scientist'}")
            else:
                changed = revoke_scientist_role(user)
                note = " (still sees the science pages as staff)" if user.is_staff and is_scientist(user) else ""
                self.stdout.write(f"{name}: {'no longer a scientist' if changed else 'was not a scientist'}{note}")
