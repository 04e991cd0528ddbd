"""The web process never imports torch: pages, predictions and exports read numpy files only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import ROOT, _database_url

pytestmark = pytest.mark.django_db(transaction=True)

# Runs in a fresh interpreter against the test database: imports the whole URLconf, renders
# the scientist's pages and the API's predictions, then reports which torch modules loaded.
PROBE = r"""
import json, os, sys
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
import rgzlabel.urls  # every view module the site serves

source_id = int(os.environ["PROBE_SOURCE"])
client = Client()
client.force_login(get_user_model().objects.get(username="carol"))
statuses = {}
for name, args in [
    ("home", []), ("science:dashboard", []), ("science:map", []), ("science:map-data", []),
    ("science:source", [source_id]), ("api:source-list", []), ("api:source-detail", [source_id]),
    ("exports:sources-csv", []), ("catalog:thumbnail", [source_id]),
]:
    response = client.get(reverse(name, args=args))
    statuses[name] = response.status_code
    if name == "science:dashboard":  # it needs the cold-start policy's name, not scikit-learn's policies
        policies_after_dashboard = "ml.policies" in sys.modules
    b"".join(response) if response.streaming else response.content
predicted = client.get(reverse("api:source-detail", args=[source_id])).json().get("prediction")
print(json.dumps({"statuses": statuses, "prediction": predicted, "policies": policies_after_dashboard,
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""


def test_pages_predictions_and_exports_render_without_importing_torch(catalogue, django_user_model) -> None:
    from django.contrib.auth.models import Group

    from rgzlabel.science.roles import SCIENTISTS_GROUP

    # Not the scientist fixture: an earlier transactional test may have flushed the group's data migration.
    carol = django_user_model.objects.create_user("carol")
    carol.groups.add(Group.objects.get_or_create(name=SCIENTISTS_GROUP)[0])
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(connection.settings_dict),
        DJANGO_SETTINGS_MODULE="rgzlabel.settings",
        PROBE_SOURCE=str(catalogue.sources[0].pk),
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["statuses"].values()) == {200}, report["statuses"]
    assert report["prediction"] is not None  # the predictions were really computed
    assert report["torch"] == []
    assert report["policies"] is False  # ml.policies cost each web process ~2 s on its first dashboard
