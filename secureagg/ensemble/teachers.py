"""Teachers of a private ensemble: each party trains its own model, in parallel, with your code.

Party ``i`` builds a fresh model with ``make_model()`` and trains it with your unchanged
``train(model, loader)`` (or ``train(model, loader, optimizer)`` with ``optimizer=``) on its own
``loaders[i]``. Nothing is averaged and no weights leave a party: the ensemble only ever needs the
teachers' predictions (:meth:`TeacherSet.predict_proba`), which :mod:`secureagg.ensemble` sums
under secure aggregation with DP noise.

Trust domain. As in :mod:`secureagg.fl.pool`, the parallel simulation spreads *one* user's code
over processes of the same machine: a worker receives your own objects (inherited by ``fork`` on
Linux, pickled with ``spawn`` elsewhere: then ``make_model``, ``train`` and ``optimizer`` must be
module-level functions and the loaders picklable, or :class:`~secureagg.errors.ConfigurationError`
says which object cannot be sent) and returns the trained weights (``torch.save`` bytes, read with
``weights_only=True``), its seconds and its privacy events. No other party's message is unpickled.

Invariants:

* **Same teachers.** Sequential (``workers=None``/``1``) and parallel runs call the same function
  per party; with ``seed=`` each party's model initialisation and data order come from its own
  torch seed (HKDF of the seed and the party id), so the teachers are bitwise identical for every
  ``workers`` - provided torch uses one thread in the sequential run too (workers always use one:
  more would oversubscribe the cores, and torch's results can depend on the thread count).
* **Failures are party failures.** ``make_model``/``train`` raising, an empty loader, a DP-SGD
  budget stop, non-finite weights, or a worker process dying (``os._exit``, a crash, the OOM
  killer: the parties it had not finished are retrained alone, so only the culprit fails) are
  recorded in :attr:`TeacherSet.failures` as ``{"party", "stage", "error"}``; a failed party has
  no teacher and casts no vote. Nothing a failed party computed is accounted or released.
* **DP-SGD** (``dp=TeacherDP(...)``): each teacher trains with :func:`secureagg.dp.make_private`
  (per-record clipping, CSPRNG Gaussian noise, Poisson batches) and its own budget; its steps are
  accounted in one :class:`~secureagg.dp.PrivacyAccountant` with one sample-level stream per party
  (``party = i``). That is the record-level ε of a party's *model*; the votes' ε is accounted
  where they are aggregated. Only changes made by the DP optimizer's steps are allowed: a ``train``
  that writes to the model otherwise fails that party (its model would not be covered).

>>> TeacherDP(epsilon=4.0, epochs=2).budget
4.0
"""

from __future__ import annotations

import io
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.dp import PrivacyAccountant
from secureagg.dp.accounting import accountant_problems
from secureagg.dp.events import event_from_dict
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.validation import is_int

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["TeacherDP", "TeacherSet", "Workers", "train_teacher_of", "train_teachers",
           "warm_up_training"]

#: ``None``/``1``: one party after the other in this process; ``"auto"``: one worker process per
#: core available to this process; ``N``: ``N`` worker processes.
Workers = int | Literal["auto"] | None


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value
    ) and value > 0


@dataclass(frozen=True)
class TeacherDP:
    """DP-SGD of every teacher (record level, add/remove one record of that party's data).

    Give ``epsilon`` (a target: σ is calibrated by Opacus so that ``epochs`` epochs spend at most
    it; ``epochs`` must be what your ``train`` runs) or ``noise_multiplier``. ``max_epsilon`` is
    the hard budget per teacher (default ``epsilon``): a step that would exceed it is refused and
    the party fails with stage ``"budget"``. ``batches_per_epoch``/``expected_batch_size``: a
    public schedule, as in :func:`~secureagg.dp.make_private` (then record counts are not used).
    """

    epsilon: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    epochs: int = 1
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    max_epsilon: float | None = None
    batches_per_epoch: int | None = None
    expected_batch_size: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if (self.epsilon is None) == (self.noise_multiplier is None):
            problems.append("TeacherDP needs exactly one of epsilon= and noise_multiplier=")
        for name in ("epsilon", "noise_multiplier", "max_epsilon"):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                problems.append(f"{name} must be None or a finite number > 0, got {value!r}")
        if not _positive(self.max_grad_norm):
            problems.append(f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm}")
        for name in ("epochs", "batches_per_epoch", "expected_batch_size"):
            value = getattr(self, name)
            if (value is not None or name == "epochs") and not (is_int(value) and value >= 1):
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.delta, float) and 0.0 < self.delta < 1.0):
            problems.append(f"delta must be a float in (0, 1), got {self.delta!r}")
        problems.extend(accountant_problems(self.accountant))
        if problems:
            raise ConfigurationError(problems)

    @property
    def budget(self) -> float | None:
        """The hard ε budget of each teacher (``max_epsilon``, else ``epsilon``)."""
        return self.max_epsilon if self.max_epsilon is not None else self.epsilon

    def accountant_for_teachers(self) -> PrivacyAccountant:
        return PrivacyAccountant(accountant=self.accountant, delta=self.delta,
                                 max_epsilon=self.budget)


from secureagg.ensemble._teacher_work import (  # noqa: E402
    StartMethod,
    _default_start_method,
    _Job,
    _Outcome,
    _resolve_workers,
    _takes_optimizer,
    _train_pooled,
    _unpicklable,
    _warm_up,
)

# ------------------------------------------------------------------------------ the public API


@dataclass(frozen=True)
class TeacherSet:
    """The trained teachers (party id -> model, in eval mode), the failures and the timings.

    ``failures``: one ``{"party", "stage", "error"}`` per party without a teacher (stage
    ``"data"``, ``"model"``, ``"train"``, ``"budget"``, ``"weights"`` or ``"worker"``);
    ``train_seconds``: each party's training time (failed parties included); ``wall_seconds``:
    the whole training, pool start-up included (compare it across ``workers`` for the speed-up);
    ``privacy``: the teachers' DP-SGD accountant (one sample-level stream per party) or ``None``.
    """

    teachers: Mapping[int, torch.nn.Module]
    failures: tuple[Mapping[str, Any], ...]
    train_seconds: Mapping[int, float]
    wall_seconds: float
    num_parties: int
    workers: int
    start_method: str
    seeded: bool
    dp: TeacherDP | None = None
    privacy: PrivacyAccountant | None = None
    noise_multipliers: Mapping[int, float] = field(default_factory=dict)

    @property
    def parties(self) -> tuple[int, ...]:
        """The parties that have a teacher (they vote), in order."""
        return tuple(sorted(self.teachers))

    def epsilon(self, party: int, *, delta: float | None = None) -> float | None:
        """Record-level ε (at ``delta``, default the DP settings') of ``party``'s teacher, spent
        by its DP-SGD training; ``None`` without DP-SGD (the teacher is not private)."""
        if self.privacy is None:
            return None
        return self.privacy.epsilon(scope="sample", party=party, delta=delta)

    def epsilons(self) -> dict[int, float | None]:
        """:meth:`epsilon` of every party with a teacher."""
        return {p: self.epsilon(p) for p in self.parties}

    def predict_proba(
        self, x: Any, *, batch_size: int = 1024
    ) -> dict[int, npt.NDArray[np.float64]]:
        """Each teacher's class probabilities on the queries ``x`` (``Q`` rows; numpy or torch):
        party -> ``(Q, C)`` float64, the softmax of the model's output (your model returns
        logits), in eval mode without gradients."""
        if not (is_int(batch_size) and batch_size >= 1):
            raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        inputs = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if inputs.ndim < 1 or inputs.shape[0] == 0:
            raise InvalidInputError(f"x must hold at least one query (rows), got {inputs.shape}")
        out: dict[int, npt.NDArray[np.float64]] = {}
        for party in self.parties:
            model = self.teachers[party]
            model.eval()
            first = next(model.parameters(), None)
            cast = first is not None and inputs.is_floating_point()
            xs = inputs.to(first.dtype) if cast and first is not None else inputs
            chunks = []
            with torch.no_grad():
                for start in range(0, xs.shape[0], batch_size):
                    logits = model(xs[start:start + batch_size])
                    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                        raise InvalidInputError(
                            f"party {party}'s model must return (batch, classes) logits, got "
                            f"{getattr(logits, 'shape', type(logits).__name__)}"
                        )
                    chunks.append(torch.softmax(logits.double(), dim=1))
            out[party] = torch.cat(chunks).numpy()
        return out

    def predict(self, x: Any, *, batch_size: int = 1024) -> dict[int, npt.NDArray[np.int64]]:
        """Each teacher's label (argmax of :meth:`predict_proba`): party -> ``(Q,)`` int64."""
        return {p: np.argmax(v, axis=1).astype(np.int64)
                for p, v in self.predict_proba(x, batch_size=batch_size).items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts for a run directory: parties, failures, timings and ε per party."""
        return {
            "num_parties": self.num_parties,
            "teachers": list(self.parties),
            "failures": [dict(f) for f in self.failures],
            "workers": self.workers,
            "start_method": self.start_method,
            "seeded": self.seeded,
            "wall_seconds": self.wall_seconds,
            "train_seconds": {str(p): s for p, s in sorted(self.train_seconds.items())},
            "sum_train_seconds": sum(self.train_seconds.values()),
            "dp_sgd": None if self.dp is None else {
                "delta": self.dp.delta,
                "accountant": self.dp.accountant,
                "target_epsilon": self.dp.epsilon,
                "max_epsilon": self.dp.budget,
                "max_grad_norm": self.dp.max_grad_norm,
                "noise_multipliers": {str(p): s for p, s in sorted(self.noise_multipliers.items())},
                "epsilon_per_party": {str(p): e for p, e in self.epsilons().items()},
                "method": None if self.privacy is None else self.privacy.gaussian_method(),
            },
        }


def train_teachers(
    make_model: Callable[[], Any],
    train: Callable[..., Any],
    loaders: Sequence[Any],
    *,
    optimizer: Callable[[Any], Any] | None = None,
    workers: Workers = "auto",
    seed: bytes | int | None = None,
    dp: TeacherDP | None = None,
    start_method: StartMethod | None = None,
) -> TeacherSet:
    """Train one teacher per party: ``make_model()`` trained by ``train(model, loaders[i])``.

    ``optimizer`` (a factory ``params -> torch.optim.Optimizer``) makes the call
    ``train(model, loader, optimizer)``; DP-SGD (``dp=TeacherDP(...)``) needs it, since it wraps
    your optimizer. ``workers``: ``"auto"`` (one process per core), an integer, or ``None``/``1``
    (sequential, in this process). ``seed`` makes model initialisation and data order (and, with
    DP-SGD, the noise: then NOT private) reproducible, for tests and benchmarks; it is refused as
    a negative number. ``start_method``: ``"fork"`` (Linux default) or ``"spawn"``.

    >>> import torch
    >>> data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> loaders = [torch.utils.data.DataLoader(data, batch_size=4)] * 2
    >>> def train(model, loader):
    ...     opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ...     for x, y in loader:
    ...         opt.zero_grad()
    ...         torch.nn.functional.cross_entropy(model(x), y).backward()
    ...         opt.step()
    >>> ts = train_teachers(lambda: torch.nn.Linear(4, 3), train, loaders, workers=1, seed=0)
    >>> ts.parties, ts.predict_proba(torch.randn(5, 4))[0].shape
    ((0, 1), (5, 3))
    """
    problems: list[str] = []
    given: dict[str, object] = {"make_model": make_model, "train": train, "optimizer": optimizer}
    if not callable(given["make_model"]):
        problems.append("make_model must be a function () -> torch.nn.Module (a fresh model)")
    if not callable(given["train"]):
        problems.append("train must be a function train(model, loader[, optimizer])")
    if given["optimizer"] is not None and not callable(given["optimizer"]):
        problems.append("optimizer must be a factory: params -> torch.optim.Optimizer")
    if isinstance(loaders, str | bytes) or not isinstance(loaders, Sequence) or not loaders:
        problems.append("loaders must be a non-empty sequence with one data loader per party")
    count = _resolve_workers(workers)
    if count is None:
        problems.append(f"workers must be None, 'auto' or an integer >= 1, got {workers!r}")
    if seed is not None and not (isinstance(seed, bytes) or (is_int(seed) and seed >= 0)):
        problems.append(f"seed must be None, bytes or an integer >= 0, got {seed!r}")
    given_dp: object = dp
    if given_dp is not None and not isinstance(given_dp, TeacherDP):
        problems.append(f"dp must be a TeacherDP or None, got {type(given_dp).__name__}")
    elif dp is not None and optimizer is None:
        problems.append(
            "DP-SGD wraps your optimizer: pass optimizer=lambda params: torch.optim.SGD(params, "
            "lr=...) and use it in train(model, loader, optimizer)"
        )
    if callable(train) and (optimizer is not None or dp is not None) and not _takes_optimizer(
        train
    ):
        problems.append("with optimizer= (and for DP-SGD) train must accept (model, loader, "
                        "optimizer)")
    method = start_method or _default_start_method()
    if method not in ("fork", "spawn") or method not in multiprocessing.get_all_start_methods():
        problems.append(f"start_method must be 'fork' or 'spawn' (available here), got {method!r}")
    if problems:
        raise ConfigurationError(problems)
    job = _Job(make_model, train, tuple(loaders), optimizer, dp, seed)
    parties = list(range(len(loaders)))
    workers_used = min(count or 1, len(parties))
    if workers_used > 1 and method == "spawn":
        unpicklable = _unpicklable(job)
        if unpicklable:
            raise ConfigurationError(unpicklable)
    if seed is not None and dp is not None:
        warnings.warn("seeded DP noise: the teachers' DP-SGD noise is reproducible from the seed, "
                      "so this run is NOT private (tests and benchmarks only)", stacklevel=2)
    t0 = time.perf_counter()
    if workers_used > 1:
        if method == "fork":
            _warm_up(dp is not None)
        results = _train_pooled(job, parties, workers_used, method)
    else:
        results = {p: job(p) for p in parties}
    wall = time.perf_counter() - t0
    return _collect(job, results, wall=wall, workers=workers_used, method=method)


def warm_up_training(*, dp_sgd: bool = False) -> float:
    """Import now what the first training step imports lazily (``torch._dynamo``, 2-6 s; Opacus
    with ``dp_sgd``), on a throwaway one-weight model; the seconds it took. A fresh process that
    trains one teacher (a party's node) calls it first, so that its training time is training."""
    t0 = time.perf_counter()
    _warm_up(dp_sgd)
    return time.perf_counter() - t0


def train_teacher_of(
    party: int,
    make_model: Callable[[], Any],
    train: Callable[..., Any],
    loader: Any,
    *,
    optimizer: Callable[[Any], Any] | None = None,
    dp: TeacherDP | None = None,
    seed: bytes | int | None = None,
) -> TeacherSet:
    """Party ``party``'s teacher alone, trained exactly as :func:`train_teachers` trains that
    party (the same code, and with ``seed`` the same torch seed: bit-identical), in this process
    on one torch thread: what a party's own node runs (:mod:`secureagg.flower.ensemble`). A
    :class:`TeacherSet` of that one party (``failures`` says why it has no teacher)."""
    if not (is_int(party) and party >= 0):
        raise ConfigurationError(f"party must be an integer >= 0, got {party!r}")
    if seed is not None and not (isinstance(seed, bytes) or (is_int(seed) and seed >= 0)):
        raise ConfigurationError(f"seed must be None, bytes or an integer >= 0, got {seed!r}")
    if dp is not None and optimizer is None:
        raise ConfigurationError("DP-SGD wraps your optimizer: pass optimizer= (see "
                                 "train_teachers)")
    job = _Job(make_model, train, {party: loader}, optimizer, dp, seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train_teachers' workers: results may depend on the threads
    try:
        t0 = time.perf_counter()
        outcome = job(party)
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return _collect(job, {party: outcome}, wall=wall, workers=1, method="none")


def _collect(job: _Job, results: Mapping[int, _Outcome], *, wall: float, workers: int,
             method: str) -> TeacherSet:
    """Account the parties' events (in party order) and rebuild their teachers in this process."""
    privacy = job.dp.accountant_for_teachers() if job.dp is not None else None
    teachers: dict[int, torch.nn.Module] = {}
    failures: list[dict[str, Any]] = []
    sigmas: dict[int, float] = {}
    for party in sorted(results):
        outcome = results[party]
        if privacy is not None:
            for raw in outcome.events:
                privacy.emit(event_from_dict(dict(raw)))
        if outcome.state is None:
            failures.append({"party": party, "stage": outcome.stage, "error": outcome.error})
            continue
        with torch.random.fork_rng(devices=[]):
            model = job.make_model()
        state = torch.load(io.BytesIO(outcome.state), weights_only=True)
        model.load_state_dict(state)
        teachers[party] = model.eval()
        if outcome.noise_multiplier is not None:
            sigmas[party] = outcome.noise_multiplier
    return TeacherSet(
        teachers=teachers, failures=tuple(failures),
        train_seconds={p: o.seconds for p, o in sorted(results.items())}, wall_seconds=wall,
        num_parties=len(job.loaders), workers=workers, start_method=method if workers > 1 else
        "none (sequential)", seeded=job.seed is not None, dp=job.dp, privacy=privacy,
        noise_multipliers=sigmas,
    )
