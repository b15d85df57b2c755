"""``secureagg audit`` on a private ensemble's run directory (issue 16, item 6).

One small demo run (10 parties, 2 batches, a party dropped in each batch) is audited as written:
every check passes. Then copies of it are altered the way a careless or dishonest operator
might, and the audit's own checks must fail on each: a batch's noise event removed from the
ledger, a lower ε stated than the ledger gives, a survivor who sent the server no input, an ε
above the budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from secureagg.audit.checks import Check, load_run, run_checks
from secureagg.cli import main
from secureagg.cli.audit_run import _replay


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from secureagg.demos.ensemble import run_ensemble_demo

    out = tmp_path_factory.mktemp("ensemble") / "run"
    with pytest.warns(Warning, match="NOT"):  # seeded: reproducible, NOT private
        run_ensemble_demo(out=out, parties=10, queries=40, batch=20, epsilon=8.0, dropout=0.1,
                          workers=1, seed=5, quiet=True, time_sequential=False)
    return out


def _checks(path: Path) -> list[Check]:
    return run_checks(load_run(path), replay=_replay)


def _failed(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if c.ok is False]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, fn: Any) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    fn(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_the_run_directory_is_an_ensemble_run_and_every_check_passes(ensemble_run: Path) -> None:
    run = load_run(ensemble_run)
    assert run.kind == "ensemble" and run.protocol == "secagg+"
    assert [rd.round for rd in run.rounds] == [0, 1]
    assert all(rd.status == "ok" and len(rd.survivors) == 9 and len(rd.dropouts) == 1
               for rd in run.rounds)
    checks = _checks(ensemble_run)
    assert _failed(checks) == []
    names = {c.name for c in checks if c.ok}
    assert "every released aggregate is covered by the user-level ledger, and nothing else" in names
    assert "the ensemble's stated ε is not below the replayed ledger's" in names
    assert sum(n.startswith("round ") and "survivors" in n for n in names) == 2
    # the transcript names the parties: every survivor sent its masked input in its batch
    inputs = {(line["round"], line["sender"]) for line in run.transcript
              if line["kind"] == "secagg/masked-input"}
    assert inputs == {(rd.round, c) for rd in run.rounds for c in rd.survivors}


def test_secureagg_audit_passes_and_writes_the_report(ensemble_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(ensemble_run, tmp_path / "run")
    assert main(["audit", str(run), "--no-html"]) == 0
    text = capsys.readouterr().out
    assert "Private ensemble (PATE with GNMax)" in text
    assert "batches: 2 of 2 answered; parties in each sum: [9, 9]" in text
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["verdict"] == "pass" and report["kind"] == "ensemble"


def test_a_batch_missing_from_the_ledger_fails(ensemble_run: Path, tmp_path: Path) -> None:
    run = _copy(ensemble_run, tmp_path / "run")

    def drop_last_event(doc: dict[str, Any]) -> None:
        user = doc["user_level"]
        user["events"] = [e for e in user["events"] if e.get("round_id") != 1]

    _edit(run / "privacy_ledger.json", drop_last_event)
    failed = _failed(_checks(run))
    covered = "every released aggregate is covered by the user-level ledger, and nothing else"
    assert covered in failed
    assert "user-level ledger replayed to the ε it states" in failed
    assert main(["audit", str(run), "--no-html"]) != 0  # and the seal no longer verifies


def test_a_stated_epsilon_below_the_ledger_fails(ensemble_run: Path, tmp_path: Path) -> None:
    run = _copy(ensemble_run, tmp_path / "run")

    def halve(doc: dict[str, Any]) -> None:
        doc["epsilon"]["party_level"] /= 2

    _edit(run / "ensemble.json", halve)
    assert "the ensemble's stated ε is not below the replayed ledger's" in _failed(_checks(run))


def test_a_record_level_epsilon_below_the_party_level_fails(ensemble_run: Path,
                                                            tmp_path: Path) -> None:
    run = _copy(ensemble_run, tmp_path / "run")

    def lower(doc: dict[str, Any]) -> None:
        doc["epsilon"]["record_level"] = doc["epsilon"]["party_level"] / 4

    _edit(run / "ensemble.json", lower)
    assert any(n.startswith("ε per record is stated no lower") for n in _failed(_checks(run)))


def test_a_survivor_without_an_input_fails(ensemble_run: Path, tmp_path: Path) -> None:
    run = _copy(ensemble_run, tmp_path / "run")

    def add_dropped_party(doc: dict[str, Any]) -> None:
        batch = doc["batches"][0]
        batch["survivors"].append(int(next(iter(batch["dropped"]))))

    _edit(run / "ensemble.json", add_dropped_party)
    failed = _failed(_checks(run))
    assert "round 0: survivors against the dropouts and the senders of inputs" in failed


def test_an_epsilon_over_the_budget_fails(ensemble_run: Path, tmp_path: Path) -> None:
    run = _copy(ensemble_run, tmp_path / "run")

    def tighter_budget(doc: dict[str, Any]) -> None:
        doc["epsilon"]["budget"] = doc["epsilon"]["party_level"] / 2

    _edit(run / "ensemble.json", tighter_budget)
    assert "the ensemble's ε is within its budget" in _failed(_checks(run))
