"""DP in a federated run: DP-SGD per client, distributed and central DP on the sum, budgets,
the ledger and its replay on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
from secureagg.fl import FederatedDP, FederatedRun  # noqa: E402
from tests.fl.conftest import dp_train as train  # noqa: E402
from tests.fl.conftest import flat_params, make_evaluate, make_model, sgd  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # seeded DP noise warns, on purpose
]


def dp_run(loaders: list[Any], dp: FederatedDP, *, aggregator: str = "plain", rounds: int = 2,
           **kwargs: Any) -> FederatedRun:
    return FederatedRun(
        make_model(), train=train, optimizer=sgd, client_loaders=loaders,
        evaluate=make_evaluate(loaders), aggregator=aggregator, rounds=rounds, dp=dp, seed=8,
        progress=False, **kwargs,
    )


def test_dp_sgd_spends_at_most_the_target_per_client(loaders: list[Any], tmp_path: Path) -> None:
    run = dp_run(loaders, FederatedDP(epsilon=4.0, local_epochs=1), run_dir=tmp_path / "run")
    run.run()
    eps = [e["privacy"]["epsilon"] for e in run.history]
    assert 0 < eps[0] < eps[1] <= 4.0
    assert eps[1] > 3.0  # calibrated for exactly these two rounds: nearly all of it is used
    per_client = run.history[-1]["privacy"]["sample_level"]["per_client"]
    assert set(per_client) == {"0", "1", "2", "3", "4"}
    sigmas = run.history[-1]["privacy"]["sample_level"]["noise_multipliers"]
    assert len(set(sigmas.values())) > 1  # each client is calibrated to its own sampling rate
    ledger = json.loads((tmp_path / "run" / "privacy_ledger.json").read_text())
    assert ledger["differential_privacy"] is True
    streams = ledger["sample_level"]["streams"]
    assert sorted(s["party"] for s in streams) == [0, 1, 2, 3, 4]
    assert max(s["epsilon"] for s in streams) == pytest.approx(eps[1])
    assert ledger["sample_level"]["seeded"] is True  # a seeded test run says it is not private
    assert (tmp_path / "run" / "privacy_events.jsonl").stat().st_size > 0


def test_the_budget_stops_training_before_it_is_exceeded(
    loaders: list[Any], tmp_path: Path
) -> None:
    dp = FederatedDP(epsilon=3.0, local_epochs=1)
    path = tmp_path / "run"
    dp_run(loaders, dp, run_dir=path, rounds=2).run()
    # Resume with more rounds than the budget was calibrated for: the replayed events show that
    # every client has spent its budget, so no third round runs.
    longer = dp_run(loaders, dp, run_dir=path, rounds=4, resume=True)
    before = flat_params(longer.model)
    longer.run()
    assert longer.completed_rounds == 2
    assert longer.stopped is not None and "privacy budget" in longer.stopped
    np.testing.assert_array_equal(flat_params(longer.model), before)
    result = json.loads((path / "result.json").read_text())
    assert "privacy budget" in result["stopped"]
    ledger = json.loads((path / "privacy_ledger.json").read_text())
    assert max(s["epsilon"] for s in ledger["sample_level"]["streams"]) <= 3.0


def test_distributed_dp_inside_secagg(loaders: list[Any], tmp_path: Path) -> None:
    dp = FederatedDP(distributed_noise_multiplier=0.5, update_clip=1.0)
    run = dp_run(loaders, dp, aggregator="secagg+", run_dir=tmp_path / "run")
    run.run()
    assert run.weighting == "uniform"
    entry = run.history[-1]
    assert entry["status"] == "completed"
    assert entry["total_weight"] == 5.0
    user = entry["privacy"]["user_level"]
    assert user["mechanism"] == "distributed-skellam"
    assert 0 < run.history[0]["privacy"]["user_level"]["epsilon"] < user["epsilon"]
    assert entry["privacy"]["epsilon"] == user["epsilon"]  # no DP-SGD: the headline is user level
    # The noise is really there: the same seeded run without DP ends elsewhere.
    plain = FederatedRun(make_model(), train=train, optimizer=sgd, client_loaders=loaders,
                         aggregator="secagg+", rounds=2, seed=8, progress=False,
                         weighting="uniform")
    plain.run()
    assert np.max(np.abs(flat_params(plain.model) - flat_params(run.model))) > 1e-3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["privacy"]["user_level"]["noise_multiplier"] == 0.5


def test_central_dp_and_the_user_level_budget(loaders: list[Any]) -> None:
    run = dp_run(loaders, FederatedDP(central_noise_multiplier=1.0, max_user_epsilon=50.0))
    run.run()
    assert run.history[-1]["privacy"]["user_level"]["mechanism"] == "central-gaussian"
    tight = dp_run(loaders, FederatedDP(central_noise_multiplier=0.5, max_user_epsilon=0.5))
    before = flat_params(tight.model)
    tight.run()
    assert tight.history == []  # refused before any client trained
    assert tight.stopped is not None and "user-level privacy budget" in tight.stopped
    np.testing.assert_array_equal(flat_params(tight.model), before)


def test_dp_configuration_errors(loaders: list[Any]) -> None:
    with pytest.raises(ConfigurationError, match="unweighted"):
        dp_run(loaders, FederatedDP(central_noise_multiplier=1.0), weighting="examples")
    with pytest.raises(ConfigurationError, match="inside SecAgg"):
        dp_run(loaders, FederatedDP(distributed_noise_multiplier=1.0), aggregator="plain")
    with pytest.raises(ConfigurationError, match="optimizer"):
        FederatedRun(make_model(), train=train, client_loaders=loaders,
                     dp=FederatedDP(epsilon=1.0))
    with pytest.raises(ConfigurationError) as info:
        FederatedDP(epsilon=1.0, noise_multiplier=1.0, local_epochs=0)
    assert len(info.value.problems) == 2
    with pytest.raises(ConfigurationError, match="needs epsilon"):
        FederatedDP()


def test_resumed_dp_run_accounts_like_an_uninterrupted_one(
    loaders: list[Any], tmp_path: Path
) -> None:
    dp = FederatedDP(noise_multiplier=1.0, local_epochs=1)
    whole = dp_run(loaders, dp, rounds=2, run_dir=tmp_path / "whole")
    whole.run()
    path = tmp_path / "split"
    dp_run(loaders, dp, rounds=1, run_dir=path).run()
    resumed = dp_run(loaders, dp, rounds=2, run_dir=path, resume=True)
    resumed.run()
    assert resumed.history[-1]["privacy"] == whole.history[-1]["privacy"]
    np.testing.assert_array_equal(flat_params(resumed.model), flat_params(whole.model))


def test_noise_calibration_is_conservative_and_tight() -> None:
    from opacus.accountants import RDPAccountant

    from secureagg.fl.calibration import calibrate_noise, dp_sgd_epsilon

    # ANCHORS.md known answer: σ=1.5, q=0.04, 2250 steps, δ=1e-5 -> RDP ε ≈ 7.3291 (Opacus).
    ours = dp_sgd_epsilon(1.5, 0.04, 2250, 1e-5)
    assert 7.3291 <= ours < 7.3291 * 1.02  # integer orders only: never below, barely above
    for q, steps in ((0.25, 160), (0.07, 560)):
        sigma = calibrate_noise(8.0, sample_rate=q, steps=steps, delta=1e-5)
        accountant = RDPAccountant()
        accountant.history = [(sigma, q, steps)]
        assert 7.6 < accountant.get_epsilon(1e-5) <= 8.0
