"""The web process's start: the pages' heavy modules loaded before the first request, torch never."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wsgi_module_loads_what_the_pages_import_and_never_torch(tmp_path) -> None:
    script = (
        "import json, sys; import rgzlabel.wsgi as w; "
        "print(json.dumps({'missing': [m for m in w.WARM_IMPORTS if m not in sys.modules], "
        "'torch': 'torch' in sys.modules, 'backend': __import__('matplotlib').get_backend()}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rgzlabel.settings", "RGZ_DATA_DIR": str(tmp_path)}
    answer = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = json.loads(answer.stdout.strip().splitlines()[-1])
    assert loaded == {"missing": [], "torch": False, "backend": "Agg"}
