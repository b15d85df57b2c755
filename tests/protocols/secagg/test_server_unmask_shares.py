"""The server's handling of unmask shares: parsed and checked on arrival, reconstructed with the
consistency check of the extra shares (issue 15: shares are parsed once, as ints)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import shamir
from secureagg.errors import ProtocolError
from secureagg.protocols.base import SERVER, Envelope
from secureagg.transport import codec
from tests.protocols.secagg.driver import make_setup, plaintext_sum

N = 7


def _setup():
    agg = sa.make_aggregator("secagg", num_clients=N, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0)
    rng = np.random.default_rng(3)
    ups = [[rng.uniform(-1, 1, size=6)] for _ in range(N)]
    return agg, ups, make_setup(agg, ups)


def _round(mutate=None, *, dropped=frozenset({1})):
    """Run one curious round by hand; ``mutate(sender, UnmaskShares)`` rewrites the uplink of
    the unmask stage. Returns (server, updates, rejected senders, client errors)."""
    _agg, ups, setup = _setup()
    server, clients = setup.server, setup.clients
    inbox = server.start()
    rejected: dict[int, Exception] = {}
    while not server.finished:
        stage = server.stage
        for env in inbox:
            if env.recipient in dropped and stage in ("masked", "unmask"):
                continue
            msg = codec.decode(codec.encode(env.message))
            for reply in clients[env.recipient].receive(SERVER, msg):
                up = codec.decode(codec.encode(reply.message))
                if stage == "unmask" and mutate is not None:
                    up = mutate(reply.sender, up)
                try:
                    server.receive(reply.sender, up)
                except ProtocolError as exc:
                    rejected[reply.sender] = exc
        inbox = [e for e in server.end_stage() if isinstance(e, Envelope)]
    return server, ups, rejected


def _tamper_value(data: bytes) -> bytes:
    share = shamir.Share.from_bytes(data)
    values = ((share.values[0] + 1) % shamir.PRIME,)
    return dataclasses.replace(share, values=values).to_bytes()


def test_honest_round_with_a_dropout_sums_the_survivors() -> None:
    server, ups, rejected = _round()
    assert not rejected
    out = server.result()
    assert out.survivor_ids == tuple(u for u in range(N) if u != 1)
    expected = plaintext_sum(ups, out.survivor_ids)
    assert np.allclose(out.aggregate[0], expected[0], atol=1e-3)


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda s: s[:-1], id="truncated"),
        pytest.param(lambda s: s + b"\x00", id="extended"),
        pytest.param(lambda s: b"\x02" + s[1:], id="version"),
        pytest.param(
            lambda s: s[:1] + (int.from_bytes(s[1:3], "big") + 1).to_bytes(2, "big") + s[3:],
            id="index-not-sender",
        ),
        pytest.param(
            lambda s: s[:3] + (int.from_bytes(s[3:5], "big") - 1).to_bytes(2, "big") + s[5:],
            id="threshold",
        ),
        pytest.param(lambda s: s[:5] + (33).to_bytes(4, "big") + s[9:], id="secret-length"),
        pytest.param(lambda s: s[:9] + (2**264 - 1).to_bytes(33, "big"), id="value-above-prime"),
    ],
)
@pytest.mark.parametrize("field", ["self_mask_shares", "mask_key_shares"])
def test_malformed_share_refuses_the_message_and_the_round_completes(rewrite, field) -> None:
    def mutate(sender, msg):
        shares = getattr(msg, field)
        if sender != 0 or not shares:
            return msg
        first = min(shares)
        return dataclasses.replace(msg, **{field: {**shares, first: rewrite(shares[first])}})

    server, ups, rejected = _round(mutate)
    assert set(rejected) == {0}
    assert "malformed share" in str(rejected[0])
    # Nothing of the refused message was kept; the others' shares still reach t.
    out = server.result()
    assert 0 in out.survivor_ids  # its masked input is in the sum, its unmask shares are not
    expected = plaintext_sum(ups, out.survivor_ids)
    assert np.allclose(out.aggregate[0], expected[0], atol=1e-3)


@pytest.mark.parametrize("field", ["self_mask_shares", "mask_key_shares"])
def test_a_well_formed_but_altered_share_aborts_the_round(field) -> None:
    def mutate(sender, msg):
        shares = getattr(msg, field)
        if sender != 0 or not shares:
            return msg
        first = min(shares)
        return dataclasses.replace(msg, **{field: {**shares, first: _tamper_value(shares[first])}})

    with pytest.raises(ProtocolError, match="inconsistent shares"):
        _round(mutate)


def test_shares_for_owners_outside_the_senders_view_are_refused() -> None:
    def mutate(sender, msg):
        if sender != 0:
            return msg
        # a mask-key share for a survivor: never to be revealed
        share = next(iter(msg.self_mask_shares.values()))
        return dataclasses.replace(msg, mask_key_shares={2: share})

    server, _, rejected = _round(mutate)
    assert set(rejected) == {0}
    assert "not dropped neighbours" in str(rejected[0])
    assert server.finished
