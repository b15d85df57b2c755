"""The ten-line integration in docs/federated.md runs as printed (with fewer rounds)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

DOC = Path(__file__).resolve().parents[2] / "docs" / "federated.md"


def example() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- federated-example -->", 1)[1].split("<!-- /federated-example -->")[0]
    match = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_documented_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = example()
    assert "rounds=20" in code
    assert 'run_dir="runs/digits"' in code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("rounds=20", "rounds=3"), str(DOC), "exec"), namespace)
    history = namespace["history"]
    assert [e["status"] for e in history] == ["completed"] * 3
    assert history[-1]["metrics"]["accuracy"] > 0.8
    assert (tmp_path / "runs" / "digits" / "model.pt").is_file()
