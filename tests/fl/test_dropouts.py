"""Failures are part of the run: dropouts at every stage, aborts, stragglers, random dropouts.

Documented outcomes (docs/federated.md): a client silent from "train" or from any stage before the
protocol takes its input ("advertise", "share", "masked" for SecAgg; "upload" for plain and HE) is
not in the sum; a SecAgg client silent only at "unmask" is in the sum (its self-mask is recovered);
too few clients left aborts the round, and the global model stays exactly as it was.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from secureagg.fl import Failures, FederatedRun  # noqa: E402
from tests.fl.conftest import flat_params, make_model, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning")


class Snapshots:
    """Records the global model after every round (from the on_round callback)."""

    def __init__(self, run_model: Any) -> None:
        self.model = run_model
        self.states = [flat_params(run_model)]

    def __call__(self, record: Any) -> None:
        self.states.append(flat_params(self.model))


def run_schedule(aggregator: str, loaders: list[Any], failures: Failures, rounds: int) -> tuple[
    FederatedRun, Snapshots
]:
    model = make_model()
    snaps = Snapshots(model)
    run = FederatedRun(
        model, train=train, client_loaders=loaders, aggregator=aggregator, rounds=rounds,
        seed=9, progress=False, failures=failures, on_round=snaps,
    )
    run.run()
    return run, snaps


def test_secagg_plus_dropouts_at_every_stage(loaders: list[Any]) -> None:
    schedule = {
        1: {1: "train"},
        2: {1: "advertise"},
        3: {1: "share"},
        4: {1: "masked"},
        5: {1: "unmask"},
        6: {0: "advertise", 1: "share", 2: "masked", 3: "train"},  # 1 left < t = 2
        7: {},
    }
    run, snaps = run_schedule("secagg+", loaders, Failures(schedule=schedule), rounds=7)
    h = run.history
    for r in (1, 2, 3, 4):
        assert h[r - 1]["status"] == "completed", r
        assert h[r - 1]["participants"] == [0, 2, 3, 4], r
    assert h[0]["silent_from"] == {"1": "advertise"}  # "train": never speaks at all
    assert h[3]["silent_from"] == {"1": "masked"}
    assert h[4]["status"] == "completed"
    assert h[4]["participants"] == [0, 1, 2, 3, 4]  # silent only at unmask: its input counts
    assert h[5]["status"] == "aborted"
    assert "InsufficientSurvivors" in h[5]["error"]
    assert h[5]["participants"] == []
    np.testing.assert_array_equal(snaps.states[6], snaps.states[5])  # model unchanged
    assert h[6]["status"] == "completed"
    assert not np.array_equal(snaps.states[7], snaps.states[6])
    sizes = [len(loader.dataset) for loader in loaders]
    assert h[1]["total_weight"] == sum(sizes) - sizes[1]


def test_plain_upload_dropouts_and_abort(loaders: list[Any]) -> None:
    everyone = dict.fromkeys(range(5), "upload")
    run, snaps = run_schedule(
        "plain", loaders, Failures(schedule={1: {4: "upload"}, 2: everyone}), rounds=3
    )
    h = run.history
    assert h[0]["participants"] == [0, 1, 2, 3]
    assert h[1]["status"] == "aborted"
    np.testing.assert_array_equal(snaps.states[2], snaps.states[1])
    assert h[2]["status"] == "completed"


@pytest.mark.skipif(
    importlib.util.find_spec("tenseal") is None
    or importlib.util.find_spec("secureagg.aggregators.ckks") is None,
    reason="the ckks aggregator needs tenseal",
)
def test_ckks_needs_min_clients(loaders: list[Any]) -> None:
    # min_clients defaults to max(2, ceil(5/2)) = 3: two dropouts complete, three abort.
    run, snaps = run_schedule(
        "ckks", loaders,
        Failures(
            schedule={1: {0: "upload", 1: "train"}, 2: {0: "upload", 1: "upload", 2: "train"}}
        ),
        rounds=2,
    )
    assert run.history[0]["participants"] == [2, 3, 4]
    assert run.history[1]["status"] == "aborted"
    np.testing.assert_array_equal(snaps.states[2], snaps.states[1])


def test_stragglers_are_silent_from_the_upload_stage(loaders: list[Any]) -> None:
    def training_time(round_number: int, client: int, measured: float) -> float:
        return 10.0 if client == 2 else 1.0

    run, _ = run_schedule(
        "secagg+", loaders, Failures(deadline=5.0, training_time=training_time), rounds=1
    )
    [entry] = run.history
    assert entry["stragglers"] == [2]
    assert entry["silent_from"] == {"2": "masked"}
    assert entry["participants"] == [0, 1, 3, 4]


def test_random_dropouts_are_reproducible_and_recorded(loaders: list[Any]) -> None:
    failures = Failures(dropout_rate=0.4)
    first, _ = run_schedule("secagg+", loaders, failures, rounds=4)
    again, _ = run_schedule("secagg+", loaders, failures, rounds=4)
    drops = [e["dropouts"] for e in first.history]
    assert drops == [e["dropouts"] for e in again.history]
    assert 3 <= sum(len(d) for d in drops) <= 14  # 20 draws at rate 0.4
    for entry in first.history:
        if entry["status"] != "completed":
            continue
        included = {c for c, s in entry["dropouts"].items() if s == "unmask"}
        expected = {str(c) for c in range(5)} - set(entry["dropouts"]) | included
        assert {str(c) for c in entry["participants"]} == expected
    everyone, snaps = run_schedule("plain", loaders, Failures(dropout_rate=1.0), rounds=2)
    assert [e["status"] for e in everyone.history] == ["aborted", "aborted"]
    np.testing.assert_array_equal(snaps.states[-1], snaps.states[0])
