"""Wherever a command runs SecAgg/SecAgg+ in curious mode, it says what that mode gives up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from secureagg.cli import main

# The consequence, in the words an auditor reads (issue 11, "What curious mode gives up").
_MUST_SAY = ("recover one client's input exactly", "declares those peers dropped",
             "--threat malicious", "docs/secagg.md", "What curious mode gives up")


def _says_it(text: str) -> bool:
    flat = " ".join(text.split())
    return all(phrase in flat for phrase in _MUST_SAY)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_simulate_in_curious_mode_states_what_a_deviating_server_can_recover(
    protocol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "text"
    assert main(["simulate", "--protocol", protocol, "--clients", "5", "--dim", "8",
                 "--out", str(run)]) == 0
    assert _says_it(capsys.readouterr().out)
    assert _says_it(json.loads((run / "config.json").read_text())["threat_model_note"])

    assert main(["simulate", "--protocol", protocol, "--clients", "5", "--dim", "8", "--json",
                 "--out", str(tmp_path / "json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert _says_it(report["threat_model_note"])

    # the auditor reading the run directory is told too
    assert main(["audit", str(run)]) == 0
    assert _says_it(capsys.readouterr().out)
    assert main(["audit", str(run), "--json"]) == 0
    assert _says_it(json.loads(capsys.readouterr().out)["threat_model_note"])


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("secagg+", ["--threat", "malicious"]), ("plain", [])],
)
def test_no_curious_mode_note_where_curious_mode_is_not_used(
    protocol: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    assert main(["simulate", "--protocol", protocol, "--clients", "6", "--dim", "8", "--json",
                 "--out", str(run), *extra]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threat_model_note"] is None
    assert json.loads((run / "config.json").read_text())["threat_model_note"] is None


def test_demo_selftest_in_curious_mode_states_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "d"
    assert main(["demo", "--selftest", "--clients", "5", "--dim", "16", "--out", str(run)]) == 0
    assert _says_it(capsys.readouterr().out)
    assert _says_it(json.loads((run / "config.json").read_text())["threat_model_note"])


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None,
    reason="the federated demo needs torch and scikit-learn",
)
@pytest.mark.parametrize("threat", [None, "malicious"])
def test_federated_demo_states_curious_mode_and_honours_threat(
    threat: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    threads = torch.get_num_threads()
    run = tmp_path / "fl"
    argv = ["demo", "--no-dp", "--rounds", "1", "--clients", "4", "--no-baseline", "--json",
            "--out", str(run)]
    try:
        assert main([*argv, *(["--threat", threat] if threat else [])]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    report = json.loads(out.splitlines()[-1])
    config = json.loads((run / "config.json").read_text())
    assert config["parameters"]["threat"] == (threat or "curious")
    if threat is None:
        assert _says_it(out) and _says_it(report["threat_model_note"])
    else:
        assert report["threat_model_note"] is None
        assert "recover one client's input" not in out
