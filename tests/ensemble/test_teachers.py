"""Teachers trained in parallel around the user's code (secureagg.ensemble.teachers).

Small and fast: a tiny MLP on a few hundred digits. Every pooled run is compared against the
sequential run of the same seed: a pool that reused a torch seed, lost a party's privacy events or
mixed up the parties' weights would give different teachers or a different ledger.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from secureagg.demos.data import load_digits_federated  # noqa: E402
from secureagg.dp import GaussianSteps, MechanismConfigured  # noqa: E402
from secureagg.dp.events import BudgetStop  # noqa: E402
from secureagg.ensemble.teachers import TeacherDP, TeacherSet, train_teachers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:seeded DP noise")

PER_PARTY = 80  # examples per party: a few hundred digits in all


def make_model() -> Any:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 10)
    )


def train(model: Any, loader: Any) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(10):
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()


def dp_train(model: Any, loader: Any, optimizer: Any) -> None:
    for x, y in loader:  # one epoch: what TeacherDP(epochs=1) calibrates for
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def dp_train_too_long(model: Any, loader: Any, optimizer: Any) -> None:
    for _ in range(3):  # three epochs against a budget calibrated for one
        dp_train(model, loader, optimizer)


def dp_train_then_edit(model: Any, loader: Any, optimizer: Any) -> None:
    dp_train(model, loader, optimizer)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # a change no DP-SGD step covers


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.2)


def train_fails_on_37(model: Any, loader: Any) -> None:
    if len(loader.dataset) == 37:
        raise ValueError("bad silo, 37 rows")
    train(model, loader)


def train_dies_on_37(model: Any, loader: Any) -> None:
    if len(loader.dataset) == 37:
        os._exit(3)  # the worker process dies, as with a segfault or the OOM killer
    train(model, loader)


def digits_loaders(parties: int = 3, sizes: dict[int, int] | None = None) -> list[Any]:
    data = load_digits_federated(num_clients=parties, alpha=100.0, seed=0)
    loaders = []
    for i, idx in enumerate(data.client_indices):
        idx = idx[: (sizes or {}).get(i, PER_PARTY)]
        ds = torch.utils.data.TensorDataset(
            torch.from_numpy(data.x_train[idx]), torch.from_numpy(data.y_train[idx])
        )
        loaders.append(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=len(idx) > 0))
    return loaders


def queries(count: int = 50) -> Any:
    data = load_digits_federated(num_clients=3, alpha=100.0, seed=0)
    return data.x_test[:count]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The sequential run in this process with one torch thread, as every worker uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def states_equal(a: TeacherSet, b: TeacherSet) -> bool:
    if a.parties != b.parties:
        return False
    for p in a.parties:
        sa, sb = a.teachers[p].state_dict(), b.teachers[p].state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def test_parallel_teachers_are_bitwise_identical_to_sequential(one_thread: None) -> None:
    loaders = digits_loaders(3)
    sequential = train_teachers(make_model, train, loaders, workers=1, seed=11)
    pooled = train_teachers(make_model, train, loaders, workers=2, seed=11)
    assert pooled.workers == 2 and sequential.workers == 1
    assert sequential.parties == (0, 1, 2) and not pooled.failures
    assert states_equal(sequential, pooled)
    # each party has its own seed (not one shared initialisation), and training moved the model
    w = [sequential.teachers[p].state_dict()["0.weight"] for p in range(3)]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    other_seed = train_teachers(make_model, train, loaders, workers=1, seed=12)
    assert not states_equal(sequential, other_seed)
    x = queries()
    probs_a, probs_b = sequential.predict_proba(x), pooled.predict_proba(x)
    assert all(np.array_equal(probs_a[p], probs_b[p]) for p in range(3))
    assert set(pooled.train_seconds) == {0, 1, 2} and pooled.wall_seconds > 0


def test_predictions_are_eval_mode_probabilities_per_party() -> None:
    teachers = train_teachers(make_model, train, digits_loaders(2), workers=1, seed=1)
    x = queries(40)
    probs = teachers.predict_proba(x, batch_size=7)  # several batches
    again = teachers.predict_proba(torch.from_numpy(x))
    for p in (0, 1):
        assert probs[p].shape == (40, 10) and probs[p].dtype == np.float64
        assert np.allclose(probs[p].sum(axis=1), 1.0)
        # dropout is off (eval mode): batches of 7 and of 40 agree up to float32 summation
        # order (the matrix product's blocking depends on the batch and torch's threads)
        assert np.allclose(probs[p], again[p], rtol=1e-5, atol=1e-7)
    labels = teachers.predict(x)
    assert all(np.array_equal(labels[p], probs[p].argmax(axis=1)) for p in (0, 1))
    data = load_digits_federated(num_clients=3, alpha=100.0, seed=0)
    assert np.mean(labels[0] == data.y_test[:40]) > 0.5  # the teachers learned something


def test_a_party_whose_train_raises_is_recorded_and_the_others_train() -> None:
    loaders = [*digits_loaders(4, sizes={1: 37, 3: 0}), 42]
    teachers = train_teachers(make_model, train_fails_on_37, loaders, workers=2, seed=2)
    assert teachers.parties == (0, 2)
    assert list(teachers.failures[:2]) == [
        {"party": 1, "stage": "train", "error": "ValueError at stage train"},
        {"party": 3, "stage": "data", "error": "the party's data loader yields nothing"},
    ]
    assert teachers.failures[2]["party"] == 4 and teachers.failures[2]["stage"] == "data"
    assert teachers.failures[2]["error"] == (
        "the party's data loader cannot be iterated (TypeError at stage data)")
    assert set(teachers.predict_proba(queries(5))) == {0, 2}  # a failed party casts no vote
    assert teachers.summary()["failures"][0]["party"] == 1


def test_a_worker_that_dies_fails_only_its_party(one_thread: None) -> None:
    loaders = digits_loaders(3, sizes={2: 37})
    teachers = train_teachers(make_model, train_dies_on_37, loaders, workers=2, seed=5)
    assert teachers.parties == (0, 1)
    assert [(f["party"], f["stage"]) for f in teachers.failures] == [(2, "worker")]
    assert "died" in str(teachers.failures[0]["error"])
    # the survivors are the teachers a run without the culprit gives
    healthy = train_teachers(make_model, train, loaders[:2], workers=1, seed=5)
    assert states_equal(teachers, healthy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be"),
        ({"workers": True}, "workers must be"),
        ({"workers": "many"}, "workers must be"),
        ({"loaders": []}, "loaders must be a non-empty sequence"),
        ({"loaders": "abc"}, "loaders must be a non-empty sequence"),
        ({"make_model": 5}, "make_model must be a function"),
        ({"train": None}, "train must be a function"),
        ({"optimizer": 3}, "optimizer must be a factory"),
        ({"dp": TeacherDP(epsilon=1.0)}, "DP-SGD wraps your optimizer"),
        ({"dp": {"epsilon": 1.0}}, "dp must be a TeacherDP"),
        ({"optimizer": sgd}, "train must accept (model, loader, optimizer)"),
        ({"seed": -1}, "seed must be"),
        ({"start_method": "thread"}, "start_method must be"),
    ],
)
def test_bad_inputs_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"make_model": make_model, "train": train, "loaders": [None]}
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_teachers(args.pop("make_model"), args.pop("train"), args.pop("loaders"), **args)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        train_teachers(5, None, [], workers=0)  # type: ignore[arg-type]
    assert len(info.value.problems) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of epsilon= and noise_multiplier="),
        ({"epsilon": 1.0, "noise_multiplier": 1.0}, "exactly one of"),
        ({"epsilon": -1.0}, "epsilon must be"),
        ({"epsilon": 1.0, "epochs": 0}, "epochs must be an integer"),
        ({"epsilon": 1.0, "max_grad_norm": 0}, "max_grad_norm must be"),
        ({"epsilon": 1.0, "delta": 1}, "delta must be"),
        ({"epsilon": 1.0, "accountant": "gdp"}, "gdp"),
    ],
)
def test_bad_dp_settings_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TeacherDP(**kwargs)


def test_dp_sgd_teachers_report_their_epsilon_within_the_target(one_thread: None) -> None:
    loaders = digits_loaders(2)
    dp = TeacherDP(epsilon=4.0, epochs=1, max_grad_norm=1.0)
    pooled = train_teachers(make_model, dp_train, loaders, optimizer=sgd, dp=dp, workers=2, seed=3)
    assert pooled.parties == (0, 1) and pooled.privacy is not None
    events = pooled.privacy.events
    for p in range(2):
        eps = pooled.epsilon(p)
        assert eps is not None and math.isfinite(eps) and 0.0 < eps <= 4.0
        steps = [e for e in events if isinstance(e, GaussianSteps) and e.party == p]
        configured = [e for e in events if isinstance(e, MechanismConfigured) and e.party == p]
        assert steps and len(configured) == 1
        assert steps[0].noise_multiplier == pooled.noise_multipliers[p] > 0
    assert pooled.summary()["dp_sgd"]["epsilon_per_party"] == {
        str(p): pooled.epsilon(p) for p in range(2)
    }
    # the ledger the parent keeps is the one a sequential run writes, and so are the teachers
    sequential = train_teachers(
        make_model, dp_train, loaders, optimizer=sgd, dp=dp, workers=1, seed=3
    )
    assert sequential.privacy is not None
    assert [e.to_dict() for e in sequential.privacy.events] == [e.to_dict() for e in events]
    assert states_equal(sequential, pooled)


def test_a_teacher_that_trains_past_its_budget_is_stopped_and_fails() -> None:
    loaders = digits_loaders(1)
    dp = TeacherDP(epsilon=2.0, epochs=1)
    teachers = train_teachers(
        make_model, dp_train_too_long, loaders, optimizer=sgd, dp=dp, workers=1, seed=4
    )
    assert teachers.parties == ()
    assert {f["stage"] for f in teachers.failures} == {"budget"}
    assert teachers.privacy is not None
    stops = [e for e in teachers.privacy.events if isinstance(e, BudgetStop)]
    assert [e.party for e in stops] == [0]


def test_a_teacher_changed_outside_the_dp_optimizer_is_not_released(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="secureagg")
    dp = TeacherDP(noise_multiplier=1.0)
    teachers = train_teachers(
        make_model, dp_train_then_edit, digits_loaders(1), optimizer=sgd, dp=dp, workers=1, seed=6
    )
    assert teachers.parties == ()
    assert teachers.failures[0]["stage"] == "train"
    assert teachers.failures[0]["error"] == "InvalidInputError at stage train"
    # the reason (it names parameters) stays in the party's log
    assert any("changed outside the DP optimizer's steps" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert teachers.privacy is not None and not teachers.privacy.events  # nothing accounted


def test_spawn_names_the_objects_it_cannot_send_to_a_worker() -> None:
    with pytest.raises(ConfigurationError) as info:
        train_teachers(
            lambda: make_model(), train, digits_loaders(2), workers=2, start_method="spawn"
        )
    assert any(p.startswith("make_model cannot be sent") for p in info.value.problems)
    assert not any(p.startswith("train cannot be sent") for p in info.value.problems)
