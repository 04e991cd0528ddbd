"""Bad configuration gets one clear line naming the setting, never a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A production-like environment: no service URLs (tests set their own) and none of the
    # browser tests' relaxations.
    dropped = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "mysql://root@localhost/rgz", "unsupported scheme 'mysql'"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:notaport/rgz", "malformed URL"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/", "names no database"),
        ("REDIS_URL", "http://127.0.0.1:6379/0", "expected redis://"),
        ("REDIS_URL", "redis://127.0.0.1:port/0", "malformed URL"),
        ("DJANGO_DEBUG", "maybe", "expected true or false"),
        ("RGZ_RETIRE_AFTER", "0", "must be at least 1"),
        ("RGZ_EMBED_VIEWS", "octagonal", "expected one of dihedral, centre"),
        ("RGZ_FINETUNE_PRESET", "huge", "expected one of paper, cpu-quick, cpu-semisup, tiny"),
    ],
)
def test_it_names_the_malformed_setting(variable: str, value: str, expected: str) -> None:
    result = manage("check", **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_production_needs_a_secret_key() -> None:
    result = manage("check", DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="rgz.example.org")
    assert result.returncode == 2
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_redis_is_reported_by_name() -> None:
    result = manage("check_services", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode != 0
    assert "cannot connect to the Celery broker, Redis (REDIS_URL)" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_reported_by_name() -> None:
    result = manage("check_services", DATABASE_URL="postgres://postgres@127.0.0.1:1/rgzlabel")
    assert result.returncode != 0
    assert "cannot connect to the database given by DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_configured_services_answer() -> None:
    """Whatever this run is configured with (PostgreSQL + Redis in CI) is reachable."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check_services"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    expected_engine = "postgresql" if os.environ.get("DATABASE_URL") else "sqlite3"
    assert f"database: {expected_engine}" in result.stdout
    expected_broker = "Redis" if os.environ.get("REDIS_URL") else "file-system broker"
    assert expected_broker in result.stdout


def test_deploy_checks_pass_under_production_settings() -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="k" * 20 + "-production-secret-0123456789-abcdefghijklmnop",
        DJANGO_ALLOWED_HOSTS="rgz.example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_settings_fail_the_deploy_check() -> None:
    """The deploy check really inspects the settings: the development defaults fail it."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_DEBUG="true")
    assert result.returncode != 0
    assert "DEBUG" in result.stderr + result.stdout
