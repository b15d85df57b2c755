"""``secureagg demo --engine flower`` end to end: real processes, a relative ``--out`` (the
ServerApp writes the run directory from another process and another working directory), no
process left behind, and a run directory that ``secureagg audit`` passes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="needs the flower extra: pip install 'secureagg[flower]'")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from secureagg.cli import main
from tests.child_processes import child_pids

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_the_flower_demo_writes_an_auditable_run_and_stops_its_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    before = child_pids(os.getpid())
    code = main(["demo", "--engine", "flower", "--clients", "3", "--rounds", "1",
                 "--no-baseline", "--out", "demo-run"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert child_pids(os.getpid()) <= before  # every Flower process it started is gone
    run = tmp_path / "demo-run"
    history = json.loads((run / "history.json").read_text())
    assert history["completed_rounds"] == 1
    assert "run directory: demo-run" in out
    assert main(["audit", "demo-run", "--no-html"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["kind"] == "federated" and report["verdict"] == "pass"
    assert report["integrity"]["sealed"]
    assert "flower-logs/superlink.log" in json.loads((run / "seal.json").read_text())["files"]
