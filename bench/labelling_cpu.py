"""CPU cost of the volunteer hot path, in-process (no HTTP): milliseconds of CPU per next + vote.

CPU time (not wall time) barely moves when other jobs share the machine, so this is the
figure to compare between commits; `bench.load_labelling` gives the end-to-end picture.
Needs the database prepared by `bench.load_labelling` (it reuses its volunteers).

    .venv/bin/python -m bench.labelling_cpu --pairs 200
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/rgzlabel_bench")
    parser.add_argument("--pairs", type=int, default=200)
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

    def pair() -> None:
        source = client.get("/label/api/next/").json()["source"]
        client.post("/label/api/vote/", {"source": source["id"], "label": "FRI"})

    for _ in range(5):
        pair()  # warm caches and connections
    statements: list[str] = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        pair()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.pairs):
        pair()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print("| pairs | CPU ms per next+vote | wall ms per next+vote | SQL statements per pair |")
    print("| --- | --- | --- | --- |")
    print(f"| {args.pairs} | {1000 * cpu / args.pairs:.1f} | {1000 * wall / args.pairs:.1f} | {len(statements)} |")


if __name__ == "__main__":
    main()
