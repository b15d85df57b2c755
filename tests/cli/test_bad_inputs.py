"""Every command of ``secureagg`` ends bad input with one error line and a non-zero exit code.

Each case runs through the real entry point (:func:`secureagg.cli.main`) in this process. An
exception escaping ``main`` is what the installed command would print as a traceback, so the test
fails on it; the captured output must not hold a traceback either, and the error must name the
problem. Placeholders in ``argv``: ``{tmp}`` a fresh empty directory, ``{file}`` a regular file,
``{run}`` a run directory written by ``simulate`` whose files a case may replace first.
"""

from __future__ import annotations

import importlib.util
import json
import traceback
from pathlib import Path

import pytest

from secureagg.cli import main

_HAS_TORCH = importlib.util.find_spec("torch") is not None and (
    importlib.util.find_spec("sklearn") is not None
)

_TRANSCRIPT_LINE = {
    "direction": "up",
    "stage": "upload",
    "kind": "plain/upload",
    "sender": 0,
    "recipient": -1,
    "round_id": 0,
    "size": 10,
    "sha256": "0" * 64,
}

# (id, argv, needle in stderr, {file in {run}: new content} or None)
_CASES: list[tuple[str, list[str], str, dict[str, str] | None]] = [
    # -- the command itself
    ("unknown-command", ["frobnicate"], "invalid choice", None),
    ("unknown-option", ["--bogus"], "unrecognized arguments", None),
    # -- simulate
    ("sim-protocol-empty", ["simulate", "--protocol", ""], "invalid choice", None),
    ("sim-protocol-wrong-case", ["simulate", "--protocol", "SecAgg"], "invalid choice", None),
    ("sim-clients-negative", ["simulate", "--protocol", "plain", "--clients", "-1"],
     "--clients must be >= 1", None),
    ("sim-clients-text", ["simulate", "--protocol", "plain", "--clients", "ten"],
     "invalid int value", None),
    ("sim-clients-huge", ["simulate", "--protocol", "plain", "--clients", "1000000000000",
                          "--dim", "1"], "memory", None),
    ("sim-dim-zero", ["simulate", "--protocol", "plain", "--dim", "0"], "--dim must be >= 1",
     None),
    ("sim-dim-negative", ["simulate", "--protocol", "plain", "--dim", "-5"],
     "--dim must be >= 1", None),
    ("sim-dim-huge", ["simulate", "--protocol", "plain", "--dim", "10000000000"], "memory", None),
    ("sim-dim-float", ["simulate", "--protocol", "plain", "--dim", "1e3"], "invalid int value",
     None),
    ("sim-dropout-negative", ["simulate", "--protocol", "plain", "--dropout", "-0.1"],
     "--dropout", None),
    ("sim-dropout-nan", ["simulate", "--protocol", "plain", "--dropout", "nan"], "--dropout",
     None),
    ("sim-dropout-text", ["simulate", "--protocol", "plain", "--dropout", "half"],
     "invalid float value", None),
    ("sim-clip-zero", ["simulate", "--protocol", "plain", "--clip", "0"], "--clip", None),
    ("sim-clip-nan", ["simulate", "--protocol", "plain", "--clip", "nan"], "--clip", None),
    ("sim-clip-inf", ["simulate", "--protocol", "plain", "--clip", "inf"], "--clip", None),
    ("sim-clip-none-secagg", ["simulate", "--protocol", "secagg", "--clip", "none"],
     "clip is required", None),
    ("sim-threat-plain", ["simulate", "--protocol", "plain", "--threat", "malicious"], "threat",
     None),
    ("sim-threat-unknown", ["simulate", "--protocol", "secagg", "--threat", "evil"],
     "invalid choice", None),
    ("sim-seed-negative", ["simulate", "--protocol", "plain", "--seed", "-1"],
     "--seed must be a non-negative integer", None),
    ("sim-seed-text", ["simulate", "--protocol", "plain", "--seed", "abc"], "invalid int value",
     None),
    ("sim-out-empty", ["simulate", "--protocol", "plain", "--dim", "2", "--out", ""],
     "--out must not be empty", None),
    ("sim-out-is-a-file", ["simulate", "--protocol", "plain", "--dim", "2", "--out", "{file}"],
     "is not a directory", None),
    ("sim-out-under-a-file", ["simulate", "--protocol", "plain", "--dim", "2", "--out",
                              "{file}/sub"], "is not a directory", None),
    ("sim-out-unwritable", ["simulate", "--protocol", "plain", "--dim", "2", "--out",
                            "/proc/secureagg-cannot-write-here"], "cannot", None),
    ("sim-max-memory-zero", ["simulate", "--protocol", "plain", "--max-memory", "0"],
     "--max-memory", None),
    ("sim-max-memory-text", ["simulate", "--protocol", "plain", "--max-memory", "lots"],
     "--max-memory", None),
    ("sim-max-memory-empty", ["simulate", "--protocol", "plain", "--max-memory", ""],
     "--max-memory", None),
    ("sim-max-seconds-negative", ["simulate", "--protocol", "plain", "--max-seconds", "-1"],
     "--max-seconds", None),
    ("sim-max-seconds-nan", ["simulate", "--protocol", "plain", "--max-seconds", "nan"],
     "--max-seconds", None),
    # (parameters are chosen for 3000 clients since the tail bounds run in log space; the
    # complete graph's 3000^2 key agreements then exceed the time limit)
    ("sim-secagg-too-many-clients", ["simulate", "--protocol", "secagg", "--clients", "3000",
                                     "--threat", "malicious", "--dim", "1"], "3,000 clients",
     None),
    ("sim-ckks-one-client", ["simulate", "--protocol", "ckks", "--clients", "1", "--dim", "3"],
     "num_clients", None),
    # -- demo (the checks below run before any training)
    ("demo-seed-negative", ["demo", "--seed", "-1", "--no-dp"],
     "--seed must be a non-negative integer", None),
    ("demo-seed-text", ["demo", "--seed", "x"], "invalid int value", None),
    ("demo-tls-without-flower", ["demo", "--tls", "--no-dp"], "--tls applies only", None),
    ("demo-flower-split", ["demo", "split", "--engine", "flower"], "--engine flower runs", None),
    ("demo-flower-dropout", ["demo", "--engine", "flower", "--dropout", "0.1"],
     "dropouts are real", None),
    ("demo-engine-bogus", ["demo", "--engine", "ray"], "invalid choice", None),
    ("flower-keygen-exists", ["flower", "keygen", "{file}"], "never overwritten", None),
    ("demo-out-empty", ["demo", "--out", "", "--no-dp"], "--out must not be empty", None),
    ("demo-out-is-a-file", ["demo", "--out", "{file}", "--no-dp"], "is not a directory", None),
    ("demo-selftest-dim-zero", ["demo", "--selftest", "--dim", "0", "--clients", "5"],
     "--dim must be >= 1", None),
    ("demo-selftest-dim-negative", ["demo", "--selftest", "--dim", "-3", "--clients", "5"],
     "--dim must be >= 1", None),
    ("demo-selftest-dim-huge", ["demo", "--selftest", "--dim", "10000000000"], "memory", None),
    ("demo-selftest-clients-one", ["demo", "--selftest", "--clients", "1", "--dim", "10"],
     "num_clients", None),
    ("demo-selftest-clients-huge", ["demo", "--selftest", "--clients", "100000", "--dim", "10"],
     "estimated", None),
    ("demo-dim-without-selftest", ["demo", "--dim", "5", "--no-dp"], "--dim", None),
    ("demo-quick-without-split", ["demo", "--quick", "--no-dp"], "--quick", None),
    ("demo-split-seed", ["demo", "split", "--seed", "1"], "--seed", None),
    ("demo-split-clients-zero", ["demo", "split", "--clients", "0"], "--clients", None),
    ("demo-split-epsilon-nan", ["demo", "split", "--epsilon", "nan"], "--epsilon", None),
    ("demo-split-out-is-a-file", ["demo", "split", "--out", "{file}"], "is not a directory",
     None),
    ("demo-threat-plain", ["demo", "--threat", "malicious", "--protocol", "plain", "--no-dp"],
     "--threat", None),
    # -- bench
    ("bench-dir-missing", ["bench", "--dir", "{tmp}/nope"], "is not a directory", None),
    ("bench-dir-is-a-file", ["bench", "--dir", "{file}"], "is not a directory", None),
    ("bench-dir-empty-string", ["bench", "--dir", ""], "--dir must not be empty", None),
    # -- audit
    ("audit-empty-string", ["audit", ""], "RUN_DIR must not be empty", None),
    ("audit-missing", ["audit", "{tmp}/none"], "not a directory", None),
    ("audit-a-file", ["audit", "{file}"], "not a directory", None),
    ("audit-empty-dir", ["audit", "{tmp}"], "config.json is missing", None),
    ("audit-config-garbage", ["audit", "{run}"], "config.json cannot be read as JSON",
     {"config.json": "{garbage"}),
    ("audit-config-binary", ["audit", "{run}"], "config.json cannot be read",
     {"config.json": "\udcff\udcfe"}),
    ("audit-config-a-list", ["audit", "{run}"], "must hold JSON objects", {"config.json": "[]"}),
    ("audit-result-garbage", ["audit", "{run}"], "result.json cannot be read as JSON",
     {"result.json": "nope"}),
    ("audit-transcript-garbage", ["audit", "{run}"], "transcript.jsonl:1",
     {"transcript.jsonl": "{not json\n"}),
    ("audit-transcript-size-text", ["audit", "{run}"], "size",
     {"transcript.jsonl": json.dumps({**_TRANSCRIPT_LINE, "size": "10"}) + "\n"}),
    ("audit-transcript-sender-text", ["audit", "{run}"], "sender",
     {"transcript.jsonl": json.dumps({**_TRANSCRIPT_LINE, "sender": "zero"}) + "\n"}),
    ("audit-transcript-kind-number", ["audit", "{run}"], "kind",
     {"transcript.jsonl": json.dumps({**_TRANSCRIPT_LINE, "kind": 7}) + "\n"}),
    ("audit-result-survivors-number", ["audit", "{run}"], "survivors",
     {"result.json": json.dumps({"status": "ok", "survivors": 5, "metrics": {}})}),
    ("audit-result-metrics-list", ["audit", "{run}"], "metrics",
     {"result.json": json.dumps({"status": "ok", "survivors": [], "metrics": []})}),
    ("audit-result-totals-text", ["audit", "{run}"], "totals",
     {"result.json": json.dumps({"status": "ok", "survivors": [], "metrics": {"totals": "x"}})}),
    ("audit-result-stage-row-number", ["audit", "{run}"], "stages",
     {"result.json": json.dumps({"status": "ok", "survivors": [],
                                 "metrics": {"stages": {"upload": 1}}})}),
    ("audit-result-stage-bytes-text", ["audit", "{run}"], "bytes_up",
     {"result.json": json.dumps(
         {"status": "ok", "survivors": [], "metrics": {"stages": {"upload": {
             "bytes_up": "many", "bytes_down": 0, "messages_up": 0, "messages_down": 0}}}})}),
    ("audit-result-rejected-numbers", ["audit", "{run}"], "rejected",
     {"result.json": json.dumps({"status": "ok", "survivors": [],
                                 "metrics": {"rejected": [1, 2]}})}),
    ("audit-config-dropouts-bad-id", ["audit", "{run}"], "dropouts",
     {"config.json": json.dumps({"protocol": "plain", "clients": 3,
                                 "dropouts": {"x": "upload"}})}),
    ("audit-config-clients-text", ["audit", "{run}"], "clients",
     {"config.json": json.dumps({"protocol": "plain", "clients": "three"})}),
    ("audit-config-parameters-list", ["audit", "{run}"], "parameters",
     {"config.json": json.dumps({"protocol": "plain", "clients": 3, "parameters": [1]})}),
]

_NEEDS_TORCH = {
    "demo-seed-negative", "demo-out-empty", "demo-out-is-a-file", "demo-dim-without-selftest",
    "demo-quick-without-split", "demo-threat-plain",
}


@pytest.fixture(scope="module")
def written_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("good") / "run"
    code = main(["simulate", "--protocol", "plain", "--clients", "3", "--dim", "4", "--quiet",
                 "--out", str(run)])
    assert code == 0
    return run


@pytest.mark.parametrize(
    ("argv", "needle", "replace"),
    [pytest.param(argv, needle, replace, id=name) for name, argv, needle, replace in _CASES],
)
def test_bad_input_ends_in_one_error_line_and_nonzero_exit(
    argv: list[str],
    needle: str,
    replace: dict[str, str] | None,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if request.node.callspec.id in _NEEDS_TORCH and not _HAS_TORCH:
        pytest.skip("the federated demo needs torch and scikit-learn")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default run directory must not land in the repository
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a directory\n")
    run = tmp_path / "run"
    if replace is not None:
        source = request.getfixturevalue("written_run")
        run.mkdir()
        for name in ("config.json", "result.json", "transcript.jsonl"):
            (run / name).write_bytes((source / name).read_bytes())
        for name, text in replace.items():
            (run / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    argv = [
        a.replace("{tmp}", str(empty)).replace("{file}", str(a_file)).replace("{run}", str(run))
        for a in argv
    ]
    try:
        code = main(argv)
    except BaseException as exc:  # what the installed command would show as a traceback
        pytest.fail(f"main({argv}) raised {type(exc).__name__}:\n{traceback.format_exc()}")
    captured = capsys.readouterr()
    assert code != 0, captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert error_lines, captured.err
    assert needle in captured.err, captured.err
    # The last line says what went wrong, once (argparse prints its usage line before it).
    assert captured.err.strip().splitlines()[-1].startswith(("secureagg", "usage")), captured.err


def test_demo_on_flower_without_flower_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flwr" else real(name, *a))
    assert main(["demo", "--engine", "flower", "--no-dp", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'secureagg[flower]'" in err and "Traceback" not in err
