"""``benchmarks/bench_he.py`` is a thin script over ``secureagg bench`` (issue 15): it measures the
four HE variants only, passes every other argument through and returns the command's exit code;
its own ``--protocols`` may only narrow the four."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tenseal")
pytest.importorskip("phe")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_he.py"
HE = ("ckks", "ckks:pooled", "paillier", "paillier:pooled")
TINY = ("--quick", "--n", "3", "--d", "8", "--repeats", "1", "--no-plots", "--peers", "none")


def _script_main() -> Callable[[Sequence[str]], int]:
    spec = importlib.util.spec_from_file_location("bench_he_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main: Callable[[Sequence[str]], int] = module.main
    return main


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )


def _assert_measured_he_only(doc: dict[str, Any], protocols: Sequence[str]) -> None:
    entries = doc["configurations"]
    assert entries
    assert {e["config"]["protocol"] for e in entries} == set(protocols)
    assert doc["grid"]["protocols"] == list(protocols)
    for e in entries:
        if e["status"] != "measured":
            assert e["status"] == "skipped" and e["reason"].strip(), e["label"]
            continue
        for key, value in e["figures"].items():
            assert math.isfinite(value["median"]) and math.isfinite(value["min"]), key
        assert e["figures"]["round_seconds"]["median"] > 0
        assert e["figures"]["bytes_up_per_client"]["median"] > 0
        assert e["error"]["within_bound"] is True, e["label"]
        assert math.isfinite(e["error"]["max_abs_error"])
    measured = {e["config"]["protocol"] for e in entries if e["status"] == "measured"}
    assert measured == set(protocols)


def test_script_measures_the_four_he_variants_outside_the_checkout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(tmp_path, *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    _assert_measured_he_only(doc, HE)
    assert doc["argv"][:3] == ["bench", "--protocols", ",".join(HE)]
    # every other argument reached the command unchanged
    assert doc["grid"]["n"] == [3] and doc["grid"]["d"] == [8] and doc["grid"]["repeats"] == 1
    assert doc["peers"] == [] and doc["plots"] == []
    # --quick means every DP mode: distributed DP is refused outside SecAgg, with the reason
    skipped = [e for e in doc["configurations"] if e["status"] == "skipped"]
    assert {e["config"]["dp"] for e in skipped} == {"distributed"}
    assert all("distributed DP" in e["reason"] for e in skipped)
    assert not (tmp_path / "bench-results").exists()


def test_the_commands_exit_code_and_error_come_through(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--n", "1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "n (clients) must be >= 2" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore")
def test_own_protocols_may_narrow_the_four(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _script_main()([*TINY, "--dp", "none", "--no-memory", "--protocols", "ckks:pooled",
                           "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    _assert_measured_he_only(doc, ["ckks:pooled"])
    assert "ckks,ckks:pooled,paillier,paillier:pooled" not in doc["argv"]


@pytest.mark.parametrize(
    "given",
    [
        ["--protocols", "secagg+"],
        ["--protocols", "ckks,plain"],
        ["--protocols=all"],
        ["--proto", "paillier,secagg"],  # argparse's prefix of --protocols
        ["--protocols", "ckks", "--protocols", "secagg"],  # the last one would win
        ["--protocols"],
    ],
)
def test_other_protocols_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: list[str]
) -> None:
    out = tmp_path / "out"
    code = _script_main()([*TINY, "--out", str(out), *given])
    assert code == 2
    err = capsys.readouterr().err
    assert "--protocols may only narrow ckks,ckks:pooled,paillier,paillier:pooled" in err
    assert "secureagg bench --protocols" in err
    assert not out.exists()


def test_deployed_is_refused_it_is_not_an_he_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _script_main()(["--deployed", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "run 'secureagg bench --deployed'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--help", "-h", "--hel"])
def test_help_states_the_protocols_rule_and_the_commands_options(
    capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    assert _script_main()([flag]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "``--protocols`` may only narrow the selection" in text
    assert "ckks,ckks:pooled,paillier,paillier:pooled" in text
    assert "usage: secureagg bench" in text and "--max-seconds" in text
