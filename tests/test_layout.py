"""The package's layers: a package never imports from one above it (docs/layout.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "playground"
# package -> the packages it must not import (training sits above envs, deploy and files).
FORBIDDEN = {
    "envs": ("playground.training", "playground.deploy"),
    "deploy": ("playground.training",),
    "files": ("playground.training", "playground.deploy", "playground.envs"),
    "physics": ("playground.training", "playground.deploy", "playground.envs"),
    "render": ("playground.training", "playground.deploy"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_package_imports_from_a_package_above_it():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((PKG / package).rglob("*.py")):
            for name in _imports(path):
                if name.startswith(forbidden):
                    bad.append(f"{path.relative_to(PKG.parent)} imports {name}")
    assert not bad, bad
