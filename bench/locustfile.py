"""Locust users for the labelling load benchmark: guests who classify over HTTP.

Each simulated volunteer starts as a guest (``POST /label/guest/`` with a CSRF cookie of its
own), waits until every user of the run has a guest session, then classifies: a subject from
``GET /label/api/next/``, a vote to ``POST /label/api/vote/``, again and again.

``--vote-mode one-request``: when the vote answer carries ``next`` (the next subject, or null
when none is left), that is the next subject: one request per classification; against a server
whose vote answer has no ``next`` the user asks ``api/next`` as before. ``--vote-mode
two-requests``: always ``api/next`` then the vote, whatever the vote answers (the old client).

``--pace 0`` (default): closed loop, no think time. ``--pace R``: each user classifies R times a
second (locust's ``constant_pacing``; open loop for the run as a whole while users keep up),
starting at a random phase so the users' requests spread evenly over time.

Besides locust's own request statistics (``guest``, ``next``, ``vote``) each classification
is a ``classification`` entry (``cycle`` type): the time from needing a subject to the vote's
answer. At test stop the process writes ``--result-file`` (JSON): locust's stats entries and
errors, and the counts the users kept (votes the server acknowledged as new, repeats, answers
with ``next``, users that ran out of subjects). Run by ``bench.locust_labelling``; alone:

    .venv/bin/locust -f bench/locustfile.py --headless --host http://127.0.0.1:8798 -u 8 -r 8 -t 30s \\
        --vote-mode one-request --vote-seconds 20 --stop-timeout 10 --result-file /tmp/locust_result.json

Nothing here imports the project: locust monkey-patches the process with gevent.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from http.cookiejar import Cookie
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

import gevent
import locust.stats
from gevent.event import Event
from locust import FastHttpUser, constant_pacing, events, task
from locust.env import Environment
from locust.exception import StopUser

LABELS = ["FRI", "FRII", "hybrid", "unsure"]
#: How long a user that has its guest session waits for the others before it starts anyway.
BARRIER_TIMEOUT_S = 60.0


def fine_bucket(response_time: float) -> float:
    """Locust's histogram keys, finer than its default (1 ms below 100 ms): 0.1 ms, then 3 digits."""
    if response_time < 100:
        return round(response_time, 1)
    if response_time < 1000:
        return float(round(response_time))
    return float(round(response_time, -1))


# A module-level hook of locust's for custom bucketing (read at every request it logs).
locust.stats.bucket_response_time = fine_bucket  # type: ignore[assignment]


class Tally:
    """What this locust process's users counted (one process, greenlets: no locks needed)."""

    def __init__(self) -> None:
        self.expected_users = 0
        self.arrived = 0  # users past their guest start, successful or not
        self.guests = 0
        self.guest_failures = 0
        self.acknowledged = 0  # vote answers with created=true
        self.repeats = 0  # vote answers with created=false
        self.with_next = 0  # vote answers that carried "next"
        self.without_next = 0
        self.exhausted = 0  # users that were told no subject is left
        self.gone = 0  # users that stopped before the end: no guest session, or nothing left
        self.started_at: float | None = None  # the test start (epoch s)
        self.released_at: float | None = None  # when every user had its guest session (epoch s)
        self.stopping_at: float | None = None  # when the run was told to stop (epoch s)
        self.ready = Event()


tally = Tally()


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("rgzlabel volunteers")
    group.add_argument(
        "--vote-mode", choices=["one-request", "two-requests"], default="one-request", help="see the module docstring"
    )
    group.add_argument("--pace", type=float, default=0.0, help="classifications/s per user (0: closed loop)")
    group.add_argument(
        "--vote-seconds", type=float, default=0.0, help="stop this long after every user started (0: only -t)"
    )
    group.add_argument("--result-file", default="", help="write the stats and counts here (JSON) at test stop")


@events.test_start.add_listener
def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    tally.expected_users = int(options.num_users or 0) if options else 0
    tally.started_at = time.time()


@events.test_stopping.add_listener
def on_test_stopping(environment: Environment, **_kwargs: Any) -> None:
    tally.stopping_at = time.time()


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    """Every user has stopped (after finishing its classification, given --stop-timeout): write the result."""
    options = environment.parsed_options
    if not options or not options.result_file:
        return
    stats = environment.stats
    result = {
        "vote_mode": options.vote_mode,
        "pace": options.pace,
        "users": tally.expected_users,
        "guests": tally.guests,
        "guest_failures": tally.guest_failures,
        "acknowledged": tally.acknowledged,
        "repeats": tally.repeats,
        "votes_with_next": tally.with_next,
        "votes_without_next": tally.without_next,
        "exhausted": tally.exhausted,
        "started_at": tally.started_at,
        "released_at": tally.released_at,
        "stopping_at": tally.stopping_at,
        "cpu_warning": bool(environment.runner and environment.runner.cpu_warning_emitted),
        "stats": [entry.serialize() for entry in stats.entries.values()],
        "errors": list(stats.serialize_errors().values()),
    }
    with open(options.result_file, "w") as file:
        json.dump(result, file)


def release(environment: Environment) -> None:
    """Let every user start classifying; with --vote-seconds, end the run that long afterwards."""
    if tally.ready.is_set():
        return
    tally.released_at = time.time()
    tally.ready.set()
    seconds = environment.parsed_options.vote_seconds if environment.parsed_options else 0
    if seconds and environment.runner is not None:
        gevent.spawn_later(seconds, environment.runner.quit)


class Volunteer(FastHttpUser):
    """One simulated volunteer: a guest with its own keep-alive connection, cookies and CSRF token."""

    network_timeout = 30.0
    connection_timeout = 30.0
    concurrency = 1

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.one_request = bool(options and options.vote_mode == "one-request")
        pace = options.pace if options else 0.0
        self.pacer = constant_pacing(1.0 / pace) if pace > 0 else None
        self.held: dict[str, Any] | None = None  # the next subject the last vote answer gave
        self.referer = f"{self.host}/label/"
        started = self.start_as_guest()
        tally.arrived += 1
        if tally.arrived >= tally.expected_users:
            release(self.environment)
        if not tally.ready.wait(timeout=BARRIER_TIMEOUT_S):
            release(self.environment)
        if not started:
            self.leave()
        if pace > 0:
            gevent.sleep(random.random() / pace)  # a random phase, so the users do not arrive in step
        self._cp_last_run = time.perf_counter()  # constant_pacing counts from here, not from the spawn

    def wait_time(self) -> float:
        return self.pacer(self) if self.pacer is not None else 0.0

    # --- requests ---------------------------------------------------------------------------------
    def csrf_token(self) -> str:
        for cookie in self.client.cookiejar:
            if cookie.name == "csrftoken" and cookie.value:
                return cookie.value
        return ""

    def post_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-CSRFToken": self.csrf_token(),
            "Referer": self.referer,
        }

    def start_as_guest(self) -> bool:
        """A CSRF cookie of our own (as a browser gets from the page), then ``POST /label/guest/``."""
        token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        self.client.cookiejar.set_cookie(host_cookie(urlsplit(self.host or "").hostname or "", "csrftoken", token))
        with self.client.post(
            "/label/guest/",
            data=urlencode({"csrfmiddlewaretoken": token}),
            headers=self.post_headers(),
            name="guest",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            session = any(cookie.name == "sessionid" for cookie in self.client.cookiejar)
            if response.status_code == 302 and session:
                tally.guests += 1
                return True
            response.failure(f"guest start answered {response.status_code}" + ("" if session else ", no session"))
        tally.guest_failures += 1
        return False

    def fetch_next(self) -> tuple[bool, dict[str, Any] | None]:
        """(answered, the subject or None when none is left)."""
        with self.client.get("/label/api/next/", name="next", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"next answered {response.status_code}")
                return False, None
            try:
                return True, response.json()["source"]
            except (ValueError, KeyError, TypeError):
                response.failure("next answered no JSON source")
                return False, None

    def post_vote(self, source_id: int) -> dict[str, Any] | None:
        form = urlencode({"source": source_id, "label": random.choice(LABELS)})
        with self.client.post(
            "/label/api/vote/", data=form, headers=self.post_headers(), name="vote", catch_response=True
        ) as response:
            try:
                answer = response.json() if response.text else None
            except ValueError:
                answer = None
            if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("ok"):
                detail = answer.get("error") if isinstance(answer, dict) else None
                response.failure(f"vote answered {response.status_code}" + (f": {detail}" if detail else ""))
                if self.one_request and isinstance(answer, dict) and answer.get("next"):
                    self.held = answer["next"]  # a refused vote may still bring the next subject
                return None
            return answer

    # --- the volunteer ----------------------------------------------------------------------------
    @task
    def classify(self) -> None:
        started = time.perf_counter()
        source = self.held if self.one_request else None
        self.held = None
        if source is None:
            answered, source = self.fetch_next()
            if not answered:
                return  # counted under "next"; try again
            if source is None:
                self.run_out()
        answer = self.post_vote(source["id"])
        self.report_cycle(started, None if answer is not None else "the vote failed")
        if answer is None:
            return
        if answer.get("created"):
            tally.acknowledged += 1
        else:
            tally.repeats += 1
        if "next" in answer:
            tally.with_next += 1
            if self.one_request:
                if answer["next"] is None:
                    self.run_out()
                self.held = answer["next"]
        else:
            tally.without_next += 1

    def report_cycle(self, started: float, failure: str | None) -> None:
        self.environment.events.request.fire(
            request_type="cycle",
            name="classification",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=RuntimeError(failure) if failure else None,
            context={},
        )

    def run_out(self) -> NoReturn:
        tally.exhausted += 1
        self.leave()

    def leave(self) -> NoReturn:
        """Stop this user; the last one to go ends the run (nobody is left to measure)."""
        tally.gone += 1
        if tally.gone >= tally.expected_users and self.environment.runner is not None:
            gevent.spawn(self.environment.runner.quit)
        raise StopUser()


def host_cookie(host: str, name: str, value: str) -> Cookie:
    """A cookie for ``host`` only, path ``/`` (as Django sets its own, which replace it)."""
    return Cookie(
        version=0, name=name, value=value, port=None, port_specified=False, domain=host, domain_specified=False,
        domain_initial_dot=False, path="/", path_specified=True, secure=False, expires=None, discard=True,
        comment=None, comment_url=None, rest={}, rfc2109=False,
    )  # fmt: skip
