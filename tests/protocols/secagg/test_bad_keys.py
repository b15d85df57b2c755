"""A client advertising a bad public key is dropped by the server at advertise; the round goes on.

Low-order X25519 points (and non-canonical encodings of them) force a predictable shared secret;
an honest client must never agree with one. The server must refuse such an advertisement as that
one sender's fault, so that the round continues with the others - never relay it to honest clients
(who would all abort, killing the round). The same for wrong lengths and keys already advertised
by another client, in both threat models.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import secureagg as sa
from secureagg.protocols.secagg import messages as m
from tests.protocols.adversary import rewriting_client
from tests.protocols.secagg.driver import plaintext_sum
from tests.vectors import h, load_vectors

P = 2**255 - 19
LOW_ORDER = [
    v for v in load_vectors("crypto", "x25519_rfc7748") if v["kind"] == "low_order"
]
BAD = 2  # the misbehaving client


def _agg(threat: str, n: int = 5) -> sa.aggregators.registry.RoundFactory:
    return sa.make_aggregator(
        "secagg", num_clients=n, clip=1.0, threat=threat, dropout_rate=0.0, corrupt_rate=0.0
    )


def _updates(n: int, d: int = 6) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(3)
    return [[rng.uniform(-1, 1, size=d)] for _ in range(n)]


def _advertise(replace_cipher: bytes | None = None, replace_mask: bytes | None = None):
    """A rewrite that swaps the client's advertised keys and re-signs them (malicious mode)."""

    def rewrite(client, msg):
        if not isinstance(msg, m.KeyAdvertisement):
            return msg
        c_pk = msg.cipher_public_key if replace_cipher is None else replace_cipher
        s_pk = msg.mask_public_key if replace_mask is None else replace_mask
        signature = msg.signature
        if signature:  # a malicious client signs whatever it advertises with its own identity
            signature = client._identity.sign(
                m.advertisement_signed_bytes(
                    session_id=client.ctx.session_id,
                    round_id=client.ctx.round_id,
                    client_id=client.party_id,
                    cipher_public_key=c_pk,
                    mask_public_key=s_pk,
                    model_digest=client._model_digest,
                )
            )
        return dataclasses.replace(
            msg, cipher_public_key=c_pk, mask_public_key=s_pk, signature=signature
        )

    return rewrite


def _assert_only_bad_client_dropped(res, ups, agg, *, bad=BAD, n=5):
    assert res.survivors == tuple(u for u in range(n) if u != bad)
    advertise_rejects = [r for r in res.metrics["rejected"] if r["stage"] == "advertise"]
    assert [r["sender"] for r in advertise_rejects] == [bad]
    assert res.metrics["client_aborts"] == []  # no honest client saw the bad key
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivors)[0], atol=agg.error_bound()
    )


@pytest.mark.parametrize("threat", ["curious", "malicious"])
@pytest.mark.parametrize("which", ["cipher", "mask"])
@pytest.mark.parametrize("vector", LOW_ORDER, ids=lambda v: v["source"])
def test_server_drops_client_with_low_order_key_and_round_completes(threat, which, vector):
    agg, ups = _agg(threat), _updates(5)
    bad_key = h(vector["u"])
    rewrite = _advertise(**{f"replace_{which}": bad_key})
    res = sa.simulate(rewriting_client(agg, BAD, rewrite), ups, seed=7)
    _assert_only_bad_client_dropped(res, ups, agg)
    (reject,) = res.metrics["rejected"]
    assert "X25519" in reject["error"]


@pytest.mark.parametrize("threat", ["curious", "malicious"])
def test_server_drops_client_with_non_canonical_key_encoding(threat):
    """u >= p or bit 255 set: another encoding of a point, which would dodge duplicate checks."""
    agg, ups = _agg(threat), _updates(5)

    def flip_top_bit(client, msg):
        if isinstance(msg, m.KeyAdvertisement):
            raw = bytearray(msg.mask_public_key)
            raw[31] |= 0x80
            return _advertise(replace_mask=bytes(raw))(client, msg)
        return msg

    res = sa.simulate(rewriting_client(agg, BAD, flip_top_bit), ups, seed=8)
    _assert_only_bad_client_dropped(res, ups, agg)


@pytest.mark.parametrize("threat", ["curious", "malicious"])
@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_server_drops_client_with_wrong_length_key_and_round_completes(threat, length):
    agg, ups = _agg(threat), _updates(5)
    res = sa.simulate(
        rewriting_client(agg, BAD, _advertise(replace_cipher=b"\x09" * length)), ups, seed=9
    )
    _assert_only_bad_client_dropped(res, ups, agg)


@pytest.mark.parametrize("threat", ["curious", "malicious"])
def test_server_drops_client_copying_another_clients_key_and_round_completes(threat):
    """Client 2 advertises client 1's mask key (its own signature over it in malicious mode)."""
    agg, ups = _agg(threat), _updates(5)
    holder: dict[str, object] = {}

    def edit(setup):
        holder["victim"] = setup.clients[1]

    def copy_key(client, msg):
        if isinstance(msg, m.KeyAdvertisement):
            victim = holder["victim"].inner if hasattr(holder["victim"], "inner") else holder[
                "victim"
            ]
            return _advertise(replace_mask=victim._mask_keys.public_bytes)(client, msg)
        return msg

    tampered = rewriting_client(agg, BAD, copy_key)
    inner_edit = tampered.edit

    def both(setup):
        inner_edit(setup)
        edit(setup)

    tampered.edit = both
    res = sa.simulate(tampered, ups, seed=10)  # delivery in id order: client 1 advertises first
    _assert_only_bad_client_dropped(res, ups, agg)
    assert "already advertised" in res.metrics["rejected"][0]["error"]


def test_the_server_check_accepts_every_honest_key():
    """The check is not trivially true: a full honest round loses nobody at advertise."""
    agg, ups = _agg("curious", n=8), _updates(8)
    res = sa.simulate(agg, ups, seed=11)
    assert res.survivors == tuple(range(8)) and res.metrics["rejected"] == []
