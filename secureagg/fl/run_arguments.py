"""Checks of the arguments of :class:`~secureagg.fl.FederatedRun`, and the values they resolve to.

Every problem with the arguments is collected and reported at once
(:class:`~secureagg.errors.ConfigurationError` lists them), before anything runs; typed arguments
are still checked at run time, because users call this from untyped code. Besides
:func:`argument_problems`, each helper checks one argument and returns what it resolves to: the
FedAvg weights (:func:`client_weights`), the server step of every round (:func:`server_steps`),
the buffer policy of the model's state (:func:`buffer_policy`, :func:`released_buffer_problems`:
under DP-SGD no floating-point buffer is released without noise).

>>> server_steps(0.5, lambda r: 1.0 / r, rounds=2)
[0.5, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError
from secureagg.fl import schedule
from secureagg.fl.client import takes_optimizer
from secureagg.fl.model_state import StateCodec
from secureagg.fl.privacy import FederatedDP

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = [
    "argument_problems",
    "buffer_policy",
    "client_weights",
    "released_buffer_problems",
    "server_steps",
]


def argument_problems(
    *,
    model: Any,
    train: Any,
    client_loaders: Any,
    evaluate: Any,
    aggregator: Any,
    rounds: Any,
    clip: Any,
    server_lr: Any,
    weighting: Any,
    dp: Any,
    optimizer: Any,
    training_seed: Any,
    clients_per_round: Any,
) -> list[str]:
    """Every problem with the arguments of :class:`~secureagg.fl.FederatedRun` (empty: valid)."""
    problems: list[str] = []
    # Typed arguments are still checked at run time: users call this from untyped code.
    given: dict[str, object] = {
        "model": model, "train": train, "evaluate": evaluate, "optimizer": optimizer,
        "aggregator": aggregator,
    }
    if not isinstance(given["model"], torch.nn.Module):
        problems.append(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(given["train"]):
        problems.append("train must be a function train(model, loader[, optimizer])")
    if given["evaluate"] is not None and not callable(given["evaluate"]):
        problems.append("evaluate must be None or a function evaluate(model) -> dict")
    if isinstance(client_loaders, str | bytes) or not isinstance(client_loaders, Sequence):
        problems.append("client_loaders must be a list with one data loader per client")
        client_loaders = ()
    elif len(client_loaders) < 1:
        problems.append("client_loaders is empty: at least one client is needed")
    for i, loader in enumerate(client_loaders):
        try:
            one_shot = iter(loader) is loader
        except TypeError:
            problems.append(f"client_loaders[{i}] is not iterable")
            continue
        if one_shot:
            problems.append(
                f"client_loaders[{i}] is a one-shot iterator; pass a DataLoader or a list, "
                "which can be iterated again every round"
            )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        problems.append(f"rounds must be a positive integer, got {rounds!r}")
    if isinstance(clip, bool) or not isinstance(clip, int | float) or not (
        math.isfinite(clip) and clip > 0
    ):
        problems.append(f"clip must be a positive finite number, got {clip!r}")
    if isinstance(server_lr, bool) or not isinstance(server_lr, int | float) or not (
        math.isfinite(server_lr) and server_lr > 0
    ):
        problems.append(f"server_lr must be a positive finite number, got {server_lr!r}")
    if weighting not in ("auto", "examples", "uniform"):
        problems.append(
            f"weighting must be 'auto', 'examples' or 'uniform', got {weighting!r}"
        )
    dp_given: object = dp
    if dp_given is not None and not isinstance(dp_given, FederatedDP):
        problems.append(f"dp must be a secureagg.fl.FederatedDP, got {type(dp).__name__}")
        dp = None
    user_level = dp is not None and dp.user_level
    if user_level and weighting == "examples":
        problems.append(
            "user-level DP sums unweighted updates (a FedAvg weight multiplies a client's "
            "sensitivity): use weighting='uniform' (or the default 'auto')"
        )
    if dp is not None and dp.public_schedule and weighting == "examples":
        problems.append(
            "weighting='examples' releases each client's record count (the FedAvg weights and "
            "their total), which FederatedDP(batches_per_epoch=...) keeps private: use "
            "weighting='uniform' (or the default 'auto')"
        )
    if user_level and not isinstance(aggregator, str):
        problems.append("with user-level DP, aggregator must be a name such as 'secagg+'")
    if given["optimizer"] is not None and not callable(given["optimizer"]):
        problems.append("optimizer must be a factory: params -> torch.optim.Optimizer")
    dp_sgd = dp is not None and dp.dp_sgd
    needs_optimizer = optimizer is not None or dp_sgd
    if callable(train) and needs_optimizer and not takes_optimizer(train):
        problems.append(
            "with optimizer= (and for DP-SGD) train must accept (model, loader, optimizer)"
        )
    if dp_sgd and optimizer is None:
        problems.append(
            "DP-SGD wraps your optimizer: pass optimizer=lambda params: torch.optim.SGD("
            "params, lr=...) and use it in train(model, loader, optimizer)"
        )
    if training_seed is not None and (
        isinstance(training_seed, bool) or not isinstance(training_seed, int)
        or training_seed < 0
    ):
        problems.append(f"training_seed must be a non-negative integer, got {training_seed!r}")
    if not (isinstance(given["aggregator"], str) or callable(given["aggregator"])):
        problems.append("aggregator must be a name (e.g. 'secagg+') or a factory function")
    if isinstance(client_loaders, Sequence) and not isinstance(client_loaders, str | bytes):
        problems += schedule.check_clients_per_round(clients_per_round, len(client_loaders))
    return problems


def client_weights(
    loaders: Sequence[Any], given: Sequence[int] | None, *, uniform: bool
) -> list[int]:
    """FedAvg weights: ``given``, else each loader's ``len(loader.dataset)``; with ``uniform``,
    1 for every client with data. 0 marks a client without data (it fails when it trains)."""
    n = len(loaders)
    if given is not None:
        problems = []
        if len(given) != n:
            problems.append(f"client_weights has {len(given)} entries for {n} clients")
        for i, w in enumerate(given):
            if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 0:
                problems.append(f"client_weights[{i}] must be a non-negative integer, got {w!r}")
        if problems:
            raise ConfigurationError(problems)
        weights = [int(w) for w in given]
    else:
        weights = []
        missing = []
        for i, loader in enumerate(loaders):
            dataset = getattr(loader, "dataset", loader)
            try:
                weights.append(len(dataset))
            except TypeError:
                missing.append(i)
                weights.append(0 if not uniform else 1)
        if missing and not uniform:
            raise ConfigurationError(
                f"cannot count the examples of clients {missing[:10]} (their loaders have no "
                "sized .dataset); pass client_weights=[...] or weighting='uniform'"
            )
    if uniform:
        return [1 if w != 0 else 0 for w in weights]
    return weights


def server_steps(
    server_lr: float, schedule: Callable[[int], float] | None, rounds: int
) -> list[float]:
    """The FedAvg server step of rounds ``1..rounds``: ``server_lr * schedule(r)`` (each finite
    and > 0, else :class:`~secureagg.errors.ConfigurationError` listing the bad rounds)."""
    if schedule is None:
        return [server_lr] * rounds
    if not callable(schedule):
        raise ConfigurationError(
            "server_lr_schedule must be None or a function round -> factor of server_lr"
        )
    steps, bad = [], []
    for r in range(1, rounds + 1):
        factor = schedule(r)
        ok = isinstance(factor, int | float) and not isinstance(factor, bool)
        if not ok or not math.isfinite(factor) or factor <= 0:
            bad.append(f"round {r}: {factor!r}")
            continue
        steps.append(server_lr * float(factor))
    if bad:
        raise ConfigurationError(
            [f"server_lr_schedule must return a finite number > 0 for every round; got {bad[:5]}"]
        )
    return steps


def buffer_policy(buffers: Any, dp: Any) -> Any:
    """Resolve ``buffers`` (``"auto"``, ``"aggregate"``, ``"exclude"``) under ``dp``.

    DP-SGD noises gradients, not floating-point buffers (BatchNorm statistics, a custom running
    mean): released, they would carry the clients' raw data outside the accounting. So under
    DP-SGD ``"auto"`` keeps them on the clients (``"exclude"``); :func:`released_buffer_problems`
    refuses ``"aggregate"``. With only user-level DP they are part of the update that is
    L2-clipped and noised, so ``"auto"`` aggregates them, as without DP.
    """
    if buffers not in ("auto", "aggregate", "exclude"):
        raise ConfigurationError(
            f"buffers must be 'auto', 'aggregate' or 'exclude', got {buffers!r}"
        )
    if buffers == "auto":
        return "exclude" if dp is not None and dp.dp_sgd else "aggregate"
    return buffers


def released_buffer_problems(codec: StateCodec, dp: Any) -> list[str]:
    """Under DP-SGD, the buffers the codec would aggregate (and so release without noise)."""
    if dp is None or not dp.dp_sgd:
        return []
    released = [s.name for s in codec.specs if s.kind == "buffer" and s.aggregated]
    if not released:
        return []
    return [
        f"buffers='aggregate' under DP-SGD would release the floating-point buffers "
        f"{released[:10]} without noise (DP-SGD noises gradients only, so they would carry the "
        "clients' data outside the accounting): use buffers='exclude' (the default under DP: "
        "each client trains with the server's value and sends none)"
    ]
