"""Client training in a process pool (``workers=``): the same model, ledger and failures as the
sequential run, bitwise, for the same seed.

Every comparison is against the sequential run (``workers=None``) of the same seed: a pooled run
that dropped a privacy event, trained from a stale global model, reused a torch seed or applied a
failed client's update would end with a different model or ledger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError

torch = pytest.importorskip("torch")
from secureagg.fl import Failures, FederatedDP, FederatedRun  # noqa: E402
from secureagg.fl.pool import (  # noqa: E402
    ClientPool,
    RoundTrainer,
    default_start_method,
    resolve_workers,
)
from tests.fl.conftest import (  # noqa: E402
    dp_train,
    flat_params,
    make_loaders,
    make_model,
    sgd,
    train,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning"),
    pytest.mark.filterwarnings("ignore:seeded DP noise:UserWarning"),
    pytest.mark.skipif(default_start_method() != "fork", reason="fork start method (Linux)"),
]


def run(workers: Any, trainer: Any = train, *, rounds: int = 2, **kwargs: Any) -> FederatedRun:
    r = FederatedRun(
        make_model(), train=trainer, client_loaders=make_loaders(), aggregator="secagg+",
        rounds=rounds, seed=7, progress=False, workers=workers, **kwargs,
    )
    r.run()
    return r


def events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "privacy_events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_pooled_dp_run_gives_the_bitwise_identical_model_and_ledger(tmp_path: Path) -> None:
    dp = FederatedDP(epsilon=8.0, local_epochs=1, distributed_noise_multiplier=0.1)
    kwargs: dict[str, Any] = {"optimizer": sgd, "dp": dp, "rounds": 2}
    sequential = run(None, dp_train, run_dir=tmp_path / "seq", **kwargs)
    pooled = run(2, dp_train, run_dir=tmp_path / "pool", **kwargs)
    a, b = flat_params(sequential.model), flat_params(pooled.model)
    assert np.max(np.abs(a - flat_params(make_model()))) > 1e-3  # training moved the model
    assert np.array_equal(a, b)
    seq_events, pool_events = events(tmp_path / "seq"), events(tmp_path / "pool")
    # every DP-SGD step of every client (trained in the workers) is in the parent's ledger, in
    # the sequential order
    steps = [e for e in pool_events if e["kind"] == "gaussian_steps"]
    assert {e["party"] for e in steps} == {0, 1, 2, 3, 4}
    assert pool_events == seq_events
    assert pooled.history[-1]["privacy"] == sequential.history[-1]["privacy"]
    assert pooled.history[-1]["privacy"]["epsilon"] <= 8.0
    assert pooled.privacy is not None and sequential.privacy is not None
    assert pooled.privacy.sigmas == sequential.privacy.sigmas
    assert json.loads((tmp_path / "pool" / "config.json").read_text())["workers"] == 2


def test_pool_sizes_and_plain_runs_match_the_sequential_model() -> None:
    base = flat_params(run(None, rounds=2).model)
    for workers in (2, 3):
        assert np.array_equal(flat_params(run(workers, rounds=2).model), base)


def client_1_does(action: Any) -> Any:
    def trainer(model: Any, loader: Any) -> None:
        if len(loader.dataset) == 28:  # client 1 of make_loaders(): 24 + 4 examples
            action()
        train(model, loader)

    return trainer


def raise_error() -> None:
    raise RuntimeError("user bug on client 1")


def test_an_exception_in_a_worker_is_a_recorded_client_failure() -> None:
    pooled = run(2, client_1_does(raise_error))
    sequential = run(None, client_1_does(raise_error))
    for entry in pooled.history:
        assert entry["status"] == "completed"
        assert entry["participants"] == [0, 2, 3, 4]
        (failure,) = entry["client_failures"]
        assert failure["client"] == 1 and failure["stage"] == "train"
        # the type and the stage leave the client, not the message (that is in its log)
        assert failure["error"] == "RuntimeError at stage train"
    assert np.array_equal(flat_params(pooled.model), flat_params(sequential.model))


def test_a_worker_that_dies_fails_only_its_client_and_the_model_is_not_corrupted() -> None:
    pooled = run(2, client_1_does(lambda: os._exit(3)))
    # the same run in which client 1's train raises instead: identical model
    reference = run(None, client_1_does(raise_error))
    for entry in pooled.history:
        assert entry["status"] == "completed"
        assert entry["participants"] == [0, 2, 3, 4]
        (failure,) = entry["client_failures"]
        assert failure["client"] == 1
        assert "died" in failure["error"]
    assert np.array_equal(flat_params(pooled.model), flat_params(reference.model))


def test_spawn_with_objects_that_cannot_be_pickled_says_what_to_change() -> None:
    model = make_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    from secureagg.fl.model_state import StateCodec

    trainer = RoundTrainer(
        round_number=1, model=model, global_state=state, codec=StateCodec.from_model(model),
        train=lambda m, loader: None, loaders=make_loaders(), weights=[1] * 5,
        optimizer_factory=None, privacy=None, torch_seed_source=3,
    )
    with pytest.raises(ConfigurationError) as err:
        ClientPool(2, start_method="spawn").train(trainer, [0, 1])
    text = str(err.value)
    assert "train cannot be sent to a worker process" in text
    assert "module-level" in text and "workers=1" in text
    assert "client_loaders" not in text  # the loaders and the model can be pickled


@pytest.mark.parametrize("bad", [0, -1, 2.5, "many", True])
def test_bad_workers_values_are_configuration_errors(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="workers must be None, 'auto' or an integer"):
        run(bad, rounds=1)


def test_workers_auto_is_the_cores_and_none_is_sequential() -> None:
    assert resolve_workers(None) == 1
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
    assert run(None, rounds=1).pool is None
    assert run(2, rounds=1).pool is not None


def test_failures_stay_failures_with_schedules_and_dropouts() -> None:
    drop = Failures(schedule={1: {3: "train"}, 2: {0: "masked"}})
    pooled, sequential = run(2, failures=drop), run(None, failures=drop)
    assert [e["participants"] for e in pooled.history] == [[0, 1, 2, 4], [1, 2, 3, 4]]
    assert [e["participants"] for e in pooled.history] == [
        e["participants"] for e in sequential.history
    ]
    assert np.array_equal(flat_params(pooled.model), flat_params(sequential.model))
