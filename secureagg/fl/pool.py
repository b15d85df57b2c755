"""Local training of a round's clients in a process pool sized to the cores (``workers=``).

Trust domain. The embedded simulation runs *every* party in one process: the server, each client
and the user's own training code. The pool only spreads that one trust domain over several
processes of the same user, on the same machine. A worker receives the user's own objects (the
global model, ``train``, the loaders, the optimizer factory and the DP settings) - inherited by
``fork``, or pickled by :mod:`multiprocessing` with ``spawn`` - runs the user's ``train`` on a copy
of the global model, and sends back the new flat update (numpy), its timing, and the privacy events
of its DP-SGD steps. That process-level pickling of the user's own objects is acceptable for that
reason alone; **no other party's wire message is ever unpickled**: the protocol messages are still
produced and consumed by the parent process, through the versioned codec, after the pool is done.

What stays in the parent: every party of the protocol, the accountants and the privacy ledger, the
run directory, the global model. A worker's privacy events are returned as dicts
(:meth:`~secureagg.dp.events.PrivacyEvent.to_dict`) and re-emitted by the parent in the clients'
order, so the ledger is the one a sequential run writes.

Invariants:

* **Same result.** A client trains with the function the sequential run uses
  (:func:`~secureagg.fl.client.train_client`), from the same global state and the same
  per-(round, client) seeds, so a seeded run gives the bitwise-identical model with ``workers=1``
  and ``workers=N`` - provided torch uses one thread in both (workers always do: several threads
  per worker would oversubscribe the cores, and torch's results can depend on the thread count).
* **Failures are client failures.** An exception in the user's ``train`` is recorded as today; a
  worker that dies (``os._exit``, a crash, the OOM killer) breaks the pool: every client it had
  not finished is trained again alone in a fresh one-process pool, so only the culprit is recorded
  as failed. Nothing a failed worker computed is ever applied or released (and so nothing of it is
  accounted: DP-SGD steps count when their output is released).
* **Fresh state per round.** The pool is created for a round and closed after it: with ``fork``
  the workers see the current global model and accountant (copy-on-write, a few ms per worker).
  Torch's RNG is reseeded per worker from ``os.urandom`` when the run is not seeded, so workers do
  not share data orders; the user's own RNGs (numpy) are forked copies - reseed them in ``train``
  if you use them.

Start method: ``fork`` on Linux, ``spawn`` elsewhere (or ``ClientPool(start_method="spawn")``).
``spawn`` pickles the user's objects: ``train`` and the optimizer factory must be module-level
functions (not lambdas or closures), the loaders picklable and the model's class importable
(``evaluate`` stays in the parent); otherwise :class:`~secureagg.errors.ConfigurationError` says
which object cannot be sent and what to change (or use ``workers=1``). Spawned workers import
torch again every round: the pool pays off there only when local training takes seconds.

>>> resolve_workers(None), resolve_workers(1), resolve_workers("auto") >= 1
(1, 1, True)
>>> worker_problems(0)
["workers must be None, 'auto' or an integer >= 1, got 0"]
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, Literal

from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, describe_exception, failure_report
from secureagg.fl import schedule
from secureagg.fl.client import ClientOutcome, train_client
from secureagg.fl.model_state import StateCodec
from secureagg.fl.privacy import PrivacyController

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = [
    "ClientPool",
    "RoundTrainer",
    "TrainedClient",
    "Workers",
    "default_start_method",
    "resolve_workers",
    "train_captured",
    "worker_problems",
]

#: ``None`` or ``1``: train in this process, one client after the other; ``"auto"``: one worker
#: per core available to this process; ``N``: ``N`` worker processes.
Workers = int | Literal["auto"] | None
StartMethod = Literal["fork", "spawn"]


def worker_problems(workers: object) -> list[str]:
    """Problems with a ``workers=`` argument (empty: valid)."""
    if workers is None or workers == "auto":
        return []
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        return [f"workers must be None, 'auto' or an integer >= 1, got {workers!r}"]
    return []


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(workers: Workers) -> int:
    """The number of worker processes for ``workers`` (1: no pool)."""
    problems = worker_problems(workers)
    if problems:
        raise ConfigurationError(problems)
    if workers is None:
        return 1
    if workers == "auto":
        return available_cores()
    return int(workers)


def default_start_method() -> StartMethod:
    """``fork`` on Linux (cheap, nothing pickled), ``spawn`` elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"


@dataclass(frozen=True)
class RoundTrainer:
    """Everything one round's local training needs; ``trainer(client)`` trains one client.

    The same object trains in this process (sequential) and in a worker (pool), so both give
    the same outcome for the same seeds.
    """

    round_number: int
    model: torch.nn.Module
    global_state: Mapping[str, torch.Tensor]
    codec: StateCodec
    train: Callable[..., Any]
    loaders: Sequence[Any]
    weights: Sequence[int]
    optimizer_factory: Callable[[Any], Any] | None
    privacy: PrivacyController | None
    torch_seed_source: bytes | int | None

    def __call__(self, client: int) -> ClientOutcome:
        r = self.round_number
        return train_client(
            client=client,
            global_model=self.model,
            global_state=self.global_state,
            codec=self.codec,
            train=self.train,
            loader=self.loaders[client],
            weight=self.weights[client],
            optimizer_factory=self.optimizer_factory,
            private=self.privacy.local_training(client, r) if self.privacy is not None else None,
            seed=(
                schedule.torch_seed(self.torch_seed_source, r, client)
                if self.torch_seed_source is not None
                else None
            ),
        )


@dataclass(frozen=True)
class TrainedClient:
    """What a worker sends back: the outcome, the privacy events of its training (as
    ``(level, event dict)``), and the DP-SGD noise multiplier and sampling rate it used."""

    outcome: ClientOutcome
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    noise_multiplier: float | None = None
    sample_rate: float | None = None

    def absorb_into(self, privacy: PrivacyController | None) -> ClientOutcome:
        """Re-emit the worker's privacy events into the parent's accountants; the outcome."""
        if privacy is not None:
            privacy.absorb(
                self.outcome.client,
                self.events,
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
            )
        return self.outcome


# The round's trainer, in a worker process (inherited with fork, set by the initializer with
# spawn). In the parent it is set only while a fork pool starts.
_TRAINER: RoundTrainer | None = None


def _init_worker(trainer: RoundTrainer | None, reseed: bool) -> None:
    global _TRAINER
    if trainer is not None:
        _TRAINER = trainer
    torch.set_num_threads(1)  # one thread per worker: the pool already fills the cores
    if reseed:
        # an unseeded run: forked workers would otherwise share torch's RNG state (data order,
        # dropout masks); privacy noise and sampling never come from torch's RNG
        torch.manual_seed(int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1))


def _train_in_worker(client: int) -> TrainedClient:
    trainer = _TRAINER
    if trainer is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("the worker has no round to train")
    return train_captured(trainer, client)


def train_captured(trainer: RoundTrainer, client: int) -> TrainedClient:
    """Train ``client`` and capture the privacy events of its DP-SGD steps, for a parent that
    re-emits them (:meth:`TrainedClient.absorb_into`): a pool worker, or a deployed node
    (:mod:`secureagg.fl.deployed`)."""
    privacy = trainer.privacy
    if privacy is None:
        return TrainedClient(outcome=trainer(client))
    with privacy.capture() as events:
        outcome = trainer(client)
    return TrainedClient(
        outcome=outcome,
        events=tuple(events),
        noise_multiplier=privacy.sigmas.get(client),
        sample_rate=privacy.rates.get(client),
    )


def _worker_raised(exc: BaseException, client: int) -> str:
    # the client's failure as it may leave the client: type and stage, the message logged here
    return "the training worker raised " + failure_report(exc, stage="train",
                                                          party=f"client {client}")


def _failed(client: int, why: str) -> TrainedClient:
    return TrainedClient(
        outcome=ClientOutcome(
            client=client, update=None, weight=0, seconds=0.0, error=why, stage="train"
        )
    )


class ClientPool:
    """Trains a round's clients in ``workers`` processes (see the module docstring).

    >>> ClientPool(2).workers
    2
    """

    def __init__(self, workers: int, *, start_method: StartMethod | None = None) -> None:
        problems = worker_problems(workers)
        method = start_method or default_start_method()
        if method not in multiprocessing.get_all_start_methods() or method not in (
            "fork",
            "spawn",
        ):
            problems.append(
                f"start_method {method!r} is not available here; use one of "
                f"{[m for m in ('fork', 'spawn') if m in multiprocessing.get_all_start_methods()]}"
            )
        if problems:
            raise ConfigurationError(problems)
        self.workers = int(workers)
        self.start_method: StartMethod = method
        self._warm = False

    def train(
        self,
        trainer: RoundTrainer,
        clients: Sequence[int],
        *,
        on_done: Callable[[], None] | None = None,
    ) -> dict[int, TrainedClient]:
        """Train ``clients`` (distinct ids); return each one's result, failures included."""
        results: dict[int, TrainedClient] = {}
        if not clients:
            return results
        if self.start_method == "fork" and not self._warm:
            warm_up(dp_sgd=trainer.privacy is not None and trainer.privacy.sample is not None)
            self._warm = True
        with self._executor(trainer, min(self.workers, len(clients))) as executor:
            futures: dict[Future[TrainedClient], int] = {
                executor.submit(_train_in_worker, cid): cid for cid in clients
            }
            broken: list[int] = []
            for future in as_completed(futures):
                cid = futures[future]
                try:
                    results[cid] = future.result()
                except BrokenProcessPool:
                    broken.append(cid)
                    continue
                except Exception as exc:  # the worker raised outside the user's train
                    results[cid] = _failed(cid, _worker_raised(exc, cid))
                if on_done is not None:
                    on_done()
        for cid in sorted(broken):
            # A worker died and took the pool with it: run each unfinished client alone, so
            # that only the client whose training kills its process is recorded as failed.
            results[cid] = self._isolated(trainer, cid)
            if on_done is not None:
                on_done()
        return results

    def _isolated(self, trainer: RoundTrainer, client: int) -> TrainedClient:
        with self._executor(trainer, 1) as executor:
            try:
                return executor.submit(_train_in_worker, client).result()
            except BrokenProcessPool:
                return _failed(
                    client,
                    "the worker process training this client died (a crash, os._exit, or the "
                    "OOM killer); its training was discarded",
                )
            except Exception as exc:
                return _failed(client, _worker_raised(exc, client))

    @contextmanager
    def _executor(self, trainer: RoundTrainer, workers: int) -> Iterator[ProcessPoolExecutor]:
        global _TRAINER
        context = multiprocessing.get_context(self.start_method)
        reseed = trainer.torch_seed_source is None
        if self.start_method == "fork":
            _TRAINER = trainer  # inherited by the forked workers: nothing is pickled
            initargs: tuple[Any, ...] = (None, reseed)
        else:
            _check_picklable(trainer)
            initargs = (trainer, reseed)
        if self.start_method == "fork":
            # Forked workers share the parent's heap copy-on-write; a worker's cyclic garbage
            # collector would write to the header of every object it traverses and copy those
            # pages. Frozen objects are left alone by the collector (the gc.freeze() recipe of
            # the Python documentation for fork without exec).
            gc.freeze()
        try:
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_init_worker,
                initargs=initargs,
            ) as executor:
                yield executor
        finally:
            _TRAINER = None
            if self.start_method == "fork":
                gc.unfreeze()


def warm_up(*, dp_sgd: bool) -> None:
    """Import, once, in the parent what local training imports lazily: forked workers are new
    every round and would otherwise import it every round (measured: the first optimizer of a
    process imports ``torch._dynamo``, 2 to 6 s; DP-SGD imports Opacus). A throwaway SGD step on
    a one-weight model, under DP-SGD with its own accountant: nothing reaches the run's."""
    from secureagg.dp import PrivacyAccountant, make_private

    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    loader: Any = torch.utils.data.DataLoader(data, batch_size=1)
    module: Any = model
    if dp_sgd:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module, optimizer, loader = make_private(
                model, optimizer, loader, max_grad_norm=1.0, noise_multiplier=1.0,
                privacy=PrivacyAccountant(),
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, _ in loader:
            optimizer.zero_grad()
            module(x).sum().backward()
            optimizer.step()


def _check_picklable(trainer: RoundTrainer) -> None:
    """With ``spawn`` the user's objects travel to the workers by pickling: say which cannot."""
    parts = {
        "train": trainer.train,
        "optimizer": trainer.optimizer_factory,
        "client_loaders": trainer.loaders,
        "model": trainer.model,
        "dp settings": trainer.privacy,
    }
    problems = []
    for name, value in parts.items():
        try:
            ForkingPickler.dumps(value)
        except Exception as exc:
            problems.append(  # raised to the local user, never sent: the full text
                f"{name} cannot be sent to a worker process ({describe_exception(exc)})")
    if problems:
        raise ConfigurationError(
            [
                *problems,
                "workers > 1 with the 'spawn' start method (the default outside Linux) pickles "
                "your objects to send them to the worker processes: define train and the "
                "optimizer factory as module-level functions (not lambdas or closures) and use "
                "picklable loaders and an importable model class - or use workers=1",
            ]
        )


def outcomes_in_order(
    results: Mapping[int, TrainedClient], privacy: PrivacyController | None
) -> Callable[[int], ClientOutcome]:
    """``train_one(client)`` for :func:`~secureagg.fl.client.local_phase` over pooled results:
    re-emits each client's privacy events when its turn comes (the sequential order)."""

    def train_one(client: int) -> ClientOutcome:
        return results[client].absorb_into(privacy)

    return train_one
