"""docs/split.md's example runs as printed (fewer epochs), and the split modules' doctests pass."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

DOC = Path(__file__).resolve().parents[2] / "docs" / "split.md"


def example() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- split-example -->", 1)[1].split("<!-- /split-example -->")[0]
    match = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_documented_example_trains(capsys: pytest.CaptureFixture[str]) -> None:
    code = example()
    assert "epochs=6" in code
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("epochs=6", "epochs=2"), str(DOC), "exec"), namespace)
    history, sl = namespace["history"], namespace["sl"]
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]
    assert {e.kind for e in sl.transcript} >= {"split/activations", "secagg/masked-input"}
    assert capsys.readouterr().out.strip()


MODULES = [
    "secureagg.split.model", "secureagg.split.cut_validation", "secureagg.split.parties",
    "secureagg.split.protections", "secureagg.split.run", "secureagg.split.messages",
    "secureagg.split.attacks", "secureagg.split.label_protection",
    "secureagg.split.scope",
]
if importlib.util.find_spec("tenseal") is not None:
    MODULES += ["secureagg.split.he_cut", "secureagg.split.encrypted"]
MODULES += [
    "secureagg.split.cut_slots", "secureagg.split.he_cut_config",
    "secureagg.split.he_cut_validation",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
