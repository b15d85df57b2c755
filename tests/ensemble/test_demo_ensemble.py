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
                                  ["--protocol", "ckks"], ["--selftest"], ["--tls"],
                                  ["--engine", "flower", "--dropout", "0.1"],
                                  ["--engine", "flower", "--workers", "2"],
                                  ["--engine", "flower", "--clients", "40"]])
def test_demo_ensemble_bad_options_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert main(["demo", "ensemble", "--out", str(tmp_path / "o"), *args]) == 2


def test_queries_only_with_ensemble(tmp_path: Path) -> None:
    assert main(["demo", "--queries", "10", "--out", str(tmp_path / "o")]) == 2


def test_queries_are_spread_over_the_public_pool() -> None:
    import numpy as np

    from secureagg.demos.ensemble import choose_queries

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.3, (25, 2)) for c in centres])
    chosen = choose_queries(x, 4)
    assert list(chosen) == sorted(set(chosen.tolist())) and len(chosen) == 4
    assert sorted(int(i) // 25 for i in chosen) == [0, 1, 2, 3]  # one point from each cluster
    assert len(set(choose_queries(x, 100).tolist())) == 100  # every point, none twice


def test_labels_propagate_from_the_noisy_histograms_weighted_by_their_clarity() -> None:
    import numpy as np

    from secureagg.demos.ensemble import propagate_labels

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.3, (20, 2)), rng.normal(5, 0.3, (20, 2))])
    clear = {0: np.eye(10)[3] * 50, 20: np.eye(10)[7] * 50}
    labels = propagate_labels(x, clear, noise_std=5.0)
    assert list(labels[:20]) == [3] * 20 and list(labels[20:]) == [7] * 20
    # a near tie for class 1 in the first cluster weighs less than a clear vote for class 3
    tie = {**clear, 1: np.eye(10)[1] * 51 + np.eye(10)[3] * 49}
    sure = {**clear, 1: np.eye(10)[1] * 100}
    with_tie = list(propagate_labels(x, tie, noise_std=5.0)[:20]).count(3)
    with_sure = list(propagate_labels(x, sure, noise_std=5.0)[:20]).count(3)
    assert with_tie > with_sure and with_tie > 10
