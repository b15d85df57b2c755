"""Tiny federated problems for the tests of secureagg.fl (fast: small models, few rounds)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

FEATURES, CLASSES, HIDDEN = 12, 3, 16


def make_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )


def make_loaders(
    num_clients: int = 5, per_client: int = 24, *, seed: int = 0, batch_size: int = 8
) -> list[Any]:
    """Synthetic, learnable data: the class is the argmax of a fixed linear map."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(FEATURES, CLASSES))
    loaders = []
    for i in range(num_clients):
        x = rng.normal(size=(per_client + 4 * i, FEATURES)).astype(np.float32)
        y = (x @ w).argmax(axis=1)
        ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        loaders.append(torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True))
    return loaders


def train(model: Any, loader: Any) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def dp_train(model: Any, loader: Any, optimizer: Any) -> None:
    """The same loop, stepping the optimizer it is given (DP-SGD wraps it)."""
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.1)


def make_evaluate(loaders: list[Any]) -> Callable[[Any], Mapping[str, float]]:
    xs = torch.cat([loader.dataset.tensors[0] for loader in loaders])
    ys = torch.cat([loader.dataset.tensors[1] for loader in loaders])

    def evaluate(model: Any) -> Mapping[str, float]:
        logits = model(xs)
        return {
            "accuracy": float((logits.argmax(1) == ys).float().mean()),
            "loss": float(torch.nn.functional.cross_entropy(logits, ys)),
        }

    return evaluate


def flat_params(model: Any) -> np.ndarray:
    return np.concatenate(
        [v.detach().reshape(-1).double().numpy() for v in model.state_dict().values()]
    )


@pytest.fixture
def loaders() -> list[Any]:
    return make_loaders()


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """Tiny models train fastest on one thread (several threads thrash on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
