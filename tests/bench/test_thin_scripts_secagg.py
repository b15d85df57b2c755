"""``benchmarks/bench_secagg.py`` is a thin script: ``secureagg bench`` with the SecAgg variants
preselected, every other argument passed through, the command's exit code (issue 15).

Each test runs the script as a subprocess of the installed package, from a temporary directory
(not the checkout), on tiny sizes (~2 s per run on 2 cores)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_secagg.py"
SECAGG = ["secagg", "secagg:malicious", "secagg+", "secagg+:malicious"]
TINY = ["--n", "3,4", "--d", "16", "--repeats", "1", "--no-plots", "--peers", "none"]


def _script(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_run_measures_exactly_the_four_secagg_variants(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _script(tmp_path, "--quick", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    # the preset first, then the user's arguments unchanged
    assert doc["argv"] == ["bench", "--protocols", ",".join(SECAGG), "--quick", *TINY,
                           "--out", str(out)]
    assert doc["grid"]["protocols"] == SECAGG
    entries = doc["configurations"]
    assert {e["config"]["protocol"] for e in entries} == set(SECAGG)
    assert not [e for e in entries if e["config"]["protocol"].split(":")[0]
                in ("plain", "ckks", "paillier")]
    # --quick's DP modes x n in {3, 4}, d 16, one dropout: 4 x 3 x 2 configurations
    assert len(entries) == 24
    for e in entries:
        assert e["status"] in ("measured", "skipped"), (e["label"], e.get("reason"))
        if e["status"] == "skipped":
            assert isinstance(e["reason"], str) and e["reason"].strip(), e["label"]
            continue
        for key, value in e["figures"].items():
            assert _finite(value["median"]) and _finite(value["min"]), (e["label"], key)
        assert e["figures"]["round_seconds"]["median"] > 0
        assert e["figures"]["bytes_up_per_client"]["median"] > 0
        assert e["error"]["within_bound"] is True, e["label"]
        assert _finite(e["error"]["max_abs_error"]) and _finite(e["error"]["bound"])
        assert e["floor"]["client_seconds"] > 0 and e["floor"]["server_seconds"] > 0
        assert all(_finite(r) and r > 0 for r in e["ratio"].values()), e["label"]
    for protocol in SECAGG:  # n = 4 is enough for every variant, malicious included
        assert any(e["status"] == "measured" and e["config"]["protocol"] == protocol
                   for e in entries), protocol
    # the malicious variants at n = 3: refused by the library, and said so
    assert {e["label"] for e in entries if e["status"] == "skipped"} == {
        f"{p}{dp} n=3 d=16 drop=0.1" for p in ("secagg:malicious", "secagg+:malicious")
        for dp in ("", " +distributed-dp", " +central-dp")
    }
    assert not (tmp_path / "bench-results").exists()  # --out was given: nothing else written


@pytest.mark.parametrize("option", [["--protocols", "secagg+"], ["--protocols=secagg+"],
                                    ["--proto", "secagg+"]])
def test_own_secagg_protocols_replace_the_preset(tmp_path: Path, option: list[str]) -> None:
    """No --out: the package's default, a fresh bench-results/<UTC time> under the cwd."""
    proc = _script(tmp_path, "--quick", "--n", "4", "--d", "16", "--dp", "none", "--no-plots",
                   "--no-memory", "--peers", "none", *option)
    assert proc.returncode == 0, proc.stderr
    (result,) = (tmp_path / "bench-results").glob("*/bench.json")
    doc = json.loads(result.read_text(encoding="utf-8"))
    assert doc["argv"][0] == "bench" and doc["argv"][1:] == ["--quick", "--n", "4", "--d", "16",
                                                             "--dp", "none", "--no-plots",
                                                             "--no-memory", "--peers", "none",
                                                             *option]
    assert [e["config"]["protocol"] for e in doc["configurations"]] == ["secagg+"]
    assert doc["configurations"][0]["status"] == "measured"


@pytest.mark.parametrize("option", [["--protocols", "secagg+,ckks"], ["--protocols=plain"],
                                    ["--pro", "all"], ["--protocols", ""]])
def test_other_protocols_are_refused(tmp_path: Path, option: list[str]) -> None:
    proc = _script(tmp_path, "--quick", *TINY, *option)
    assert proc.returncode == 2
    assert "only SecAgg variants" in proc.stderr and "secureagg bench" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_help_says_what_is_preselected(tmp_path: Path) -> None:
    proc = _script(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "secureagg bench --protocols secagg,secagg:malicious,secagg+," in proc.stdout
    assert "yours replaces the preset" in proc.stdout
    assert "usage: secureagg bench" in proc.stdout and "--max-seconds" in proc.stdout


def test_exit_code_is_the_commands(tmp_path: Path) -> None:
    proc = _script(tmp_path, "--quick", *TINY, "--repeats", "0")
    assert proc.returncode == 2
    assert "--repeats must be >= 1" in proc.stderr
    out = tmp_path / "taken"
    out.mkdir()
    (out / "bench.json").write_text("{}", encoding="utf-8")
    proc = _script(tmp_path, "--quick", *TINY, "--out", str(out))
    assert proc.returncode == 2
    assert "already holds a benchmark" in proc.stderr
