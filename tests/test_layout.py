"""The package's layout rules that import-linter cannot express (issue 12, items 7 and 8).

* No module of the package imports a private (``_``-prefixed) name from another subpackage:
  what crosses a package boundary is public, named and documented there.
* No module of the package is longer than 600 lines: each holds one concept.
* The protocol aggregators do not import the DP wrappers (composition by wrapping: the wrapper
  imports the protocol, never the other way round; also an import-linter contract).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "secureagg"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 600


def _subpackage(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _dotted(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 50


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_a_package_boundary(path: Path) -> None:
    here = _subpackage(_dotted(path))
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
            continue
        if not node.module.startswith("secureagg.") or _subpackage(node.module) == here:
            continue
        bad += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, f"{path.name} imports private names from another package: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_600_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


@pytest.mark.parametrize("name", ["secagg", "ckks", "paillier", "plain"])
def test_protocol_aggregators_do_not_import_the_dp_wrappers(name: str) -> None:
    tree = ast.parse((PACKAGE / "aggregators" / f"{name}.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "secureagg.aggregators.dp" not in imported
