"""The round loop of a federated run: sample, train locally, aggregate, apply, evaluate, commit.

:class:`RoundLoop` is the base of :class:`~secureagg.fl.FederatedRun` that runs the rounds. Each
round draws its public schedule (sampled clients, dropouts) from the run's schedule seed and the
round number; the sampled clients train with the user's function (in this process or in the
pool of :mod:`secureagg.fl.pool`) and compute ``local - global`` (:mod:`secureagg.fl.client`);
the updates go through the aggregator in ``sa.simulate``, so the server obtains only the
weighted sum and the total weight; the FedAvg step ``global += server_lr * sum / total_weight``
is applied; ``evaluate`` runs; the round is committed (:mod:`secureagg.fl.run_persistence`).
Before a round, the privacy budgets are checked: a run that cannot afford the next round stops.

Invariants: an aborted round (too few survivors, a protocol error, an aggregate that is not
finite; or every client's ``train`` raised, which then also raises ``InvalidInputError``) leaves
the global model exactly as it was and is recorded; the FedAvg step is applied only after the
aggregate was checked, at once, to a new state that replaces the global model's; nothing is
half-applied. DP-SGD steps are made durable (``privacy.flush()``) before anything is sent. A
failed ``evaluate`` is recorded and the run goes on (the round is already applied).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from secureagg.dp.torch_import import require_torch
from secureagg.errors import InvalidInputError, PrivacyBudgetExceeded, ProtocolError
from secureagg.fl import records, schedule
from secureagg.fl.client import ClientOutcome, LocalPhase, local_phase
from secureagg.fl.deployed import RoundDeployment, deployed_round
from secureagg.fl.pool import RoundTrainer, outcomes_in_order
from secureagg.fl.progress import Progress
from secureagg.fl.records import RoundRecord
from secureagg.fl.run_persistence import RunPersistence
from secureagg.fl.schedule import TRAIN_STAGE, RoundSchedule
from secureagg.transport import SeededRunWarning, SimulationResult, simulate

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["RoundLoop"]


class RoundLoop(RunPersistence):
    """Runs the rounds of a federated run (see the module docstring)."""

    stopped: str | None
    #: Where the clients train and the round runs when they are elsewhere (an engine, e.g.
    #: :class:`secureagg.flower.federated.FlowerDeployment`); ``None``: in this process.
    deployment: RoundDeployment | None = None

    # ------------------------------------------------------------------ privacy hooks (DP layer)

    def privacy_for_round(self, participants: Sequence[int]) -> dict[str, Any] | None:
        """ε so far after a round (``None`` without DP)."""
        if self.privacy is None:
            return None
        self.privacy.flush()
        return self.privacy.summary(participants)

    def budget_allows(self, round_number: int) -> tuple[bool, str]:
        """Whether the next round fits the privacy budgets (checked before any training)."""
        if self.privacy is None:
            return True, ""
        ok, why = self.privacy.round_allowed(self._aggregator(self.per_round), round_number)
        if not ok:
            return ok, why
        able = [
            c for c in range(self.num_clients)
            if self.privacy.client_allowed(c, self.client_loaders[c])[0]
        ]
        if not able:
            return False, "every client has spent its sample-level privacy budget"
        return True, ""

    # ---------------------------------------------------------------------------- the loop

    @property
    def torch_seed_source(self) -> bytes | int | None:
        """What each (round, client)'s torch seed derives from (``None``: unseeded training)."""
        return self._torch_seed_source

    def threads(self) -> Any:
        """A context: torch on the run's ``torch_threads`` (for a node training one client)."""
        return self._threads()

    @contextmanager
    def _threads(self) -> Iterator[None]:
        """torch on ``torch_threads`` intra-op threads for the duration (then restored)."""
        if self.torch_threads is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def run(self) -> list[dict[str, Any]]:
        """Run the remaining rounds (up to ``rounds`` in total); return the whole history."""
        with self._threads():
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
        progress = Progress(
            total_rounds=self.rounds,
            enabled=self.show_progress,
            first_round=self.completed_rounds + 1,
        )
        try:
            while self.completed_rounds < self.rounds:
                allowed, why = self.budget_allows(self.completed_rounds + 1)
                if not allowed:
                    progress.write(f"stopped before round {self.completed_rounds + 1}: {why}")
                    self._stopped(why)
                    break
                record = self._run_round(progress=progress)
                progress.end_round(self.round_summary(record.entry, self.rounds))
                if self.stopped is not None:
                    progress.write(f"stopped: {self.stopped}")
                    self._stopped(self.stopped)
                    break
        finally:
            progress.close()
        if self.run_dir is not None:
            self.run_dir.seal(kind="federated")
        return self.history

    def _stopped(self, why: str) -> None:
        self.stopped = why
        if self.run_dir is not None:
            self.write_ledger()  # the BudgetStop events, in the ledger and the events file
            self._write_result(stopped=why)

    def run_round(self, *, progress: Progress | None = None) -> RoundRecord:
        """Run and commit the next round; return its record."""
        with self._threads():
            return self._run_round(progress=progress)

    def _run_round(self, *, progress: Progress | None = None) -> RoundRecord:
        r = self.completed_rounds + 1
        t_round = time.perf_counter()
        agg = self._aggregator(self.per_round)
        stages = tuple(agg.dropout_stages)
        plan = RoundSchedule.draw(
            self.schedule_seed,
            round_number=r,
            num_clients=self.num_clients,
            per_round=self.per_round,
            dropout_rate=float(self.failures.dropout_rate),
            stages=stages,
            explicit=self.failures.schedule.get(r, {}),
        )
        if progress is not None:
            progress.start_round(r, clients=len(plan.sampled))
        global_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        trainer = RoundTrainer(
            round_number=r, model=self.model, global_state=global_state, codec=self.codec,
            train=self.train, loaders=self.client_loaders, weights=self.weights,
            optimizer_factory=self.optimizer_factory, privacy=self.privacy,
            torch_seed_source=self._torch_seed_source,
        )

        def allowed(cid: int) -> tuple[bool, str]:
            if self.privacy is None:
                return True, ""
            return self.privacy.client_allowed(cid, self.client_loaders[cid])

        seed = schedule.simulation_seed(self.seed, r) if self.seed is not None else None
        if self.deployment is not None:  # the clients train on their own nodes, elsewhere
            deployed = deployed_round(
                self, round_number=r, plan=plan, agg=agg, global_state=global_state,
                allowed=allowed, seed=seed,
            )
            if progress is not None:
                for _ in deployed.phase.outcomes:
                    progress.client_done()
            if isinstance(deployed.partial, PrivacyBudgetExceeded):
                self.stopped = f"user-level privacy budget reached in round {r}"
            return self._settle(
                r=r, plan=plan, global_state=global_state, t_round=t_round, phase=deployed.phase,
                res=deployed.result, abort_error=deployed.error, partial=deployed.partial,
                agg_wall=deployed.seconds,
            )

        train_one: Callable[[int], ClientOutcome] = trainer
        tick = progress.client_done if progress is not None else None
        if self.pool is not None:
            chosen = [
                c for c in plan.sampled if plan.dropouts.get(c) != TRAIN_STAGE and allowed(c)[0]
            ]
            train_one = outcomes_in_order(
                self.pool.train(trainer, chosen, on_done=tick), self.privacy
            )
            tick = None  # the pool ticked as each client finished

        def after_client() -> None:
            if self.privacy is not None:
                self.privacy.flush()  # DP-SGD steps are durable before anything is sent
            if tick is not None:
                tick()

        phase = local_phase(
            round_number=r,
            plan=plan,
            stages=stages,
            failures=self.failures,
            train_one=train_one,
            allowed=allowed,
            after_client=after_client,
            placeholder=np.zeros(self.codec.size, dtype=self.codec.dtype),
            uniform=self.weighting == "uniform",
        )
        t_agg = time.perf_counter()
        res: SimulationResult | None = None
        abort_error: str | None = None
        partial: Any = None
        if not _all_raised(phase):  # otherwise _settle records the round and raises
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SeededRunWarning)
                try:
                    res = simulate(
                        agg,
                        phase.updates,
                        weights=phase.weights if self.weighting == "examples" else None,
                        dropouts=phase.silent,
                        seed=seed,
                        round_id=r,
                        keep_raw=self.keep_raw or self.keep_messages,
                    )
                except (ProtocolError, PrivacyBudgetExceeded) as exc:
                    abort_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                    partial = exc
                    if isinstance(exc, PrivacyBudgetExceeded):
                        self.stopped = f"user-level privacy budget reached in round {r}"
        return self._settle(
            r=r, plan=plan, global_state=global_state, t_round=t_round, phase=phase, res=res,
            abort_error=abort_error, partial=partial, agg_wall=time.perf_counter() - t_agg,
        )

    def _settle(
        self,
        *,
        r: int,
        plan: RoundSchedule,
        global_state: dict[str, Any],
        t_round: float,
        phase: LocalPhase,
        res: SimulationResult | None,
        abort_error: str | None,
        partial: Any,
        agg_wall: float,
    ) -> RoundRecord:
        """The round after its aggregation: abort, or apply the FedAvg step; evaluate; commit."""
        silent = phase.silent
        outcomes, failures = phase.outcomes, phase.failures
        stragglers, train_seconds = phase.stragglers, phase.train_seconds

        def draft() -> records.RoundDraft:
            return records.RoundDraft(
                round_number=r, plan=plan, silent=silent, failures=failures,
                stragglers=stragglers, train_seconds=train_seconds, started=t_round,
                seeded=self.seeded, dimension=self.codec.size,
                withhold_clip_counts=self.dp is not None and self.dp.user_level,
            )

        trained = [o for o in outcomes if not o.failed]
        if _all_raised(phase):
            # every client's train raised: almost surely a bug in the user's function
            note = next(f["error"] for f in failures if f["stage"] == "train")
            entry = records.aborted_entry(
                draft(), error=f"every client failed in train ({note})", result=None,
                privacy=self.privacy_for_round([]),
            )
            self._commit(entry, None, None, [])
            raise InvalidInputError(
                f"round {r}: every sampled client's train function raised; first error: {note}. "
                "The round was recorded as aborted and the global model is unchanged."
            )

        if self.privacy is not None:
            self.privacy.flush()

        if res is None:
            entry = records.aborted_entry(
                draft(), error=abort_error or "aborted", result=partial, agg_wall=agg_wall,
                privacy=self.privacy_for_round([]),
            )
            return self._commit(entry, None, partial, [])

        participants = [plan.sampled[s] for s in res.survivors]
        mean = res.aggregate[0] / res.total_weight if res.total_weight > 0 else None
        if mean is None or not np.all(np.isfinite(mean)):
            entry = records.aborted_entry(
                draft(), error="the aggregate is not finite; nothing was applied", result=res,
                agg_wall=agg_wall, privacy=self.privacy_for_round([]),
            )
            return self._commit(entry, None, res, [])
        step = self._server_steps[r - 1] if r <= len(self._server_steps) else self.server_lr
        new_state = self.codec.apply_delta(global_state, mean, scale=step)
        self.model.load_state_dict(new_state)

        privacy = self.privacy_for_round(participants)
        metrics, eval_error, eval_seconds = self._evaluate()
        entry = records.completed_entry(
            draft(), res=res, participants=participants, metrics=metrics,
            eval_error=eval_error, eval_seconds=eval_seconds, agg_wall=agg_wall,
            privacy=privacy, mean=mean,
        )
        entry["server_lr"] = step
        updates_by_client = (
            {o.client: o.update for o in trained if o.update is not None} if self.keep_raw else {}
        )
        return self._commit(entry, mean, res, participants, updates=updates_by_client,
                            new_state=new_state)

    # ---------------------------------------------------------------------------- evaluation

    def _evaluate(self) -> tuple[dict[str, Any], str | None, float]:
        if self.evaluate is None:
            return {}, None, 0.0
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                raw = self.evaluate(self.model)
            if not isinstance(raw, Mapping):
                raise TypeError(f"evaluate returned {type(raw).__name__}, expected a dict")
            metrics: dict[str, Any] = {}
            for key, value in raw.items():
                number = float(value.item() if hasattr(value, "item") else value)
                metrics[str(key)] = number if math.isfinite(number) else None
            error = None
        except Exception as exc:  # recorded, the run goes on; the model is already committed
            metrics = {}
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            warnings.warn(f"evaluate failed: {error}", RuntimeWarning, stacklevel=3)
        finally:
            self.model.train(was_training)
        return metrics, error, time.perf_counter() - t0


def _all_raised(phase: LocalPhase) -> bool:
    """Whether every sampled client that trained failed in the user's ``train`` itself."""
    trained = [o for o in phase.outcomes if not o.failed]
    raised = [f for f in phase.failures if f["stage"] == "train"]
    return bool(phase.outcomes) and not trained and len(raised) == len(phase.outcomes)
