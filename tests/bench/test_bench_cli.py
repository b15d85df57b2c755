"""``secureagg bench`` measures from an installed package, outside the checkout (issue 15)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from secureagg.bench import PROTOCOLS
from secureagg.bench.plots import PLOT_FILES
from secureagg.cli import main

SECURE = {p for p in PROTOCOLS if p != "plain"}


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict, list[dict[str, str]], Path]:
    out = tmp_path / "out"
    code = main(["bench", "--quick", "--n", "4", "--d", "64", "--seed", "3", "--out", str(out),
                 *extra])
    document = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    with (out / "bench.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return code, document, rows, out


@pytest.mark.filterwarnings("ignore")
def test_quick_run_measures_every_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: no benchmarks/ directory here
    code, doc, rows, out = _run(tmp_path)
    assert code == 0
    assert doc["format"] == "secureagg/bench/v1"
    assert doc["seeded"] is True
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["numpy"]
    entries = doc["configurations"]
    measured = [e for e in entries if e["status"] == "measured"]
    assert {e["config"]["protocol"] for e in measured} == set(PROTOCOLS)
    assert {e["config"]["dp"] for e in measured} == {"none", "distributed", "central"}
    for e in measured:
        figures = e["figures"]
        for key, value in figures.items():
            assert math.isfinite(value["median"]) and math.isfinite(value["min"]), key
            assert value["min"] <= value["median"]
        assert figures["round_seconds"]["median"] > 0
        assert e["peak_memory_bytes"] > 0
        assert e["error"]["within_bound"] is True, e["label"]
        assert math.isfinite(e["error"]["max_abs_error"]) and e["error"]["bound"] >= 0
        assert e["stages"], e["label"]
        if e["config"]["protocol"] in SECURE:
            assert figures["bytes_up_per_client"]["median"] > 0
            assert figures["bytes_down_per_client"]["median"] > 0
    # the library refuses distributed DP outside SecAgg: skipped, with its reason
    refused = [e for e in entries if e["config"]["dp"] == "distributed"
               and e["config"]["protocol"].split(":")[0] in ("plain", "ckks", "paillier")]
    assert len(refused) == 5  # one n (4), one d (64), the quick grid's one dropout
    assert all(e["status"] == "skipped" and "secagg" in e["reason"] for e in refused)
    assert {s["id"] for s in doc["skipped"]} == {e["id"] for e in refused}
    # one CSV row per configuration, the same ids and statuses
    assert [int(r["id"]) for r in rows] == [e["id"] for e in entries]
    assert [r["status"] for r in rows] == [e["status"] for e in entries]
    # the HE key holder works only in the HE protocols
    for e in measured:
        holder = e["figures"]["key_holder_bytes_up"]["median"]
        he = e["config"]["protocol"].split(":")[0] in ("ckks", "paillier")
        assert (holder > 0) == he, e["label"]
    # the floor model, measured in this run, for SecAgg and SecAgg+ only; ratios from it
    for e in measured:
        masked = e["config"]["protocol"].split(":")[0] in ("secagg", "secagg+")
        assert ("ratio" in e) == masked, e["label"]
        if masked:
            costs = e["floor"]["unit_costs"]
            assert all(costs[k] > 0 for k in ("t_quant", "t_mask", "t_add", "t_agree"))
            k = costs["k"]
            expected = (costs["t_quant"] + (k + 1) * costs["t_mask"] + 2 * k * costs["t_agree"]
                        + 2 * costs["t_share"])
            assert e["floor"]["client_seconds"] == pytest.approx(expected)
            assert e["ratio"]["server_over_floor"] == pytest.approx(
                e["figures"]["server_seconds"]["median"] / e["floor"]["server_seconds"])
    # the lone-server replay reproduces the round and measures the server's own memory
    replayed = [e for e in measured if "server_memory" in e]
    assert {e["config"]["protocol"] for e in replayed} == {"secagg", "secagg+"}
    for e in replayed:
        assert e["server_memory"]["matches_round"] is True
        assert e["server_peak_memory_bytes"] > 0
    # the targets are evaluated on what was measured; this grid has none of their points
    assert doc["targets"] and all(t["status"] in ("met", "missed", "not measured")
                                  for t in doc["targets"])
    table = capsys.readouterr().out
    assert "secagg+:malicious" in table and "configurations measured" in table
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: no plots to check")
    for name in doc["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name
    expected_plots = [p for p in PLOT_FILES if p != "vs_peers.png" or doc["peers"]]
    assert doc["plots"] == expected_plots


@pytest.mark.filterwarnings("ignore")
def test_max_seconds_skips_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # plain's estimate is about 1 s per round (2 rounds); paillier's is larger
    code, doc, rows, _ = _run(tmp_path, "--protocols", "plain,paillier", "--dp", "none",
                              "--no-plots", "--max-seconds", "2.2")
    assert code == 0
    by_protocol = {e["config"]["protocol"]: e for e in doc["configurations"]}
    assert by_protocol["plain"]["status"] == "measured"
    skipped = by_protocol["paillier"]
    assert skipped["status"] == "skipped"
    assert "--max-seconds" in skipped["reason"]
    assert skipped["estimate"]["seconds"] > 2.2
    assert [r["status"] for r in rows] == ["measured", "skipped"]
    assert doc["plots"] == [] and doc["plots_note"] == "--no-plots"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--n", "1"], "n (clients) must be >= 2"),
        (["--d", "0"], "d (values per client) must be >= 1"),
        (["--dropout", "1"], "dropout fraction must be in [0, 1)"),
        (["--dropout", "-0.1"], "dropout fraction must be in [0, 1)"),
        (["--protocols", "rsa"], "unknown protocol 'rsa'"),
        (["--n", "ten"], "expected comma-separated numbers"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "--quick", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.startswith("secureagg: error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing measured, nothing written


def test_list_still_lists_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "bench_x.py").write_text('"""Measure x."""\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--list", "--dir", str(bench_dir)]) == 0
    out = capsys.readouterr().out
    assert "bench_x.py" in out and "Measure x." in out


def test_help_says_what_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("seconds and bytes", "tracemalloc", "--max-seconds", "secureagg[plot]",
                   "distributed DP wraps only secagg/secagg+"):
        assert phrase in text, phrase
