"""FederatedRun: FedAvg with any aggregator gives the plaintext FedAvg model within quantization."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError

torch = pytest.importorskip("torch")
from secureagg.fl import Failures, FederatedRun  # noqa: E402
from tests.fl.conftest import flat_params, make_evaluate, make_model, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning")


def run_with(
    aggregator: str, loaders: list[Any], *, rounds: int = 3, **kwargs: Any
) -> FederatedRun:
    run = FederatedRun(
        make_model(),
        train=train,
        client_loaders=loaders,
        evaluate=make_evaluate(loaders),
        aggregator=aggregator,
        rounds=rounds,
        seed=11,
        progress=False,
        **kwargs,
    )
    run.run()
    return run


def test_secagg_plus_gives_the_plaintext_fedavg_model_within_quantization(
    loaders: list[Any],
) -> None:
    initial = flat_params(make_model())
    plain = run_with("plain", loaders, failures=Failures(schedule={2: {1: "upload"}}))
    secure = run_with("secagg+", loaders, failures=Failures(schedule={2: {1: "masked"}}))
    a, b = flat_params(plain.model), flat_params(secure.model)
    # Training moved the model far more than the two runs differ.
    assert np.max(np.abs(a - initial)) > 0.05
    # Per round the mean update differs by at most error_bound / total_weight per value
    # (~1e-6 here); three rounds of training through the same seeds keep it tiny.
    assert np.max(np.abs(a - b)) < 1e-4
    assert [e["participants"] for e in plain.history] == [e["participants"] for e in secure.history]
    assert secure.history[1]["participants"] == [0, 2, 3, 4]
    # The aggregate really went through masking: the secure run's uploads are not the plain ones.
    assert secure.history[0]["bytes"]["up"] != plain.history[0]["bytes"]["up"]


def test_the_applied_step_is_the_weighted_mean_of_the_client_updates(loaders: list[Any]) -> None:
    records: list[Any] = []
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = FederatedRun(
        model, train=train, client_loaders=loaders, aggregator="secagg+", rounds=1, seed=3,
        progress=False, keep_raw=True, on_round=records.append, server_lr=0.5,
    )
    run.run()
    [record] = records
    sizes = [len(loader.dataset) for loader in loaders]
    assert run.weights == sizes
    assert record.entry["total_weight"] == sum(sizes)
    expected = sum(sizes[c] * record.client_updates[c].astype(np.float64) for c in range(5))
    expected /= sum(sizes)
    agg = run._aggregator(5)
    bound = agg.error_bound() / sum(sizes)  # type: ignore[attr-defined]
    assert np.max(np.abs(record.mean_update - expected)) <= bound
    codec = run.codec
    moved = codec.flatten(model.state_dict()).astype(np.float64) - codec.flatten(before)
    np.testing.assert_allclose(moved, 0.5 * record.mean_update, atol=1e-6)


def test_a_server_lr_schedule_scales_each_round_step(loaders: list[Any]) -> None:
    records: list[Any] = []
    states: list[Any] = []
    model = make_model()
    states.append(run_codec_flat(model))

    def on_round(record: Any) -> None:
        records.append(record)
        states.append(run_codec_flat(model))

    run = FederatedRun(
        model, train=train, client_loaders=loaders, aggregator="plain", rounds=3, seed=3,
        progress=False, on_round=on_round, server_lr=2.0,
        server_lr_schedule=lambda r: 1.0 if r == 1 else 0.25,
    )
    run.run()
    assert [e["server_lr"] for e in run.history] == [2.0, 0.5, 0.5]
    assert run.config["server_lr_per_round"] == [2.0, 0.5, 0.5]
    for r, record in enumerate(records):
        moved = states[r + 1] - states[r]
        step = 2.0 if r == 0 else 0.5
        np.testing.assert_allclose(moved, step * record.mean_update, atol=1e-6)
    with pytest.raises(ConfigurationError, match="round 2: 0"):
        FederatedRun(make_model(), train=train, client_loaders=loaders, aggregator="plain",
                     rounds=2, progress=False, server_lr_schedule=lambda r: 1 if r == 1 else 0)


def run_codec_flat(model: Any) -> np.ndarray:
    from secureagg.fl import StateCodec

    return StateCodec.from_model(model).flatten(model.state_dict()).astype(np.float64)


def test_uniform_weighting_and_client_sampling(loaders: list[Any]) -> None:
    run = run_with("secagg", loaders, rounds=4, weighting="uniform", clients_per_round=3)
    for entry in run.history:
        assert len(entry["sampled"]) == 3
        assert entry["total_weight"] == 3.0
        assert entry["status"] == "completed"
    # Different rounds sample different subsets (reproducibly from the seed).
    assert len({tuple(e["sampled"]) for e in run.history}) > 1
    again = run_with("secagg", loaders, rounds=4, weighting="uniform", clients_per_round=3)
    assert [e["sampled"] for e in again.history] == [e["sampled"] for e in run.history]
    assert run.history[-1]["metrics"]["accuracy"] > run.history[0]["metrics"]["accuracy"] - 0.2


def test_history_records_what_the_round_did(loaders: list[Any]) -> None:
    run = run_with("secagg+", loaders, rounds=2)
    entry = run.history[0]
    assert entry["status"] == "completed"
    assert entry["participants"] == [0, 1, 2, 3, 4]
    assert set(entry["seconds"]["stages"]) >= {"advertise", "share", "masked", "unmask"}
    assert entry["bytes"]["up"] > entry["bytes"]["plaintext_payload"] * 5
    # masked uint32 values plus keys and shares: above the float32 payload (small d: ~2x)
    assert 1.0 < entry["bytes"]["expansion"] < 3.0
    assert entry["clipped"]["total"] == 0
    assert set(entry["metrics"]) == {"accuracy", "loss"}
    assert entry["privacy"] is None
    json.dumps(run.history, allow_nan=False)  # JSON-serialisable as written


def test_configuration_errors_list_every_problem(loaders: list[Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        FederatedRun(
            make_model(), train=train, client_loaders=loaders, rounds=0, clip=-1.0,
            clients_per_round=9, weighting="bogus",  # type: ignore[arg-type]
        )
    problems = " ".join(info.value.problems)
    for needle in ("rounds", "clip", "clients_per_round", "weighting"):
        assert needle in problems
    with pytest.raises(ConfigurationError, match="one-shot iterator"):
        FederatedRun(make_model(), train=train, client_loaders=[iter([1]), loaders[0]])
    with pytest.raises(ConfigurationError, match="stage 'bogus'"):
        FederatedRun(make_model(), train=train, client_loaders=loaders,
                     failures=Failures(schedule={1: {0: "bogus"}}))
    with pytest.raises(ConfigurationError, match="optimizer"):
        FederatedRun(make_model(), train=train, client_loaders=loaders,
                     optimizer=lambda p: torch.optim.SGD(p, lr=0.1))


@pytest.mark.skipif(
    importlib.util.find_spec("tenseal") is None
    or importlib.util.find_spec("secureagg.aggregators.ckks") is None,
    reason="the ckks aggregator needs tenseal",
)
def test_ckks_gives_the_plaintext_fedavg_model_within_its_error(loaders: list[Any]) -> None:
    plain = run_with("plain", loaders, rounds=2)
    ckks = run_with("ckks", loaders, rounds=2)
    diff = np.max(np.abs(flat_params(plain.model) - flat_params(ckks.model)))
    assert 0 < diff < 1e-3  # flooding noise on the released sum: small, but never zero
