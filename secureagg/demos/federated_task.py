"""The task behind ``secureagg demo``: sklearn's digits, 10 silos, a small MLP, the user's loop.

Everything here is ordinary user code - a model, a ``train(model, loader, optimizer)`` loop, an
``evaluate(model)`` function, one ``DataLoader`` per client - handed to
:class:`~secureagg.fl.FederatedRun`, exactly as ``docs/federated.md`` shows. The data split
(Dirichlet label skew), the model initialisation and the local data order are seeded
(``DemoSettings.seed``) so that the secure run and the plaintext baseline see the same split and
start from the same model; keys, masks, noise and dropouts are fresh in every run. Only
``DemoSettings.run_seed`` (``secureagg demo --seed``) seeds them too, for a run that can be
replayed exactly: the run is then flagged ``seeded`` in its run directory and is NOT private.

>>> DemoSettings().protocol, DemoSettings().clients, DemoSettings().rounds
('secagg+', 10, 20)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from secureagg.demos.data import FederatedData, load_digits_federated, make_loaders
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError
from secureagg.fl.deployed import RoundDeployment
from secureagg.fl.pool import Workers, worker_problems
from secureagg.fl.privacy import FederatedDP
from secureagg.fl.records import RoundRecord
from secureagg.fl.run import FederatedRun
from secureagg.fl.schedule import Failures

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = [
    "DemoSettings",
    "DigitsTask",
    "build_run",
    "digits_task",
    "run_demo",
    "use_one_thread",
]


def use_one_thread() -> None:
    """Run torch on one intra-op thread: the demo's model is tiny, and several threads per process
    on a shared 2-core machine spend more time waiting for each other than computing (measured:
    25x slower rounds under load). Larger models should keep torch's default."""
    torch.set_num_threads(1)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. ``epsilon=None`` turns differential privacy off."""

    protocol: str = "secagg+"
    clients: int = 10
    rounds: int = 20
    dropout: float = 0.0
    epsilon: float | None = 8.0
    delta: float = 1e-5
    alpha: float = 0.5
    seed: int = 0
    hidden: int = 128
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    clip: float = 1.0
    # under DP (see docs/federated.md, "Differential privacy", for the measurements)
    dp_batch_size: int = 64
    dp_lr: float = 0.4
    max_grad_norm: float = 0.5
    user_noise: float = 0.01
    update_clip: float = 5.0
    dp_server_lr: float = 3.0
    dp_decay: tuple[float, float] = (0.7, 0.85)
    workers: Workers = None
    #: seeds everything else too (keys, masks, noise, sampling, dropouts): reproducible, NOT secret
    run_seed: int | None = None
    #: server threat model of secagg/secagg+ (None: the aggregator's default, curious)
    threat: str | None = None

    def problems(self) -> list[str]:
        out = []
        if self.run_seed is not None and (
            not isinstance(self.run_seed, int) or isinstance(self.run_seed, bool)
            or self.run_seed < 0
        ):
            out.append(f"--seed must be a non-negative integer, got {self.run_seed}")
        if self.threat is not None and self.threat not in ("curious", "malicious"):
            out.append(f"--threat must be 'curious' or 'malicious', got {self.threat!r}")
        elif self.threat is not None and self.protocol not in ("secagg", "secagg+"):
            out.append(
                f"--threat applies to secagg and secagg+ only, not to {self.protocol!r}"
            )
        if not 2 <= self.clients <= 100:
            out.append(f"--clients must be in [2, 100], got {self.clients}")
        if not 1 <= self.rounds <= 1000:
            out.append(f"--rounds must be in [1, 1000], got {self.rounds}")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            out.append(f"--epsilon must be a positive number, got {self.epsilon}")
        if not (math.isfinite(self.user_noise) and self.user_noise >= 0):
            out.append(f"--user-noise must be a number >= 0, got {self.user_noise}")
        out += [f"--{p}" for p in worker_problems(self.workers)]
        return out

    @property
    def learning_rate(self) -> float:
        """The clients' SGD learning rate: ``dp_lr`` under DP-SGD, ``lr`` without DP."""
        return self.dp_lr if self.epsilon is not None else self.lr

    @property
    def loader_batch_size(self) -> int:
        """The clients' (expected) batch size: ``dp_batch_size`` under DP-SGD, else
        ``batch_size``."""
        return self.dp_batch_size if self.epsilon is not None else self.batch_size

    @property
    def server_lr(self) -> float:
        """The FedAvg server step: ``dp_server_lr`` with distributed DP, else 1.

        Under distributed DP every client's update is L2-clipped to ``update_clip``. The demo's
        updates are dominated by their DP-SGD noise (norms 8 to 19 at batch 16, the smallest
        silos the noisiest), so a clip below all of them scales each update by about 1 / its
        noise: a
        near inverse-noise weighting of the clients, which lowers the noise of the mean; the
        server step ``dp_server_lr`` restores the step length. Post-processing of the noised
        updates: no privacy cost, and the distributed noise ``user_noise * update_clip`` keeps
        the user-level ε (which depends on ``user_noise`` only)."""
        dp = self.dp()
        return self.dp_server_lr if dp is not None and dp.user_level else 1.0

    def server_lr_factor(self, round_number: int) -> float:
        """Under DP, the server step is halved after ``dp_decay[0] * rounds`` rounds and halved
        again after ``dp_decay[1] * rounds`` (1, 0.5, 0.25): the global model otherwise ends on
        the DP noise of its last steps (measured at ε = 8 on the demo's split: 83.0 to 88.9 % with
        a constant step of 2, 86.9 to 91.1 % with a step of 3 and this decay; docs/federated.md).
        Post-processing of the noised aggregates: no privacy cost. Without DP, 1."""
        if self.epsilon is None:
            return 1.0
        first, second = (math.ceil(f * self.rounds) for f in self.dp_decay)
        return 1.0 if round_number <= first else 0.5 if round_number <= second else 0.25

    def dp(self) -> FederatedDP | None:
        """The DP of the run: DP-SGD on every client for ``epsilon`` (sample level, per client)
        and, inside SecAgg/SecAgg+, distributed noise of multiplier ``user_noise`` on the sum."""
        if self.epsilon is None:
            return None
        distributed = self.user_noise > 0 and self.protocol in ("secagg", "secagg+")
        return FederatedDP(
            epsilon=self.epsilon,
            local_epochs=self.local_epochs,
            max_grad_norm=self.max_grad_norm,
            delta=self.delta,
            distributed_noise_multiplier=self.user_noise if distributed else None,
            update_clip=self.update_clip,
        )


@dataclass(frozen=True)
class DigitsTask:
    """The user's pieces: data, model factory, training loop, evaluation."""

    data: FederatedData
    loaders: list[Any]
    test_loader: Any
    make_model: Callable[[], torch.nn.Module]
    train: Callable[[torch.nn.Module, Any, Any], None]
    evaluate: Callable[[torch.nn.Module], Mapping[str, float]]
    optimizer: Callable[[Any], Any]
    parameters: int


def digits_task(settings: DemoSettings) -> DigitsTask:
    """Build the digits task for ``settings`` (loads the data set that ships with sklearn)."""
    data = load_digits_federated(
        num_clients=settings.clients, alpha=settings.alpha, seed=settings.seed
    )
    loaders, test_loader = make_loaders(data, batch_size=settings.loader_batch_size)

    def make_model() -> torch.nn.Module:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(settings.seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, settings.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(settings.hidden, 10),
        )
        torch.random.set_rng_state(generator_state)
        return model

    def optimizer(params: Any) -> Any:
        return torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum)

    def train(model: torch.nn.Module, loader: Any, opt: Any) -> None:
        for _ in range(settings.local_epochs):
            for x, y in loader:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()

    def evaluate(model: torch.nn.Module) -> Mapping[str, float]:
        correct = total = 0
        loss = 0.0
        for x, y in test_loader:
            logits = model(x)
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += int(y.numel())
        return {"accuracy": correct / total, "loss": loss / total}

    probe = make_model()
    return DigitsTask(
        data=data,
        loaders=loaders,
        test_loader=test_loader,
        make_model=make_model,
        train=train,
        evaluate=evaluate,
        optimizer=optimizer,
        parameters=sum(p.numel() for p in probe.parameters()),
    )


def build_run(
    settings: DemoSettings,
    task: DigitsTask,
    *,
    run_dir: str | os.PathLike[str] | None,
    progress: bool,
    round_summary: Callable[[Mapping[str, Any], int], str] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    deployment: RoundDeployment | None = None,
) -> FederatedRun:
    """The federated run of ``task`` with ``settings``, not started. With ``deployment`` its
    rounds run where the clients are (``secureagg demo --engine flower``); a node builds the same
    run to train its own client (:mod:`secureagg.demos.flower_app`)."""
    problems = settings.problems()
    if problems:
        raise ConfigurationError(problems)
    return FederatedRun(
        task.make_model(),
        train=task.train,
        optimizer=task.optimizer,
        client_loaders=task.loaders,
        evaluate=task.evaluate,
        aggregator=settings.protocol,
        clip=settings.clip,
        rounds=settings.rounds,
        failures=Failures(dropout_rate=settings.dropout),
        server_lr=settings.server_lr,
        server_lr_schedule=settings.server_lr_factor if settings.epsilon is not None else None,
        aggregator_options={"threat": settings.threat} if settings.threat is not None else None,
        dp=settings.dp(),
        run_dir=run_dir,
        seed=settings.run_seed,
        training_seed=settings.seed,
        progress=progress,
        round_summary=round_summary,
        on_round=on_round,
        workers=settings.workers if deployment is None else None,
        deployment=deployment,
    )


def run_demo(
    settings: DemoSettings,
    task: DigitsTask,
    *,
    run_dir: str | os.PathLike[str] | None,
    progress: bool,
    round_summary: Callable[[Mapping[str, Any], int], str] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederatedRun:
    """Train ``task`` federated with ``settings``; return the finished run."""
    run = build_run(settings, task, run_dir=run_dir, progress=progress,
                    round_summary=round_summary, on_round=on_round)
    run.run()
    return run


def baseline_settings(settings: DemoSettings) -> DemoSettings:
    """Plaintext FedAvg on the same split, from the same model: no DP, no secure aggregation
    (seeded with ``run_seed`` too when the secure run is)."""
    return replace(settings, protocol="plain", epsilon=None, threat=None)
