"""Federated averaging around the user's own training loop, with any aggregator.

The user brings a model, a ``train(model, loader)`` function (their loop, optimizer and loss), one
data loader per client and optionally ``evaluate(model) -> dict``. Each round:

1. sample clients (CSPRNG, from the run's schedule seed and the round number);
2. each sampled client trains a copy of the global model with the user's function (optionally
   under DP-SGD) and computes its update ``local - global`` (:mod:`secureagg.fl.client`);
3. the updates are aggregated with the chosen aggregator through ``sa.simulate`` (all parties in
   this process, every message through the codec): the server obtains the **weighted sum** and
   the **total weight** of the clients whose input counts, never an individual update (except with
   the insecure ``"plain"`` baseline);
4. only if the round completed, the FedAvg step ``global += server_lr * sum / total_weight`` is
   applied, at once, to a new state that replaces the global model's;
5. ``evaluate`` runs, and the round is committed to the run directory.

Invariants: an aborted round (too few survivors, a protocol error, an aggregate that is not
finite) leaves the global model exactly as it was and is recorded; a client failure (its
``train`` raised, its loader is empty, it changed the architecture, its update holds NaN/Inf) is
recorded and that client sends nothing; nothing is half-applied. FedAvg weights are the clients'
example counts (integers, ``max_weight`` = the largest), or 1 each with ``weighting="uniform"``
(what ``"auto"`` picks under user-level DP or a public DP-SGD schedule, where example counts
would be released outside the accounting).

Clipping. Updates are clipped per value to ``[-clip, clip]`` by the aggregator (the bound that
SecAgg's fixed-point encoding needs); ``DEFAULT_CLIP = 1.0`` suits model deltas of a few local
epochs at usual learning rates. Clipped values are counted in each round's ``clipped`` entry: if
it is not zero, raise ``clip`` (the price is resolution: SecAgg's quantization step grows with
``clip * num_clients * max_weight``).

>>> import torch, secureagg.fl as fl
>>> model = torch.nn.Linear(2, 1)
>>> data = [[(torch.ones(4, 2), torch.zeros(4, 1))] for _ in range(3)]
>>> def train(model, loader):
...     opt = torch.optim.SGD(model.parameters(), lr=0.1)
...     for x, y in loader:
...         opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step()
>>> run = fl.FederatedRun(model, train=train, client_loaders=data, aggregator="plain",
...                       weighting="uniform", rounds=2, progress=False)
>>> [r["status"] for r in run.run()]
['completed', 'completed']
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import secureagg
from secureagg.aggregators import make_aggregator
from secureagg.dp._torch import require_torch
from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    PrivacyBudgetExceeded,
    ProtocolError,
)
from secureagg.fl import checks, records, schedule
from secureagg.fl.client import ClientOutcome, local_phase
from secureagg.fl.codec import BufferPolicy, StateCodec
from secureagg.fl.pool import (
    ClientPool,
    RoundTrainer,
    Workers,
    outcomes_in_order,
    resolve_workers,
    worker_problems,
)
from secureagg.fl.privacy import FederatedDP, PrivacyController
from secureagg.fl.progress import Progress
from secureagg.fl.records import RoundRecord
from secureagg.fl.rundir import HISTORY_FORMAT, RunDirectory
from secureagg.fl.schedule import TRAIN_STAGE, Failures, RoundSchedule
from secureagg.protocols.base import RoundFactory
from secureagg.transport import SeededRunWarning, SimulationResult, simulate
from secureagg.validation import is_int

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["DEFAULT_CLIP", "FederatedRun"]

DEFAULT_CLIP = 1.0

AggregatorSpec = str | Callable[[int, int], RoundFactory]
Weighting = Literal["auto", "examples", "uniform"]

#: Fields of config.json that must match when a run is resumed.
_RESUME_KEYS = (
    "protocol",
    "aggregator_options",
    "clip",
    "num_clients",
    "clients_per_round",
    "weighting",
    "client_weights",
    "server_lr",
    "failures",
    "seeded",
    "seed",
    "training_seed",
    "codec",
    "privacy",
)


class FederatedRun:
    """A federated training run (see the module docstring).

    ``model`` is the global model (updated in place at every completed round). ``train`` is
    ``train(model, loader)``, or ``train(model, loader, optimizer)`` when ``optimizer`` (a factory
    ``params -> torch.optim.Optimizer``) is given - required for DP-SGD, which must wrap the
    optimizer. ``client_loaders[i]`` is client ``i``'s re-iterable data (a ``DataLoader``).
    ``aggregator`` is a name for :func:`~secureagg.make_aggregator` (``"plain"``, ``"secagg"``,
    ``"secagg+"``, ``"ckks"``, ``"paillier"``; ``aggregator_options`` are passed on) or a function
    ``(num_clients, max_weight) -> aggregator``. ``rounds`` is the number of rounds the run has in
    total (aborted rounds count); ``clients_per_round`` samples that many clients per round
    (default: all). ``run_dir`` (optional) receives ``config.json``, ``history.json``,
    ``transcript.jsonl``, the privacy ledger, checkpoints and ``model.pt``; ``resume=True``
    continues a run from its directory. ``seed`` makes the run reproducible (tests, benchmarks,
    comparisons) and NOT secret; ``training_seed`` seeds only torch (local training order) and the
    public schedule (sampling, dropouts) while keys, masks and noise stay fresh. ``progress``
    shows bars (tqdm) or one line per round.
    ``keep_raw`` keeps, in memory, the bytes the server received and the plaintext updates, for
    analyses of what the server saw.
    ``server_lr_schedule`` (optional) maps a round number (1-based) to a factor of ``server_lr``
    for that round (e.g. a decay over the last rounds: post-processing of the aggregate, no
    privacy cost); the per-round steps are in ``config.json`` and in each round's entry.
    ``workers`` trains the sampled clients of a round in a process pool (:mod:`secureagg.fl.pool`):
    ``None``/``1`` in this process one after the other (the default), ``"auto"`` one process per
    core, ``N`` that many. The simulating process runs every party, so the pool stays inside one
    trust domain: only the user's own objects go to the workers (inherited by ``fork`` on Linux,
    pickled with ``spawn`` elsewhere, which needs module-level ``train``/optimizer functions); no
    party's wire message is unpickled. A seeded run gives the same model with any ``workers``.
    ``torch_threads`` is torch's intra-op thread count while the run trains and evaluates (restored
    afterwards): 1 by default, because federated models are usually small and several threads per
    client thrash on shared cores (the docs' digits example: 5.2 s on one thread, 133 s with torch's
    default threads, on 2 loaded cores); ``None`` leaves torch's setting alone.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        train: Callable[..., Any],
        client_loaders: Sequence[Any],
        evaluate: Callable[[torch.nn.Module], Mapping[str, Any]] | None = None,
        aggregator: AggregatorSpec = "secagg+",
        aggregator_options: Mapping[str, Any] | None = None,
        clip: float = DEFAULT_CLIP,
        rounds: int = 10,
        clients_per_round: int | None = None,
        server_lr: float = 1.0,
        server_lr_schedule: Callable[[int], float] | None = None,
        weighting: Weighting = "auto",
        client_weights: Sequence[int] | None = None,
        optimizer: Callable[[Any], Any] | None = None,
        dp: FederatedDP | None = None,
        failures: Failures | None = None,
        buffers: BufferPolicy | Literal["auto"] = "auto",
        run_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        seed: bytes | int | None = None,
        training_seed: int | None = None,
        progress: bool = True,
        keep_raw: bool = False,
        round_summary: Callable[[Mapping[str, Any], int], str] | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
        workers: Workers = None,
        torch_threads: int | None = 1,
    ) -> None:
        problems = worker_problems(workers) + checks.argument_problems(
            model=model, train=train, client_loaders=client_loaders, evaluate=evaluate,
            aggregator=aggregator, rounds=rounds, clip=clip, server_lr=server_lr,
            weighting=weighting, dp=dp, optimizer=optimizer, training_seed=training_seed,
            clients_per_round=clients_per_round,
        )
        if torch_threads is not None and not (is_int(torch_threads) and torch_threads >= 1):
            problems.append(f"torch_threads must be None or an integer >= 1, got {torch_threads!r}")
        if problems:
            raise ConfigurationError(problems)
        num_clients = len(client_loaders)

        self.model = model
        self.train = train
        self.client_loaders = list(client_loaders)
        self.evaluate = evaluate
        self.aggregator_spec = aggregator
        self.aggregator_options = dict(aggregator_options or {})
        self.clip = float(clip)
        self.rounds = int(rounds)
        self.num_clients = num_clients
        self.per_round = int(clients_per_round or num_clients)
        self.server_lr = float(server_lr)
        self.server_lr_schedule = server_lr_schedule
        self._server_steps = checks.server_steps(self.server_lr, server_lr_schedule, self.rounds)
        self.weighting: Literal["examples", "uniform"] = (
            ("uniform" if dp is not None and (dp.user_level or dp.public_schedule) else "examples")
            if weighting == "auto"
            else weighting
        )
        self.optimizer_factory = optimizer
        self.failures = failures if failures is not None else Failures()
        self.keep_raw = bool(keep_raw)
        self.torch_threads = torch_threads
        self.show_progress = bool(progress)
        self.round_summary = round_summary or records.format_round
        self.on_round = on_round
        self.codec = StateCodec.from_model(model, buffers=checks.buffer_policy(buffers, dp))
        released = checks.released_buffer_problems(self.codec, dp)
        if released:
            raise ConfigurationError(released)
        self.workers = resolve_workers(workers)
        self.pool = ClientPool(self.workers) if self.workers > 1 else None
        self.weights = checks.client_weights(
            self.client_loaders, client_weights, uniform=self.weighting == "uniform"
        )
        self.max_weight = max([w for w in self.weights if w >= 1], default=1)

        self.history: list[dict[str, Any]] = []
        self.completed_rounds = 0
        self.stopped: str | None = None
        self._checkpoint: dict[str, Any] | None = None
        self.run_dir = RunDirectory(run_dir) if run_dir is not None else None
        resuming = bool(resume) and self.run_dir is not None and self.run_dir.exists()
        stored: dict[str, Any] = {}
        if resuming and self.run_dir is not None:
            stored = self.run_dir.load_config()
            if seed is None:
                seed = checks.seed_from_json(stored.get("seed"))
            if training_seed is None and isinstance(stored.get("training_seed"), int):
                training_seed = int(stored["training_seed"])
        self.seed = seed
        self.seeded = seed is not None
        self.training_seed = training_seed
        #: what torch's per-(round, client) seeds derive from (None: torch's RNG is left alone)
        self._torch_seed_source: bytes | int | None = seed if seed is not None else training_seed
        if seed is not None:
            self.schedule_seed = schedule.schedule_seed_from(seed)
        elif training_seed is not None:
            self.schedule_seed = schedule.schedule_seed_from(training_seed, training_only=True)
        elif resuming:
            self.schedule_seed = bytes.fromhex(str(stored["schedule_seed"]))
        else:
            self.schedule_seed = os.urandom(32)

        self.dp = dp
        self.privacy = (
            PrivacyController(
                dp,
                rounds=self.rounds,
                dimension=self.codec.size,
                dropout_rate=float(self.failures.dropout_rate),
                seed=seed,
            )
            if dp is not None
            else None
        )
        if self.privacy is not None:
            self.privacy.not_released = [
                f"{s.name} ({s.kind}, {s.dtype})" for s in self.codec.specs if not s.aggregated
            ]
        self._aggregators: dict[int, RoundFactory] = {}
        probe = self._aggregator(self.per_round)
        self.dropout_stages = tuple(probe.dropout_stages)
        validate = self.failures.problems(num_clients=num_clients, stages=self.dropout_stages)
        if validate:
            raise ConfigurationError(validate)
        self.config = self._config()
        if self.seeded:
            warnings.warn(
                "seeded federated run: client sampling, dropouts, the protocol's keys and masks "
                "and the torch seeds of local training are reproducible from the seed and "
                "therefore NOT secret; use seed= only for tests, benchmarks and comparisons",
                SeededRunWarning,
                stacklevel=2,
            )
        if self.run_dir is not None:
            if resuming:
                self._resume()
            else:
                self._create()

    # ------------------------------------------------------------------------------ set-up

    def _aggregator(self, num_clients: int) -> RoundFactory:
        agg = self._aggregators.get(num_clients)
        if agg is not None:
            return agg
        max_weight = self.max_weight if self.weighting == "examples" else 1
        spec = self.aggregator_spec
        if isinstance(spec, str) and self.privacy is not None and self.privacy.dp.user_level:
            options: dict[str, Any] = dict(self.aggregator_options)
            if self.privacy.dp.central_noise_multiplier is not None:
                options.setdefault("clip", self.clip)
            agg = self.privacy.aggregator(spec, num_clients=num_clients, options=options)
        elif isinstance(spec, str):
            options = {"num_clients": num_clients, "clip": self.clip}
            if spec != "plain" and max_weight > 1:
                options["max_weight"] = max_weight
            options.update(self.aggregator_options)
            agg = make_aggregator(spec, **options)
        else:
            agg = spec(num_clients, max_weight)
            if not isinstance(agg, RoundFactory):
                raise ConfigurationError(
                    f"the aggregator factory returned {type(agg).__name__}, not an aggregator"
                )
        if agg.num_clients != num_clients:
            raise ConfigurationError(
                f"the aggregator was built for {agg.num_clients} clients, {num_clients} needed"
            )
        self._aggregators[num_clients] = agg
        return agg

    @property
    def protocol(self) -> str:
        return self._aggregator(self.per_round).name

    def _config(self) -> dict[str, Any]:
        agg = self._aggregator(self.per_round)
        return {
            "format": "secureagg/fl-config/v1",
            "command": "federated",
            "protocol": agg.name,
            "aggregator_options": checks.jsonable(self.aggregator_options),
            "parameters": checks.jsonable(agg.parameters()),
            "clip": self.clip,
            "num_clients": self.num_clients,
            "clients": self.num_clients,
            "clients_per_round": self.per_round,
            "weighting": self.weighting,
            "client_weights": self.weights,
            "max_weight": self.max_weight,
            "server_lr": self.server_lr,
            "server_lr_per_round": (
                self._server_steps if self.server_lr_schedule is not None else None
            ),
            "rounds": self.rounds,
            "workers": self.workers,
            "failures": self.failures.to_dict(),
            "seeded": self.seeded,
            "seed": checks.seed_json(self.seed),
            "training_seed": self.training_seed,
            "schedule_seed": (
                None if self.seeded or self.training_seed is not None else self.schedule_seed.hex()
            ),
            "privacy": None if self.dp is None else checks.jsonable(self.dp.describe()),
            "codec": self.codec.describe(),
            "secureagg_version": secureagg.__version__,
            "torch_version": str(torch.__version__),
        }

    def _history_doc(self) -> dict[str, Any]:
        return {
            "format": HISTORY_FORMAT,
            "completed_rounds": self.completed_rounds,
            "checkpoint": self._checkpoint,
            "rounds": self.history,
        }

    def _create(self) -> None:
        rd = self.run_dir
        if rd is None:
            return
        rd.create(self.config)
        if self.privacy is not None:
            self.privacy.attach(rd.path, replay=False)
        self._checkpoint = rd.save_checkpoint(0, self.model.state_dict())
        self.write_ledger()
        rd.commit(self._history_doc())
        rd.publish_model(rd.path / self._checkpoint["path"])
        self._write_result()

    def _resume(self) -> None:
        rd = self.run_dir
        if rd is None:
            return
        stored = rd.load_config()
        mismatched = [
            f"{key}: the run directory has {stored.get(key)!r}, this run {self.config.get(key)!r}"
            for key in _RESUME_KEYS
            if checks.jsonable(stored.get(key)) != checks.jsonable(self.config.get(key))
        ]
        if mismatched:
            raise ConfigurationError(
                ["cannot resume: the configuration differs from the run directory's", *mismatched]
            )
        history = rd.load_history()
        state = rd.load_checkpoint(history["checkpoint"])
        self.codec.check(state, who="the checkpoint")
        self.model.load_state_dict(state)
        self.history = list(history.get("rounds", []))
        self.completed_rounds = int(history["completed_rounds"])
        self._checkpoint = dict(history["checkpoint"])
        rd.truncate_transcript(keep_through_round=self.completed_rounds)
        self.restore_privacy(self.history)
        if self.rounds != int(stored.get("rounds", self.rounds)):
            config = dict(stored)
            config["rounds"] = self.rounds
            rd.write_json("config.json", config)

    # ------------------------------------------------------------------ privacy hooks (DP layer)

    def restore_privacy(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Replay the run's privacy events (resume); nothing without DP."""
        if self.privacy is not None and self.run_dir is not None:
            self.privacy.attach(self.run_dir.path, replay=True)

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

    def write_ledger(self) -> None:
        """Write ``privacy_ledger.json`` (without DP: a statement saying so)."""
        if self.run_dir is None:
            return
        if self.privacy is not None:
            self.privacy.flush()
            self.run_dir.write_json("privacy_ledger.json", checks.jsonable(self.privacy.ledger()))
            return
        self.run_dir.write_json(
            "privacy_ledger.json",
            {
                "format": "secureagg/fl-privacy-ledger/v1",
                "differential_privacy": False,
                "statement": "no differential privacy was configured for this run: the server "
                "obtains the exact aggregate of each round, and the released model carries no "
                "formal privacy guarantee",
                "sample_level": None,
                "user_level": None,
            },
        )

    # ---------------------------------------------------------------------------- the loop

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
        updates, weights, silent = phase.updates, phase.weights, phase.silent
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
        raised = [f for f in failures if f["stage"] == "train"]
        if outcomes and not trained and len(raised) == len(outcomes):
            # every client's train raised: almost surely a bug in the user's function
            note = raised[0]["error"]
            entry = records.aborted_entry(
                draft(), error=f"every client failed in train ({note})", result=None,
                privacy=self.privacy_for_round([]),
            )
            self._commit(entry, None, None, [])
            raise InvalidInputError(
                f"round {r}: every sampled client's train function raised; first error: {note}. "
                "The round was recorded as aborted and the global model is unchanged."
            )

        seed = schedule.simulation_seed(self.seed, r) if self.seed is not None else None
        t_agg = time.perf_counter()
        res: SimulationResult | None = None
        abort_error: str | None = None
        partial: Any = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeededRunWarning)
            try:
                res = simulate(
                    agg,
                    updates,
                    weights=weights if self.weighting == "examples" else None,
                    dropouts=silent,
                    seed=seed,
                    round_id=r,
                    keep_raw=self.keep_raw,
                )
            except (ProtocolError, PrivacyBudgetExceeded) as exc:
                abort_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                partial = exc
                if isinstance(exc, PrivacyBudgetExceeded):
                    self.stopped = f"user-level privacy budget reached in round {r}"
        agg_wall = time.perf_counter() - t_agg
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

    # ------------------------------------------------------------------------------- entries

    # -------------------------------------------------------------------------------- commit

    def _commit(
        self,
        entry: dict[str, Any],
        mean: Any,
        result: Any,
        participants: Sequence[int],
        *,
        updates: Mapping[int, Any] | None = None,
        new_state: Mapping[str, torch.Tensor] | None = None,
    ) -> RoundRecord:
        r = int(entry["round"])
        slots = [int(c) for c in entry["sampled"]]
        lines: list[dict[str, Any]] = []
        if result is not None:
            lines = records.transcript_lines(
                r,
                slots,
                up=getattr(result, "transcript", []) or [],
                down=getattr(result, "downlink", []) or [],
                peer=getattr(result, "peer_traffic", []) or [],
            )
        raw: list[tuple[dict[str, Any], bytes]] | None = None
        raw_bytes = getattr(result, "raw_uplink", None)
        if self.keep_raw and raw_bytes is not None:
            ups = [line for line in lines if line["direction"] == "up"]
            raw = list(zip(ups, raw_bytes, strict=True))
        entry["transcript_messages"] = len(lines)
        self.history.append(entry)
        self.completed_rounds = r
        rd = self.run_dir
        if rd is not None:
            rd.append_transcript(lines)
            if new_state is not None:
                self._checkpoint = rd.save_checkpoint(r, new_state)
            self.write_ledger()
            rd.commit(self._history_doc())
            if new_state is not None and self._checkpoint is not None:
                ckpt = rd.path / self._checkpoint["path"]
                rd.publish_model(ckpt)
                rd.prune_checkpoints(ckpt)
            self._write_result()
        record = RoundRecord(
            entry=entry,
            raw_uplink=raw,
            client_updates=dict(updates or {}),
            mean_update=None if mean is None else np.asarray(mean, dtype=np.float64),
        )
        if self.on_round is not None:
            self.on_round(record)
        return record

    def _write_result(self, *, stopped: str | None = None) -> None:
        """``result.json``: totals that ``secureagg audit`` checks against the transcript."""
        if self.run_dir is not None:
            self.run_dir.write_json(
                "result.json",
                records.result_summary(
                    self.history, rounds=self.rounds, stopped=stopped, seeded=self.seeded
                ),
            )

    # ---------------------------------------------------------------------------------- misc

    @property
    def directory(self) -> Path | None:
        """The run directory's path (``None`` when the run writes none)."""
        return None if self.run_dir is None else self.run_dir.path
