"""Clients built without their update: SecAgg / SecAgg+ take it at ``masked`` (``update_stage``).

An engine that starts a process per message (Flower) carries the client's state in and out of
every process; a SecAgg client first uses its update at ``masked``, so it is built without it and
given it there, and the state of the stages before holds only its keys. :class:`StageLink` plays
such an engine in memory: every message goes through :func:`client_step` with the node's stored
state, and the update goes with the message of ``update_stage`` (or, as before, the first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.engine.client import client_step
from secureagg.engine.server import Answer, EngineRound
from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    ProtocolError,
    SecureAggError,
)
from secureagg.protocols.secagg.client import SecAggClient
from secureagg.transport.party_state import state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_to_bytes

SESSION = b"U" * 16
SEED = bytes(range(32))


class StageLink:
    """Answers at once through ``client_step``; the update goes with the first message of
    ``update_stage`` to a client (``None``: with its first message); ``withhold`` clients never
    get it. Records each client's stored state size after each stage's message."""

    def __init__(self, spec_bytes: bytes, server: Any, updates: list[list[np.ndarray]], *,
                 update_stage: str | None, weights: list[float] | None = None,
                 seed: bytes | None = None, withhold: frozenset[int] = frozenset(),
                 secrets: dict[int, Any] | None = None) -> None:
        self.spec_bytes, self.server, self.updates = spec_bytes, server, updates
        self.update_stage, self.weights, self.seed = update_stage, weights, seed
        self.withhold, self.secrets = withhold, secrets or {}
        self.states: dict[int, bytes] = {}
        self.given: set[int] = set()
        self.sizes: dict[int, dict[str, int]] = {}
        self.queue: list[Answer] = []
        self.tickets = 0

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        ticket, self.tickets = self.tickets, self.tickets + 1
        stage = self.server.stage
        first = recipient not in self.states
        give = recipient not in self.given and recipient not in self.withhold and (
            first if self.update_stage is None else stage == self.update_stage)
        if give:
            self.given.add(recipient)
        try:
            step = client_step(
                self.spec_bytes, self.states.get(recipient), sender, data, client_id=recipient,
                update=self.updates[recipient] if give else None,
                weight=None if self.weights is None or not give else self.weights[recipient],
                secret=self.secrets.get(recipient), session_id=SESSION, seed=self.seed,
            )
        except SecureAggError as exc:
            self.queue.append(Answer(recipient, ticket, error=f"{type(exc).__name__}: {exc}"))
            return ticket
        self.states[recipient] = step.state
        self.sizes.setdefault(recipient, {})[stage] = len(step.state)
        self.queue.append(Answer(recipient, ticket, step.replies))
        return ticket

    def collect(self, *, until: float) -> list[Answer]:
        out, self.queue = self.queue, []
        return out


def _round(agg: Any, updates: list[list[np.ndarray]], *, deferred: bool, seed: bytes | None = None,
           weights: list[float] | None = None, withhold: frozenset[int] = frozenset(),
           ) -> tuple[Any, EngineRound, StageLink]:
    provision = agg.provision(session_id=SESSION, round_id=0, seed=seed)
    spec = agg.round_spec(shapes=[a.shape for a in updates[0]], weighted=weights is not None,
                          session_id=SESSION, round_id=0, public_keys=provision.public or None)
    server = agg.server_from_spec(spec, seed=seed)
    link = StageLink(spec_to_bytes(spec), server, updates,
                     update_stage=agg.update_stage if deferred else None, weights=weights,
                     seed=seed, withhold=withhold, secrets=dict(provision.secrets))
    engine = EngineRound(server, link, round_id=0, default_deadline=5.0)
    return engine.run(), engine, link


def _updates(n: int, d: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(d)
    return [[rng.uniform(-0.1, 0.1, size=d), rng.uniform(-0.1, 0.1, size=(2, 3))]
            for _ in range(n)]


@pytest.mark.parametrize(("protocol", "options"), [
    ("secagg", {}), ("secagg+", {}), ("secagg+", {"threat": "malicious"}),
])
def test_before_masked_the_stored_state_holds_no_update_whatever_d(
        protocol: str, options: dict[str, Any]) -> None:
    sizes = {}
    for d in (10, 5000):
        agg = sa.make_aggregator(protocol, num_clients=4, clip=1.0, **options)
        assert agg.update_stage == "masked"
        outcome, _, link = _round(agg, _updates(4, d), deferred=True)
        assert outcome.survivor_ids == (0, 1, 2, 3)
        sizes[d] = link.sizes[0]
    assert sizes[10]["advertise"] == sizes[5000]["advertise"] < 2000
    assert sizes[10]["share"] == sizes[5000]["share"] < 4000
    # what the test tells apart: with the update at the first message it is in those states
    agg = sa.make_aggregator(protocol, num_clients=4, clip=1.0, **options)
    _, _, before = _round(agg, _updates(4, 5000), deferred=False)
    assert before.sizes[0]["advertise"] > sizes[5000]["advertise"] + 8 * 5000


@pytest.mark.parametrize(("protocol", "options", "weighted"), [
    ("secagg+", {"max_weight": 8}, True),
    ("secagg", {}, False),
    ("secagg+", {"threat": "malicious"}, False),
    ("secagg+", {"distributed_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5, "dimension": 206,
                                    "client_sampling_rate": 0.7}}, False),
    ("secagg+", {"central_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5,
                                "client_sampling_rate": 0.7}}, False),
])
def test_an_update_given_at_masked_gives_the_very_bytes_of_one_given_at_the_start(
        protocol: str, options: dict[str, Any], weighted: bool) -> None:
    updates = _updates(5, 200)
    weights = [1.0, 3.0, 8.0, 2.0, 5.0] if weighted else None
    runs = []
    for deferred in (True, False):
        agg = sa.make_aggregator(protocol, num_clients=5, clip=1.0, **options)
        runs.append(_round(agg, updates, deferred=deferred, seed=SEED, weights=weights))
    (late, late_engine, _), (early, early_engine, _) = runs
    assert late.survivor_ids == early.survivor_ids == (0, 1, 2, 3, 4)
    # every byte a client sent (the masked inputs included) is the same
    assert [e.sha256 for e in late_engine.record.transcript] == [
        e.sha256 for e in early_engine.record.transcript]
    assert late.total_weight == early.total_weight
    if "central_dp" in options:
        return  # the server's own noise is fresh (OS CSPRNG) in each run
    for a, b in zip(late.aggregate, early.aggregate, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_client_that_reaches_masked_without_its_update_refuses_and_is_recovered() -> None:
    agg = sa.make_aggregator("secagg+", num_clients=5, clip=1.0)
    updates = _updates(5, 30)
    outcome, engine, _ = _round(agg, updates, deferred=True, withhold=frozenset({2}))
    assert outcome.survivor_ids == (0, 1, 3, 4)
    assert [(f["stage"], f["party"]) for f in engine.record.failed] == [("masked", 2)]
    assert "no update was supplied" in engine.record.failed[0]["error"]
    for j in range(2):
        expected = sum(updates[u][j] for u in (0, 1, 3, 4))
        np.testing.assert_allclose(outcome.aggregate[j], expected, atol=agg.error_bound())


def _awaiting(protocol: str = "secagg+") -> tuple[Any, Any, SecAggClient]:
    agg = sa.make_aggregator(protocol, num_clients=4, clip=1.0)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    client = agg.client_awaiting_update(spec, 1)
    assert isinstance(client, SecAggClient)
    return agg, spec, client


def test_an_update_is_taken_once_before_masked_and_checked_as_at_the_start() -> None:
    agg, spec, client = _awaiting()
    assert client.awaiting_update
    restored = agg.restore_client(spec, state_from_bytes(state_to_bytes(client)))
    assert restored.awaiting_update  # an empty update before masked: not supplied yet
    with pytest.raises(InvalidInputError, match="shapes"):
        agg.supply_update(spec, restored, [np.ones(4)])
    with pytest.raises(ValueError, match="finite"):
        agg.supply_update(spec, restored, [np.array([0.0, np.nan, 0.0])])
    assert restored.awaiting_update  # a refused update changes nothing
    agg.supply_update(spec, restored, [np.full(3, 0.5)])
    assert not restored.awaiting_update
    with pytest.raises(ProtocolError, match="not awaiting"):
        agg.supply_update(spec, restored, [np.full(3, 0.5)])
    again = agg.restore_client(spec, state_from_bytes(state_to_bytes(restored)))
    assert not again.awaiting_update
    _, _, built = _awaiting()
    with pytest.raises(ConfigurationError, match="round spec"):
        agg.supply_update(agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"V" * 16,
                                         round_id=0), built, [np.ones(3)])


def test_protocols_that_use_the_update_at_once_need_it_at_the_first_message() -> None:
    agg = sa.make_aggregator("plain", num_clients=3)
    assert agg.update_stage is None
    spec = agg.round_spec(shapes=[(2,)], weighted=False, session_id=SESSION, round_id=0)
    (request, *_) = agg.server_from_spec(spec).start()
    from secureagg.transport.codec import encode

    with pytest.raises(ConfigurationError, match="needs the node's update"):
        client_step(spec_to_bytes(spec), None, request.sender, encode(request.message),
                    client_id=0, session_id=SESSION)
    with pytest.raises(ConfigurationError, match="built with its update"):
        agg.client_awaiting_update(spec, 0)
