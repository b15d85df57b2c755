"""``secureagg demo --seed``: a run can be replayed exactly, and says loudly it is not private."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secureagg.cli import main

needs_fl = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None,
    reason="the federated demo needs torch and scikit-learn",
)


@pytest.fixture
def torch_threads() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _hashes(run: Path) -> list[str]:
    lines = (run / "transcript.jsonl").read_text().splitlines()
    return [json.loads(line)["sha256"] for line in lines]


def _model(run: Path) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = torch.load(run / "model.pt", weights_only=True)
    return state


def _demo(capsys: pytest.CaptureFixture[str], run: Path, *extra: str) -> tuple[dict[str, Any], str]:
    # The smallest secure run: 3 clients (SecAgg+ needs 3), one round, no DP, no baseline.
    argv = ["demo", "--no-dp", "--protocol", "secagg+", "--rounds", "1", "--clients", "3",
            "--no-baseline", "--quiet", "--json", "--out", str(run), *extra]
    assert main(argv) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out.splitlines()[-1]), captured.err


@needs_fl
@pytest.mark.usefixtures("torch_threads")
def test_demo_with_the_same_seed_replays_the_run_exactly_and_records_the_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, err = _demo(capsys, tmp_path / "a", "--seed", "11")
    second, _ = _demo(capsys, tmp_path / "b", "--seed", "11")
    other, _ = _demo(capsys, tmp_path / "c", "--seed", "12")

    # the hash of every message the server received (keys, masked inputs, shares) and the
    # model: identical
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    a, b = _model(tmp_path / "a"), _model(tmp_path / "b")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert first["final_accuracy"] == second["final_accuracy"]
    # another seed gives other keys and masks: the comparison above can fail
    assert _hashes(tmp_path / "c") != _hashes(tmp_path / "a")

    for run, seed in ((tmp_path / "a", 11), (tmp_path / "c", 12)):
        config = json.loads((run / "config.json").read_text())
        assert config["seeded"] is True and config["seed"] == seed
        comparison = json.loads((run / "comparison.json").read_text())
        assert comparison["seeded"] is True and comparison["seed"] == seed
    assert first["seeded"] is True and first["seed"] == 11
    assert other["seed"] == 12
    # loudly: on stderr, even with --quiet --json, and once (no Python warning repeats)
    assert "seeded run (--seed 11)" in err
    assert "NOT private" in err
    assert "SeededRunWarning" not in err


@needs_fl
@pytest.mark.usefixtures("torch_threads")
def test_demo_without_a_seed_records_that_it_was_not_seeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, err = _demo(capsys, tmp_path / "u")
    assert report["seeded"] is False and report["seed"] is None
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    assert config["seeded"] is False and config["seed"] is None
    assert "seeded" not in err


def test_demo_selftest_round_with_a_seed_is_reproducible_and_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for name, extra in (("a", ["--seed", "5"]), ("b", ["--seed", "5"]), ("c", [])):
        run = tmp_path / name
        code = main(["demo", "--selftest", "--clients", "6", "--dim", "64", "--out", str(run),
                     *extra])
        assert code == 0
        captured = capsys.readouterr()
        runs.append((run, captured))
    (a, cap_a), (b, _), (c, cap_c) = runs
    assert _hashes(a) == _hashes(b)
    assert _hashes(a) != _hashes(c)
    for run, seeded, seed in ((a, True, 5), (c, False, None)):
        result = json.loads((run / "result.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert result["seeded"] is seeded and result["seed"] == seed
        assert config["seeded"] is seeded and config["seed"] == seed
    assert "NOT private" in cap_a.err
    assert "seeded" not in cap_c.err
    assert main(["audit", str(a)]) == 0
    assert "seeded run (seed 5)" in capsys.readouterr().out


def test_demo_split_refuses_a_seed_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "split", "--seed", "1", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "--seed is not supported by 'secureagg demo split'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
