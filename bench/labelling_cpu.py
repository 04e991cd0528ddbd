"""CPU cost of the volunteer hot path, in-process (no HTTP): CPU ms and SQL statements per classification.

A classification is one vote whose answer carries the next subject (``next``); against a
server without it (an older commit run from its own checkout), a vote then a ``next`` request.
CPU time (not wall time) barely moves when other jobs share the machine, so this is the
figure to compare between commits; `bench.load_labelling` gives the end-to-end picture.
Needs the database prepared by `bench.load_labelling` (it reuses its volunteers).

    .venv/bin/python -m bench.labelling_cpu --classifications 200
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/rgzlabel_bench")
    parser.add_argument("--classifications", "--pairs", dest="pairs", type=int, default=200)
    args = parser.parse_args()
    os.environ.update(
        DATABASE_URL=args.database_url,
        DJANGO_SETTINGS_MODULE="rgzlabel.settings",
        RGZ_VOTES_PER_MINUTE="0",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-" + "x" * 60,
        DJANGO_ALLOWED_HOSTS="testserver",
        DJANGO_SECURE_SSL_REDIRECT="false",
        RGZ_LOG_LEVEL="ERROR",
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    volunteer = get_user_model().objects.filter(username__startswith="load").order_by("?").first()
    if volunteer is None:
        raise SystemExit("no benchmark volunteers: run `python -m bench.load_labelling` first")
    client = Client()
    client.force_login(volunteer)

    current = client.get("/label/api/next/").json()["source"]
    requests = [0]

    def classify() -> None:
        nonlocal current
        answer = client.post("/label/api/vote/", {"source": current["id"], "label": "FRI"}).json()
        requests[0] += 1
        if "next" in answer:
            current = answer["next"]
        else:  # a server from before the vote answered with the next subject
            current = client.get("/label/api/next/").json()["source"]
            requests[0] += 1

    for _ in range(5):
        classify()  # warm caches and connections
    statements: list[str] = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        classify()
    requests[0] = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.pairs):
        classify()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = args.pairs
    print("| classifications | HTTP requests each | CPU ms each | wall ms each | SQL statements each |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {n} | {requests[0] / n:.0f} | {1000 * cpu / n:.1f} | {1000 * wall / n:.1f} | {len(statements)} |")


if __name__ == "__main__":
    main()
