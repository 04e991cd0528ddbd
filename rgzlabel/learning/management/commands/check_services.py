from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rgzlabel.learning.health import broker_problem, database_problem


class Command(BaseCommand):
    help = "Check that the database and the Celery broker configured by the environment answer."

    def handle(self, *args, **options) -> None:
        problems = [p for p in (database_problem(), broker_problem()) if p]
        if problems:
            raise CommandError("\n".join(problems))
        database = settings.DATABASES["default"]
        engine = str(database["ENGINE"]).rsplit(".", 1)[-1]
        self.stdout.write(f"database: {engine} {database['NAME']} · broker: {settings.BROKER_DESCRIPTION}")
