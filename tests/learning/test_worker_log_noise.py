"""Worker logs stay readable: no progress bars, no root warning under bin/start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import warnings
import workers  # noqa: F401  (configures the worker process)
from tqdm import tqdm
from celery.platforms import _warn_or_raise_security_error
print("tqdm disabled:", tqdm(range(3)).disable)
with warnings.catch_warnings(record=True) as caught:
    _warn_or_raise_security_error(0, 0, 0, 0, False)  # what Celery does for a root worker
print("root warnings:", len(caught))
"""


def probe(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "RGZ_WORKER_"))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_worker_draws_no_progress_bars_in_its_log() -> None:
    assert "tqdm disabled: True" in probe()


def test_bin_start_silences_the_root_warning_and_other_starts_keep_it() -> None:
    assert "root warnings: 0" in probe(RGZ_WORKER_AS_ROOT_OK="1")
    assert "root warnings: 1" in probe()
    start = (ROOT / "bin" / "start").read_text()
    assert "export RGZ_WORKER_AS_ROOT_OK=1" in start
