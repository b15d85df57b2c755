"""Every party in its own process, built from the spec's bytes and its own inputs (issue 12.1).

The test process plays the network and the operator: it starts one process per party, publishes
the round spec (with the key material the key holder and the clients made *in their own
processes*), and moves encoded messages between the processes. It records every byte it hands to
each process, which proves what each one could hold: a client receives its own update and
protocol messages, never another client's update; the server never receives any update (except
in the insecure ``"plain"`` baseline, where that is the point). Between the processes only bytes
travel (``send_bytes``: a JSON header and our codec's messages, no pickle).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.protocols.base import KEY_HOLDER, SERVER
from secureagg.transport import codec
from secureagg.transport.round_spec import spec_from_bytes

SESSION = b"P" * 16
N = 4


# ------------------------------------------------------------------------------ the processes


def _send(conn: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    conn.send_bytes(json.dumps(header).encode() + b"\0" + payload)


def _recv(conn: Any) -> tuple[dict[str, Any], bytes]:
    data = conn.recv_bytes()
    head, _, payload = data.partition(b"\0")
    return json.loads(head), payload


def _pack(envelopes: list[Any]) -> tuple[dict[str, Any], bytes]:
    blobs = [codec.encode(e.message) for e in envelopes]
    return (
        {"out": [[e.sender, e.recipient, len(b)] for e, b in zip(envelopes, blobs, strict=True)]},
        b"".join(blobs),
    )


def _party_main(conn: Any, role: str, party_id: int) -> None:  # pragma: no cover - subprocess
    """One party: makes its own keys, builds itself from the spec bytes, answers commands."""
    from secureagg.aggregators import aggregator_for
    from secureagg.crypto.signing import SigningKey
    from secureagg.errors import SecureAggError

    secret: Any = None
    party: Any = None
    while True:
        header, payload = _recv(conn)
        cmd = header["cmd"]
        try:
            if cmd == "stop":
                _send(conn, {"ok": True})
                return
            if cmd == "keys":  # make this party's own key material; publish the public part
                if role == "key_holder":
                    spec_like = header["protocol"]
                    if spec_like == "ckks":
                        from secureagg.he.ckks import CkksSecretKey

                        secret = CkksSecretKey()
                    else:
                        from secureagg.he.paillier import PaillierSecretKey

                        secret = PaillierSecretKey.generate(2048)
                    _send(conn, {"ok": True}, secret.public_material())
                else:
                    secret = SigningKey.generate()
                    _send(conn, {"ok": True}, secret.public_bytes)
                continue
            if cmd == "build":
                spec_len = header["spec_len"]
                spec = spec_from_bytes(payload[:spec_len], session_id=SESSION)
                agg = aggregator_for(spec)
                if role == "server":
                    party = agg.server_from_spec(spec)
                elif role == "key_holder":
                    party = agg.helpers_from_spec(spec, {KEY_HOLDER: secret})[KEY_HOLDER]
                else:
                    flat = np.frombuffer(payload[spec_len:], dtype=np.float64)
                    update, start = [], 0
                    for shape in header["shapes"]:
                        size = int(np.prod(shape))
                        update.append(flat[start : start + size].reshape(shape))
                        start += size
                    party = agg.client_from_spec(spec, party_id, update, secret=secret)
                _send(conn, {"ok": True})
                continue
            if cmd == "start":
                head, blob = _pack(party.start())
            elif cmd == "receive":
                head, blob = _pack(party.receive(header["sender"], codec.decode(payload)))
            elif cmd == "end_stage":
                head, blob = _pack(party.end_stage())
            elif cmd == "state":
                head, blob = {"stage": party.stage, "finished": party.finished}, b""
            elif cmd == "result":
                outcome = party.result()
                head = {"survivors": list(outcome.survivor_ids),
                        "shapes": [list(a.shape) for a in outcome.aggregate]}
                blob = b"".join(np.asarray(a, dtype=np.float64).tobytes()
                                for a in outcome.aggregate)
            else:
                raise ValueError(f"unknown command {cmd}")
            _send(conn, {"ok": True, **head}, blob)
        except SecureAggError as exc:
            _send(conn, {"ok": False, "error": type(exc).__name__, "text": str(exc)})


class Remote:
    """The parent's handle on one party process; logs every byte sent to it."""

    def __init__(self, ctx: Any, role: str, party_id: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_party_main, args=(child, role, party_id), daemon=True)
        self.process.start()
        self.received: list[bytes] = []
        self.party_id = party_id

    def call(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        self.received.append(payload)
        _send(self.conn, header, payload)
        reply, blob = _recv(self.conn)
        if not reply.pop("ok"):
            raise RuntimeError(f"party {self.party_id}: {reply['error']}: {reply['text']}")
        return reply, blob

    def envelopes(self, header: dict[str, Any], payload: bytes = b"") -> list[tuple[int, bytes]]:
        reply, blob = self.call(header, payload)
        out, start = [], 0
        for _, recipient, size in reply["out"]:
            out.append((recipient, blob[start : start + size]))
            start += size
        return [(self.party_id, r, b) for r, b in out]  # type: ignore[misc]

    def stop(self) -> None:
        try:
            if self.process.is_alive():
                _send(self.conn, {"cmd": "stop"})
                self.conn.poll(10) and self.conn.recv_bytes()
        finally:
            self.process.join(10)
            if self.process.is_alive():  # exactly the process this test started, by pid
                self.process.kill()
                self.process.join(5)


def _run_apart(agg: Any, updates: list[list[np.ndarray]], dropped: int | None, drop_stage: str,
               *, malicious: bool, key_holder: bool) -> tuple[dict[str, Any], bytes,
                                                              dict[int, Remote]]:
    ctx = mp.get_context("spawn")
    parties: dict[int, Remote] = {}
    try:
        parties[SERVER] = Remote(ctx, "server", SERVER)
        for cid in range(N):
            parties[cid] = Remote(ctx, "client", cid)
        if key_holder:
            parties[KEY_HOLDER] = Remote(ctx, "key_holder", KEY_HOLDER)
        public: dict[int, bytes] = {}
        if key_holder:
            _, public[KEY_HOLDER] = parties[KEY_HOLDER].call({"cmd": "keys",
                                                              "protocol": agg.protocol})
        if malicious:
            for cid in range(N):
                _, public[cid] = parties[cid].call({"cmd": "keys"})
        shapes = [list(a.shape) for a in updates[0]]
        spec = agg.round_spec(shapes=shapes, weighted=False, session_id=SESSION, round_id=0,
                              public_keys=public)
        spec_bytes = codec.encode(spec)
        for pid, remote in parties.items():
            own = b""
            if 0 <= pid < N:
                own = b"".join(np.asarray(a, dtype=np.float64).tobytes() for a in updates[pid])
            remote.call({"cmd": "build", "spec_len": len(spec_bytes), "shapes": shapes},
                        spec_bytes + own)
        server = parties[SERVER]
        out = server.envelopes({"cmd": "start"})
        silent = False
        for _ in range(20):
            state, _ = server.call({"cmd": "state"})
            if state["finished"]:
                break
            silent = silent or state["stage"] == drop_stage
            pending = list(out)
            while pending:
                sender, recipient, data = pending.pop(0)
                if silent and dropped is not None and dropped in (sender, recipient):
                    continue
                pending.extend(parties[recipient].envelopes(
                    {"cmd": "receive", "sender": sender}, data
                ))
            out = server.envelopes({"cmd": "end_stage"})
        result, blob = server.call({"cmd": "result"})
        return result, blob, parties
    finally:
        for remote in parties.values():
            remote.stop()


def _contains(blobs: list[bytes], update: list[np.ndarray]) -> bool:
    needles = [np.asarray(a, dtype=np.float64).tobytes() for a in update]
    needles += [np.asarray(a, dtype=np.float32).tobytes() for a in update]
    return any(n in blob for blob in blobs for n in needles if len(n) >= 16)


CASES = {
    "secagg+": (lambda: sa.make_aggregator("secagg+", num_clients=N, clip=1.0), False, False,
                "masked"),
    "secagg-malicious": (
        lambda: sa.make_aggregator("secagg", num_clients=N, clip=1.0, threat="malicious",
                                   dropout_rate=0.25),
        True, False, "unmask",
    ),
    "ckks": (lambda: sa.make_aggregator("ckks", num_clients=N, clip=1.0), False, True, "upload"),
    "paillier": (lambda: sa.make_aggregator("paillier", num_clients=N, clip=1.0, key_bits=2048),
                 False, True, "upload"),
    "plain": (lambda: sa.make_aggregator("plain", num_clients=N, clip=1.0), False, False,
              "upload"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_party_in_its_own_process_holds_only_what_it_should(case: str) -> None:
    make, malicious, key_holder, stage = CASES[case]
    agg = make()
    rng = np.random.default_rng(5)
    updates = [[rng.uniform(-1, 1, size=(6,)), rng.uniform(-1, 1, size=(2, 3))]
               for _ in range(N)]
    dropped = 3
    result, blob, parties = _run_apart(agg, updates, dropped, stage, malicious=malicious,
                                       key_holder=key_holder)
    survivors = tuple(result["survivors"])
    expected_survivors = (0, 1, 2, 3) if stage == "unmask" else (0, 1, 2)
    assert survivors == expected_survivors
    flat = np.frombuffer(blob, dtype=np.float64)
    reference = np.concatenate([
        np.concatenate([np.clip(a, -1, 1).reshape(-1) for a in updates[u]]) for u in survivors
    ]).reshape(len(survivors), -1).sum(axis=0)
    bound = agg.error_bound(survivors=len(survivors)) if hasattr(agg, "error_bound") else 1e-9
    np.testing.assert_allclose(flat, reference, atol=max(bound, 1e-9))
    # What each process was handed: its own update at most, never another's.
    for cid in range(N):
        others = [u for u in range(N) if u != cid]
        assert _contains(parties[cid].received, updates[cid])  # it did get its own
        assert not any(_contains(parties[cid].received, updates[u]) for u in others)
    server_saw_updates = any(_contains(parties[SERVER].received, updates[u]) for u in range(N))
    assert server_saw_updates is (case == "plain")  # only the insecure baseline shows them
    if key_holder:
        assert not any(_contains(parties[KEY_HOLDER].received, updates[u]) for u in range(N))
