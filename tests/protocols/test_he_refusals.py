"""The HE key holder's refusals say what was wrong, never a decrypted value.

Nothing decrypted may leave the key holder except the (flooded or exact) aggregate it releases.
When it refuses - a count slot that does not match, a value out of range - its error text travels
to the server and, through the simulator, to the caller in ``metrics["rejected"]``; that text must
be a fixed sentence with public numbers only (the contributor count the server named).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ProtocolError
from secureagg.he.ckks import CkksPublicContext, CkksSecretKey
from secureagg.he.paillier import BlindingPool, PaillierEncryptor
from secureagg.protocols.base import KEY_HOLDER
from tests.he.keys import ckks_key, paillier_key
from tests.protocols.adversary import Tampered

N = 4
#: The only sentences a key holder may refuse a release with (numbers: the contributors named).
FIXED_REFUSALS = [
    r"release refused: the decrypted count slot does not match the \d+ contributors the server "
    r"named",
    r"release refused: a decrypted value lies outside the clipped range",
    r"release refused: a decrypted slot sum lies outside \[0, 2 S W Q\]",
    r"release refused: the decrypted weight sum is outside \S+ S \* max_weight\]",
    r"aggregate refused: a decrypted plaintext exceeds its packed slots: not an honest aggregate",
]


class _ForgedEncryptor:
    """Encrypts under ``other`` but claims the round's key fingerprint (a lying client)."""

    def __init__(self, real, other) -> None:
        self.key_fingerprint = real.key_fingerprint
        self.values_per_ciphertext = real.values_per_ciphertext
        self._other = other

    def encrypt(self, values):
        return self._other.encrypt(values)

    def prefill(self, length: int) -> int:
        return 0


def _forging_client(agg, make_other):
    def edit(setup):
        client = setup.clients[1]
        client.encryptor = _ForgedEncryptor(client.encryptor, make_other(client))

    return Tampered(agg, edit)


def _ckks_other(client):
    return CkksPublicContext(CkksSecretKey().public_material()).encryptor(
        scale=client.scheme.scale
    )


def _paillier_other(client):
    other = paillier_key(2048, b"other").public_key
    return PaillierEncryptor(other, client.scheme.packing, pool=BlindingPool(other))


def _key_holder_texts(exc) -> list[str]:
    return [r["error"] for r in exc.metrics["rejected"] if r["recipient"] == KEY_HOLDER]


def _assert_fixed(texts: list[str]) -> None:
    assert texts
    for text in texts:
        body = re.sub(r"^(ProtocolError: )?\[stage release\] ", "", text)
        body = re.sub(r" \(nodes \[-?\d+\]\)$", "", body)
        assert any(re.fullmatch(p, body) for p in FIXED_REFUSALS), text
        numbers = {int(x) for x in re.findall(r"\d+", body)}
        assert numbers <= set(range(N + 1)), text  # only the public contributor count


@pytest.mark.parametrize(
    ("name", "kwargs", "make_other"),
    [
        # key checks off: with them, the foreign upload is blamed on its sender and the round
        # completes (tests/protocols/ckks/test_key_checks.py); here the key holder refuses
        ("ckks", {"key": ckks_key(), "attribution": False}, _ckks_other),
        ("paillier", {"key": paillier_key(), "key_bits": 2048}, _paillier_other),
    ],
    ids=["ckks", "paillier"],
)
def test_key_holder_refusal_carries_no_decrypted_value(name, kwargs, make_other):
    agg = sa.make_aggregator(name, num_clients=N, clip=1.0, **kwargs)
    ups = [[np.full(6, 0.25)] for _ in range(N)]
    for seed in range(8):  # Paillier: a foreign ciphertext >= n^2 is caught at the server
        try:
            sa.simulate(_forging_client(agg, make_other), ups, seed=seed)
        except ProtocolError as exc:
            texts = _key_holder_texts(exc)
            if texts:
                _assert_fixed(texts)
                return
    pytest.fail("no foreign upload reached the key holder")


def test_ckks_count_slot_refusal_of_a_single_upload_is_a_fixed_sentence():
    """A server passing one upload off as the aggregate: the count (1.000) is not echoed."""
    from secureagg.protocols.ckks import CkksUpload
    from secureagg.protocols.he_round import HEAggregate
    from tests.he.driver import drive, make_setup

    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key())
    setup = make_setup(agg, [[np.full(6, 0.25)] for _ in range(N)])
    captured = {}

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender == 0:
            captured["cts"] = env.message.ciphertexts
        if isinstance(env.message, HEAggregate):
            msg = dataclasses.replace(env.message, ciphertexts=captured["cts"])
            return dataclasses.replace(env, message=msg)
        return env

    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=hook)
    texts = [str(e) for _, _, r, e in info.value.run.rejections if r == KEY_HOLDER]
    assert texts and all("1.0" not in t and "says" not in t for t in texts)
    _assert_fixed([re.sub(r" \(nodes \[.*\]\)$", "", t) for t in texts])


# ------------------------------------------------ foreign ciphertexts: the one sender is dropped
#
# Every foreign ciphertext that *can* be told apart from an honest one - a client holding another
# context (it sees the request's key fingerprint is not its own), another parameter set (it does
# not parse under the round's context), a Paillier value outside Z*_{n^2} - is refused as that one
# sender's fault and the round completes with the others. A CKKS ciphertext under another key
# with the *same* parameters and a forged fingerprint parses like any other; the key holder's key
# checks name its sender (tests/protocols/ckks/test_key_checks.py; protocols/ckks/spec.md, "What
# a lying client can do"). Paillier has no key checks yet: such an upload stops the round there.


def _sum_of(ups, ids):
    return sum(np.asarray(ups[u][0], dtype=np.float64) for u in ids)


@pytest.mark.parametrize(
    "params",
    [None, {"coeff_mod_bit_sizes": (60, 40, 60)}, {"poly_modulus_degree": 16384}],
    ids=["other-key", "other-moduli", "other-ring"],
)
def test_ckks_client_holding_another_context_is_dropped_and_the_round_completes(params):
    from secureagg.he.ckks import CkksParameters

    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key())
    other = CkksSecretKey(CkksParameters(**params) if params else None)

    def edit(setup):
        setup.clients[1].encryptor = CkksPublicContext(other.public_material()).encryptor()

    ups = [[np.full(6, 0.1 * (u + 1))] for u in range(N)]
    res = sa.simulate(Tampered(agg, edit), ups, seed=1)
    assert res.survivors == (0, 2, 3)
    assert [a["client"] for a in res.metrics["client_aborts"]] == [1]
    np.testing.assert_allclose(res.aggregate[0], _sum_of(ups, (0, 2, 3)),
                               atol=agg.error_bound(survivors=3))


@pytest.mark.parametrize(
    "params",
    [{"coeff_mod_bit_sizes": (60, 40, 60)}, {"poly_modulus_degree": 16384}],
    ids=["other-moduli", "other-ring"],
)
def test_ckks_upload_under_other_parameters_claiming_the_round_key_is_refused_by_the_server(
    params,
):
    from secureagg.he.ckks import CkksParameters

    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key())
    other = CkksSecretKey(CkksParameters(**params))

    def make_other(client):
        return CkksPublicContext(other.public_material()).encryptor()

    ups = [[np.full(6, 0.1 * (u + 1))] for u in range(N)]
    res = sa.simulate(_forging_client(agg, make_other), ups, seed=2)
    assert res.survivors == (0, 2, 3)
    assert [(r["sender"], r["stage"]) for r in res.metrics["rejected"]] == [(1, "upload")]
    np.testing.assert_allclose(res.aggregate[0], _sum_of(ups, (0, 2, 3)),
                               atol=agg.error_bound(survivors=3))


@pytest.mark.parametrize("make", ["zero", "n2", "multiple-of-n", "above-n2"])
def test_paillier_out_of_range_upload_is_refused_by_the_server_and_the_round_completes(make):
    key = paillier_key()
    agg = sa.make_aggregator("paillier", num_clients=N, clip=1.0, key=key, key_bits=2048)
    pk = key.public_key
    bad = {
        "zero": 0,
        "n2": pk.nsquare,
        "multiple-of-n": pk.n * 7,
        "above-n2": (1 << (8 * pk.ciphertext_bytes)) - 1,
    }[make]

    class OutOfRange(_ForgedEncryptor):
        def encrypt(self, values):
            for ct in self._other.encrypt(values):
                yield bad.to_bytes(pk.ciphertext_bytes, "big") if ct else ct

    def edit(setup):
        client = setup.clients[1]
        client.encryptor = OutOfRange(client.encryptor, client.encryptor)

    ups = [[np.full(6, 0.1 * (u + 1))] for u in range(N)]
    res = sa.simulate(Tampered(agg, edit), ups, seed=3)
    assert res.survivors == (0, 2, 3)
    assert [(r["sender"], r["stage"]) for r in res.metrics["rejected"]] == [(1, "upload")]
    np.testing.assert_allclose(res.aggregate[0], _sum_of(ups, (0, 2, 3)),
                               atol=agg.error_bound(survivors=3))
