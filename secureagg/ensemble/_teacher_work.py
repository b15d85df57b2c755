"""The work of one teacher and the process pool that runs it, split out of
:mod:`secureagg.ensemble.teachers` (see its docstring for the invariants: the same teachers for
every ``workers``, failures are party failures, DP-SGD steps the only changes to a model)."""

from __future__ import annotations

import gc
import inspect
import io
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, Literal

from secureagg.dp import PrivacyAccountant, make_private
from secureagg.dp.torch_import import require_torch
from secureagg.errors import (
    InvalidInputError,
    PrivacyBudgetExceeded,
    describe_exception,
    failure_report,
)
from secureagg.transport import derive_sim_seed
from secureagg.validation import is_int

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

if TYPE_CHECKING:
    from secureagg.ensemble.teachers import TeacherDP


@dataclass(frozen=True)
class _Outcome:
    """What training one party produced (in this process or a worker); ``state`` is ``None`` when
    it failed. ``events`` are the party's privacy events as dicts, for the parent to account."""

    party: int
    state: bytes | None
    seconds: float
    error: str | None = None
    stage: str = "train"
    events: tuple[dict[str, Any], ...] = ()
    noise_multiplier: float | None = None


def _torch_seed(seed: bytes | int, party: int) -> int:
    raw = derive_sim_seed(seed, context=b"ensemble/teacher-torch" + party.to_bytes(8, "big"),
                          length=8)
    return int.from_bytes(raw, "big") & ((1 << 63) - 1)


def _no_data(loader: Any, party: int) -> str | None:
    """Why ``loader`` cannot be trained on (yields nothing, is not iterable), or ``None``."""
    try:
        try:
            empty = len(loader) == 0
        except TypeError:
            sentinel = object()
            empty = next(iter(loader), sentinel) is sentinel
    except Exception as exc:
        return ("the party's data loader cannot be iterated ("
                f"{failure_report(exc, stage='data', party=party)})")
    return "the party's data loader yields nothing" if empty else None


@dataclass(frozen=True)
class _Job:
    """Everything a party's training needs; ``job(party)`` trains one party (never raises for
    the user's errors). The same object runs in this process and in a worker."""

    make_model: Callable[[], Any]
    train: Callable[..., Any]
    #: party -> its loader (a sequence indexed by party, or one party's node: {party: loader})
    loaders: Sequence[Any] | Mapping[int, Any]
    optimizer: Callable[[Any], Any] | None
    dp: TeacherDP | None
    seed: bytes | int | None

    def __call__(self, party: int) -> _Outcome:
        loader = self.loaders[party]
        no_data = _no_data(loader, party)
        if no_data is not None:
            return _Outcome(party, None, 0.0, no_data, "data")
        privacy = self.dp.accountant_for_teachers() if self.dp is not None else None
        t0 = time.perf_counter()
        stage, sigma = "model", None
        try:
            with torch.random.fork_rng(devices=[], enabled=self.seed is not None):
                if self.seed is not None:
                    torch.manual_seed(_torch_seed(self.seed, party))
                model = self.make_model()
                if not isinstance(model, torch.nn.Module):
                    raise TypeError(f"make_model returned a {type(model).__name__}, not a module")
                model.train()
                stage = "train"
                opt = self.optimizer(model.parameters()) if self.optimizer is not None else None
                if self.dp is not None and privacy is not None:
                    sigma = self._train_private(model, opt, loader, privacy, party)
                elif opt is not None:
                    self.train(model, loader, opt)
                else:
                    self.train(model, loader)
            stage = "weights"
            state = {k: v.detach() for k, v in model.state_dict().items()}
            bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
            if bad:
                raise InvalidInputError(f"the trained model holds NaN/Inf in {bad[:5]}")
            buffer = io.BytesIO()
            torch.save(state, buffer)
        except PrivacyBudgetExceeded as exc:  # DP-SGD refused a step: the budget, not a bug
            return self._failed(party, t0, failure_report(exc, stage="budget", party=party),
                                "budget", privacy)
        except Exception as exc:  # the user's code failed: a party failure, not a crash
            # what may leave the party (a node's report): the type and the stage, never the
            # message (the user's code wrote it; it may quote the data), which is logged here
            return self._failed(party, t0, failure_report(exc, stage=stage, party=party), stage,
                                privacy)
        events = tuple(e.to_dict() for e in privacy.events) if privacy is not None else ()
        return _Outcome(party, buffer.getvalue(), time.perf_counter() - t0, events=events,
                        noise_multiplier=sigma)

    def _failed(self, party: int, t0: float, why: str, stage: str,
                privacy: PrivacyAccountant | None) -> _Outcome:
        # A failed party releases nothing, so only its budget stop (if any) is kept: the ledger
        # then says why the party has no teacher.
        stops = () if privacy is None else tuple(
            e.to_dict() for e in privacy.events if e.to_dict().get("kind") == "budget_stop"
        )
        return _Outcome(party, None, time.perf_counter() - t0, why, stage, events=stops)

    def _train_private(self, model: Any, opt: Any, loader: Any, privacy: PrivacyAccountant,
                       party: int) -> float:
        dp = self.dp
        if dp is None:  # pragma: no cover - only called with dp
            raise RuntimeError("no DP settings")
        kwargs: dict[str, Any] = (
            {"target_epsilon": dp.epsilon, "epochs": dp.epochs} if dp.epsilon is not None
            else {"noise_multiplier": dp.noise_multiplier}
        )
        if self.seed is not None:
            kwargs |= {"test_mode": True, "seed": derive_sim_seed(
                self.seed, context=b"ensemble/teacher-dp-sgd" + party.to_bytes(8, "big"))}
        run = make_private(
            model, opt, loader, max_grad_norm=dp.max_grad_norm, privacy=privacy, party=party,
            batches_per_epoch=dp.batches_per_epoch, expected_batch_size=dp.expected_batch_size,
            **kwargs,
        )
        params = list(model.parameters())
        last = [p.detach().clone() for p in params]
        dp_step = run.optimizer.step

        def step(*args: Any, **kw: Any) -> Any:  # remember what the DP optimizer left
            out = dp_step(*args, **kw)
            for saved, p in zip(last, params, strict=True):
                saved.copy_(p.detach())
            return out

        run.optimizer.step = step
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self.train(run.module, run.data_loader, run.optimizer)
        changed = [n for (n, p), s in zip(model.named_parameters(), last, strict=True)
                   if not torch.equal(p.detach(), s)]
        if changed:
            raise InvalidInputError(
                f"the model changed outside the DP optimizer's steps ({changed[:5]}): DP-SGD "
                "covers only optimizer.step(), so this teacher is not released"
            )
        return float(run.noise_multiplier)


# ------------------------------------------------------------------------------ the process pool

StartMethod = Literal["fork", "spawn"]

# The job, in a worker (inherited with fork, set by the initializer with spawn). In the parent it
# is set only while a fork pool starts.
_JOB: _Job | None = None


def _init_worker(job: _Job | None, reseed: bool) -> None:
    global _JOB
    if job is not None:
        _JOB = job
    torch.set_num_threads(1)  # one thread per worker: the pool already fills the cores
    if reseed:  # unseeded: forked workers would otherwise share torch's RNG state
        torch.manual_seed(int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1))


def _train_in_worker(party: int) -> _Outcome:
    if _JOB is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("the worker has no job")
    return _JOB(party)


def _default_start_method() -> StartMethod:
    methods = multiprocessing.get_all_start_methods()
    return "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"


def _resolve_workers(workers: object) -> int | None:
    if workers is None:
        return 1
    if workers == "auto":
        affinity = getattr(os, "sched_getaffinity", None)
        return max(1, len(affinity(0)) if affinity is not None else os.cpu_count() or 1)
    return int(workers) if is_int(workers) and int(workers) >= 1 else None  # type: ignore[call-overload]


@contextmanager
def _executor(job: _Job, workers: int, method: StartMethod) -> Iterator[ProcessPoolExecutor]:
    global _JOB
    if method == "fork":
        _JOB = job  # inherited by the forked workers: nothing is pickled
        gc.freeze()  # keep the workers' collectors off the shared pages (copy-on-write)
    try:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(None if method == "fork" else job, job.seed is None),
        ) as executor:
            yield executor
    finally:
        _JOB = None
        if method == "fork":
            gc.unfreeze()


def _worker_died(party: int) -> _Outcome:
    return _Outcome(party, None, 0.0, "the worker process training this party died (a crash, "
                    "os._exit, or the OOM killer); its training was discarded", "worker")


def _worker_raised(exc: BaseException, party: int) -> str:
    return "the training worker raised " + failure_report(exc, stage="worker", party=party)


def _train_pooled(job: _Job, parties: Sequence[int], workers: int,
                  method: StartMethod) -> dict[int, _Outcome]:
    """Train ``parties`` in ``workers`` processes; a dead worker breaks the pool, and every party
    it had not finished is then trained again alone, so that only the culprit fails."""
    results: dict[int, _Outcome] = {}
    broken: list[int] = []
    with _executor(job, min(workers, len(parties)), method) as executor:
        futures: dict[Future[_Outcome], int] = {
            executor.submit(_train_in_worker, p): p for p in parties
        }
        for future in as_completed(futures):
            party = futures[future]
            try:
                results[party] = future.result()
            except BrokenProcessPool:
                broken.append(party)
            except Exception as exc:  # the worker raised outside the user's code
                results[party] = _Outcome(party, None, 0.0,
                                          _worker_raised(exc, party), "worker")
    for party in sorted(broken):
        with _executor(job, 1, method) as executor:
            try:
                results[party] = executor.submit(_train_in_worker, party).result()
            except BrokenProcessPool:
                results[party] = _worker_died(party)
            except Exception as exc:
                results[party] = _Outcome(party, None, 0.0,
                                          _worker_raised(exc, party), "worker")
    return results


def _warm_up(dp_sgd: bool) -> None:
    """Import once, in the parent, what training imports lazily (the first optimizer step
    imports ``torch._dynamo``, 2-6 s; DP-SGD imports Opacus), so forked workers inherit it. A
    throwaway step on a one-weight model with its own accountant: nothing reaches the run's."""
    model = torch.nn.Linear(1, 1)
    opt: Any = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    loader: Any = torch.utils.data.DataLoader(data, batch_size=1)
    module: Any = model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dp_sgd:
            module, opt, loader = make_private(model, opt, loader, max_grad_norm=1.0,
                                               noise_multiplier=1.0, privacy=PrivacyAccountant())
        for x, _ in loader:
            opt.zero_grad()
            module(x).sum().backward()
            opt.step()


def _takes_optimizer(train: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(train).parameters.values())
    except (TypeError, ValueError):
        return True  # cannot tell: let the call decide (a failure is recorded per party)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 3


def _unpicklable(job: _Job) -> list[str]:
    """With ``spawn`` the job travels to the workers by pickling: which parts cannot."""
    problems = []
    for name in ("make_model", "train", "optimizer", "loaders", "dp"):
        try:
            ForkingPickler.dumps(getattr(job, name))
        except Exception as exc:
            problems.append(  # raised to the local user, never sent: the full text
                f"{name} cannot be sent to a worker process ({describe_exception(exc)})")
    if problems:
        problems.append(
            "workers > 1 with the 'spawn' start method (the default outside Linux) pickles your "
            "objects: define make_model, train and optimizer as module-level functions (not "
            "lambdas or closures) and use picklable loaders - or use workers=1"
        )
    return problems


