"""Rate limits kept in the database: accounts created per client, log-in attempts per account and client.

A per-process cache would let each gunicorn worker count on its own (N workers, N times the
limit); these counters live in the one database every web process shares, on SQLite and
PostgreSQL alike. Each limit counts hits in fixed windows (``window_start`` aligned to the
epoch), so a client gets at most twice the limit across a window boundary, never more.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from rgzlabel.labelling.models import RateLimitCounter

#: Counters older than this are deleted as new windows open.
KEEP_COUNTERS = timedelta(days=1)


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` hits of ``scope`` per key in each window of ``window_s`` seconds (0: no limit)."""

    scope: str
    limit: int
    window_s: int


class Throttled(Exception):
    """Over a limit; the message is fit to show, ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def accounts_per_client() -> Limit:
    return Limit("accounts/client", settings.RGZ_ACCOUNTS_PER_CLIENT_PER_HOUR, 3600)


def logins_per_account() -> Limit:
    return Limit("login/account", settings.RGZ_LOGIN_FAILURES_PER_ACCOUNT, settings.RGZ_LOGIN_WINDOW_S)


def logins_per_client() -> Limit:
    return Limit("login/client", settings.RGZ_LOGIN_FAILURES_PER_CLIENT, settings.RGZ_LOGIN_WINDOW_S)


def client_address(request: HttpRequest | None) -> str:
    """The client's IP address: the proxy's last X-Forwarded-For entry behind a trusted proxy.

    Only the entry our own proxy appended can be trusted; earlier ones are whatever the
    client sent, so taking the first would let anyone pick their own key.
    """
    if request is None:
        return ""
    if settings.RGZ_BEHIND_PROXY:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return str(request.META.get("REMOTE_ADDR", ""))


def _key(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def _window(limit: Limit, now: datetime) -> tuple[datetime, int]:
    """(start of the current window, seconds until the next one)."""
    seconds = now.timestamp()
    start = math.floor(seconds / limit.window_s) * limit.window_s
    return datetime.fromtimestamp(start, tz=now.tzinfo), max(1, math.ceil(start + limit.window_s - seconds))


def hit(limit: Limit, value: str, *, amount: int = 1, at: datetime | None = None) -> int:
    """Add ``amount`` hits for ``value`` in the window holding ``at`` (default now); return its count.

    One locked row per window: concurrent hits from any process serialise on it, so the
    counts they see are exact (1, 2, 3, ...), never two requests both seeing the last free hit.
    """
    start, _ = _window(limit, at or timezone.now())
    key = _key(value)
    with transaction.atomic():
        counter, created = RateLimitCounter.objects.get_or_create(scope=limit.scope, key=key, window_start=start)
        RateLimitCounter.objects.filter(pk=counter.pk).update(hits=F("hits") + amount)
        hits = RateLimitCounter.objects.filter(pk=counter.pk).values_list("hits", flat=True).get()
    if created:
        RateLimitCounter.objects.filter(window_start__lt=start - KEEP_COUNTERS).delete()
    return hits


def consume(limit: Limit, value: str, message: str, *, at: datetime | None = None) -> None:
    """Count one hit; raise :class:`Throttled` (with ``message``) when it goes over the limit."""
    if not limit.limit:
        return
    at = at or timezone.now()
    if hit(limit, value, at=at) > limit.limit:
        _, retry_after = _window(limit, at)
        raise Throttled(f"{message} Try again in {_in_words(retry_after)}.", retry_after)


def _in_words(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 90 else f"{math.ceil(seconds / 60)} minutes"


@contextmanager
def login_attempt(request: HttpRequest, username: str) -> Iterator[None]:
    """Guard one password check: refuse it when the account or the client has failed too often.

    The attempt is counted before the password is checked (so a burst of concurrent guesses
    is held to the limit exactly) and given back when it succeeds: only failures add up.
    """
    limits = [(logins_per_account(), username), (logins_per_client(), client_address(request))]
    # One instant for the count and the refund: given back in another window it would go below 0.
    at = timezone.now()
    counted = []
    try:
        for limit, value in limits:
            consume(limit, value, "Too many failed log-ins for this account or from your network.", at=at)
            if limit.limit:
                counted.append((limit, value))
    except Throttled:
        for limit, value in counted:
            hit(limit, value, amount=-1, at=at)
        raise
    yield
    for limit, value in counted:  # reached only when the check raised nothing: a success
        hit(limit, value, amount=-1, at=at)
