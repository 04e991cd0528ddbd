"""The Celery application: queues, routes and the beat schedule.

Configuration comes from the Django settings (``CELERY_*``), so the web process, which only
sends messages, and the workers agree on the broker without a second source of truth.
"""

from __future__ import annotations

import os
import warnings

# Worker logs are files: a progress bar there is a wall of carriage returns. Jobs report
# progress through their Job row instead. Set before anything imports tqdm (it reads the
# environment once, at import).
os.environ.setdefault("TQDM_DISABLE", "1")

import django  # noqa: E402
from celery import Celery  # noqa: E402
from celery.exceptions import SecurityWarning  # noqa: E402
from celery.signals import worker_shutting_down
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
django.setup()

if os.environ.get("RGZ_WORKER_AS_ROOT_OK") == "1":
    # bin/start on one machine (often a root shell in a container) sets this: the JSON-only
    # serializer config leaves nothing for Celery's "running as root" warning to protect.
    warnings.filterwarnings("ignore", category=SecurityWarning)

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
