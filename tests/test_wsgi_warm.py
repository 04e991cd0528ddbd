"""The web process's start and its dashboard: no torch, and no scikit-learn policies for a name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_web_application_and_the_dashboard_load_neither_torch_nor_the_policies(tmp_path) -> None:
    """Search by image embeds in the query worker; the dashboard needs the cold-start policy's
    name only (importing ml.policies took each gunicorn worker ~2 s on its first dashboard)."""
    script = (
        "import json, sys; import rgzlabel.wsgi; from rgzlabel.science import services; "
        "from rgzlabel.learning import queue; from ml.policy_names import COLD_START_POLICY; "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'policies': 'ml.policies' in sys.modules}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rgzlabel.settings", "RGZ_DATA_DIR": str(tmp_path)}
    answer = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(answer.stdout.strip().splitlines()[-1]) == {"torch": False, "policies": False}


def test_the_light_name_is_the_policies_own() -> None:
    from ml import policies
    from ml.policy_names import COLD_START_POLICY

    assert policies.COLD_START_POLICY == COLD_START_POLICY and COLD_START_POLICY in policies.POLICIES
