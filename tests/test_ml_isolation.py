"""`ml/` is a plain library: it must import without Django or Celery on the path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter in which importing django, celery, kombu, rgzlabel or
# workers fails, as if they were not installed; then every module of ml/ is imported.
PROBE = r"""
import importlib, importlib.abc, pkgutil, sys

BLOCKED = {"django", "celery", "kombu", "rgzlabel", "workers"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the isolation test)")
        return None

sys.meta_path.insert(0, Block())
import ml
names = [m.name for m in pkgutil.walk_packages(ml.__path__, "ml.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
print(len(names), "modules")
"""


def test_every_ml_module_imports_without_django_or_celery() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    imported = int(result.stdout.split()[0])
    assert imported >= 5  # the probe really walked the package
