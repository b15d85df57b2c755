"""A round whose clients live in a fresh process for every message, as on Flower's ClientApp.

The test's :class:`ProcessLink` plays the engine: for every message to a client it starts a new
process (``spawn``) that receives only the spec's bytes, the node's stored state (none at the
first message), the message and - at the first message only - the node's own update, runs
:func:`secureagg.engine.client.client_step`, and sends back the replies and the new state, which
the link stores "on the node" until the next message. Only bytes cross between processes (a JSON
header and our codec's bytes; no pickle). Every process the test starts is stopped by pid.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.engine.server import Answer, EngineRound
from secureagg.errors import InsufficientSurvivors
from secureagg.protocols.base import SERVER
from secureagg.transport.round_spec import spec_to_bytes

SESSION = b"E" * 16


def _frame(header: dict[str, Any], *blobs: bytes) -> bytes:
    head = json.dumps({**header, "sizes": [len(b) for b in blobs]}).encode()
    return len(head).to_bytes(4, "big") + head + b"".join(blobs)


def _unframe(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    size = int.from_bytes(data[:4], "big")
    header = json.loads(data[4 : 4 + size])
    blobs, start = [], 4 + size
    for n in header["sizes"]:
        blobs.append(data[start : start + n])
        start += n
    return header, blobs


def _node_main(conn: Any) -> None:  # pragma: no cover - runs in a fresh process
    """One message at one node, in its own process: everything arrives as bytes."""
    from secureagg.engine.client import client_step
    from secureagg.errors import SecureAggError

    header, (spec_bytes, state, message, update_bytes) = _unframe(conn.recv_bytes())
    update = None
    if update_bytes:
        flat = np.frombuffer(update_bytes, dtype=np.float64)
        update, start = [], 0
        for shape in header["shapes"]:
            size = int(np.prod(shape))
            update.append(flat[start : start + size].reshape(shape))
            start += size
    try:
        step = client_step(
            spec_bytes, state or None, header["sender"], message,
            client_id=header["client"], update=update, session_id=SESSION,
        )
    except SecureAggError as exc:
        conn.send_bytes(_frame({"error": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(_frame(
        {"recipients": [r for r, _ in step.replies]}, step.state, *(d for _, d in step.replies)
    ))


class ProcessLink:
    """The engine of this test: a fresh process per message; the state kept on the 'node'."""

    def __init__(self, spec_bytes: bytes, updates: list[list[np.ndarray]],
                 kill: set[tuple[int, int]] = frozenset()) -> None:  # type: ignore[assignment]
        self.ctx = mp.get_context("spawn")
        self.spec_bytes = spec_bytes
        self.updates = updates
        self.states: dict[int, bytes] = {}
        self.messages_seen: dict[int, int] = {}
        self.kill = kill  # (client, its n-th message): SIGKILL that process mid-message
        self.running: list[tuple[int, int, Any, Any]] = []
        self.pids: list[int] = []
        self.received: dict[int, list[bytes]] = {}
        self.to_server: list[bytes] = []  # every reply the server was handed

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        ticket = len(self.pids)
        n = self.messages_seen.get(recipient, 0)
        self.messages_seen[recipient] = n + 1
        first = recipient not in self.states
        update = self.updates[recipient]
        own = b"".join(np.asarray(a, dtype=np.float64).tobytes() for a in update) if first else b""
        payload = _frame(
            {"client": recipient, "sender": sender, "shapes": [list(a.shape) for a in update]},
            self.spec_bytes, self.states.get(recipient, b""), data, own,
        )
        self.received.setdefault(recipient, []).append(payload)
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_node_main, args=(child,), daemon=True)
        process.start()
        self.pids.append(process.pid)
        parent.send_bytes(payload)
        if (recipient, n) in self.kill:
            time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)  # exactly the process this test started
        self.running.append((recipient, ticket, process, parent))
        return ticket

    def collect(self, *, until: float) -> list[Answer]:
        answers: list[Answer] = []
        while not answers and self.running and time.monotonic() < until:
            still = []
            for party, ticket, process, conn in self.running:
                if conn.poll(0.02):
                    try:
                        data = conn.recv_bytes()
                    except (EOFError, OSError):  # the process died mid-message
                        process.join(10)
                        answers.append(Answer(party, ticket, error="the node's process died"))
                        continue
                    header, blobs = _unframe(data)
                    process.join(10)
                    if "error" in header:
                        answers.append(Answer(party, ticket, error=header["error"]))
                        continue
                    self.states[party] = blobs[0]
                    self.to_server.extend(blobs[1:])
                    replies = tuple(zip(header["recipients"], blobs[1:], strict=True))
                    answers.append(Answer(party, ticket, replies))
                elif not process.is_alive():
                    answers.append(
                        Answer(party, ticket, error=f"process exited ({process.exitcode})")
                    )
                else:
                    still.append((party, ticket, process, conn))
            self.running = still
        return answers

    def stop(self) -> None:
        for _, _, process, _ in self.running:
            if process.is_alive():
                process.kill()
            process.join(5)
        self.running = []


def _round(agg: Any, updates: list[list[np.ndarray]], kill: set[tuple[int, int]]) -> Any:
    spec = agg.round_spec(shapes=[a.shape for a in updates[0]], weighted=False,
                          session_id=SESSION, round_id=0)
    link = ProcessLink(spec_to_bytes(spec), updates, kill)
    engine = EngineRound(agg.server_from_spec(spec), link, round_id=0, default_deadline=120.0)
    try:
        return engine.run(), engine, link
    finally:
        link.stop()


def _updates(n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(4)
    return [[rng.uniform(-1, 1, size=(5,))] for _ in range(n)]


@pytest.mark.slow
def test_secagg_plus_with_a_fresh_process_per_message_and_a_node_killed_mid_round() -> None:
    """Client 3's process is SIGKILLed at its masked-input message (after the share keys): the
    round completes over the others with their exact sum, and the record names the node."""
    agg = sa.make_aggregator("secagg+", num_clients=5, clip=1.0)
    updates = _updates(5)
    outcome, engine, link = _round(agg, updates, kill={(3, 2)})  # messages 0, 1, 2: masked
    assert outcome.survivor_ids == (0, 1, 2, 4)
    reference = sa.simulate(agg, updates, dropouts={3: "masked"}, seed=1)
    np.testing.assert_allclose(outcome.aggregate[0], reference.aggregate[0],
                               atol=2 * agg.error_bound())
    assert [f["party"] for f in engine.record.failed] == [3]
    assert engine.record.failed[0]["stage"] == "masked"
    # every message started a fresh process; a client's update reached only its own node,
    # and only with its first message
    assert len(link.pids) == len(set(link.pids)) >= 5 * 3
    for cid, payloads in link.received.items():
        own = np.asarray(updates[cid][0], dtype=np.float64).tobytes()
        given = [_unframe(p)[1][3] for p in payloads]  # the update blob of each message
        assert given[0] == own and not any(given[1:])  # handed over once, then in its own state
        for other in range(5):
            if other != cid:
                theirs = np.asarray(updates[other][0], dtype=np.float64).tobytes()
                assert not any(theirs in p for p in payloads)
    server_got = b"".join(link.to_server)
    assert server_got and not any(np.asarray(u[0]).tobytes() in server_got for u in updates)
    assert {e.sender for e in engine.record.transcript} == {0, 1, 2, 3, 4}
    assert all(e.recipient == SERVER for e in engine.record.transcript)


@pytest.mark.slow
def test_nodes_killed_below_the_threshold_abort_the_round_and_release_nothing() -> None:
    agg = sa.make_aggregator("secagg", num_clients=4, clip=1.0, dropout_rate=0.25)
    updates = _updates(4)
    with pytest.raises(InsufficientSurvivors):
        _round(agg, updates, kill={(1, 2), (2, 2), (3, 2)})
