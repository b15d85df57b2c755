"""Under DP, nothing leaves a client that the accounting does not cover, and every stop is in the
ledger (issue 11: buffers, record counts, budget stops, the federated ledger's replay)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
from secureagg.dp import PrivacyAccountant  # noqa: E402
from secureagg.fl import FederatedDP, FederatedRun  # noqa: E402
from tests.fl.conftest import (  # noqa: E402
    FEATURES,
    flat_params,
    make_loaders,
    make_model,
    sgd,
)
from tests.fl.conftest import dp_train as train  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # seeded DP noise warns, on purpose
]


class RunningMean(torch.nn.Module):
    """A custom layer that keeps the mean of its raw inputs in a float buffer (passes Opacus's
    validator: it has no parameters)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))

    def forward(self, x: Any) -> Any:
        if self.training and x.shape[0]:
            with torch.no_grad():
                self.mean.copy_(x.mean(dim=0))
        return x


def buffered_model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(RunningMean(FEATURES), torch.nn.Linear(FEATURES, 3))


def _run(loaders: list[Any], dp: FederatedDP, *, model: Any = None, **kwargs: Any) -> FederatedRun:
    kwargs.setdefault("rounds", 1)
    return FederatedRun(
        model if model is not None else make_model(), train=train, optimizer=sgd,
        client_loaders=loaders, aggregator="plain", dp=dp, seed=3, progress=False, **kwargs,
    )


# ------------------------------------------------------------------------------------ buffers


def test_dp_sgd_does_not_release_floating_buffers_it_does_not_noise(tmp_path: Path) -> None:
    """Review: a running-mean buffer was released as 0.5 x each client's raw input mean while
    the ledger said ε = 0.795. Under DP the default keeps such buffers on the clients."""
    loaders = make_loaders(2)
    model = buffered_model()
    run = _run(loaders, FederatedDP(noise_multiplier=1.0), model=model, run_dir=tmp_path / "r")
    run.run()
    assert run.history[-1]["status"] == "completed"
    assert torch.equal(model[0].mean, torch.zeros(FEATURES))  # no client's statistic left it
    codec = json.loads((tmp_path / "r" / "config.json").read_text())["codec"]
    assert codec["buffers"] == "exclude"
    ledger = json.loads((tmp_path / "r" / "privacy_ledger.json").read_text())
    assert "mean" in " ".join(ledger["not_released"])


def test_dp_sgd_refuses_to_aggregate_floating_buffers() -> None:
    with pytest.raises(ConfigurationError, match=r"buffer.*'0\.mean'"):
        _run(make_loaders(2), FederatedDP(noise_multiplier=1.0), model=buffered_model(),
             buffers="aggregate")


def test_user_level_dp_noises_buffers_inside_the_clipped_update() -> None:
    """Without DP-SGD, aggregated buffers are part of the update that user-level DP clips and
    noises: covered, so allowed."""
    loaders = make_loaders(2)
    model = buffered_model()
    run = _run(loaders, FederatedDP(central_noise_multiplier=1.0), model=model,
               buffers="aggregate")
    run.run()
    assert run.codec.buffers == "aggregate"
    assert not torch.equal(model[0].mean, torch.zeros(FEATURES))


# ------------------------------------------------------------------------------ record counts


def _sigma_and_rate(per_client: int, dp: FederatedDP) -> tuple[float, float, Any]:
    loaders = make_loaders(1, per_client=per_client, batch_size=64)
    run = _run(loaders, dp)
    run.run()
    ledger = run.privacy.ledger() if run.privacy is not None else {}
    stream = ledger["sample_level"]["streams"][0]
    sigma, rate, _ = stream["gaussian_history"][0]
    return sigma, rate, run


def test_with_a_public_schedule_nothing_released_depends_on_the_record_count() -> None:
    """Review: q = 1/len(loader), σ and the FedAvg weights are exact functions of N_i (60
    records: q = 1, σ 4.04; 65 records: q = 0.5). With a public schedule they are not."""
    dp = FederatedDP(epsilon=2.0, batches_per_epoch=4)
    s60, q60, run60 = _sigma_and_rate(60, dp)
    s65, q65, run65 = _sigma_and_rate(65, dp)
    assert (s60, q60) == (s65, q65) == (s60, 0.25)
    assert run60.weighting == run65.weighting == "uniform"
    assert run60.history[-1]["total_weight"] == run65.history[-1]["total_weight"] == 1.0
    facts = run60.privacy.ledger()["sample_level_scope"]  # type: ignore[union-attr]
    assert facts["record_counts"] == "not released"


def test_without_a_public_schedule_the_ledger_says_record_counts_are_public() -> None:
    s60, q60, run60 = _sigma_and_rate(60, FederatedDP(epsilon=2.0))
    s65, q65, _ = _sigma_and_rate(65, FederatedDP(epsilon=2.0))
    assert (q60, q65) == (1.0, 0.5) and s60 != s65  # functions of N_i ...
    scope = run60.privacy.ledger()["sample_level_scope"]  # type: ignore[union-attr]
    assert scope["record_counts"].startswith("public")  # ... and the ledger says so
    assert "add/remove" in scope["adjacency"]


def test_example_weights_are_refused_with_a_public_schedule() -> None:
    with pytest.raises(ConfigurationError, match="record count"):
        _run(make_loaders(2), FederatedDP(epsilon=2.0, batches_per_epoch=4),
             weighting="examples")


# -------------------------------------------------------------------------------- budget stops


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "privacy_events.jsonl").read_text().splitlines()]


def test_a_per_client_budget_stop_is_an_event_in_the_ledger(tmp_path: Path) -> None:
    loaders = make_loaders(3)
    dp = FederatedDP(noise_multiplier=1.0, max_epsilon=6.0)
    run = _run(loaders, dp, rounds=30, run_dir=tmp_path / "r")
    run.run()
    assert run.stopped is not None and "privacy budget" in run.stopped
    stops = [e for e in _events(tmp_path / "r") if e["kind"] == "budget_stop"]
    assert sorted(e["party"] for e in stops) == [0, 1, 2]  # each client's stop, once
    ledger = json.loads((tmp_path / "r" / "privacy_ledger.json").read_text())
    assert all(s["budget_stops"] for s in ledger["sample_level"]["streams"])
    assert all(s["epsilon"] <= 6.0 for s in ledger["sample_level"]["streams"])


def test_the_user_level_budget_stop_is_written_to_the_ledger_and_the_events(
    tmp_path: Path,
) -> None:
    run = _run(make_loaders(2), FederatedDP(central_noise_multiplier=0.5, max_user_epsilon=0.5),
               run_dir=tmp_path / "r")
    run.run()
    assert run.history == [] and run.stopped is not None
    stops = [e for e in _events(tmp_path / "r") if e["kind"] == "budget_stop"]
    assert len(stops) == 1 and stops[0]["level"] == "user"
    ledger = json.loads((tmp_path / "r" / "privacy_ledger.json").read_text())
    assert ledger["user_level"]["streams"][0]["budget_stops"][0]["max_epsilon"] == 0.5


def test_a_budget_smaller_than_one_step_stops_cleanly(tmp_path: Path) -> None:
    """Review: run() raised InvalidInputError ('every sampled client's train function raised')."""
    model = make_model()
    before = flat_params(model)
    run = _run(make_loaders(2), FederatedDP(noise_multiplier=1.0, max_epsilon=0.01),
               model=model, rounds=3, run_dir=tmp_path / "r")
    history = run.run()  # no exception
    assert history == []
    assert run.stopped is not None and "privacy budget" in run.stopped
    np.testing.assert_array_equal(flat_params(model), before)
    stops = [e for e in _events(tmp_path / "r") if e["kind"] == "budget_stop"]
    assert sorted(e["party"] for e in stops) == [0, 1]


# ---------------------------------------------------------------------------- ledger replay


def test_from_ledger_reads_the_federated_ledger_and_replays_its_epsilon(tmp_path: Path) -> None:
    """docs/dp.md tells auditors to replay the run's ledger; it must read what a run writes."""
    run = FederatedRun(
        make_model(), train=train, optimizer=sgd, client_loaders=make_loaders(4),
        aggregator="secagg+", rounds=2, seed=3, progress=False, run_dir=tmp_path / "s",
        dp=FederatedDP(noise_multiplier=1.0, distributed_noise_multiplier=1.0),
    )
    run.run()
    path = tmp_path / "s" / "privacy_ledger.json"
    sample = PrivacyAccountant.from_ledger(path, level="sample")
    user = PrivacyAccountant.from_ledger(path, level="user")
    ledger = json.loads(path.read_text())
    for stream in ledger["sample_level"]["streams"]:
        assert sample.epsilon(scope="sample", party=stream["party"]) == pytest.approx(
            stream["epsilon"], rel=1e-12
        )
    assert user.epsilon(scope="user") == pytest.approx(
        ledger["user_level"]["streams"][0]["epsilon"], rel=1e-12
    )
    with pytest.raises(ConfigurationError, match="level"):
        PrivacyAccountant.from_ledger(path)  # two accountants: say which


def test_local_training_runs_on_one_torch_thread_by_default_and_restores_it() -> None:
    """The docs' example took 52 s (133 s under load) with torch's default threads, 5-8 s on one:
    the default must be the fast one, and the caller's setting must come back afterwards."""
    seen: list[int] = []

    def record_threads(model: Any, loader: Any) -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        FederatedRun(make_model(), train=record_threads, client_loaders=make_loaders(2),
                     aggregator="plain", rounds=1, progress=False).run()
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
        seen.clear()
        FederatedRun(make_model(), train=record_threads, client_loaders=make_loaders(2),
                     aggregator="plain", rounds=1, progress=False, torch_threads=None).run()
        assert seen == [2, 2]
    finally:
        torch.set_num_threads(before)


def test_clip_counts_of_unnoised_updates_are_not_recorded_under_user_level_dp(
    tmp_path: Path,
) -> None:
    """Under user-level DP the encoder's clip counts are functions of the clients' clipped but
    un-noised updates: the run record must not carry them."""
    run = _run(make_loaders(3), FederatedDP(central_noise_multiplier=1.0), rounds=1,
               run_dir=tmp_path / "r", clip=1e-4)  # a tiny clip: many values are clipped
    run.run()
    entry = json.loads((tmp_path / "r" / "history.json").read_text())["rounds"][0]
    assert entry["status"] == "completed"
    assert set(entry["clipped"]) == {"withheld"}


def test_a_model_changed_outside_the_dp_optimizer_is_not_released(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="secureagg")
    """DP-SGD covers only the DP optimizer's steps: a train function that also steps its own
    (non-private) optimizer would release an update the accounting does not cover."""
    def sneaky(model: Any, loader: Any, optimizer: Any) -> None:
        train(model, loader, optimizer)
        with torch.no_grad():  # writes the raw data's mean straight into a parameter
            x = torch.cat([xb for xb, _ in loader])
            next(iter(model.parameters()))[0].copy_(x.mean(dim=0))

    model = make_model()
    before = flat_params(model)
    run = FederatedRun(model, train=sneaky, optimizer=sgd, client_loaders=make_loaders(2),
                       aggregator="plain", rounds=1, dp=FederatedDP(noise_multiplier=1.0),
                       seed=3, progress=False)
    with pytest.raises(Exception, match="every sampled client"):
        run.run()
    np.testing.assert_array_equal(flat_params(model), before)
    failures = run.history[-1]["client_failures"]
    assert len(failures) == 2 and all(
        f["error"] == "InvalidInputError at stage train" for f in failures)
    # the reason (it names parameters) stays in the client's log
    assert any("outside the DP optimizer's steps" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
