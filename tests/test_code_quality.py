"""House style that a machine can check: ruff lint and format everywhere, mypy on ml/ and rgzlabel/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_to_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_formatted() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ml_type_checks() -> None:
    result = run("mypy", "ml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rgzlabel_type_checks_with_the_django_stubs() -> None:
    result = run("mypy", "rgzlabel")
    assert result.returncode == 0, result.stdout + result.stderr
