"""Bad input gives a clear error or a recorded client failure, never a corrupted global model.

The strongest check: a run in which one client fails in some way ends with exactly the model of a
run in which that client simply dropped before training (seeded runs: every other client trains
identically), so the failing client contributed nothing at all.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import InvalidInputError

torch = pytest.importorskip("torch")
from secureagg.fl import Failures, FederatedRun  # noqa: E402
from tests.fl.conftest import flat_params, make_model, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning")


def run(
    loaders: list[Any], trainer: Any = train, *, rounds: int = 2, **kwargs: Any
) -> FederatedRun:
    r = FederatedRun(
        make_model(), train=trainer, client_loaders=loaders, aggregator="secagg+", rounds=rounds,
        seed=4, progress=False, **kwargs,
    )
    r.run()
    return r


_BASELINE: dict[str, np.ndarray] = {}


def without_client_1(loaders: list[Any]) -> np.ndarray:
    """The model of a 2-round run in which client 1 drops before training (computed once)."""
    if "model" not in _BASELINE:
        drop = Failures(schedule={r: {1: "train"} for r in (1, 2)})
        _BASELINE["model"] = flat_params(run(loaders, failures=drop).model)
    return _BASELINE["model"]


def client_1_does(action: Any) -> Any:
    """A train function that behaves for every client except client 1 (recognised by its data)."""

    def trainer(model: Any, loader: Any) -> None:
        train(model, loader)
        if len(loader.dataset) == 28:  # client 1 of make_loaders(): 24 + 4 examples
            action(model)

    return trainer


def assert_failure(r: FederatedRun, error: str, stage: str, *,
                   log: pytest.LogCaptureFixture | None = None, needle: str = "") -> None:
    """Client 1 failed at ``stage`` with the recorded ``error`` (what may leave a client: a fixed
    text, or the exception's type and stage); the exception's message (``needle``) is nowhere
    in the history and is in the client's own log (WARNING)."""
    for entry in r.history:
        assert entry["status"] == "completed"
        assert entry["participants"] == [0, 2, 3, 4]
        [failure] = entry["client_failures"]
        assert failure["client"] == 1
        assert failure["stage"] == stage
        assert failure["error"] == error
    if needle:
        assert log is not None
        assert needle not in json.dumps(r.history, default=str)
        local = [x for x in log.records if needle in x.getMessage()]
        assert local and all(x.levelno == logging.WARNING for x in local)


def test_a_client_that_changes_the_architecture(
        loaders: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="secureagg")
    def widen(model: Any) -> None:
        model[2] = torch.nn.Linear(16, 4)

    r = run(loaders, client_1_does(widen))
    assert_failure(r, "InvalidInputError at stage update", "update", log=caplog,
                   needle="'2.weight' has shape (4, 16), expected (3, 16)")
    np.testing.assert_array_equal(flat_params(r.model), without_client_1(loaders))


def test_a_client_whose_update_holds_nan(loaders: list[Any]) -> None:
    def poison(model: Any) -> None:
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")

    r = run(loaders, client_1_does(poison))
    assert_failure(r, "the update holds NaN/Inf values; the client sends nothing", "update")
    assert np.all(np.isfinite(flat_params(r.model)))
    np.testing.assert_array_equal(flat_params(r.model), without_client_1(loaders))


def test_a_client_whose_train_raises(loaders: list[Any], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    def explode(model: Any) -> None:
        raise RuntimeError("CUDA out of memory (simulated) at row SECRET-ROW-42")

    caplog.set_level(logging.WARNING, logger="secureagg")
    r = run(loaders, client_1_does(explode), run_dir=tmp_path / "run")
    assert_failure(r, "RuntimeError at stage train", "train", log=caplog, needle="SECRET-ROW-42")
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    assert files and not [f.name for f in files if b"SECRET-ROW-42" in f.read_bytes()]
    np.testing.assert_array_equal(flat_params(r.model), without_client_1(loaders))


def test_a_client_loader_that_yields_nothing(loaders: list[Any]) -> None:
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 12), torch.zeros(0, dtype=torch.long))
    patched = list(loaders)
    patched[1] = torch.utils.data.DataLoader(empty, batch_size=8)
    r = run(patched)
    assert r.weights[1] == 0
    assert_failure(r, "the client's data loader yields nothing (no examples to train on)", "data")
    np.testing.assert_array_equal(flat_params(r.model), without_client_1(loaders))


def test_every_client_failing_is_a_clear_error_and_an_aborted_round(loaders: list[Any]) -> None:
    def broken(model: Any, loader: Any) -> None:
        raise TypeError("train() got an unexpected keyword argument 'epochs'")

    model = make_model()
    before = flat_params(model)
    r = FederatedRun(model, train=broken, client_loaders=loaders, aggregator="secagg+",
                     rounds=2, seed=4, progress=False)
    with pytest.raises(InvalidInputError, match="every sampled client's train function raised; "
                       "first error: TypeError at stage train") as raised:
        r.run()
    assert "epochs" not in str(raised.value)  # the message is in the log, not in the error
    assert r.history[0]["status"] == "aborted"
    assert len(r.history[0]["client_failures"]) == 5
    np.testing.assert_array_equal(flat_params(model), before)


def test_an_evaluate_function_that_raises(loaders: list[Any]) -> None:
    def evaluate(model: Any) -> dict[str, float]:
        raise ValueError("the test set is on another machine")

    with pytest.warns(RuntimeWarning, match="evaluate failed"):
        r = run(loaders, evaluate=evaluate)
    for entry in r.history:
        assert entry["status"] == "completed"
        assert entry["metrics"] == {}
        assert entry["evaluation_error"] == "ValueError: the test set is on another machine"
    np.testing.assert_array_equal(flat_params(r.model), flat_params(run(loaders).model))


def test_evaluate_must_return_numbers(loaders: list[Any]) -> None:
    with pytest.warns(RuntimeWarning, match="evaluate failed"):
        r = run(loaders, rounds=1, evaluate=lambda model: {"accuracy": "high"})
    assert "ValueError" in r.history[0]["evaluation_error"]
    nan = run(loaders, rounds=1, evaluate=lambda model: {"loss": float("nan"), "acc": 1})
    assert nan.history[0]["metrics"] == {"loss": None, "acc": 1.0}
