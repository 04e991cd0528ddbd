"""The cache in front of the session table: volunteers' requests read their session from Redis.

With Redis configured (``REDIS_URL``), sessions use Django's ``cached_db`` engine: written to
the database and to this cache, read from the cache, so the hot path (a vote with the next
subject) saves a database round trip per request (issue 17). The database stays the record,
so a cache that is flushed or lost costs one read, never a log-out.

Redis is not allowed to take the site down: an unreachable Redis makes every operation here
a miss (logged at most once a minute) and sessions are read from the database alone. Entries
live at most ``TIMEOUT`` seconds (5 minutes by default) whatever the session's own age, which
bounds how long a session deleted while Redis was unreachable (a log-out then) can still be
read from a cache that comes back with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)
_WARN_EVERY_S = 60.0


class SessionCache(RedisCache):
    """Redis cache that caps each entry's lifetime and treats an unreachable Redis as a miss."""

    _last_warning = -_WARN_EVERY_S  # per instance once set (Django keeps one per thread)

    def _failed(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            logger.warning("session cache unreachable (%s: %s); sessions are read from the database", operation, exc)

    def _capped(self, timeout: Any) -> Any:
        if timeout is DEFAULT_TIMEOUT or timeout is None:
            return self.default_timeout
        return min(timeout, self.default_timeout)

    def get(self, key, default=None, version=None):
        return self._tolerant("get", default, super().get, key, default, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._tolerant("set", None, super().set, key, value, self._capped(timeout), version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._tolerant("add", False, super().add, key, value, self._capped(timeout), version)

    def delete(self, key, version=None):
        return self._tolerant("delete", False, super().delete, key, version)

    def has_key(self, key, version=None):
        return self._tolerant("has_key", False, super().has_key, key, version)

    def _tolerant(self, operation: str, fallback: Any, call, *args) -> Any:
        """``call(*args)``, or ``fallback`` when Redis cannot be reached (redis-py's own errors)."""
        try:
            return call(*args)
        except Exception as exc:
            self._failed(operation, exc)
            return fallback
