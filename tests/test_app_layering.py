"""The Django apps form one chain, catalog <- labelling <- learning <- science: an app imports
only apps to its left (ARCHITECTURE.md, "Layering"). Imports inside functions count too: a
deferred import is still a dependency, only hidden from the reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ["catalog", "labelling", "learning", "science"]


def imported_apps(path: Path) -> set[str]:
    """The rgzlabel apps a module imports, at any depth of its code."""
    apps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "rgzlabel" and parts[1] in CHAIN:
                apps.add(parts[1])
    return apps


def violations(app: str) -> list[str]:
    allowed = set(CHAIN[: CHAIN.index(app) + 1])
    found = []
    for path in sorted((ROOT / "rgzlabel" / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue  # migrations name other apps' models by label, as Django needs
        for other in sorted(imported_apps(path) - allowed):
            found.append(f"{path.relative_to(ROOT)} imports rgzlabel.{other}")
    return found


@pytest.mark.parametrize("app", CHAIN)
def test_an_app_imports_only_apps_to_its_left(app: str) -> None:
    assert violations(app) == []


def test_the_probe_sees_deferred_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from rgzlabel.science.views import home\n    import rgzlabel.learning.jobs\n")
    assert imported_apps(module) == {"science", "learning"}
