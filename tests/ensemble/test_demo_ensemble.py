"""``secureagg demo ensemble`` end to end at a small size (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secureagg.cli import main


@pytest.mark.filterwarnings("ignore")
def test_demo_ensemble_labels_within_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["demo", "ensemble", "--clients", "20", "--queries", "50", "--epsilon", "8",
                 "--seed", "3", "--out", str(out), "--quiet"])
    assert code == 0
    r = json.loads((out / "ensemble.json").read_text(encoding="utf-8"))
    assert r["queries_answered"] == 50
    assert 0 < r["epsilon"]["record_level"] <= 8.0
    assert r["epsilon"]["record_level"] == r["epsilon"]["party_level"]
    assert r["ensemble_accuracy"] > 0.8  # 20 teachers on digits
    assert r["private_label_accuracy"] > 0.3  # noisy, but far above chance (0.1)
    assert (out / "seal.json").is_file() and (out / "ensemble_ledger.json").is_file()


@pytest.mark.parametrize("args", [["--queries", "0"], ["--queries", "400"], ["--clients", "1"],
                                  ["--protocol", "ckks"], ["--selftest"]])
def test_demo_ensemble_bad_options_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert main(["demo", "ensemble", "--out", str(tmp_path / "o"), *args]) == 2


def test_queries_only_with_ensemble(tmp_path: Path) -> None:
    assert main(["demo", "--queries", "10", "--out", str(tmp_path / "o")]) == 2
