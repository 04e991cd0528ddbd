"""Strict readers for settings that come from environment variables.

Every reader names the variable in its error, so a bad deployment fails at start-up
with one clear line instead of a stack trace deep inside a database driver or Celery.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


class ConfigError(ImproperlyConfigured):
    """A setting read from the environment is missing or malformed."""


def env_str(name: str, default: str = "") -> str:
    """Return ``$NAME``, or the contents of the file named by ``$NAME_FILE`` (container secrets)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_path!r}: cannot read the file ({exc.strerror})") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """Accept only true/false spellings; anything else is an error rather than a silent False."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; anything else names the variable and the allowed values."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(name: str, url: str, *, conn_max_age: int = 60) -> dict[str, object]:
    """Parse a PostgreSQL or SQLite ``DATABASE_URL`` into a Django database dict."""
    import dj_database_url

    scheme = urlsplit(url).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ConfigError(
            f"{name}={_redact(url)!r}: unsupported scheme {scheme!r}; "
            "use postgres://USER:PASSWORD@HOST:PORT/NAME or sqlite:////absolute/path.sqlite3"
        )
    try:
        config = dict(dj_database_url.parse(url, conn_max_age=conn_max_age))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{name}={_redact(url)!r}: malformed URL ({exc})") from None
    if not config.get("NAME"):
        raise ConfigError(f"{name}={_redact(url)!r}: the URL names no database")
    if scheme != "sqlite":
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError on a non-numeric port
        except ValueError as exc:
            raise ConfigError(f"{name}={_redact(url)!r}: malformed URL ({exc})") from None
    return config


def redis_url(name: str, url: str) -> str:
    """Validate a Redis URL early so a typo is not reported as a connection timeout later."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{name}={_redact(url)!r}: expected redis://HOST:PORT/DB (or rediss://, unix://)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"{name}={_redact(url)!r}: malformed URL ({exc})") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{name}={_redact(url)!r}: the URL names no host")
    return url


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into an error message or a log."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
