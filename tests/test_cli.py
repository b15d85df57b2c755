"""The ``secureagg`` command line: simulate, audit, demo, bench, help and errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secureagg.aggregators import available
from secureagg.cli import main


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_simulate_plain_json_writes_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, report = run_json(
        capsys,
        ["simulate", "--protocol", "plain", "--clients", "5", "--dim", "10", "--json",
         "--out", str(run)],
    )
    assert code == 0
    assert report["protocol"] == "plain"
    assert report["status"] == "ok"
    assert report["survivors"] == [0, 1, 2, 3, 4]
    assert report["within_bound"] is True
    assert report["max_abs_error"] <= report["error_bound"] + report["float_tolerance"]  # type: ignore[operator]
    assert report["seeded"] is False
    for name in ("config.json", "result.json", "transcript.jsonl"):
        assert (run / name).is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["clients"] == 5
    assert config["dim"] == 10
    assert config["parameters"]["secure"] is False
    result = json.loads((run / "result.json").read_text())
    assert result["survivors"] == [0, 1, 2, 3, 4]
    lines = [json.loads(x) for x in (run / "transcript.jsonl").read_text().splitlines()]
    up = [x for x in lines if x["direction"] == "up"]
    down = [x for x in lines if x["direction"] == "down"]
    assert len(up) == 5
    assert len(down) == 5
    assert {x["kind"] for x in up} == {"plain/upload"}
    assert sum(x["size"] for x in up) == result["metrics"]["totals"]["bytes_up"]


def test_simulate_text_output_and_default_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["simulate", "--protocol", "plain", "--clients", "4", "--dim", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "INSECURE" in out
    assert "survivors (4/4)" in out
    assert "upload" in out
    [run] = list((tmp_path / "runs").iterdir())
    assert run.name.endswith("-plain")
    assert f"run directory: {run}" in out


def test_seeded_dropouts_are_reproducible_and_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = []
    for k in range(2):
        code, report = run_json(
            capsys,
            ["simulate", "--protocol", "plain", "--clients", "10", "--dim", "4", "--dropout",
             "0.3", "--seed", "7", "--json", "--out", str(tmp_path / f"r{k}")],
        )
        assert code == 0
        reports.append(report)
    assert reports[0]["survivors"] == reports[1]["survivors"]
    assert len(reports[0]["survivors"]) == 7  # type: ignore[arg-type]
    assert len(reports[0]["dropouts"]) == 3  # type: ignore[arg-type]
    assert reports[0]["seeded"] is True
    assert reports[0]["max_abs_error"] == 0.0


def test_clipping_reference_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--protocol", "plain", "--clients", "3", "--dim", "50", "--clip",
                 "0.1", "--quiet", "--out", str(tmp_path / "q")])
    assert code == 0
    assert capsys.readouterr().out == ""
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    assert result["within_bound"] is True
    assert result["metrics"]["clipped"]["total"] > 0


def test_insufficient_survivors_exits_3_and_still_records_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "dead"
    code = main(["simulate", "--protocol", "plain", "--clients", "3", "--dim", "2",
                 "--dropout", "1", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 3
    assert "insufficient survivors" in err
    assert len(err.strip().splitlines()) == 1
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "insufficient_survivors"
    assert main(["audit", str(run)]) == 0
    assert "insufficient_survivors" in capsys.readouterr().out


def test_refuses_to_overwrite_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--protocol", "plain", "--clients", "2", "--dim", "2", "--quiet",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "--protocol", "nope"], "invalid choice"),
        (["simulate", "--protocol", "plain", "--clients", "0"], "--clients must be >= 1"),
        (["simulate", "--protocol", "plain", "--dropout", "1.5", "--dim", "0"], "--dim"),
        (["simulate", "--protocol", "plain", "--clip", "abc"], "number or 'none'"),
        (["simulate", "--protocol", "plain", "--threat", "malicious"], "threat"),
        (["simulate"], "--protocol"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_fail_with_a_message(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "simulate" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["simulate"], ["demo"], ["bench"], ["audit"]])
def test_every_command_has_help_with_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "usage: secureagg" in out


# ------------------------------------------------------------------------------------ audit


def test_audit_summarises_and_cross_checks_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["simulate", "--protocol", "plain", "--clients", "6", "--dim", "5", "--dropout",
                 "0.5", "--seed", "3", "--quiet", "--out", str(run)]) == 0
    assert main(["audit", str(run)]) == 0
    out = capsys.readouterr().out
    assert "plain/upload" in out
    assert "survivors (3/6)" in out
    assert "seeded" in out
    assert "FAIL" not in out
    code, report = run_json(capsys, ["audit", str(run), "--json"])
    assert code == 0
    assert report["received_by_kind"]["plain/upload"]["count"] == 3  # type: ignore[index]
    assert all(c["ok"] for c in report["checks"])  # type: ignore[attr-defined]

    # An altered transcript no longer matches the recorded metrics.
    path = run / "transcript.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["size"] += 1
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert main(["audit", str(run)]) == 1
    assert "FAIL" in capsys.readouterr().out

    path.write_text("{not json\n")
    assert main(["audit", str(run)]) == 2
    assert "transcript.jsonl:1" in capsys.readouterr().err


def test_audit_of_a_missing_directory_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(tmp_path / "none")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["audit", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------ demo/bench


@pytest.mark.skipif(
    importlib.util.find_spec("secureagg.crypto.shamir") is None
    or importlib.util.find_spec("secureagg.crypto.encoding") is None,
    reason="shamir/encoding not written yet",
)
def test_demo_selftest_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "demo-run"
    assert main(["demo", "--selftest", "--clients", "10", "--dim", "2000", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    for name in ("x25519", "hkdf", "aead", "ed25519", "prg", "shamir", "encoding", "codec"):
        assert f"ok    {name}" in out
    assert "FAIL" not in out
    assert "result: ok" in out
    assert "client 9 silent from 'advertise'" in out
    # The demo's run directory is a valid run for the auditor.
    result = json.loads((run / "result.json").read_text())
    assert result["within_bound"] is True
    assert result["masked_input_chi_square"] < 370
    assert main(["audit", str(run)]) == 0


def _broken_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    from secureagg import selftest

    def broken() -> str:
        raise selftest.SelfTestError("wrong answer")

    monkeypatch.setattr(selftest, "CHECKS", (("broken", broken), *selftest.CHECKS[:1]))
    results = selftest.run_selftest(out=None)
    assert [(r.name, r.ok) for r in results] == [("broken", False), ("x25519", True)]
    monkeypatch.setattr("secureagg.cli.demo.run_selftest", selftest.run_selftest)


def test_demo_reports_a_failing_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _broken_selftest(monkeypatch)
    argv = ["demo", "--selftest", "--clients", "5", "--dim", "100", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL  broken" in out
    assert "FAILED: broken" in out
    # The federated demo refuses to train on an installation that failed its self-test.
    assert main(["demo", "--no-dp", "--out", str(tmp_path / "fl")]) == 1
    out = capsys.readouterr().out
    assert "1/2 passed; FAILED: broken" in out
    assert not (tmp_path / "fl").exists()


needs_fl = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None,
    reason="the federated demo needs torch and scikit-learn",
)


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """The demo runs torch on one thread (its model is tiny); restore the setting afterwards."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@needs_fl
@pytest.mark.usefixtures("torch_threads")
def test_demo_trains_federated_and_compares_with_plaintext(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "fl"
    argv = ["demo", "--no-dp", "--rounds", "3", "--clients", "4", "--out", str(run), "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads(lines[-1])
    assert report["protocol"] == "secagg+"
    assert report["rounds_completed"] == 3
    assert report["final_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert report["baseline"]["rounds_completed"] == 3
    # Same split, same start, same local training: only quantization separates the two.
    assert abs(report["accuracy_difference_pp"]) <= 1.0
    assert report["epsilon"] is None
    text = "\n".join(lines)
    assert "self-test of the cryptographic primitives: 8/8 passed" in text
    assert "round   3/3  accuracy" in text
    assert "plaintext FedAvg, same split" in text
    assert f"run directory: {run}" in text
    history = json.loads((run / "history.json").read_text())
    assert history["completed_rounds"] == 3
    assert json.loads((run / "config.json").read_text())["protocol"] == "secagg+"
    assert (run / "baseline-plain" / "history.json").is_file()
    assert main(["audit", str(run)]) == 0
    assert "secagg/masked-input" in capsys.readouterr().out


@needs_fl
@pytest.mark.usefixtures("torch_threads")
def test_demo_quiet_prints_only_the_result(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["demo", "--no-dp", "--rounds", "1", "--clients", "3", "--quiet", "--no-baseline",
            "--protocol", "plain", "--out", str(tmp_path / "q")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "round " not in out
    assert out.startswith("\nresult (plain): test accuracy")
    assert "plaintext FedAvg" not in out


@needs_fl
@pytest.mark.skipif(importlib.util.find_spec("opacus") is None, reason="DP-SGD needs opacus")
@pytest.mark.usefixtures("torch_threads")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_with_dp_reports_epsilon(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "dp"
    argv = ["demo", "--rounds", "2", "--clients", "3", "--epsilon", "4", "--no-baseline",
            "--quiet", "--json", "--out", str(run)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads(lines[-1])
    assert report["dp"] is True
    assert 0 < report["epsilon"] <= 4.0  # DP-SGD per client, calibrated for the two rounds
    assert report["user_epsilon"] > 1000  # distributed DP at z=0.01: reported, and vacuous
    assert any("per client at δ = 1e-05" in line for line in lines)
    ledger = json.loads((run / "privacy_ledger.json").read_text())
    assert ledger["differential_privacy"] is True
    assert len(ledger["sample_level"]["streams"]) == 3


@needs_fl
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method (Linux)")
@pytest.mark.usefixtures("torch_threads")
def test_demo_with_workers_trains_the_same_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reports = {}
    for workers in ("1", "2"):
        argv = ["demo", "--no-dp", "--protocol", "plain", "--rounds", "2", "--clients", "3",
                "--quiet", "--no-baseline", "--json", "--workers", workers,
                "--out", str(tmp_path / workers)]
        assert main(argv) == 0
        reports[workers] = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert json.loads((tmp_path / workers / "config.json").read_text())["workers"] == int(
            workers
        )
    assert reports["2"]["final_accuracy"] == reports["1"]["final_accuracy"]
    a = torch_load(tmp_path / "1" / "model.pt")
    b = torch_load(tmp_path / "2" / "model.pt")
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)


def torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["demo", "--rounds", "0", "--no-dp"], "--rounds must be in"),
        (["demo", "--dropout", "1.5", "--no-dp"], "--dropout must be in"),
        (["demo", "--workers", "0", "--no-dp"], "--workers must be None, 'auto' or an integer"),
        (["demo", "--workers", "lots", "--no-dp"], "--workers must be an integer >= 1 or 'auto'"),
        (["demo", "--protocol", "nope"], "invalid choice"),
    ],
)
def test_demo_bad_arguments(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if importlib.util.find_spec("torch") is None and "invalid choice" not in needle:
        pytest.skip("needs torch")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_bench_lists_scripts_honestly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bench_masks.py").write_text('"""Mask expansion throughput."""\nprint(1)\n')
    assert main(["bench", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bench_masks.py" in out
    assert "Mask expansion throughput." in out
    assert "does not run" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "--dir", str(empty)]) == 0
    assert "no benchmark scripts" in capsys.readouterr().out


# ------------------------------------------------------------------- other registered protocols


@pytest.mark.skipif("secagg+" not in available(), reason="secagg+ not available")
def test_simulate_secagg_plus_within_its_stated_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_json(
        capsys,
        ["simulate", "--protocol", "secagg+", "--clients", "8", "--dim", "20", "--dropout",
         "0.25", "--seed", "2", "--json", "--out", str(tmp_path / "s")],
    )
    assert code == 0
    assert report["within_bound"] is True
    assert report["error_bound"] > 0  # type: ignore[operator]
    assert 6 <= len(report["survivors"]) <= 8  # type: ignore[arg-type]


def test_demo_split_measures_accuracy_attacks_and_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("tenseal")
    run = tmp_path / "split"
    code = main(["demo", "split", "--quick", "--rounds", "2", "--out", str(run), "--json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    acc = summary["accuracy"]
    assert set(acc) == {"unsplit", "vanilla", "u-shaped", "u-shaped-activation-dp",
                        "u-shaped-encrypted-cut"}
    assert acc["u-shaped"] > 0.7 and acc["unsplit"] > 0.7
    leaks = summary["label_leakage"]
    assert min(leaks["vanilla/off"]) > 0.9  # the attacks read the labels without protection
    assert max(leaks["vanilla/Marvell"]) <= 0.65
    assert summary["inversion"]["no protection"] < 0.5  # the probe reconstructs the images
    report = json.loads((run / "split.json").read_text())
    assert report["settings"]["clients"] == 3
    assert any("encrypted cut layer" in line for line in lines)
    # the auditor reads the split run: sealed, and each configuration's ε in its statement
    assert main(["audit", str(run), "--no-html"]) == 0
    audit = json.loads((run / "report.json").read_text())
    assert audit["kind"] == "split" and audit["integrity"]["sealed"]
    dp = [c for c in audit["privacy"]["split_configurations"] if c["differential_privacy"]]
    assert dp and all(c["epsilon"] > 0 and c["does_not_cover"] is not None for c in dp)
    assert any("u-shaped-activation-dp" in p and "does NOT cover" in p
               for p in audit["statement"])
    # ActivationDP and the encrypted cut's gradient noise, re-accounted with dp-accounting
    independent = [c for c in audit["checks"] if c["group"] == "independent"]
    assert len(independent) >= len(dp) and all(c["ok"] for c in independent)
    assert audit["privacy"]["independent"]["verdict"] == "ok"
