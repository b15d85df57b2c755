"""Split training of the user's model over the in-memory transport: vanilla, U-shaped, SplitFed.

:class:`SplitLearning` wires a :class:`~secureagg.split.parties.SplitClient` per data holder and
one :class:`~secureagg.split.parties.SplitServer`, and moves every message of a training step
through the versioned codec (:mod:`secureagg.transport.codec`; no pickle) with
:class:`~secureagg.transport.driver.ExchangeDriver`, recording what the server received (kind,
sender, size, sha256) and the cost of each side. With several clients and an ``aggregator``, it
is **SplitFed** (Thapa et al. 2022, arXiv 2004.12088): every client trains its own copy of the
client-side parts against the one server part, and after each epoch the copies are averaged
through the secure aggregator (``"secagg+"``, ``"ckks"``, ...), so the server sees only masked or
encrypted client-side weights.

Threat model and what leaks: see :mod:`secureagg.split.parties` and ``docs/split.md``.

>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
>>> sl = SplitLearning(net, cuts=[2], clients=[DataLoader(data, batch_size=8)],
...                    optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
>>> history = sl.fit(epochs=2)
>>> len(history), sl.transcript[0].kind
(2, 'split/activations')
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secureagg.aggregators import make_aggregator
from secureagg.aggregators.dp import with_central_dp
from secureagg.dp import CentralDP, PrivacyAccountant
from secureagg.dp.events import DistributedNoiseRound, GaussianSteps, MechanismConfigured
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.protocols.base import SERVER, Message, RoundFactory
from secureagg.split.model import split_sequential
from secureagg.split.parties import GradientProtection, SplitClient, SplitServer
from secureagg.split.protections import ActivationDP, NoPeek
from secureagg.split.scope import Sharing, SplitSetting, privacy_scope
from secureagg.transport import TranscriptEntry, simulate
from secureagg.transport.driver import ExchangeDriver

__all__ = ["Exchange", "Observer", "SplitLearning", "SplitStats"]

OptimizerFactory = Callable[[Any], Any]


@dataclass(frozen=True)
class Exchange:
    """One message as the receiving party got it, with the batch it belongs to (for attacks)."""

    message: Message
    sender: int
    recipient: int
    client: int
    example_ids: tuple[int, ...]
    labels: Any


Observer = Callable[[Exchange], None]


@dataclass
class SplitStats:
    """Cost counters of a run (seconds are process CPU-wall, per side)."""

    steps: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    client_seconds: float = 0.0
    server_seconds: float = 0.0
    codec_seconds: float = 0.0
    aggregation_seconds: float = 0.0
    aggregation_bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes_per_step": (self.bytes_up + self.bytes_down) / max(self.steps, 1),
            "client_seconds": self.client_seconds,
            "server_seconds": self.server_seconds,
            "codec_seconds": self.codec_seconds,
            "aggregation_seconds": self.aggregation_seconds,
            "aggregation_bytes": self.aggregation_bytes,
            "bytes_by_kind": dict(self.by_kind),
        }

    def add_exchange(self, wire: ExchangeDriver) -> None:
        """Count what one exchange carried: bytes by direction and kind, codec and party time."""
        self.bytes_up += sum(e.size for e in wire.transcript)
        self.bytes_down += sum(e.size for e in (*wire.downlink, *wire.peer))
        for kind, size in wire.bytes_by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + size
        self.codec_seconds += wire.codec_seconds
        self.server_seconds += wire.seconds.get(SERVER, 0.0)
        self.client_seconds += sum(t for pid, t in wire.seconds.items() if pid != SERVER)


def _batches(loader: Any) -> Iterator[tuple[list[int], Any, Any]]:
    """``(indices, inputs, labels)`` per batch, with the dataset indices the loader drew."""
    sampler = getattr(loader, "batch_sampler", None)
    dataset = getattr(loader, "dataset", None)
    if sampler is None or dataset is None:
        raise ConfigurationError(
            "each client loader must be a torch DataLoader with a batch size (its batch_sampler "
            "gives the example ids the server's label table and the DP accounting need)"
        )
    for indices in sampler:
        idx = [int(i) for i in indices]
        batch = loader.collate_fn([dataset[i] for i in idx])
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise InvalidInputError("a client batch must be (inputs, labels)")
        yield idx, batch[0], batch[1]


class SplitLearning:
    """Split training of ``model`` between the clients (data holders) and one server.

    * ``model`` with ``cuts``: an ``nn.Sequential`` cut at one index (vanilla: labels at the
      server) or two (U-shaped: the client keeps the head and the labels); or ``parts``: your own
      modules ``(bottom, top)`` or ``(bottom, middle, head)``.
    * ``clients``: one ``DataLoader`` of ``(inputs, labels)`` per data holder. With more than one,
      ``aggregator`` (default ``"secagg+"``) averages the client-side parts after every epoch
      (SplitFed); ``aggregator=None`` keeps one copy that the clients train in turn (sequential
      split learning, which hands the client weights from client to client in the clear).
    * ``optimizer``: a factory ``params -> torch.optim.Optimizer`` used for every part.
    * Protections: ``activation_dp`` (an :class:`ActivationDP`, or a factory ``client_id ->
      ActivationDP`` for several clients), ``nopeek`` (a :class:`NoPeek`), ``label_protection``
      (a callable ``(gradients, labels) -> gradients``, see
      :mod:`secureagg.split.label_protection`), applied by the label holder: the server on the
      cut gradients (vanilla) or the client on the output gradients (U-shaped).
    * ``observe``: called with every :class:`Exchange` (what a party received, with the batch's
      example ids and labels) - how :mod:`secureagg.split.attacks` is run on a real exchange.
    * ``clip``: the per-coordinate bound the SplitFed aggregator encodes weight deltas with.

    The parts share your modules, so after :meth:`fit` your ``model`` (SplitFed: the averaged
    client-side parts) is trained in place.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        clients: Sequence[Any],
        optimizer: OptimizerFactory,
        cuts: Sequence[int] | None = None,
        parts: Sequence[Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        activation_dp: ActivationDP | Callable[[int], ActivationDP] | None = None,
        nopeek: NoPeek | None = None,
        label_protection: GradientProtection | None = None,
        aggregator: str | None = "secagg+",
        aggregator_options: Mapping[str, Any] | None = None,
        clip: float = 1.0,
        evaluate: Callable[[Any], Mapping[str, float]] | None = None,
        observe: Observer | None = None,
        session_id: bytes | None = None,
    ) -> None:
        torch = require_torch()
        if (model is None) == (parts is None):
            raise ConfigurationError("give model= with cuts=, or parts=, not both")
        if model is not None:
            if cuts is None:
                raise ConfigurationError("model= needs cuts= (one cut: vanilla; two: U-shaped)")
            parts = split_sequential(model, cuts)
        parts = tuple(parts or ())
        problems = []
        if len(parts) not in (2, 3):
            problems.append(f"give 2 parts (vanilla) or 3 (U-shaped), got {len(parts)}")
        if not clients:
            problems.append("clients= needs at least one DataLoader")
        if len(clients) > 1 and aggregator is not None and activation_dp is not None and (
            isinstance(activation_dp, ActivationDP)
        ):
            problems.append("several clients need activation_dp as a factory: client_id -> ...")
        if problems:
            raise ConfigurationError(problems)
        self.topology = "u-shaped" if len(parts) == 3 else "vanilla"
        self.parts = parts
        self.model = model if model is not None else torch.nn.Sequential(*parts)
        self.loaders = list(clients)
        self.optimizer = optimizer
        self.loss_fn = loss_fn or torch.nn.functional.cross_entropy
        self.nopeek = nopeek
        self.aggregator = aggregator if len(self.loaders) > 1 else None
        self.aggregator_options = dict(aggregator_options or {})
        self.clip = clip
        #: SplitFed's aggregator, built once (bad options fail here, before any training), and
        #: the user-level accountant of its DP across every epoch's average (None without DP)
        self._agg, self.aggregation_privacy = self._build_aggregator()
        self.evaluate = evaluate
        self.session_id = session_id or os.urandom(16)
        self.transcript: list[TranscriptEntry] = []
        self.stats = SplitStats()
        self.history: list[dict[str, Any]] = []
        self._loss_log: list[float] = []
        self.last_aggregation: dict[str, Any] = {}
        self.label_protection = label_protection
        self.setting = self._setting()
        self._dp = [self._client_dp(activation_dp, c) for c in range(len(self.loaders))]
        for dp in self._dp:
            if dp is not None:
                dp.setting = self.setting  # what its ε does and does not cover in this run
        labels, self._offsets = self._label_table() if self.topology == "vanilla" else (None, [])
        server_part = parts[1]
        self.server = SplitServer(
            server_part, optimizer(server_part.parameters()), session_id=self.session_id,
            topology=self.topology, labels=labels,
            loss_fn=self.loss_fn if self.topology == "vanilla" else None,
            protect=label_protection if self.topology == "vanilla" else None,
        )
        self.observe = observe
        self._client_parts = [parts[0]] + ([parts[2]] if self.topology == "u-shaped" else [])
        self.clients = [self._make_client(c, self._client_parts) for c in range(len(self.loaders))]

    # ---------------------------------------------------------------------------------- set-up

    def _build_aggregator(self) -> tuple[RoundFactory | None, PrivacyAccountant | None]:
        """SplitFed's aggregator: ``make_aggregator(aggregator, **aggregator_options)``, with
        ``distributed_dp=`` (noise inside SecAgg) or ``central_dp=`` (a :class:`CentralDP`,
        trusted server) accounted by one accountant over all epochs."""
        if self.aggregator is None:
            return None, None
        options = dict(self.aggregator_options)
        central = options.pop("central_dp", None)
        privacy: PrivacyAccountant | None = None
        if options.get("distributed_dp") is not None:
            given = options.setdefault("privacy", PrivacyAccountant())
            privacy = given if isinstance(given, PrivacyAccountant) else None
        else:
            options.setdefault("clip", self.clip)
        agg = make_aggregator(self.aggregator, num_clients=len(self.loaders), **options)
        if central is not None:
            if not isinstance(central, CentralDP):
                raise ConfigurationError(
                    f"central_dp must be a secureagg.dp.CentralDP, got {type(central).__name__}"
                )
            privacy = PrivacyAccountant()
            agg = with_central_dp(agg, central, privacy=privacy)
        return agg, privacy

    def _setting(self) -> SplitSetting:
        """The channels this run opens (for the privacy scope of every ε it reports)."""
        if len(self.loaders) == 1:
            sharing: Sharing = "none"
        else:
            sharing = "splitfed" if self.aggregator is not None else "sequential"
        dp_options = ("distributed_dp", "central_dp")
        protection = self.label_protection
        return SplitSetting(
            topology="u-shaped" if self.topology == "u-shaped" else "vanilla",
            sharing=sharing,
            clients=len(self.loaders),
            aggregator=self.aggregator,
            aggregator_dp=sharing == "splitfed"
            and any(self.aggregator_options.get(k) is not None for k in dp_options),
            label_protection=None
            if protection is None
            else str(getattr(protection, "method", type(protection).__name__)),
            nopeek=self.nopeek is not None,
        )

    @staticmethod
    def _client_dp(
        dp: ActivationDP | Callable[[int], ActivationDP] | None, client: int
    ) -> ActivationDP | None:
        if dp is None or isinstance(dp, ActivationDP):
            return dp
        made = dp(client)
        if not isinstance(made, ActivationDP):
            raise ConfigurationError("activation_dp factory must return an ActivationDP")
        return made

    def _label_table(self) -> tuple[Any, list[int]]:
        """The vanilla server's label table: every client's labels, ids offset per client."""
        torch = require_torch()
        tables, offsets, offset = [], [], 0
        for loader in self.loaders:
            ds = loader.dataset
            labels = torch.as_tensor([int(ds[i][1]) for i in range(len(ds))], dtype=torch.long)
            tables.append(labels)
            offsets.append(offset)
            offset += len(ds)
        return torch.cat(tables), offsets

    def _make_client(self, c: int, modules: Sequence[Any]) -> SplitClient:
        bottom = modules[0]
        head = modules[1] if len(modules) > 1 else None
        return SplitClient(
            bottom, self.optimizer(bottom.parameters()), session_id=self.session_id,
            head=head, head_optimizer=None if head is None else self.optimizer(head.parameters()),
            loss_fn=self.loss_fn if head is not None else None,
            activation_dp=self._dp[c], nopeek=self.nopeek,
            protect=self.label_protection if head is not None else None, client_id=c,
        )

    # -------------------------------------------------------------------------------- transport

    def _step(self, c: int, client: SplitClient, ids: list[int], x: Any, y: Any) -> None:
        """One training step: the client's activations, then the exchange until none is in
        flight (the one delivery loop, :class:`ExchangeDriver`); records what the server got."""
        t = time.perf_counter()
        example_ids = None
        if self.topology == "vanilla":
            example_ids = np.asarray(ids, dtype=np.int64) + self._offsets[c]
        sent = client.send_forward(
            x, labels=y if self.topology == "u-shaped" else None, example_ids=example_ids
        )
        self.stats.client_seconds += time.perf_counter() - t
        wire = ExchangeDriver(
            {c: client, SERVER: self.server}, stage=self.topology, round_id=client.step
        )
        observe = self.observe
        watch = None if observe is None else (  # what the receiving party got, with its batch
            lambda env: observe(Exchange(env.message, env.sender, env.recipient, c, tuple(ids), y))
        )
        try:
            wire.run(sent, observe=watch)
        finally:
            self.transcript.extend(wire.transcript)
            self.stats.add_exchange(wire)
        self.stats.steps += 1
        losses = client.losses if self.topology == "u-shaped" else self.server.losses
        self._loss_log.append(losses[-1])

    # -------------------------------------------------------------------------------- training

    def _local_epoch(self, c: int, client: SplitClient) -> int:
        dp = self._dp[c]
        if dp is not None:
            dp.begin_epoch()
        seen: set[int] = set()
        examples = 0
        for ids, x, y in _batches(self.loaders[c]):
            if dp is not None and seen.intersection(ids):
                raise ConfigurationError(
                    f"client {c}'s loader drew an example twice in one epoch (a sampler with "
                    "replacement or weighting): each epoch is accounted as one release per "
                    "record, so this would mis-account ActivationDP; use shuffle=True or a "
                    "SequentialSampler"
                )
            seen.update(ids)
            self._step(c, client, ids, x, y)
            examples += len(ids)
        return examples

    def _average(self, copies: list[list[Any]], examples: list[int]) -> None:
        """SplitFed: average the clients' client-side parts through the secure aggregator."""
        torch = require_torch()
        if self.aggregator is None:
            return
        globals_ = [p.detach() for m in self._client_parts for p in m.parameters()]
        flat_global = torch.cat([g.reshape(-1) for g in globals_]).double().numpy()
        updates = []
        for modules in copies:
            flat = torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])
            updates.append([flat.double().numpy() - flat_global])
        if self._agg is None:  # pragma: no cover - built whenever self.aggregator is set
            raise ConfigurationError("no aggregator")
        t = time.perf_counter()
        res = simulate(self._agg, updates, round_id=len(self.history))
        self.stats.aggregation_seconds += time.perf_counter() - t
        self.stats.aggregation_bytes += sum(e.size for e in res.transcript)
        self.transcript.extend(res.transcript)
        mean = res.aggregate[0] / res.total_weight
        offset = 0
        with torch.no_grad():
            for g in globals_:
                n = g.numel()
                delta = torch.from_numpy(mean[offset : offset + n]).reshape(g.shape)
                g.add_(delta.to(g.dtype))
                offset += n
        self.last_aggregation = {"survivors": list(res.survivors), "examples": examples}

    def fit(self, epochs: int = 1, *, progress: Callable[[dict[str, Any]], None] | None = None
            ) -> list[dict[str, Any]]:
        """Train for ``epochs``; returns (and appends to :attr:`history`) one entry per epoch."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigurationError(f"epochs must be an integer >= 1, got {epochs!r}")
        entries = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            before = self.stats.to_dict()
            losses_before = len(self._loss_log)
            if self.aggregator is not None:
                copies, examples = [], []
                for c in range(len(self.loaders)):
                    modules = [copy.deepcopy(m) for m in self._client_parts]
                    client = self._make_client(c, modules)
                    client.step = self.clients[c].step
                    examples.append(self._local_epoch(c, client))
                    self.clients[c] = client
                    copies.append(modules)
                self._average(copies, examples)
            else:
                for c, client in enumerate(self.clients):
                    self._local_epoch(c, client)
            after = self.stats.to_dict()
            losses = self._loss_log[losses_before:]
            entry: dict[str, Any] = {
                "epoch": len(self.history) + 1,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": time.perf_counter() - t0,
                "bytes_up": after["bytes_up"] - before["bytes_up"],
                "bytes_down": after["bytes_down"] - before["bytes_down"],
                "steps": after["steps"] - before["steps"],
            }
            eps = [dp.epsilon for dp in self._dp if dp is not None]
            if eps:
                entry["epsilon"] = max(eps)
            if self.evaluate is not None:
                entry.update({k: float(v) for k, v in self.evaluate(self.model).items()})
            self.history.append(entry)
            entries.append(entry)
            if progress is not None:
                progress(entry)
        return entries

    def privacy(self) -> dict[str, Any]:
        """The run's privacy claim: ε per client and, in words, what it covers and what not.

        Without ActivationDP no ε is claimed, and ``scope`` lists every channel through which
        the clients' records reach the server or each other (:mod:`secureagg.split.scope`).
        """
        dps = [dp for dp in self._dp if dp is not None]
        averaged = self._aggregation_claim()
        if not dps:
            scope = privacy_scope(self.setting, covered=None)
            return {"epsilon": None, "delta": None, "per_client": [], "scope": scope,
                    "summary": scope["summary"], "averaged_client_parts": averaged}
        worst = max(dps, key=lambda dp: dp.epsilon)
        scope = worst.privacy_scope()
        return {
            "epsilon": worst.epsilon,
            "delta": worst.delta,
            "per_client": [
                {"client": dp.party, "epsilon": dp.epsilon, "delta": dp.delta} for dp in dps
            ],
            "scope": scope,
            "summary": scope["summary"],
            "averaged_client_parts": averaged,
            # each client's accountant ledger (its events), to be re-accounted independently
            "ledgers": {str(dp.party): dp.accountant.report() for dp in dps},
        }

    def _aggregation_claim(self) -> dict[str, Any] | None:
        """The user-level ε of the SplitFed averages (their own mechanism), or None."""
        acc = self.aggregation_privacy
        if acc is None:
            return None
        mechanism = next(
            (e.mechanism for e in acc.events if isinstance(e, MechanismConfigured)), None
        )
        rounds = sum(1 for e in acc.events if isinstance(e, DistributedNoiseRound | GaussianSteps))
        return {
            "epsilon": acc.epsilon(scope="user", party=None),
            "delta": acc.delta,
            "mechanism": mechanism,
            "rounds": rounds,
            "adjacency": "one client's whole client-part update in every average replaced by "
            "zero (user level)",
            "method": acc.method(scope="user", party=None),
        }

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: topology, protections, cost, privacy (with its scope), history."""
        return {
            "topology": self.topology,
            "splitfed": self.aggregator is not None,
            "aggregator": self.aggregator,
            "clients": len(self.loaders),
            "privacy": self.privacy(),
            "protections": {
                "activation_dp": [dp.report() for dp in self._dp if dp is not None] or None,
                "nopeek": None if self.nopeek is None else {"weight": self.nopeek.weight},
                "label_protection": None
                if self.label_protection is None
                else getattr(self.label_protection, "method", type(self.label_protection).__name__),
            },
            "cost": self.stats.to_dict(),
            "history": list(self.history),
        }
