"""Load benchmark of the volunteer hot path: many volunteers doing `next` + vote over HTTP.

Starts the real server (gunicorn, production settings) on loopback against a PostgreSQL
database of its own, fills it with sources, then runs closed-loop simulated volunteers
(one keep-alive connection each) for a fixed time and reports throughput and latency
percentiles per endpoint. Afterwards it checks the database: every vote the server
acknowledged as new is stored exactly once.

    .venv/bin/python -m bench.load_labelling --volunteers 32 --duration 30

Only loopback traffic; the run stops by itself after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlencode, urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["FRI", "FRII", "hybrid", "unsure"]


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"next": [], "vote": []})
    errors: dict[str, int] = field(default_factory=lambda: {"next": 0, "vote": 0})
    created_votes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def prepare_database(url: str, n_sources: int, n_volunteers: int) -> list[str]:
    """Create (or empty) the benchmark database, add sources and volunteers; return session keys."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from ml.thumbnail import render_thumbnail
    from rgzlabel.catalog.models import Cutout, Source
    from rgzlabel.labelling.services import default_workflow, sync_subjects

    call_command("migrate", verbosity=0)
    workflow = default_workflow()
    # Nothing retires during the run, so every request does the full work of a live vote.
    workflow.retire_after, workflow.retire_on_margin = n_volunteers + 1, 0
    workflow.gold_rate_start = workflow.gold_rate_min = 0.05
    workflow.save()
    rng = np.random.default_rng(0)
    pixels = (rng.random((150, 150)) * 255).astype(np.uint8)
    png = render_thumbnail(pixels)
    sources = Source.objects.bulk_create(
        Source(name=f"LOAD J{i:07d}", ra_deg=float(rng.uniform(0, 360)), dec_deg=float(rng.uniform(-10, 60)))
        for i in range(n_sources)
    )
    Cutout.objects.bulk_create(
        Cutout(source=s, pixels=pixels.tobytes(), thumbnail_png=png, checksum=f"{s.pk:064d}") for s in sources
    )
    sync_subjects(workflow)
    # A ranking exists, as in a running campaign (the queue refresh writes priorities in (0, 1]).
    from rgzlabel.labelling.models import Subject

    subjects = list(Subject.objects.filter(workflow=workflow).only("id"))
    for subject, priority in zip(subjects, rng.random(len(subjects)) + 1e-6, strict=True):
        subject.priority = float(priority)
    Subject.objects.bulk_update(subjects, ["priority"], batch_size=2000)
    User = get_user_model()
    return session_keys([User.objects.create_user(f"load{i}") for i in range(n_volunteers)])


def session_keys(users: list) -> list[str]:
    """A logged-in session per user, stored in the database; their keys (the ``sessionid`` cookies).

    The server must share this process's ``DJANGO_SECRET_KEY`` to read them.
    """
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    keys = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    return keys


def loopback_production_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's server processes: production settings on plain-HTTP
    loopback, no per-volunteer rate limit (simulated volunteers have no think time)."""
    return dict(
        os.environ,
        DATABASE_URL=url,
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SESSION_COOKIE_SECURE="false",
        DJANGO_CSRF_COOKIE_SECURE="false",
        RGZ_VOTES_PER_MINUTE="0",
        RGZ_LOG_LEVEL="WARNING",
        **extra,
    )


def start_server(
    url: str,
    port: int,
    workers: int,
    threads: int,
    *,
    app_root: Path = ROOT,
    env: dict[str, str] | None = None,
    log: TextIO | None = None,
) -> subprocess.Popen:
    """gunicorn of the checkout at ``app_root`` on loopback; returns once it answers (60 s at most).

    ``env``: the server's environment (default :func:`loopback_production_env`); ``log``: where its
    output goes (default: this process's).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "rgzlabel.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads), "--log-level", "warning"],
        cwd=app_root, env=env or loopback_production_env(url), stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )  # fmt: skip
    where = f"; see {log.name}" if log else ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}{where}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/label/api/next/")
            connection.getresponse().read()
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    process.wait()
    raise RuntimeError(f"the server did not start within 60 s{where}")


class Volunteer:
    """One simulated volunteer with its own keep-alive connection and session."""

    def __init__(self, port: int, session_key: str, tally: Tally, seed: int):
        self.port, self.tally = port, tally
        self.rng = random.Random(seed)
        self.csrf = "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(32))
        self.headers = {
            "Cookie": f"sessionid={session_key}; csrftoken={self.csrf}",
            "X-CSRFToken": self.csrf,
            "Content-Type": "application/x-www-form-urlencoded",
            "Referer": f"http://127.0.0.1:{port}/label/",
        }
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, endpoint: str, method: str, path: str, body: str | None = None) -> dict | None:
        """One timed request; the JSON answer, or None on an error (counted in the tally)."""
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            payload = response.read()
            answer = json.loads(payload) if response.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            answer = None
        with self.tally.lock:
            self.tally.latencies[endpoint].append(time.perf_counter() - started)
            self.tally.errors[endpoint] += answer is None
        return answer

    def run(self, deadline: float, interval_s: float = 0.0) -> None:
        """Next, then vote, again and again; with ``interval_s`` at that pace (open loop)."""
        next_start = time.monotonic() + self.rng.random() * interval_s  # spread the volunteers' phases
        while time.monotonic() < deadline:
            if interval_s:
                time.sleep(max(0.0, next_start - time.monotonic()))
                next_start += interval_s
            answer = self.call("next", "GET", "/label/api/next/")
            if answer is None:
                continue
            if answer["source"] is None:
                return  # nothing left for this volunteer
            form = urlencode({"source": answer["source"]["id"], "label": self.rng.choice(LABELS)})
            vote = self.call("vote", "POST", "/label/api/vote/", form)
            if vote is not None and vote.get("created"):
                with self.tally.lock:
                    self.tally.created_votes += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/rgzlabel_bench")
    parser.add_argument("--volunteers", type=int, default=32)
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered votes/s shared by the volunteers (0: as fast as possible)"
    )
    args = parser.parse_args()

    # The sessions made here must be readable by the server: they share one secret key.
    os.environ["DJANGO_SECRET_KEY"] = "bench-" + secrets.token_urlsafe(48)
    print(f"preparing {args.sources} sources and {args.volunteers} volunteers in {args.database_url}")
    sessions = prepare_database(args.database_url, args.sources, args.volunteers)
    server = start_server(args.database_url, args.port, args.workers, args.threads)
    tally = Tally()
    try:
        deadline = time.monotonic() + args.duration
        started = time.monotonic()
        threads = [
            threading.Thread(
                target=Volunteer(args.port, key, tally, seed=i).run,
                args=(deadline, args.volunteers / args.rate if args.rate else 0.0),
            )
            for i, key in enumerate(sessions)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    from rgzlabel.labelling.models import Classification

    stored = Classification.objects.count()
    pairs = Classification.objects.values("volunteer", "source").distinct().count()
    print()
    offered = f"offered {args.rate:.0f} votes/s" if args.rate else "closed loop, no think time"
    stack = f"gunicorn {args.workers}x{args.threads}, PostgreSQL"
    print(f"{args.volunteers} volunteers ({offered}), {elapsed:.1f} s, {stack}")
    print("| endpoint | requests | per second | p50 ms | p95 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for endpoint in ("next", "vote"):
        values = np.array(tally.latencies[endpoint]) * 1000
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) if len(values) else (0, 0, 0)
        print(
            f"| {endpoint} | {len(values)} | {len(values) / elapsed:.0f} | {p50:.1f} | {p95:.1f} | {p99:.1f} "
            f"| {tally.errors[endpoint]} |"
        )
    print(
        f"\nvotes/s: {tally.created_votes / elapsed:.0f}; acknowledged new votes {tally.created_votes}, "
        f"stored {stored}, distinct (volunteer, source) {pairs}, lost {tally.created_votes - stored}"
    )


if __name__ == "__main__":
    main()
