"""The Celery application: queues, routes and the beat schedule.

Configuration comes from the Django settings (``CELERY_*``), so the web process, which only
sends messages, and the workers agree on the broker without a second source of truth.
"""

from __future__ import annotations

import contextlib
import os
import signal
import warnings

# Worker logs are files: a progress bar there is a wall of carriage returns. Jobs report
# progress through their Job row instead. Set before anything imports tqdm (it reads the
# environment once, at import).
os.environ.setdefault("TQDM_DISABLE", "1")

import django  # noqa: E402
from celery import Celery  # noqa: E402
from celery.exceptions import SecurityWarning  # noqa: E402
from celery.signals import celeryd_init, worker_process_init, worker_shutting_down  # noqa: E402
from django.conf import settings  # noqa: E402
from kombu import Queue  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
django.setup()

if os.environ.get("RGZ_WORKER_AS_ROOT_OK") == "1":
    # bin/start on one machine (often a root shell in a container) sets this: the JSON-only
    # serializer config leaves nothing for Celery's "running as root" warning to protect.
    warnings.filterwarnings("ignore", category=SecurityWarning)

app = Celery("rgzlabel", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("query"))
_TICK_S, _CONSENSUS_S = float(settings.RGZ_TICK_S), float(settings.RGZ_CONSENSUS_EVERY_S)
app.conf.beat_schedule = {
    "sweep-lost-jobs": {"task": "rgzlabel.sweep_lost_jobs", "schedule": _TICK_S, "options": {"queue": "default"}},
    "learning-tick": {
        "task": "rgzlabel.learning_tick",
        "schedule": _TICK_S,
        "options": {"queue": "default", "expires": _TICK_S},
    },
    "recompute-consensus": {
        "task": "rgzlabel.recompute_consensus",
        "schedule": _CONSENSUS_S,
        "options": {"queue": "default", "expires": _CONSENSUS_S},
    },
}


#: How the main worker process tells its prefork pool processes that it is shutting down.
#: Not SIGUSR1/SIGUSR2/SIGTERM: billiard points those at its own exit handler in pool
#: processes after our initialiser runs. SIGURG is ignored by default (a pool process that
#: has not installed the handler yet is unaffected) and neither Celery nor billiard uses it.
SHUTDOWN_NOTICE = signal.SIGURG


@worker_process_init.connect
def _listen_for_shutdown(**_: object) -> None:
    """In each prefork pool process: the main process's shutdown notice stops the running job."""
    signal.signal(SHUTDOWN_NOTICE, _on_shutdown_notice)


def _on_shutdown_notice(signum: int, frame: object) -> None:
    from rgzlabel.learning.jobs import WORKER_SHUTDOWN

    WORKER_SHUTDOWN.set()


@worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    """Tell the running job to stop at its next step; it is then queued again.

    With the solo pool the job runs in this process. With prefork (docker-compose's workers)
    it runs in a pool process, which an event set here never reaches, and a warm shutdown
    would wait for the job to finish (hours for a pretraining) until the container is
    killed: the pool processes are told by a signal instead.
    """
    from billiard.process import active_children

    from rgzlabel.learning.jobs import WORKER_SHUTDOWN

    WORKER_SHUTDOWN.set()
    for child in active_children():
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(child.pid, SHUTDOWN_NOTICE)


@celeryd_init.connect
def _warm_the_query_worker(options: dict | None = None, **_: object) -> None:
    """A worker on the ``query`` queue loads torch and the active encoder before its first query,
    so the first search by image after a start does not wait seconds for them."""
    queues = (options or {}).get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    if "query" not in queues:
        return
    from rgzlabel.science.query import warm_up

    warm_up()
