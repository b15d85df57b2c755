"""``secureagg audit`` catches tampering, names the file and the reason, and passes untouched runs.

Two kinds of tamperer: one who edits files after the run was sealed (the seal names the file, the
transcript chain the line), and one who also holds a key and re-seals the edited run (the checks
that recompute from the transcript and the ledger name what no longer adds up; a pinned operator
key names the foreign signature).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secureagg.audit import seal
from secureagg.audit.rundir import RunDirectory
from secureagg.cli import main
from secureagg.crypto import signing


def audit(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["audit", str(run), "--json", "--no-html", *extra])
    report = json.loads(capsys.readouterr().out)
    return code, report


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["ok"] is False]


def reseal(run: Path, tmp_path: Path, kind: str) -> Path:
    """A tamperer with a key of their own seals the edited run again."""
    key = signing.SigningKey.generate()
    from cryptography.hazmat.primitives import serialization

    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    path = tmp_path / f"tamperer-{kind}.pem"
    path.write_bytes(pem)
    RunDirectory(run).seal(kind=kind, key_path=path)
    return path


def edit_json(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.fixture
def sim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = tmp_path / "sim"
    assert main(["simulate", "--protocol", "secagg+", "--clients", "8", "--dim", "50",
                 "--dropout", "0.3", "--seed", "11", "--quiet", "--out", str(run)]) == 0
    return run


def test_an_untouched_one_round_run_passes(sim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(sim, capsys)
    assert code == 0, failed(report)
    assert report["verdict"] == "pass"
    assert report["format"] == "secureagg/audit-report/v1"
    assert (sim / "report.json").is_file()
    assert any("SEEDED" in p for p in report["statement"])  # --seed 11: said loudly


def test_a_survivor_added_is_caught_by_the_seal_and_after_resealing_by_the_transcript(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = json.loads((sim / "result.json").read_text())
    config = json.loads((sim / "config.json").read_text())
    dropped = sorted(int(c) for c in config["dropouts"] if int(c) not in result["survivors"])
    assert dropped, "the fixture must drop someone before the masked input"
    edit_json(sim / "result.json", lambda d: d["survivors"].append(dropped[0]))
    code, report = audit(sim, capsys)
    assert code == 1
    assert any(c["file"] == "result.json" and "changed after the run was sealed" in c["detail"]
               for c in failed(report))
    reseal(sim, tmp_path, "simulate")
    code, report = audit(sim, capsys)
    assert code == 1
    survivors = [c for c in failed(report) if c["group"] == "survivors"]
    assert survivors and str(dropped[0]) in survivors[0]["detail"]
    assert result["survivors"] != json.loads((sim / "result.json").read_text())["survivors"]


def test_a_raised_error_bound_and_error_are_caught(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def change(d: dict[str, Any]) -> None:
        d["max_abs_error"], d["error_bound"] = 5.0, 6.7

    edit_json(sim / "result.json", change)
    reseal(sim, tmp_path, "simulate")
    code, report = audit(sim, capsys)
    assert code == 1
    errors = [c for c in failed(report) if c["group"] == "error"]
    assert len(errors) == 2 and all(c["file"] == "result.json" for c in errors)
    assert "recomputed" in errors[0]["detail"]


def test_edited_protocol_parameters_are_caught_by_recomputing_them(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def change(d: dict[str, Any]) -> None:
        d["parameters"]["failure_probability"] = 1e-12  # a rosier figure than the graph gives
        d["parameters"]["corrupted_neighbours"] = 0  # and a weaker adversary
        d["parameters"]["bits"] = 16  # a ring the sum can overflow

    edit_json(sim / "config.json", change)
    reseal(sim, tmp_path, "simulate")
    code, report = audit(sim, capsys)
    assert code == 1
    names = " ".join(c["check"] for c in failed(report) if c["group"] == "parameters")
    assert "failure probability recomputed" in names
    assert "corrupted neighbours recomputed" in names
    assert "no overflow" in names


def test_an_empty_result_is_caught(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (sim / "result.json").write_text("{}")
    reseal(sim, tmp_path, "simulate")
    code, report = audit(sim, capsys)
    assert code == 1
    assert any(c["file"] == "result.json" and "no status" in c["detail"] for c in failed(report))


def _transcript(run: Path) -> list[str]:
    return (run / "transcript.jsonl").read_text().splitlines()


def test_an_edited_hash_is_caught_at_its_line(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = _transcript(sim)
    entry = json.loads(lines[4])
    entry["sha256"] = "0" * 64
    lines[4] = json.dumps(entry)
    (sim / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    reseal_attempt = pytest.raises(seal.ChainError)  # the sealer itself refuses a broken chain
    with reseal_attempt:
        reseal(sim, tmp_path, "simulate")
    code, report = audit(sim, capsys)
    assert code == 1
    details = " ".join(c["detail"] for c in failed(report))
    assert "transcript.jsonl line 5" in details
    assert "transcript.jsonl: changed after the run was sealed" in details


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_deleted_transcript_line_is_caught(
    sim: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    lines = _transcript(sim)
    index = len(lines) // 2 if where == "middle" else len(lines) - 1
    del lines[index]
    (sim / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    code, report = audit(sim, capsys)
    assert code == 1
    details = " ".join(c["detail"] for c in failed(report))
    if where == "middle":
        assert f"transcript.jsonl line {index + 1}" in details
    else:  # the chain still holds: only the sealed head and count show the missing line
        assert "lines were removed from or added to its end" in details


def test_a_signature_from_another_key_is_caught(
    sim: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    original = (sim / seal.SEAL_PUBLIC_KEY).read_bytes()
    pinned = tmp_path / "operator.pub"
    pinned.write_bytes(original)
    code, report = audit(sim, capsys, "--operator-key", str(pinned))
    assert code == 0 and report["integrity"]["pinned"] is True
    reseal(sim, tmp_path, "simulate")  # nothing edited, but sealed by someone else
    code, report = audit(sim, capsys, "--operator-key", str(pinned))
    assert code == 1
    assert any("not by the operator key you gave" in c["detail"] for c in failed(report))
    # a signature that does not match the seal's own key
    (sim / seal.SEAL_SIGNATURE).write_bytes(signing.SigningKey.generate().sign(
        (sim / seal.SEAL).read_bytes()))
    code, report = audit(sim, capsys)
    assert code == 1
    assert any(c["file"] == seal.SEAL_SIGNATURE for c in failed(report))


def test_an_unsealed_run_fails(sim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (seal.SEAL, seal.SEAL_SIGNATURE, seal.SEAL_PUBLIC_KEY):
        (sim / name).unlink()
    code, report = audit(sim, capsys)
    assert code == 1
    assert any(c["file"] == seal.SEAL and "not sealed" in c["detail"] for c in failed(report))


def test_a_file_added_after_sealing_is_caught(
    sim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sim / "extra.json").write_text("{}")
    code, report = audit(sim, capsys)
    assert code == 1
    assert any(c["file"] == "extra.json" and "added after" in c["detail"] for c in failed(report))


def test_kept_message_bytes_are_rechecked_against_every_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "kept"
    assert main(["simulate", "--protocol", "secagg+", "--clients", "6", "--dim", "40",
                 "--keep-messages", "--quiet", "--out", str(run)]) == 0
    ups = [json.loads(line) for line in _transcript(run) if '"direction": "up"' in line]
    blob = (run / "messages.bin").read_bytes()
    assert len(blob) == sum(e["size"] for e in ups)  # the cost: exactly the uplink's bytes
    code, report = audit(run, capsys)
    assert code == 0, failed(report)
    assert any(c["file"] == "messages.bin" and c["ok"] for c in report["checks"])
    flipped = bytearray(blob)
    flipped[ups[0]["size"] + ups[1]["size"] + 3] ^= 1  # inside the third message
    (run / "messages.bin").write_bytes(bytes(flipped))
    reseal(run, tmp_path, "simulate")
    code, report = audit(run, capsys)
    assert code == 1
    assert any(c["file"] == "messages.bin" and "line 3:" in c["detail"] for c in failed(report))


# ------------------------------------------------------------------------------ federated

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")


@pytest.fixture
def fed(tmp_path: Path) -> Path:
    from secureagg.fl import Failures, FederatedDP, FederatedRun
    from tests.fl.conftest import dp_train, make_evaluate, make_loaders, make_model, sgd

    loaders = make_loaders(5)
    run_dir = tmp_path / "fed"
    FederatedRun(
        make_model(), train=dp_train, optimizer=sgd, client_loaders=loaders,
        evaluate=make_evaluate(loaders), aggregator="secagg+", rounds=3, seed=5,
        dp=FederatedDP(epsilon=4.0, local_epochs=1, distributed_noise_multiplier=0.5,
                       update_clip=1.0),
        failures=Failures(schedule={1: {3: "masked"}, 2: {0: "advertise"}}),
        progress=False, run_dir=run_dir, keep_messages=True,
    ).run()
    return run_dir


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_federated_runs_pass_and_tampering_with_rounds_or_ledger_is_caught(
    fed: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, report = audit(fed, capsys)
    assert code == 0, failed(report)
    assert report["kind"] == "federated"
    assert any(c["file"] == "messages.bin" and c["ok"] for c in report["checks"])
    assert report["privacy"]["levels"]["sample"]["epsilon_max"] <= 4.0
    history = json.loads((fed / "history.json").read_text())
    ledger = json.loads((fed / "privacy_ledger.json").read_text())
    assert any(r["dropouts"] for r in history["rounds"])

    # a round's dropouts removed, then re-sealed
    def drop_dropouts(d: dict[str, Any]) -> None:
        for r in d["rounds"]:
            r["dropouts"] = {}

    edit_json(fed / "history.json", drop_dropouts)
    code, report = audit(fed, capsys)
    assert code == 1 and any(c["file"] == "history.json" for c in failed(report))
    reseal(fed, tmp_path, "federated")
    code, report = audit(fed, capsys)
    assert code == 1
    assert any("absence is not recorded" in c["detail"] for c in failed(report))

    # the history restored; a ledger entry removed (the last round's noise), then re-sealed
    (fed / "history.json").write_text(json.dumps(history))

    def remove_round(d: dict[str, Any]) -> None:
        events = d["user_level"]["events"]
        last = max(i for i, e in enumerate(events) if e["kind"] == "distributed_noise_round")
        del events[last]

    edit_json(fed / "privacy_ledger.json", remove_round)
    reseal(fed, tmp_path, "federated")
    code, report = audit(fed, capsys)
    assert code == 1
    ledger_failures = [c for c in failed(report) if c["file"] == "privacy_ledger.json"]
    assert any("have no noise event" in c["detail"] for c in ledger_failures)
    assert any("replayed" in c["check"] for c in ledger_failures)  # the stated ε is now stale
    assert ledger["user_level"]["events"]  # the fixture had user-level events to remove


@pytest.mark.filterwarnings("ignore")
def test_the_canary_audit_puts_a_lower_bound_beside_the_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    run = tmp_path / "demo"
    assert main(["demo", "--rounds", "2", "--clients", "5", "--no-baseline", "--quiet",
                 "--out", str(run)]) == 0
    code, report = audit(run, capsys, "--canaries", "300", "--canary-rounds", "8",
                         "--canary-seed", "3")
    assert code == 0, failed(report)
    canary = report["canary"]
    assert canary["configuration"]["target_epsilon"] == 8.0 and canary["seeded"]
    dp, control = canary["dp"], canary["control_no_dp"]
    assert 7.0 < dp["claimed_epsilon"] <= 8.0
    assert dp["epsilon_lower_bound"] < dp["claimed_epsilon"]
    assert control["claimed_epsilon"] is None and control["epsilon_lower_bound"] > 1.0
    assert any("Empirical lower bound" in p and "detects leakage" in p
               for p in report["statement"])
