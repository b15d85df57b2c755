"""A canary audit of a federated DP-SGD configuration on the digits data, ready to run.

:func:`secureagg.audit.canary.canary_audit` audits any :class:`~secureagg.fl.FederatedRun` the
user builds; this module builds one: sklearn's digits split across ``clients`` by Dirichlet
label skew, a 64-128-10 MLP, local SGD (DP-SGD through the library's Opacus wrapper when
``epsilon`` is given), FedAvg through ``protocol`` - the library's real federated path. The
canaries (random 0/1 pixel patterns with random labels, :func:`~secureagg.audit.canary.
random_canaries`) go into client 0's training data; the score of a canary is its logit margin
under the final model minus the margin under the initial one.

Under DP the DP-SGD schedule is public and fixed from public numbers (``batches_per_epoch``
from the canary client's expected size with half of the canaries in), so the record count of
the canary client is not released; the claimed ε is that client's sample-level ε in the run's
own ledger.

``secureagg audit RUN_DIR --canaries M`` runs this for the configuration of a demo run
(protocol, clients, rounds, local epochs, target ε), and once more with DP off as a control: a
clearly positive bound there shows the audit detects leakage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from secureagg.audit.canary import CanaryAudit, CanaryPlacement, canary_audit, logit_margins

__all__ = ["digits_build_run", "digits_canary_audit", "margins"]


def digits_build_run(
    epsilon: float | None,
    *,
    canaries: int,
    rounds: int,
    local_epochs: int,
    clients: int = 5,
    protocol: str = "secagg+",
    delta: float = 1e-5,
    data_seed: int = 0,
    evaluate: bool = True,
    run_seed: int | None = None,
    runs: list[Any] | None = None,
) -> Callable[[CanaryPlacement], Any]:
    """``build_run`` for :func:`canary_audit`: the digits run with the canaries in client 0
    (see the module docstring). ``run_seed`` seeds the whole run (tests only: NOT private);
    ``runs`` (optional) collects each run built, for tests."""
    import torch

    from secureagg.demos.data import load_digits_federated
    from secureagg.fl import FederatedDP, FederatedRun

    data = load_digits_federated(num_clients=clients, alpha=1.0, seed=data_seed)
    test_x, test_y = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    def train(model: Any, loader: Any, optimizer: Any) -> None:
        for _ in range(local_epochs):
            for x, y in loader:
                optimizer.zero_grad()
                loss: Any = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()

    def accuracy(model: Any) -> Mapping[str, float]:
        with torch.no_grad():
            return {"accuracy": float((model(test_x).argmax(1) == test_y).float().mean())}

    def build(placement: CanaryPlacement) -> Any:
        loaders = []
        for i, idx in enumerate(data.client_indices):
            x, y = data.x_train[idx], data.y_train[idx]
            if i == placement.client:
                x = np.concatenate([x, placement.inputs])
                y = np.concatenate([y, placement.labels])
            ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
            loaders.append(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True))
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )
        dp = None
        if epsilon is not None:
            expected = max(len(i) for i in data.client_indices) + canaries // 2
            dp = FederatedDP(
                epsilon=epsilon, local_epochs=local_epochs, max_grad_norm=1.0, delta=delta,
                batches_per_epoch=max(1, expected // 16), expected_batch_size=16,
            )
        run = FederatedRun(
            model, train=train, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            client_loaders=loaders, evaluate=accuracy if evaluate else None,
            aggregator=protocol, clip=10.0, rounds=rounds, dp=dp, progress=False,
            seed=run_seed,
        )
        if runs is not None:
            runs.append((run, placement, data))
        return run

    return build


def margins(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The canaries' logit margins under ``model`` (the score :func:`canary_audit` takes)."""
    import torch

    with torch.no_grad():
        return logit_margins(model(torch.from_numpy(x)).numpy(), y)


def digits_canary_audit(
    epsilon: float | None,
    *,
    canaries: int,
    rounds: int,
    local_epochs: int,
    clients: int = 5,
    protocol: str = "secagg+",
    seed: int | None = None,
    run_seed: int | None = None,
    runs: list[Any] | None = None,
) -> CanaryAudit:
    """One canary audit of the digits configuration (``epsilon=None``: DP off). ``seed`` fixes
    the canaries and inclusion bits, ``run_seed`` the run (tests and benchmarks only)."""
    build = digits_build_run(epsilon, canaries=canaries, rounds=rounds,
                             local_epochs=local_epochs, clients=clients, protocol=protocol,
                             run_seed=run_seed, runs=runs)
    return canary_audit(build, margins, canaries=canaries, input_shape=(64,), num_classes=10,
                        seed=seed)
