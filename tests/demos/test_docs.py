"""The examples in the demos' docstrings run (they moved here from fl/ and split/ with the code)."""

from __future__ import annotations

import doctest
import importlib
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")

MODULES = [
    "secureagg.demos.data",
    "secureagg.demos.federated_task",
    "secureagg.demos.federated",
    "secureagg.demos.split_experiments",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0


def test_nothing_in_the_library_imports_the_demos() -> None:
    """The demos are users of the library (also the import-linter layers contract); only the
    drivers above them - the command line, and the canary audit that retrains a configuration
    on the demos' digits data - import them."""
    package = Path(__file__).resolve().parents[2] / "secureagg"
    users = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.parent.name not in ("demos", "cli", "canary")
        and "secureagg.demos" in p.read_text("utf-8")
    ]
    assert users == []
