"""Local training of one client with the user's own ``train`` function, and its model update.

Invariant: whatever the user's function does, the global model is never touched. Each client
trains a fresh deep copy of the global model; its update is ``local - global`` over the codec's
aggregated entries, computed only if the trained model still has the global model's architecture
(names, shapes, dtypes) and only returned if every value is finite. Any failure - the function
raises, the loader yields nothing, the architecture changed, the update holds NaN/Inf - becomes a
:class:`ClientOutcome` with ``error`` set, which the round records as a client failure (the
client then sends nothing). ``error`` is what the client may tell the server (a deployed node
reports it): a fixed sentence, or :func:`~secureagg.errors.failure_report`'s ``"<Type> at stage
<stage>"`` - never an exception's message, which may quote the client's data and is logged
locally instead. Local training runs on the caller's thread (in this process, or in a
worker of :mod:`secureagg.fl.pool`, which calls the same function); in a seeded run, torch's
RNG is forked and seeded per (round, client), so data order and dropout masks are reproducible
without disturbing the caller's RNG.

>>> ClientOutcome(client=0, update=None, weight=0, seconds=0.0, error="no data").failed
True
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secureagg.dp.torch_import import require_torch
from secureagg.errors import PrivacyBudgetExceeded, failure_report
from secureagg.fl.model_state import StateCodec
from secureagg.fl.schedule import TRAIN_STAGE, Failures, RoundSchedule, earliest, upload_stage

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = [
    "ClientOutcome",
    "LocalPhase",
    "LocalTraining",
    "loader_is_empty",
    "local_phase",
    "train_client",
]

_log = logging.getLogger(__name__)

#: ``(model, optimizer, loader) -> (model, optimizer, loader, finish)``: a hook that wraps the
#: client's objects for private training (DP-SGD) and returns ``finish()``, called after training,
#: which gives back the plain trained module and the privacy facts of this client's training.
LocalTraining = Callable[
    [Any, Any, Any], tuple[Any, Any, Any, Callable[[], tuple[Any, Mapping[str, Any]]]]
]


@dataclass(frozen=True)
class ClientOutcome:
    """What one client's local training produced (``update`` is ``None`` when it failed)."""

    client: int
    update: npt.NDArray[np.floating[Any]] | None
    weight: int
    seconds: float
    error: str | None = None
    #: where it failed: "data" (nothing to train on), "train" (the function raised), "budget"
    #: (DP-SGD refused a step: the client's privacy budget), "update" (wrong architecture,
    #: NaN/Inf)
    stage: str = "train"
    privacy: Mapping[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def loader_is_empty(loader: Any) -> bool:
    """True if ``loader`` yields nothing (``len`` when available, else a peek at one batch)."""
    try:
        return len(loader) == 0
    except TypeError:
        pass
    sentinel = object()
    return next(iter(loader), sentinel) is sentinel


def takes_optimizer(train: Callable[..., Any]) -> bool:
    """True if ``train`` accepts a third positional argument (the optimizer)."""
    try:
        params = list(inspect.signature(train).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 3


def train_client(
    *,
    client: int,
    global_model: torch.nn.Module,
    global_state: Mapping[str, torch.Tensor],
    codec: StateCodec,
    train: Callable[..., Any],
    loader: Any,
    weight: int,
    optimizer_factory: Callable[[Any], Any] | None,
    private: LocalTraining | None,
    seed: int | None,
) -> ClientOutcome:
    """Train one client and return its update or its failure (never raises for user errors)."""
    if loader_is_empty(loader) or weight < 1:
        why = (
            "the client's data loader yields nothing (no examples to train on)"
            if loader_is_empty(loader)
            else "the client's FedAvg weight is 0 (client_weights)"
        )
        return ClientOutcome(
            client=client, update=None, weight=0, seconds=0.0, error=why, stage="data"
        )
    model = copy.deepcopy(global_model)
    model.train()
    t0 = time.perf_counter()
    privacy: Mapping[str, Any] | None = None
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            optimizer = (
                optimizer_factory(model.parameters()) if optimizer_factory is not None else None
            )
            if private is not None:
                wrapped, optimizer, loader_, finish = private(model, optimizer, loader)
                with warnings.catch_warnings():
                    # Opacus's per-sample-gradient hooks on a first layer whose input needs no
                    # gradient: expected and harmless, but printed at every step otherwise.
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    train(wrapped, loader_, optimizer)
                trained, privacy = finish()
            elif optimizer is not None:
                train(model, loader, optimizer)
                trained = model
            else:
                train(model, loader)
                trained = model
    except PrivacyBudgetExceeded as exc:  # DP-SGD stopped before a step: the budget, not a bug
        return ClientOutcome(
            client=client,
            update=None,
            weight=0,
            seconds=time.perf_counter() - t0,
            error=failure_report(exc, stage="budget", party=f"client {client}"),
            stage="budget",
        )
    except Exception as exc:  # the user's code failed: a recorded client failure, not a crash
        return ClientOutcome(
            client=client,
            update=None,
            weight=0,
            seconds=time.perf_counter() - t0,
            error=failure_report(exc, stage="train", party=f"client {client}"),
        )
    seconds = time.perf_counter() - t0
    try:
        if not isinstance(trained, torch.nn.Module):
            raise TypeError(f"training returned a {type(trained).__name__}, not a module")
        update = codec.delta(trained.state_dict(), global_state)
    except (ValueError, TypeError, KeyError) as exc:
        return ClientOutcome(
            client=client,
            update=None,
            weight=0,
            seconds=seconds,
            error=failure_report(exc, stage="update", party=f"client {client}"),
            stage="update",
        )
    if not np.all(np.isfinite(update)):
        _log.warning("client %s: the update holds %d NaN/Inf values; it sends nothing", client,
                     int(np.count_nonzero(~np.isfinite(update))))
        return ClientOutcome(
            client=client,
            update=None,
            weight=0,
            seconds=seconds,
            error="the update holds NaN/Inf values; the client sends nothing",
            stage="update",
        )
    return ClientOutcome(
        client=client, update=update, weight=weight, seconds=seconds, privacy=privacy
    )


@dataclass
class LocalPhase:
    """The clients' side of a round: what each sampled slot sends, and who is silent from where.

    ``updates``/``weights`` have one entry per sampled slot (a zero placeholder, never sent, for
    a client silent from the first stage); ``silent`` maps slot -> stage.
    """

    updates: list[Any] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    silent: dict[int, str] = field(default_factory=dict)
    outcomes: list[ClientOutcome] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    stragglers: list[int] = field(default_factory=list)
    train_seconds: dict[int, float] = field(default_factory=dict)


def local_phase(
    *,
    round_number: int,
    plan: RoundSchedule,
    stages: tuple[str, ...],
    failures: Failures,
    train_one: Callable[[int], ClientOutcome],
    allowed: Callable[[int], tuple[bool, str]],
    after_client: Callable[[], None],
    placeholder: npt.NDArray[np.floating[Any]],
    uniform: bool,
) -> LocalPhase:
    """Train every sampled client (``train_one``) unless it drops at ``"train"`` or its privacy
    budget is spent (``allowed``); record failures; turn stragglers into dropouts at the upload
    stage. Client failures are silent from the protocol's first stage."""
    phase = LocalPhase()
    first, upload = stages[0], upload_stage(stages)
    for slot, cid in enumerate(plan.sampled):
        planned = plan.dropouts.get(cid)
        ok, note = allowed(cid) if planned != TRAIN_STAGE else (True, "")
        outcome = train_one(cid) if planned != TRAIN_STAGE and ok else None
        if outcome is not None:
            phase.outcomes.append(outcome)
            phase.train_seconds[cid] = outcome.seconds
        if not ok:
            phase.failures.append({"client": cid, "stage": "budget", "error": note})
        elif outcome is not None and (outcome.failed or outcome.update is None):
            phase.failures.append({"client": cid, "stage": outcome.stage, "error": outcome.error})
        if outcome is None or outcome.failed or outcome.update is None:
            phase.updates.append(placeholder)
            phase.weights.append(1)
            phase.silent[slot] = first
        else:
            phase.updates.append(outcome.update)
            phase.weights.append(1 if uniform else outcome.weight)
            drop_at = planned
            if failures.deadline is not None:
                simulated = (
                    float(failures.training_time(round_number, cid, outcome.seconds))
                    if failures.training_time is not None
                    else outcome.seconds
                )
                if simulated > failures.deadline:
                    phase.stragglers.append(cid)
                    drop_at = earliest(stages, planned, upload)
            if drop_at is not None:
                phase.silent[slot] = drop_at
        after_client()
    return phase
