"""The server side on Flower: one secure aggregation round over a Grid, stage by stage.

:class:`SecureRounds` is what the strategy (:mod:`secureagg.flower.strategy`) and the legacy
workflow run. For a round it

1. asks every node it has not met yet what it is (``hello``: client or HE key holder, and its
   public identity key), once per run;
2. samples the round's clients with a CSPRNG and numbers them ``0 .. n-1``; in malicious mode only
   nodes whose identity key is in the operator's list are eligible;
3. for HE, asks the key-holder node for a fresh key for the round (a stage of its own) and puts
   its public part in the round spec;
4. builds the round spec and runs the server party with :class:`secureagg.engine.EngineRound`
   over a :class:`~secureagg.flower.link.FlowerLink`, with a deadline per stage (the stage in
   which the nodes train has ``train_deadline``: the one where the protocol first uses the update,
   the aggregator's ``update_stage`` - SecAgg/SecAgg+: ``masked`` - or else the first);
5. returns the aggregate (the weighted sum and the total weight) and the round's record.

A node that misses a deadline, fails, or replies with anything that does not decode or is
refused, is a dropout of that stage; below the protocol's threshold the round raises
:class:`~secureagg.errors.InsufficientSurvivors` and nothing is released. The server holds no
client secret and no HE secret key at any point: it has the spec, the public keys, and what the
protocol sends it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators import make_aggregator, protocol_aggregator
from secureagg.aggregators.key_holder import KeyHolderAggregator
from secureagg.engine import EngineRound, RoundRecord
from secureagg.errors import ConfigurationError, InsufficientSurvivors, SecureAggError
from secureagg.flower import records
from secureagg.flower.link import FlowerLink
from secureagg.protocols.base import KEY_HOLDER, AggregateOutcome, RoundFactory
from secureagg.protocols.spec import canonical_json
from secureagg.transport.results import SimulationResult
from secureagg.transport.round_spec import spec_to_bytes
from secureagg.validation import is_int

__all__ = ["NodeInfo", "RoundOutcome", "SecureRounds", "round_metrics"]


@dataclass(frozen=True)
class NodeInfo:
    """What a node said about itself at ``hello``."""

    node_id: int
    role: str
    identity: bytes
    partition: int = -1


@dataclass
class RoundOutcome:
    """One round: the aggregate (``None`` if it aborted), who took part, and what was seen."""

    round_id: int
    outcome: AggregateOutcome | None
    parties: dict[int, int]  # party id -> Flower node id (clients, and the key holder)
    record: RoundRecord
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: what each client's node reported about its training (party -> JSON text), if anything
    reports: dict[int, str] = field(default_factory=dict)
    spec: Any = None
    exception: Exception | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def survivor_nodes(self) -> list[int]:
        if self.outcome is None:
            return []
        return [self.parties[i] for i in self.outcome.survivor_ids]

    def simulation_result(self, *, seeded: bool) -> SimulationResult | None:
        """The round as :func:`secureagg.simulate` would have returned it (metrics from
        :func:`round_metrics`), or ``None`` if it did not complete."""
        out = self.outcome
        if out is None or self.spec is None:
            return None
        return SimulationResult(
            aggregate=list(out.aggregate), survivors=tuple(out.survivor_ids),
            total_weight=float(out.total_weight), transcript=list(self.record.transcript),
            downlink=list(self.record.downlink), metrics=round_metrics(self),
            parameters=self.parameters, seeded=seeded, session_id=self.spec.session_id,
            round_id=self.round_id, details=dict(out.details))

    def silent_from(self, stage_order: Sequence[str], parties: int) -> dict[int, str]:
        """Party (0..``parties - 1``) -> the earliest stage (in ``stage_order``) in which it
        missed the deadline or answered with an error."""
        went_silent: list[tuple[str, Any]] = [
            (stage, party) for stage, ids in self.record.timed_out.items() for party in ids]
        went_silent += [(str(e.get("stage")), e.get("party")) for e in self.record.failed]
        order = list(stage_order)
        out: dict[int, str] = {}
        for stage, party in went_silent:
            if not (is_int(party) and 0 <= party < parties):
                continue
            known = out.get(party)
            if known is None or (stage in order and known in order
                                 and order.index(stage) < order.index(known)):
                out[party] = stage
        return out


class SecureRounds:
    """Runs our rounds over one Flower ``grid``; see the module docstring.

    ``protocol`` and ``options`` are :func:`secureagg.make_aggregator`'s (the number of clients is
    each round's); with ``protocol=None`` every round is given its aggregator. ``identities`` is
    the set of admitted public identity keys (malicious mode).
    """

    def __init__(
        self,
        grid: Any,
        *,
        protocol: str | None,
        options: Mapping[str, Any] | None = None,
        weighted: bool = True,
        fraction: float = 1.0,
        min_nodes: int = 2,
        train_deadline: float = 120.0,
        stage_deadline: float = 30.0,
        poll: float = 0.2,
        identities: frozenset[bytes] | None = None,
        wait_for_nodes: float = 60.0,
        privacy: Any = None,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigurationError(f"fraction must be in (0, 1], got {fraction}")
        self.grid = grid
        self.protocol = protocol
        self.options = dict(options or {})
        self.weighted = bool(weighted)
        self.fraction = float(fraction)
        self.min_nodes = int(min_nodes)
        self.train_deadline = float(train_deadline)
        self.stage_deadline = float(stage_deadline)
        self.poll = float(poll)
        self.identities = identities
        self.wait_for_nodes = float(wait_for_nodes)
        #: The run's one privacy accountant (DP options only): every round's release is
        #: composed in it, across the fresh aggregator each round builds.
        self.privacy = privacy if self.has_dp else None
        self.session_id = secrets.token_bytes(16)
        self.nodes: dict[int, NodeInfo] = {}
        self.needs_key_holder = False
        self.malicious = False
        if protocol is not None:
            # an aggregator only to learn the round's kind (HE key holder? malicious?): built
            # for enough clients that every protocol has secure parameters for it
            self._note(self.aggregator(max(self.min_nodes, 16)))

    def _note(self, agg: RoundFactory) -> None:
        """Whether rounds of ``agg`` need a key-holder node, and identity keys (malicious)."""
        inner = protocol_aggregator(agg)
        self.needs_key_holder = isinstance(inner, KeyHolderAggregator)
        self.malicious = getattr(getattr(inner, "params", None), "threat", None) == "malicious"
        if self.malicious and not self.identities:
            raise ConfigurationError(
                "malicious mode needs the admitted nodes' identity keys (identities=...)"
            )

    @property
    def has_dp(self) -> bool:
        return any(k in self.options for k in ("distributed_dp", "central_dp"))

    def aggregator(self, num_clients: int) -> RoundFactory:
        if self.protocol is None:
            raise ConfigurationError("no protocol given: pass each round's aggregator (agg=)")
        extra = {} if getattr(self, "privacy", None) is None else {"privacy": self.privacy}
        return make_aggregator(self.protocol, num_clients=num_clients, **self.options, **extra)

    # ------------------------------------------------------------------ asking the nodes

    def _ask(self, nodes: Sequence[int], build: Callable[[int], dict[str, Any]],
             deadline: float, group: str) -> dict[int, dict[str, Any] | str]:
        """One query per node (party = its index); its record, or an error string."""
        from flwr.app import ConfigRecord, RecordDict

        link = FlowerLink(
            self.grid, dict(enumerate(nodes)),
            content=lambda party, _s, _d, _f: RecordDict(
                {records.RECORD: ConfigRecord(build(party))}),
            group_id=group, ttl=deadline + 5.0, poll=self.poll, raw=True,
        )
        tickets = {link.send(i, -1, b""): i for i in range(len(nodes))}
        out: dict[int, dict[str, Any] | str] = {}
        until = time.monotonic() + deadline
        while tickets and time.monotonic() < until:
            for answer in link.collect(until=until):
                index = tickets.pop(answer.ticket, None)
                if index is None:
                    continue
                out[nodes[index]] = answer.error or link.records.pop(answer.ticket, {})
        return out

    def meet(self, *, partitions: int = 0) -> None:
        """``hello`` to every node not met yet (roles and identity keys), until the round's
        clients (``partitions`` distinct partitions, if given) and key holder are there or
        ``wait_for_nodes`` seconds have passed."""
        deadline = time.monotonic() + self.wait_for_nodes
        while True:
            new = [n for n in self.grid.get_node_ids() if n not in self.nodes]
            if new:
                answers = self._ask(new, lambda _p: records.hello(), self.stage_deadline,
                                    "hello")
                for node, answer in answers.items():
                    if not isinstance(answer, str):
                        partition = answer.get("partition", -1)
                        self.nodes[node] = NodeInfo(
                            node, str(answer.get("role", "")), bytes(answer.get("identity", b"")),
                            partition if isinstance(partition, int) else -1)
            roles = [info.role for info in self.nodes.values()]
            held = {i.partition for i in self.nodes.values() if i.role == "client"}
            enough = roles.count("client") >= self.min_nodes and (
                not self.needs_key_holder or records.KEY_HOLDER_ROLE in roles) and (
                len(held - {-1}) >= partitions)
            if enough or time.monotonic() > deadline:
                return
            time.sleep(0.5)

    # ------------------------------------------------------------------ one round

    def sample(self) -> list[int]:
        """This round's client nodes, drawn with a CSPRNG from the eligible connected ones."""
        self.meet()
        connected = set(self.grid.get_node_ids())
        clients = [n for n, info in self.nodes.items() if info.role == "client" and n in connected]
        if self.malicious:
            clients = [n for n in clients if self.nodes[n].identity in (self.identities or ())]
        count = max(self.min_nodes, round(self.fraction * len(clients)))
        if len(clients) < count:
            raise InsufficientSurvivors(stage="sample", survivors=len(clients),
                                        threshold=count, node_ids=clients)
        return secrets.SystemRandom().sample(sorted(clients), count)

    def nodes_of_partitions(self, partitions: Sequence[int]) -> dict[int, int]:
        """The connected client node that holds each partition (``partition-id`` in its node
        config); partitions without one are left out."""
        self.meet(partitions=len(partitions))
        connected = set(self.grid.get_node_ids())
        held = {info.partition: n for n, info in self.nodes.items()
                if info.role == "client" and n in connected and info.partition >= 0}
        return {p: held[p] for p in partitions if p in held}

    def run_round(
        self,
        round_id: int,
        shapes: Sequence[tuple[int, ...]],
        train_content: Callable[[int], Any],
        *,
        nodes: Sequence[int | None] | None = None,
        agg: RoundFactory | None = None,
        seed: bytes | None = None,
        session_id: bytes | None = None,
        weighted: bool | None = None,
    ) -> RoundOutcome:
        """Run round ``round_id``; ``train_content(party)`` is the training content (Flower's
        ``arrays`` and ``config`` records) of the message at which client ``party`` trains (its
        message of the aggregator's ``update_stage``, else its first).

        By default the clients are :meth:`sample`'d and the aggregator is built for them;
        ``nodes[i]`` (``None``: no node, a dropout) and ``agg`` give them instead. ``seed`` is a
        seeded run's round seed (then NOT secret; nodes take it only if their node config allows
        seeded runs) and ``session_id`` its session id.
        """
        t0 = time.perf_counter()
        if agg is not None:
            self._note(agg)
        if nodes is None:
            nodes = self.sample()
        else:
            self.meet()
        parties = {i: n for i, n in enumerate(nodes) if n is not None}
        if agg is None:
            agg = self.aggregator(len(nodes))
        session = self.session_id if session_id is None else session_id
        connected = set(self.grid.get_node_ids())
        key_holders = [n for n, info in self.nodes.items()
                       if info.role == records.KEY_HOLDER_ROLE and n in connected]
        public: dict[int, bytes] = {}
        if self.malicious:
            public = {i: self.nodes[n].identity if n is not None and n in self.nodes else b""
                      for i, n in enumerate(nodes)}
        seconds: dict[str, float] = {}
        if self.needs_key_holder:
            if len(key_holders) != 1:
                raise ConfigurationError(
                    f"an HE round needs exactly one key-holder node, {len(key_holders)} connected"
                )
            t_key = time.perf_counter()
            options = canonical_json(agg.spec_options())
            keygen = records.hello(keygen=True, session=session, round_id=round_id,
                                   protocol=agg.protocol, options=options,
                                   num_clients=len(nodes))
            answer = self._ask(key_holders, lambda _p: keygen, self.stage_deadline,
                               f"{round_id}-key").get(key_holders[0], "no answer")
            seconds["key"] = time.perf_counter() - t_key
            if isinstance(answer, str) or not answer.get("public"):
                raise ConfigurationError(f"the key holder gave no key for round {round_id}: "
                                         f"{answer}")
            public[KEY_HOLDER] = bytes(answer["public"])
            parties[KEY_HOLDER] = key_holders[0]
        weighted = self.weighted if weighted is None else weighted
        try:
            spec = agg.round_spec(shapes=shapes, weighted=weighted, session_id=session,
                                  round_id=round_id, public_keys=public or None)
            spec_bytes = spec_to_bytes(spec)
            server = agg.server_from_spec(spec, seed=seed)
        except SecureAggError as exc:  # e.g. the privacy budget refuses the round: nothing sent
            seconds["round"] = time.perf_counter() - t0
            return RoundOutcome(round_id, None, parties, RoundRecord(),
                                f"{type(exc).__name__}: {' '.join(str(exc).split())}", seconds,
                                exception=exc, parameters=dict(agg.parameters()))
        from flwr.app import ConfigRecord, RecordDict

        # Where the clients train: at the stage where the protocol first uses the update
        # (SecAgg/SecAgg+: masked; as Flower's SecAgg+ sends its fit-ins with its masked-vector
        # stage), so the node state of the stages before it carries no update; else at the first
        # step. ``server.stage`` is the stage whose messages the engine is sending.
        update_stage = agg.update_stage
        trained: set[int] = set()

        def content(party: int, sender: int, data: bytes, first: bool) -> Any:
            train = party != KEY_HOLDER and party not in trained and (
                first if update_stage is None else server.stage == update_stage)
            if train:
                trained.add(party)
            ours = records.step(party=party, sender=sender, message=data, digest=spec.digest,
                                spec=spec_bytes if first else None,
                                seed=seed if first else None, train=train)
            body = train_content(party) if train else RecordDict()
            body.config_records[records.RECORD] = ConfigRecord(ours)
            return body

        train_stage = update_stage or (server.stages[0] if server.stages else None)
        deadlines = {} if train_stage is None else {train_stage: self.train_deadline}
        link = FlowerLink(self.grid, parties, content=content, group_id=str(round_id),
                          ttl=max(self.train_deadline, self.stage_deadline) + 10.0,
                          poll=self.poll)
        engine = EngineRound(server, link, round_id=round_id,
                             default_deadline=self.stage_deadline, deadlines=deadlines)
        outcome: AggregateOutcome | None = None
        error: str | None = None
        partial: SecureAggError | None = None
        try:
            outcome = engine.run()
        except SecureAggError as exc:
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            partial = exc
        seconds.update(round=time.perf_counter() - t0, push=link.push_seconds,
                       pull=link.pull_seconds)
        return RoundOutcome(round_id, outcome, parties, engine.record, error, seconds,
                            reports=dict(link.reports), spec=spec, exception=partial,
                            parameters=dict(agg.parameters()))


def round_metrics(outcome: RoundOutcome) -> dict[str, Any]:
    """A :class:`~secureagg.transport.SimulationResult`'s ``metrics`` for a round over Flower,
    from what the engine measured: per stage the compute seconds (the slowest client's as it
    reports them, all clients', the server's), the stage's wall seconds (until its last answer or
    its deadline: Flower's polling and process starts included) and traffic."""
    rec = outcome.record
    stages: dict[str, Any] = {}
    totals = {"bytes_up": 0, "bytes_down": 0, "messages_up": 0, "messages_down": 0}
    for stage, row in rec.stages.items():
        stages[stage] = {
            "client_seconds_max": float(row["client_seconds_max"]),
            "client_seconds_total": float(row["client_seconds_total"]),
            "server_seconds": float(row["server_seconds"]),
            "wall_seconds": float(row["seconds"]),
            **{k: int(row[k]) for k in totals},
        }
        for k in totals:
            totals[k] += int(row[k])
    return {
        "stages": stages,
        "totals": totals,
        "rejected": list(rec.rejected),
        "timed_out": dict(rec.timed_out),
        "failed": list(rec.failed),
        "late": list(rec.late),
        "engine": "flower",
        "engine_seconds": dict(outcome.seconds),
    }


def apply_mean(
    arrays: Sequence[npt.NDArray[Any]], outcome: AggregateOutcome, *, server_lr: float = 1.0
) -> list[npt.NDArray[Any]] | None:
    """``global + server_lr * sum / total_weight`` in each array's dtype, or ``None`` if the
    aggregate is not finite (nothing is applied then)."""
    if outcome.total_weight <= 0:
        return None
    means = [np.asarray(a, dtype=np.float64) / outcome.total_weight for a in outcome.aggregate]
    if not all(np.all(np.isfinite(m)) for m in means):
        return None
    return [
        (np.asarray(g, dtype=np.float64) + server_lr * m).astype(np.asarray(g).dtype)
        for g, m in zip(arrays, means, strict=True)
    ]
