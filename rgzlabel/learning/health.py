"""Reachability of the services a deployment is configured with, as clear one-line errors."""

from __future__ import annotations

from django.conf import settings
from django.db import connections
from django.db.utils import OperationalError as DatabaseError
from kombu.exceptions import OperationalError as BrokerError

from rgzlabel.learning.dispatch import celery_client


def database_problem() -> str | None:
    """None when the database answers, else what is wrong, naming the setting."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        setting = "DATABASE_URL" if settings.DATABASE_URL else f"the SQLite file in RGZ_DATA_DIR ({settings.DATA_DIR})"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot connect to the database given by {setting}: {first_line}"
    return None


def broker_problem(timeout_s: float = 3.0) -> str | None:
    """None when the Celery broker accepts a connection, else what is wrong."""
    try:
        with celery_client().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except (BrokerError, OSError) as exc:
        return f"cannot connect to the Celery broker, {settings.BROKER_DESCRIPTION}: {exc}"
    return None
