"""Shared fixtures: personas, factories, and a real Celery worker process.

The suite runs against whatever the environment configures: PostgreSQL and Redis when
DATABASE_URL / REDIS_URL are set (as in CI), SQLite and the file-system broker otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


#: Set (as .ci/run does) to make the real-data tests fail instead of skipping when the data is absent.
REQUIRE_SHARED_DATA = "RGZ_REQUIRE_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets (RGZ_SHARED_DATA, default ../shared/data beside the repo).

    Only the tests that check facts of the real sets (1256 MiraBest sources, the 100 SkyView
    FITS files, benchmark numbers) use this; everything else runs on :func:`generated_data`.
    Without the folder they are skipped with the reason, unless RGZ_REQUIRE_SHARED_DATA is set
    (CI sets it), and then they fail.
    """
    path = Path(os.environ.get("RGZ_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        message = (
            f"needs the real MiraBest / FR-DEEP / FITS sets, and the shared data folder {path} is missing "
            "(set RGZ_SHARED_DATA to use them; CI always runs these tests)"
        )
        if os.environ.get(REQUIRE_SHARED_DATA, "") not in ("", "0"):
            pytest.fail(f"{message}; {REQUIRE_SHARED_DATA} is set")
        pytest.skip(f"real-data test: {message}")
    return path


@pytest.fixture(scope="session")
def generated_data(tmp_path_factory) -> Path:
    """A folder laid out like the shared one, with MiraBest / FR-DEEP / FITS files generated here."""
    from tests.synthetic import write_shared_layout

    return write_shared_layout(tmp_path_factory.mktemp("generated-shared"))


# --- personas -------------------------------------------------------------------------------
@pytest.fixture
def volunteer(django_user_model):
    return django_user_model.objects.create_user("alice", password="correct horse battery")


@pytest.fixture
def other_volunteer(django_user_model):
    return django_user_model.objects.create_user("bob", password="correct horse battery")


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", password="correct horse battery")


# --- factories --------------------------------------------------------------------------------
def blob_image(rng: np.random.Generator, size: int = 150, n_blobs: int = 2) -> np.ndarray:
    """A preprocessed-looking uint8 cutout: Gaussian lobes on a zero background."""
    from tests.synthetic import lobe_image

    return lobe_image(rng, size, n_blobs)


@pytest.fixture
def workflow():
    """The default labelling workflow, retiring after a fixed 5 votes (the margin rule off unless a
    test sets it); gold mixing and random exploration off unless a test sets them, so serving follows
    the stored priorities."""
    from rgzlabel.labelling.services import default_workflow

    workflow = default_workflow()
    workflow.retire_after, workflow.retire_on_margin = 5, 0
    workflow.gold_rate_start = workflow.gold_rate_min = 0.0
    workflow.exploration_share = 0.0
    workflow.save()
    return workflow


@pytest.fixture
def make_source(workflow) -> Callable[..., object]:
    """Create a Source with a Cutout (random lobes), a thumbnail and a subject in the workflow."""
    from rgzlabel.catalog.models import Cutout, Source
    from rgzlabel.labelling.models import Subject

    rng = np.random.default_rng(1234)
    counter = iter(range(1, 10**9))

    def factory(**fields):
        from ml.thumbnail import render_thumbnail

        n = next(counter)
        fields.setdefault("name", f"TEST J{n:06d}")
        fields.setdefault("ra_deg", float(rng.uniform(0, 360)))
        fields.setdefault("dec_deg", float(rng.uniform(-10, 60)))
        source = Source.objects.create(**fields)
        pixels = blob_image(rng)
        Cutout.objects.create(
            source=source, pixels=pixels.tobytes(), thumbnail_png=render_thumbnail(pixels), checksum=f"{n:064d}"
        )
        Subject.objects.create(source=source, workflow=workflow)
        return source

    return factory


# --- a real worker ----------------------------------------------------------------------------
def _database_url(settings_dict: dict) -> str:
    """A DATABASE_URL that points a worker process at the test database."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process on every queue (jobs; search by image's queries), on the test database."""
    from django.db import connection

    from rgzlabel.learning.dispatch import celery_client

    with django_db_blocker.unblock():
        # Leftover messages from an earlier run would name jobs of another database.
        celery_client().control.purge()
    # Fault injection on: tests fail chunks of split jobs on purpose (a job's "fail_chunks_once").
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(connection.settings_dict),
        PYTHONUNBUFFERED="1",
        RGZ_ALLOW_FAULT_INJECTION="1",
    )
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "default,gpu,query", "-c", "1",
             "-P", "solo", "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h",
             "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    process.log_path = log_path  # type: ignore[attr-defined]
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for_job(job_id: int, worker: subprocess.Popen, timeout_s: float = 180.0):
    """Poll the database until a job finishes; fail with the worker's log if it does not."""
    from rgzlabel.learning.models import Job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if not job.is_active:
            return job
        if worker.poll() is not None:
            break
        time.sleep(0.25)
    log = Path(worker.log_path).read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]
    pytest.fail(f"job {job_id} did not finish in {timeout_s} s (state {job.state}); worker log:\n{log}")
