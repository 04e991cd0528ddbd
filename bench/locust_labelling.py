"""Load benchmark of the volunteer hot path driven by locust: guests who classify over HTTP.

Starts the real server (gunicorn, production settings) on loopback against a PostgreSQL
database of its own, fills it with sources, then runs locust headless (``bench/locustfile.py``:
FastHttpUser volunteers who start as guests, then classify) for a fixed time and reports, from
locust's own statistics, classifications (votes) per second and per request type (guest, next,
vote) the requests, requests per second, p50 / p95 / p99 and failures. After each run it checks
the database: every vote the server acknowledged as new is stored exactly once.

Runs: closed loop (``--users`` volunteers, no think time), then open loop at each offered rate
of ``--rates`` (votes/s, each user paced by locust's constant_pacing), each in ``--mode``
one-request (the vote answer's ``next`` is the next subject, when the server sends it) or
two-requests (``api/next`` then the vote, the old client), or both side by side. Every run has
a fresh database and server.

    .venv/bin/python -m bench.locust_labelling --mode both --users 24 --duration 20
    .venv/bin/python -m bench.locust_labelling --mode both --rates 50,100,200,300 --duration 15 --out locust.json
    .venv/bin/python -m bench.locust_labelling --rates "" --app-root ../rgzlabel-old   # an older commit's worktree

Only loopback traffic; each run stops by itself ``--duration`` seconds after its users have
their guest sessions (locust's ``-t`` and a process timeout bound it as well).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from bench import load_labelling
from bench.load_labelling import loopback_production_env

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "bench" / "locustfile.py"
ENDPOINTS = ("guest", "next", "vote", "classification")
#: Guest accounts one client address may create per hour, in the benchmark's server: every
#: simulated volunteer comes from 127.0.0.1 (the default, 30, would refuse all but the first 30).
GUEST_LIMIT = 1_000_000
#: Seconds locust gives a stopping user to finish its classification (so every vote it sent is answered).
STOP_TIMEOUT_S = 10
#: Highest retire_after the workflow's field holds (PositiveSmallIntegerField).
MAX_RETIRE_AFTER = 32767

# Run in subprocesses at the app root, so an older checkout's own models and migrations are used.
PREPARE = """
import importlib.util, sys
url, n_sources, module_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("load_labelling", module_file)
load_labelling = sys.modules["load_labelling"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load_labelling)
load_labelling.prepare_database(url, n_sources, 0)
"""
SET_WORKFLOW = """
import os, sys
os.environ["DATABASE_URL"] = sys.argv[1]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
import django
django.setup()
from rgzlabel.labelling.services import default_workflow
workflow = default_workflow()
workflow.retire_after = int(sys.argv[2])  # nothing retires during the run
workflow.retire_on_agreement = workflow.retire_on_margin = 0
workflow.save()
"""
CHECK = """
import json, os, sys
os.environ["DATABASE_URL"] = sys.argv[1]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rgzlabel.settings")
import django
django.setup()
from rgzlabel.labelling.models import Classification
stored = Classification.objects.count()
distinct = Classification.objects.values("volunteer", "source").distinct().count()
print(json.dumps({"stored": stored, "distinct": distinct}))
"""


@dataclass
class Endpoint:
    requests: int
    failures: int
    per_second: float
    p50: float
    p95: float
    p99: float


@dataclass
class Run:
    name: str
    mode: str
    users: int
    offered: float  # votes/s, 0 for closed loop
    seconds: float = 0.0  # voting time: from every user having its guest session to the last answer
    votes_per_s: float = 0.0
    requests_per_vote: float = 0.0
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    acknowledged: int = 0
    stored: int = 0
    distinct: int = 0
    lost: int = 0
    repeats: int = 0
    votes_with_next: int = 0
    votes_without_next: int = 0
    exhausted: int = 0
    guest_failures: int = 0
    client_cpu_warning: bool = False
    log: str = ""
    locust: dict[str, Any] = field(default_factory=dict, repr=False)  # the locust process's result file

    @property
    def next_in_vote(self) -> str:
        if not self.votes_with_next:
            return "no"
        return "yes" if not self.votes_without_next else "partly"


def percentile(histogram: dict[float, int], count: int, share: float) -> float:
    """Locust's percentile of a response-time histogram: the time ``share`` of the requests finished within."""
    below = int(count * share)
    seen = 0
    for value in sorted(histogram, reverse=True):
        seen += histogram[value]
        if count - seen <= below:
            return value
    return 0.0


def check_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(f"port {port} is in use ({exc}); pick another with --port") from exc


def in_app_root(app_root: Path, code: str, *args: str) -> str:
    """Run ``code`` with the app root's Python packages (rgzlabel, ml) first on the path; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=app_root, env=dict(os.environ, PYTHONPATH=str(app_root)),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"a database step at {app_root} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def start_server(
    app_root: Path, url: str, port: int, workers: int, threads: int, secret: str, log: TextIO
) -> subprocess.Popen:
    """load_labelling's server, of ``app_root``, with guest creation raised to GUEST_LIMIT."""
    env = loopback_production_env(url, DJANGO_SECRET_KEY=secret, RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR=str(GUEST_LIMIT))
    env["PYTHONPATH"] = str(app_root)
    return load_labelling.start_server(url, port, workers, threads, app_root=app_root, env=env, log=log)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_locust(port: int, run: Run, duration: float, result_file: Path, log: TextIO) -> dict[str, Any]:
    """One headless locust process (gevent patches its process, so never imported here); its result file."""
    pace = run.offered / run.users if run.offered else 0.0
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", f"http://127.0.0.1:{port}", "--users", str(run.users), "--spawn-rate", str(run.users),
        "--run-time", f"{math.ceil(duration) + 120}s", "--stop-timeout", str(STOP_TIMEOUT_S),
        "--vote-mode", run.mode, "--pace", repr(pace), "--vote-seconds", repr(duration),
        "--result-file", str(result_file),
    ]  # fmt: skip
    try:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=duration + 240)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"locust did not stop in time; see {log.name}") from exc
    if not result_file.exists():
        raise RuntimeError(f"locust wrote no result; see {log.name}")
    return json.loads(result_file.read_text())


def read_result(run: Run, result: dict[str, Any]) -> None:
    """Fill ``run`` from locust's stats entries and the users' counts."""
    entries = {entry["name"]: entry for entry in result["stats"]}
    released = result["released_at"] or min((e["start_time"] for e in entries.values()), default=0.0)
    last = max((entries[n]["last_request_timestamp"] or 0.0 for n in ("next", "vote") if n in entries), default=0.0)
    run.seconds = max(last - released, 1e-9)
    for name in ENDPOINTS:
        entry = entries.get(name)
        if entry is None:
            run.endpoints[name] = Endpoint(0, 0, 0.0, 0.0, 0.0, 0.0)
            continue
        histogram = {float(k): v for k, v in entry["response_times"].items()}
        count = sum(histogram.values())
        # guests start before the voting time: their rate is over the start-up (test start to release)
        span = run.seconds if name != "guest" else max(released - (result["started_at"] or released), 1e-9)
        run.endpoints[name] = Endpoint(
            requests=entry["num_requests"],
            failures=entry["num_failures"],
            per_second=entry["num_requests"] / span,
            p50=percentile(histogram, count, 0.50),
            p95=percentile(histogram, count, 0.95),
            p99=percentile(histogram, count, 0.99),
        )
    votes = run.endpoints["classification"].requests - run.endpoints["classification"].failures
    run.votes_per_s = votes / run.seconds
    run.requests_per_vote = (run.endpoints["next"].requests + run.endpoints["vote"].requests) / votes if votes else 0
    run.errors = sum(run.endpoints[name].failures for name in ("guest", "next", "vote"))
    run.error_messages = [f"{e['occurrences']} x {e['method']} {e['name']}: {e['error']}" for e in result["errors"]]
    run.acknowledged = result["acknowledged"]
    run.repeats = result["repeats"]
    run.votes_with_next = result["votes_with_next"]
    run.votes_without_next = result["votes_without_next"]
    run.exhausted = result["exhausted"]
    run.guest_failures = result["guest_failures"]
    run.client_cpu_warning = result["cpu_warning"]


def admin_execute(url: str, *statements: str) -> None:
    """Run ``statements`` on the server's ``postgres`` database (creating and dropping databases)."""
    import psycopg

    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def prepare_template(args: argparse.Namespace) -> str:
    """The sources once, in a template database (load_labelling's prepare_database, at the app root)."""
    parts = urlsplit(args.database_url)
    url = urlunsplit(parts._replace(path=parts.path + "_template"))
    print(f"preparing {args.sources} sources in {url}", flush=True)
    in_app_root(args.app_root, PREPARE, url, str(args.sources), str(ROOT / "bench" / "load_labelling.py"))
    return url


def fresh_database(url: str, template_url: str, users: int, app_root: Path) -> None:
    """The run's database: a copy of the template, with a retire_after no run reaches."""
    name, template = urlsplit(url).path.lstrip("/"), urlsplit(template_url).path.lstrip("/")
    admin_execute(
        url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
    )
    in_app_root(app_root, SET_WORKFLOW, url, str(min(users + 1, MAX_RETIRE_AFTER)))


def measure(args: argparse.Namespace, run: Run, template_url: str, logs: Path, secret: str) -> Run:
    """A fresh database and server, one locust run against them, then the database check."""
    slug = run.name.replace(" ", "_").replace("/", "")
    run.log = str(logs / f"{slug}.log")
    print(f"-- {run.name}: {run.users} users", flush=True)
    fresh_database(args.database_url, template_url, run.users, args.app_root)
    with open(run.log, "w") as log:
        server = start_server(args.app_root, args.database_url, args.port, args.workers, args.threads, secret, log)
        try:
            log.write("\n--- locust ---\n")
            log.flush()
            result = run_locust(args.port, run, args.duration, logs / f"{slug}.json", log)
        finally:
            stop_server(server)
    read_result(run, result)
    run.locust = result
    counts = json.loads(in_app_root(args.app_root, CHECK, args.database_url))
    run.stored, run.distinct = counts["stored"], counts["distinct"]
    run.lost = run.acknowledged - run.stored
    print(
        f"   {run.votes_per_s:.0f} votes/s over {run.seconds:.1f} s; acknowledged {run.acknowledged}, "
        f"stored {run.stored}, distinct {run.distinct}, lost {run.lost}, errors {run.errors}",
        flush=True,
    )
    return run


def breakdown(runs: list[Run], p95_limit_ms: float, min_share: float) -> str | None:
    """Where open-loop latency breaks down: the first offered rate with classification p95 over the
    limit, achieved votes/s under ``min_share`` of offered, or over 1 % failed requests."""
    for run in sorted(runs, key=lambda r: r.offered):
        requests = sum(run.endpoints[n].requests for n in ("next", "vote"))
        reasons = []
        if run.endpoints["classification"].p95 > p95_limit_ms:
            reasons.append(f"classification p95 {run.endpoints['classification'].p95:.0f} ms > {p95_limit_ms:.0f}")
        if run.votes_per_s < min_share * run.offered:
            reasons.append(f"achieved {run.votes_per_s:.0f} < {min_share:.0%} of offered")
        if requests and run.errors > 0.01 * requests:
            reasons.append(f"{run.errors} failed requests")
        if reasons:
            return f"breaks down at {run.offered:.0f} votes/s offered ({'; '.join(reasons)})"
    return None


def ms(value: float) -> str:
    """Milliseconds as locust's histogram holds them: 0.1 ms below 100 ms, whole ms above."""
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ms3(endpoint: Endpoint) -> str:
    if not endpoint.requests:
        return "-"
    return f"{ms(endpoint.p50)} / {ms(endpoint.p95)} / {ms(endpoint.p99)}"


def print_report(args: argparse.Namespace, runs: list[Run]) -> None:
    print()
    stack = f"gunicorn {args.workers}x{args.threads} (production settings), PostgreSQL, locust FastHttpUser"
    print(f"{stack}; app root {args.app_root}; {args.sources} sources; voting time {args.duration:.0f} s per run")
    print(
        f"server env: RGZ_VOTES_PER_MINUTE=0 (no per-volunteer limit), RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR={GUEST_LIMIT} "
        "(guest accounts per client address raised: every simulated volunteer comes from 127.0.0.1)"
    )
    print()
    print(
        "| run | users | offered votes/s | votes/s | requests/vote | next in vote answer "
        "| classification p50 / p95 / p99 ms | guest p50 / p95 / p99 ms | next p50 / p95 / p99 ms "
        "| vote p50 / p95 / p99 ms | errors | acknowledged | stored | distinct | lost |"
    )
    print("| --- " * 15 + "|")
    for run in runs:
        cells = [run.name, run.users, f"{run.offered:.0f}" if run.offered else "closed loop", f"{run.votes_per_s:.0f}"]
        cells += [f"{run.requests_per_vote:.2f}", run.next_in_vote]
        cells += [ms3(run.endpoints[name]) for name in ("classification", "guest", "next", "vote")]
        cells += [run.errors, run.acknowledged, run.stored, run.distinct, run.lost]
        print("| " + " | ".join(map(str, cells)) + " |")
    print()
    print("| run | endpoint | requests | per second | p50 ms | p95 ms | p99 ms | failures |")
    print("| --- " * 8 + "|")
    for run in runs:
        for name in ENDPOINTS:
            e = run.endpoints[name]
            print(
                f"| {run.name} | {name} | {e.requests} | {e.per_second:.0f} | {ms(e.p50)} | {ms(e.p95)} "
                f"| {ms(e.p99)} | {e.failures} |"
            )
    print()
    print(
        "votes/s: answered votes over the voting time; classification: from needing a subject to the vote's "
        "answer (next + vote, or the vote alone when it brings the next subject); guest per second over the "
        "guests' own start-up; lost: acknowledged new votes not stored (acknowledged - stored); "
        "stored - distinct would be votes stored twice."
    )
    for run in runs:
        notes = []
        if run.stored != run.distinct:
            notes.append(f"{run.stored - run.distinct} votes stored twice")
        if run.repeats:
            notes.append(f"{run.repeats} votes answered as repeats (created: false)")
        if run.exhausted:
            notes.append(f"{run.exhausted} users ran out of subjects")
        if run.guest_failures:
            notes.append(f"{run.guest_failures} guest starts failed")
        if run.client_cpu_warning:
            notes.append("locust warned of its own CPU use over 90 %: the client may limit the numbers")
        notes += run.error_messages[:5]
        if notes:
            print(f"{run.name}: " + "; ".join(notes) + f" (log: {run.log})")
    for mode in dict.fromkeys(run.mode for run in runs if run.offered):
        steps = [run for run in runs if run.offered and run.mode == mode]
        verdict = breakdown(steps, args.p95_limit_ms, args.min_achieved)
        top = max(run.offered for run in steps)
        print(
            f"open loop, {mode}: "
            + (verdict or f"holds up to {top:.0f} votes/s offered (p95 <= {args.p95_limit_ms:.0f} ms, achieved >= "
               f"{args.min_achieved:.0%} of offered)")
        )  # fmt: skip


def parse_rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/rgzlabel_locust")
    parser.add_argument("--users", type=int, default=24, help="closed-loop volunteers (and the open loop's least)")
    parser.add_argument("--duration", type=float, default=20.0, help="voting seconds per run")
    parser.add_argument("--sources", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--mode", choices=["one-request", "two-requests", "both"], default="both")
    parser.add_argument(
        "--rates", type=parse_rates, default=parse_rates("50,100,200,300"),
        help="offered votes/s of the open-loop runs, comma-separated (empty: closed loop only)",
    )  # fmt: skip
    parser.add_argument(
        "--closed", action=argparse.BooleanOptionalAction, default=True, help="the closed-loop runs (--no-closed: none)"
    )
    parser.add_argument(
        "--user-interval", type=float, default=0.5,
        help="open loop: seconds between one user's classifications (users = rate x this, at least --users)",
    )  # fmt: skip
    parser.add_argument("--p95-limit-ms", type=float, default=100.0, help="open loop: classification p95 limit")
    parser.add_argument("--min-achieved", type=float, default=0.95, help="open loop: least achieved/offered share")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the checkout whose server is started")
    parser.add_argument("--out", type=Path, help="also write the raw numbers here (JSON)")
    args = parser.parse_args()
    args.app_root = args.app_root.resolve()
    if not (args.app_root / "rgzlabel" / "wsgi.py").exists():
        parser.error(f"--app-root {args.app_root} holds no rgzlabel/wsgi.py")
    if not args.closed and not args.rates:
        parser.error("--no-closed with no --rates leaves nothing to run")
    check_port_free(args.port)

    modes = ["one-request", "two-requests"] if args.mode == "both" else [args.mode]
    plan = [Run(f"closed {mode}", mode, args.users, 0.0) for mode in modes] if args.closed else []
    for rate in args.rates:
        users = max(args.users, math.ceil(rate * args.user_interval))
        plan += [Run(f"open {rate:g}/s {mode}", mode, users, rate) for mode in modes]
    logs = Path(tempfile.mkdtemp(prefix="locust_labelling_"))
    print(f"{len(plan)} runs of {args.duration:g} s voting time; logs and locust results in {logs}")
    secret = "bench-" + secrets.token_urlsafe(48)  # production settings need one; nothing else reads it
    template_url = prepare_template(args)
    try:
        runs = [measure(args, run, template_url, logs, secret) for run in plan]
    finally:
        admin_execute(template_url, f'DROP DATABASE IF EXISTS "{urlsplit(template_url).path.lstrip("/")}" WITH (FORCE)')
    print_report(args, runs)
    if args.out:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        settings["guest_limit"] = GUEST_LIMIT
        args.out.write_text(json.dumps({"settings": settings, "runs": [asdict(run) for run in runs]}, indent=2))
        print(f"raw numbers in {args.out}")


if __name__ == "__main__":
    main()
