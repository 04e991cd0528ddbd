"""The Celery application: queues, routes and the beat schedule.

Configuration comes from the Django settings (``CELERY_*``), so the web process, which only
sends messages, and the workers agree on the broker without a second source of truth.
"""

from __future__ import annotations

import os

import django
from celery import Celery
from celery.signals import worker_shutting_down
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
django.setup()

app = Celery("rgzlabel", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.conf.beat_schedule = {
    "sweep-lost-jobs": {"task": "rgzlabel.sweep_lost_jobs", "schedule": 60.0, "options": {"queue": "default"}},
    "learning-tick": {
        "task": "rgzlabel.learning_tick",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 60},
    },
    "recompute-consensus": {
        "task": "rgzlabel.recompute_consensus",
        "schedule": 600.0,
        "options": {"queue": "default", "expires": 600},
    },
}


@worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    """Tell the running job (same process with the solo pool) to stop at its next step."""
    from rgzlabel.learning.jobs import WORKER_SHUTDOWN

    WORKER_SHUTDOWN.set()
