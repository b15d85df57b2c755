"""Differential privacy of a federated run: DP-SGD on the clients, noise on the sum, accounting.

Two guarantees, accounted separately (one :class:`~secureagg.dp.PrivacyAccountant` each), because
they protect different things against different observers:

* **sample level, per client** (``epsilon`` / ``noise_multiplier``): every client trains with
  DP-SGD (:func:`secureagg.dp.make_private`: per-example clipping to ``max_grad_norm``, Gaussian
  noise from a CSPRNG, Poisson batches). Whoever sees a client's update - the server under
  ``"plain"``, anyone who sees the model - learns about one of that client's records only what
  ``(ε_i, δ)`` allows. With ``epsilon`` set, each client's noise multiplier is calibrated (by
  Opacus, from its own sampling rate ``1/len(loader)``) so that ``rounds * local_epochs`` epochs
  spend at most ``epsilon``; the accountant's budget (``max_epsilon``, default ``epsilon``) stops
  a client *before* a step would exceed it. ``local_epochs`` must be what your ``train`` runs.
* **user level** (``distributed_noise_multiplier`` or ``central_noise_multiplier``): each
  client's whole update is L2-clipped to ``update_clip`` and the *sum* carries Gaussian-like noise
  of ``noise_multiplier * update_clip`` per coordinate - added by the clients in shares inside
  SecAgg (distributed DP, Skellam by default: no one sees a noiseless sum) or by a trusted server
  (central DP). One client's entire participation is protected at ``(ε_user, δ)``; updates are
  summed unweighted (a FedAvg weight would multiply the sensitivity).

Sampling: the run samples a fixed number of clients per round, uniformly; the accountants are given
client sampling rate 1 (no amplification by client sampling is claimed), which over-states ε.

**Record counts.** With ``batches_per_epoch=k`` (public) every client Poisson-samples at
``q = 1/k``, runs ``k`` steps per local epoch, averages gradients over ``expected_batch_size``
(public; default the loader's ``batch_size``) and gets the same σ: nothing released depends on a
client's record count ``N_i``, and FedAvg weights are uniform. Without it (the default), ``q_i =
1/len(loader_i)``, σ_i and the step count are functions of ``N_i``: the ledger then states that
record counts are **public** - the ε bounds what the noised updates reveal about one record
(add/remove), but ``N_i`` itself is released exactly.

**Buffers.** Under DP-SGD, floating-point buffers (BatchNorm statistics, a custom running mean)
are not noised by DP-SGD, so they are never released: ``buffers="auto"`` keeps them out of the
update (each client trains with the server's value), and ``buffers="aggregate"`` is refused.
With user-level DP only, aggregated buffers are part of the update that is L2-clipped and noised,
so they are covered. Under any DP the FedAvg weights are uniform by default (example counts would
be released unnoised).

Durability: every event is appended to ``privacy_events.jsonl`` in the run directory as it is
emitted; a resumed run replays all of them, including those of a round interrupted before its
commit (which is then run again). A crash can make the ledger over-count, never under-count.

The settings are :class:`~secureagg.fl.settings.FederatedDP` (re-exported here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from secureagg.audit.rundir import PRIVACY_EVENTS, RunDirectory
from secureagg.dp import (
    CentralDP,
    DistributedDP,
    GaussianSteps,
    PrivacyAccountant,
    PrivacyEvent,
    make_private,
)
from secureagg.dp.events import BudgetStop, event_from_dict
from secureagg.dp.ledger import FEDERATED_LEDGER_FORMAT
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError, PrivacyBudgetExceeded
from secureagg.fl.calibration import calibrate_noise
from secureagg.fl.scope import sample_scope, user_scope
from secureagg.fl.settings import FederatedDP
from secureagg.protocols.base import RoundFactory
from secureagg.transport import derive_sim_seed

__all__ = ["EVENTS_FILE", "FederatedDP", "PrivacyController"]

EVENTS_FILE = PRIVACY_EVENTS


class _TaggedJsonLines:
    """Collects events, tagged with their level; :meth:`flush` appends them to the run's events
    file and fsyncs once (after each client's training and after each aggregation: an event
    matters once something is released, and nothing is released between two flushes)."""

    def __init__(self, run_dir: RunDirectory, level: str) -> None:
        self.run_dir = run_dir
        self.level = level
        self.pending: list[str] = []

    def emit(self, event: PrivacyEvent) -> None:
        self.pending.append(json.dumps({"level": self.level, **event.to_dict()}, sort_keys=True))

    def flush(self) -> None:
        if not self.pending:
            return
        self.run_dir.append_lines(EVENTS_FILE, self.pending)
        self.pending.clear()


class _Capture:
    """An event sink that keeps ``(level, event dict)`` pairs (in a training worker)."""

    def __init__(self, level: str, out: list[tuple[str, dict[str, Any]]]) -> None:
        self.level = level
        self.out = out

    def emit(self, event: PrivacyEvent) -> None:
        self.out.append((self.level, event.to_dict()))


class PrivacyController:
    """Builds the DP pieces of a run and keeps its two accountants (see the module docstring)."""

    def __init__(
        self,
        dp: FederatedDP,
        *,
        rounds: int,
        dimension: int,
        dropout_rate: float,
        seed: bytes | int | None,
    ) -> None:
        self.dp = dp
        self.rounds = rounds
        self.dimension = dimension
        self.dropout_rate = min(float(dropout_rate), 0.99)
        self.seed = seed
        self.sample = (
            PrivacyAccountant(
                accountant=dp.accountant, delta=dp.delta, max_epsilon=dp.sample_budget
            )
            if dp.dp_sgd
            else None
        )
        self.user = (
            PrivacyAccountant(
                accountant=dp.accountant, delta=dp.delta, max_epsilon=dp.max_user_epsilon
            )
            if dp.user_level
            else None
        )
        self.sigmas: dict[int, float] = {}
        self.rates: dict[int, float] = {}
        #: state entries that never leave a client (set by the run from its codec)
        self.not_released: list[str] = []
        self._budget_stopped: set[int] = set()
        self._calibrated: dict[tuple[int, int], float] = {}  # (batches, steps) -> σ
        self._sinks: list[_TaggedJsonLines] = []

    # ---------------------------------------------------------------------------- durability

    def attach(self, run_dir: RunDirectory, *, replay: bool) -> int:
        """Replay ``privacy_events.jsonl`` (resume) and log every new event to it."""
        replayed = 0
        if replay:
            for line in run_dir.read_lines(EVENTS_FILE):
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash
                level = raw.pop("level", None)
                acc = self.sample if level == "sample" else self.user if level == "user" else None
                if acc is None:
                    continue
                event = event_from_dict(raw)
                acc.emit(event)
                replayed += 1
                self._learn(event)
        for level, acc in (("sample", self.sample), ("user", self.user)):
            if acc is not None:
                sink = _TaggedJsonLines(run_dir, level)
                self._sinks.append(sink)
                acc.sink = sink
        return replayed

    def flush(self) -> None:
        """Append the events emitted since the last flush to ``privacy_events.jsonl``."""
        for sink in self._sinks:
            sink.flush()

    @contextmanager
    def capture(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """In a training worker: collect every event the accountants record, as ``(level,
        event dict)``, instead of logging it (the parent re-emits them, see :meth:`absorb`)."""
        captured: list[tuple[str, dict[str, Any]]] = []
        saved = [(acc, acc.sink) for _, acc in self._levels()]
        for level, acc in self._levels():
            acc.sink = _Capture(level, captured)
        try:
            yield captured
        finally:
            for acc, sink in saved:
                acc.sink = sink

    def absorb(
        self,
        client: int,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        noise_multiplier: float | None,
        sample_rate: float | None,
    ) -> None:
        """Record, in this (the parent) process, the events a worker captured while training
        ``client``, in their order, and the noise multiplier and sampling rate it used."""
        accountants = dict(self._levels())
        for level, raw in events:
            acc = accountants.get(level)
            if acc is None:
                raise InvalidInputError(f"a training worker returned an event of level {level!r}")
            event = event_from_dict(dict(raw))
            acc.emit(event)
            self._learn(event)
        if noise_multiplier is not None and sample_rate is not None:
            self.sigmas[client] = float(noise_multiplier)
            self.rates[client] = float(sample_rate)

    def _levels(self) -> list[tuple[str, PrivacyAccountant]]:
        return [(lvl, acc) for lvl, acc in (("sample", self.sample), ("user", self.user))
                if acc is not None]

    def _learn(self, event: PrivacyEvent) -> None:
        """Recover each client's calibrated noise multiplier from its DP-SGD steps, and who has
        spent its budget."""
        if isinstance(event, BudgetStop):
            self.budget_stopped(event)
        if isinstance(event, GaussianSteps) and event.party is not None:
            self.sigmas[event.party] = event.noise_multiplier
            self.rates[event.party] = event.sample_rate

    # ---------------------------------------------------------------------------- aggregators

    def aggregator(
        self, name: str, *, num_clients: int, options: Mapping[str, Any]
    ) -> RoundFactory:
        """Build ``name`` with user-level DP: distributed inside SecAgg, or central around it."""
        from secureagg.aggregators import make_aggregator

        dp = self.dp
        if dp.distributed_noise_multiplier is not None:
            if name not in ("secagg", "secagg+"):
                raise ConfigurationError(
                    f"distributed DP runs inside SecAgg: use aggregator 'secagg' or 'secagg+', "
                    f"not {name!r} (or central_noise_multiplier for a trusted server)"
                )
            config = DistributedDP(
                l2_clip=dp.update_clip,
                noise_multiplier=dp.distributed_noise_multiplier,
                dimension=self.dimension,
                mechanism=dp.mechanism,
                expected_dropout=self.dropout_rate,
                **dict(dp.extra),
            )
            return make_aggregator(
                name, num_clients=num_clients, distributed_dp=config, privacy=self.user,
                **dict(options),
            )
        inner = make_aggregator(name, num_clients=num_clients, **dict(options))
        if dp.central_noise_multiplier is not None:
            from secureagg.aggregators.dp import with_central_dp

            return with_central_dp(
                inner,
                CentralDP(l2_clip=dp.update_clip, noise_multiplier=dp.central_noise_multiplier),
                privacy=self.user,
            )
        return inner

    # ---------------------------------------------------------------------------- budgets

    def round_allowed(self, agg: RoundFactory, round_number: int) -> tuple[bool, str]:
        """Whether the user-level budget admits one more round (checked before any training)."""
        if self.user is None or self.user.max_epsilon is None:
            return True, ""
        event: Any = None
        plan = getattr(agg, "plan", None)
        inner = getattr(agg, "inner", None)
        mechanism = getattr(agg, "mechanism", None)
        if plan is not None and inner is not None:
            event = plan.round_event(
                round_id=round_number,
                survivors=inner.params.min_survivors,
                seeded=self.seed is not None,
                worst_case=True,
            )
        elif mechanism is not None:
            event = mechanism.round_event()
        if event is None:
            return True, ""
        try:
            self.user.check(event)
        except PrivacyBudgetExceeded as exc:
            return False, f"user-level privacy budget reached ({' '.join(str(exc).split())})"
        return True, ""

    def client_plan(self, client: int, loader: Any) -> tuple[float, float, int]:
        """``(σ, q, steps per round)`` of ``client``'s DP-SGD, known before it trains.

        ``q = 1/batches_per_epoch`` (public) or ``1/len(loader)``; σ is the multiplier the client
        already used (resume), ``noise_multiplier``, or calibrated so that ``rounds *
        local_epochs`` epochs spend at most ``epsilon``.
        """
        dp = self.dp
        batches = dp.batches_per_epoch if dp.batches_per_epoch is not None else len(loader)
        rate = self.rates.get(client, 1.0 / batches)
        if client in self.sigmas:
            sigma = self.sigmas[client]
        elif dp.noise_multiplier is not None:
            sigma = float(dp.noise_multiplier)
        else:  # calibrated once per (q, steps): clients with the same schedule share it
            key = (batches, self.rounds * dp.local_epochs * batches)
            if key not in self._calibrated:
                self._calibrated[key] = calibrate_noise(
                    float(dp.epsilon or 0.0), sample_rate=1.0 / batches, steps=key[1],
                    delta=dp.delta,
                )
            sigma = self._calibrated[key]
        return sigma, rate, dp.local_epochs * batches

    def client_allowed(self, client: int, loader: Any) -> tuple[bool, str]:
        """Whether ``client`` can run one more round of DP-SGD within its budget.

        The first time a client cannot, its :class:`~secureagg.dp.events.BudgetStop` is emitted
        (to the ledger and the events file); from then on it is skipped.
        """
        if self.sample is None or self.sample.max_epsilon is None:
            return True, ""
        if client in self._budget_stopped:
            return False, f"privacy budget of client {client} spent: it trains no more rounds"
        sigma, rate, steps = self.client_plan(client, loader)
        left = self.sample.steps_remaining(
            scope="sample", party=client, noise_multiplier=sigma, sample_rate=rate
        )
        if left is None or left >= steps:
            return True, ""
        self._budget_stopped.add(client)
        event = GaussianSteps(
            scope="sample", party=client, noise_multiplier=sigma, sample_rate=rate,
            clip=self.dp.max_grad_norm, steps=steps, mechanism="dp-sgd",
        )
        why = f"privacy budget of client {client}: {left} DP-SGD steps left, a round needs {steps}"
        try:
            self.sample.check(event)  # emits the BudgetStop, then raises
        except PrivacyBudgetExceeded as exc:
            why += (
                f" (ε = {exc.spent:.3f} of {self.sample.max_epsilon}; {exc.would_be:.3f} after "
                "the round)"
            )
        return False, why

    def budget_stopped(self, event: BudgetStop) -> None:
        """Note a stop raised inside training (a worker's events replayed here)."""
        if event.scope == "sample" and event.party is not None:
            self._budget_stopped.add(event.party)

    # ----------------------------------------------------------------------------- DP-SGD

    def local_training(self, client: int, round_number: int) -> Any:
        """The DP-SGD hook for ``client`` in ``round_number`` (``None`` without DP-SGD)."""
        if self.sample is None:
            return None
        dp, accountant = self.dp, self.sample

        def private(model: Any, optimizer: Any, loader: Any) -> Any:
            kwargs: dict[str, Any] = {}
            if self.seed is not None:
                kwargs = {
                    "seed": derive_sim_seed(
                        self.seed,
                        context=b"fl/dp-sgd"
                        + round_number.to_bytes(8, "big")
                        + client.to_bytes(8, "big"),
                    ),
                    "test_mode": True,
                }
            sigma, _, _ = self.client_plan(client, loader)
            run = make_private(
                model, optimizer, loader, max_grad_norm=dp.max_grad_norm, privacy=accountant,
                party=client, noise_multiplier=sigma, batches_per_epoch=dp.batches_per_epoch,
                expected_batch_size=dp.expected_batch_size, **kwargs,
            )
            self.sigmas[client] = run.noise_multiplier
            self.rates[client] = run.sample_rate
            # What the DP optimizer left: the parameters after its last step (or as given). Any
            # other change - the train function writing to the model, stepping another optimizer
            # - is not covered by DP-SGD, so the update is then refused (nothing is sent).
            params = list(model.parameters())
            last = [p.detach().clone() for p in params]
            dp_step = run.optimizer.step

            def step(*args: Any, **kw: Any) -> Any:
                out = dp_step(*args, **kw)
                for saved, p in zip(last, params, strict=True):
                    saved.copy_(p.detach())
                return out

            run.optimizer.step = step

            def finish() -> tuple[Any, Mapping[str, Any]]:
                torch = require_torch()
                changed = [
                    name for (name, p), saved in zip(model.named_parameters(), last, strict=True)
                    if not torch.equal(p.detach(), saved)
                ]
                if changed:
                    raise InvalidInputError(
                        f"the model changed outside the DP optimizer's steps ({changed[:5]}): "
                        "DP-SGD covers only what the optimizer passed to train does, so this "
                        "client's update is not released. Change the model only through "
                        "optimizer.step()"
                    )
                return model, {"noise_multiplier": run.noise_multiplier,
                               "sample_rate": run.sample_rate}

            return run.module, run.optimizer, run.data_loader, finish

        return private

    # ---------------------------------------------------------------------------- reports

    def summary(self, clients: Sequence[int]) -> dict[str, Any]:
        """ε so far: per client (sample level) and of the released sums (user level)."""
        out: dict[str, Any] = {"delta": self.dp.delta, "epsilon": None}
        if self.sample is not None:
            per_client = {
                str(c): self.sample.epsilon(scope="sample", party=c)
                for c in sorted(set(clients) | set(self.sigmas))
            }
            worst = max(per_client.values(), default=0.0)
            out["sample_level"] = {
                "epsilon_max": worst,
                "per_client": per_client,
                "noise_multipliers": {str(c): s for c, s in sorted(self.sigmas.items())},
                "max_grad_norm": self.dp.max_grad_norm,
            }
            out["epsilon"] = worst
        if self.user is not None:
            eps = self.user.epsilon(scope="user", party=None)
            out["user_level"] = {
                "epsilon": eps if math.isfinite(eps) else None,
                "mechanism": self.dp.describe()["user_level"]["mechanism"],
                "noise_multiplier": self.dp.distributed_noise_multiplier
                or self.dp.central_noise_multiplier,
            }
            if self.sample is None:
                out["epsilon"] = eps if math.isfinite(eps) else None
        return out

    def ledger(self) -> dict[str, Any]:
        """``privacy_ledger.json``: both accountants' reports, the settings, and what each ε
        covers (``sample_level_scope``, ``user_level_scope``, ``not_released``)."""
        return {
            "format": FEDERATED_LEDGER_FORMAT,
            "differential_privacy": True,
            "settings": self.dp.describe(),
            "note": "sample_level: one ledger stream per client (party = client id), DP-SGD; "
            "user_level: the released sums. Client sampling is not used for amplification. "
            "Replay either with PrivacyAccountant.from_ledger(path, level='sample'|'user').",
            "sample_level_scope": None
            if self.sample is None
            else sample_scope(self.dp, method=self.sample.gaussian_method(),
                              not_released=self.not_released),
            "user_level_scope": None if self.user is None else user_scope(self.dp),
            "not_released": list(self.not_released),
            "sample_level": None if self.sample is None else self.sample.report(),
            "user_level": None if self.user is None else self.user.report(),
        }
