"""Every third-party module the package imports is declared in pyproject.toml (core or an extra)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level module -> files of src/loralab that import it (absolute imports only)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "src" / "loralab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                out.setdefault(name.split(".")[0], set()).add(path.name)
    return {m: files for m, files in out.items() if m not in sys.stdlib_module_names and m != "loralab"}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"]) + [
        r for extra in project.get("optional-dependencies", {}).values() for r in extra
    ]
    return {_norm(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in reqs}


def test_every_imported_module_is_a_declared_dependency():
    dists = packages_distributions()
    have = declared()
    missing = []
    for module, files in sorted(imported_modules().items()):
        names = {_norm(d) for d in dists.get(module, [module])}
        if not names & have:
            missing.append(f"{module} (imported by {', '.join(sorted(files))})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_scipy_is_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "scipy" in {_norm(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in project["dependencies"]}
