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

The parts, one concept each: the arguments are checked in :mod:`secureagg.fl.run_arguments`;
the configuration (defaults, the aggregator, ``config.json``) is :mod:`secureagg.fl.run_config`;
the run directory is created, resumed and committed by :mod:`secureagg.fl.run_persistence`; the
rounds run in :mod:`secureagg.fl.round_loop`; a model's state is flattened to the vector that is
aggregated by :mod:`secureagg.fl.model_state`. This module assembles them into
:class:`FederatedRun`.

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

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from secureagg.errors import ConfigurationError
from secureagg.fl import records, run_arguments, schedule
from secureagg.fl.deployed import RoundDeployment
from secureagg.fl.model_state import BufferPolicy, StateCodec
from secureagg.fl.pool import ClientPool, Workers, resolve_workers, worker_problems
from secureagg.fl.privacy import FederatedDP, PrivacyController
from secureagg.fl.records import RoundRecord
from secureagg.fl.round_loop import RoundLoop
from secureagg.fl.run_config import DEFAULT_CLIP, AggregatorSpec, Weighting, seed_from_json
from secureagg.fl.rundir import FederatedRunDirectory
from secureagg.fl.schedule import Failures
from secureagg.transport import SeededRunWarning
from secureagg.validation import is_int

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_CLIP", "FederatedRun"]


class FederatedRun(RoundLoop):
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
    analyses of what the server saw. ``keep_messages`` writes the bytes the server received to
    ``messages.bin`` in the run directory, so that an auditor can re-check every transcript hash
    (it costs the uplink's bytes on disk; in-process rounds only).
    ``server_lr_schedule`` (optional) maps a round number (1-based) to a factor of ``server_lr``
    for that round (e.g. a decay over the last rounds: post-processing of the aggregate, no
    privacy cost); the per-round steps are in ``config.json`` and in each round's entry.
    ``workers`` trains the sampled clients of a round in a process pool (:mod:`secureagg.fl.pool`):
    ``None``/``1`` in this process one after the other (the default), ``"auto"`` one process per
    core, ``N`` that many. The simulating process runs every party, so the pool stays inside one
    trust domain: only the user's own objects go to the workers (inherited by ``fork`` on Linux,
    pickled with ``spawn`` elsewhere, which needs module-level ``train``/optimizer functions); no
    party's wire message is unpickled. A seeded run gives the same model with any ``workers``.
    ``deployment`` runs the rounds where the clients are (:mod:`secureagg.fl.deployed`; e.g.
    :class:`secureagg.flower.federated.FlowerDeployment` on Flower): each sampled client trains on
    its own node with this run's code, and only the aggregate comes back.
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
        keep_messages: bool = False,
        round_summary: Callable[[Mapping[str, Any], int], str] | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
        workers: Workers = None,
        torch_threads: int | None = 1,
        deployment: RoundDeployment | None = None,
    ) -> None:
        problems = worker_problems(workers) + run_arguments.argument_problems(
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

        self.deployment = deployment
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
        self._server_steps = run_arguments.server_steps(
            self.server_lr, server_lr_schedule, self.rounds
        )
        self.weighting = (
            ("uniform" if dp is not None and (dp.user_level or dp.public_schedule) else "examples")
            if weighting == "auto"
            else weighting
        )
        self.optimizer_factory = optimizer
        self.failures = failures if failures is not None else Failures()
        self.keep_raw = bool(keep_raw)
        self.keep_messages = bool(keep_messages)
        self.torch_threads = torch_threads
        self.show_progress = bool(progress)
        self.round_summary = round_summary or records.format_round
        self.on_round = on_round
        self.codec = StateCodec.from_model(model, buffers=run_arguments.buffer_policy(buffers, dp))
        released = run_arguments.released_buffer_problems(self.codec, dp)
        if released:
            raise ConfigurationError(released)
        self.workers = resolve_workers(workers)
        self.pool = ClientPool(self.workers) if self.workers > 1 else None
        self.weights = run_arguments.client_weights(
            self.client_loaders, client_weights, uniform=self.weighting == "uniform"
        )
        self.max_weight = max([w for w in self.weights if w >= 1], default=1)

        self.history = []
        self.completed_rounds = 0
        self.stopped = None
        self._checkpoint = None
        self.run_dir = FederatedRunDirectory(run_dir) if run_dir is not None else None
        resuming = bool(resume) and self.run_dir is not None and self.run_dir.exists()
        stored: dict[str, Any] = {}
        if resuming and self.run_dir is not None:
            stored = self.run_dir.load_config()
            if seed is None:
                seed = seed_from_json(stored.get("seed"))
            if training_seed is None and isinstance(stored.get("training_seed"), int):
                training_seed = int(stored["training_seed"])
        self.seed = seed
        self.seeded = seed is not None
        self.training_seed = training_seed
        self._torch_seed_source = seed if seed is not None else training_seed
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
        self._aggregators = {}
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
