"""EngineRound's stage rules, with an in-memory link and a fake clock (fast, deterministic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.engine.client import client_step
from secureagg.engine.server import Answer, EngineRound
from secureagg.errors import InsufficientSurvivors
from secureagg.transport.codec import encode
from secureagg.transport.round_spec import spec_to_bytes

SESSION = b"F" * 16


class FakeLink:
    """Answers at once through client_step, except the silent nodes; can forge answers."""

    def __init__(self, spec_bytes: bytes, updates: list[Any], silent: set[int],
                 forged: list[Answer] | None = None) -> None:
        self.spec_bytes, self.updates, self.silent = spec_bytes, updates, silent
        self.states: dict[int, bytes] = {}
        self.queue: list[Answer] = list(forged or [])
        self.tickets = 0
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        ticket = self.tickets
        self.tickets += 1
        if recipient in self.silent:
            return ticket
        step = client_step(self.spec_bytes, self.states.get(recipient), sender, data,
                           client_id=recipient, update=self.updates[recipient],
                           session_id=SESSION)
        self.states[recipient] = step.state
        self.queue.append(Answer(recipient, ticket, step.replies))
        return ticket

    def collect(self, *, until: float) -> list[Answer]:
        if self.queue:
            out, self.queue = self.queue, []
            return out
        self.now = until  # nothing more will come: the deadline passes
        return []


def _run(agg: Any, updates: Any, **link_kw: Any) -> tuple[Any, EngineRound]:
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    link = FakeLink(spec_to_bytes(spec), updates, **link_kw)
    engine = EngineRound(agg.server_from_spec(spec), link, round_id=0, default_deadline=5.0,
                         clock=link.clock)
    return engine.run(), engine


def _updates(n: int) -> list[list[np.ndarray]]:
    return [[np.full(3, float(u + 1) / 10)] for u in range(n)]


def test_a_silent_node_times_out_and_the_round_goes_on_without_it() -> None:
    agg = sa.make_aggregator("plain", num_clients=4)
    outcome, engine = _run(agg, _updates(4), silent={2})
    assert outcome.survivor_ids == (0, 1, 3)
    np.testing.assert_allclose(outcome.aggregate[0], np.full(3, 0.1 + 0.2 + 0.4))
    assert engine.record.timed_out == {"upload": [2]}


def test_an_answer_to_another_message_is_late_and_never_delivered() -> None:
    agg = sa.make_aggregator("plain", num_clients=3)
    forged = [Answer(1, 999, ((-1, encode(_upload_of(agg, 1, np.full(3, 50.0)))),))]
    outcome, engine = _run(agg, _updates(3), silent=set(), forged=forged)
    np.testing.assert_allclose(outcome.aggregate[0], np.full(3, 0.1 + 0.2 + 0.3))
    assert engine.record.late == [{"stage": "upload", "party": 1, "ticket": 999}]


def _upload_of(agg: Any, cid: int, values: np.ndarray) -> Any:
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    client = agg.client_from_spec(spec, cid, [values])
    (request, *_) = agg.server_from_spec(spec).start()
    return client.receive(request.sender, request.message)[0].message


def test_secagg_dropouts_at_the_deadline_are_recovered_and_below_threshold_abort() -> None:
    agg = sa.make_aggregator("secagg+", num_clients=5, clip=1.0)
    outcome, engine = _run(agg, _updates(5), silent={4})
    assert outcome.survivor_ids == (0, 1, 2, 3)
    np.testing.assert_allclose(outcome.aggregate[0], np.full(3, 1.0), atol=agg.error_bound())
    assert engine.record.timed_out["advertise"] == [4]
    with pytest.raises(InsufficientSurvivors):
        _run(agg, _updates(5), silent={1, 2, 3, 4})
