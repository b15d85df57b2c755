"""Packed-Paillier rounds end to end, and every HE bad input that applies to Paillier."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secureagg as sa
from secureagg.errors import (
    ConfigurationError,
    HeadroomError,
    InsufficientSurvivors,
    MalformedMessage,
    ProtocolError,
)
from secureagg.he.paillier import BlindingPool, PaillierEncryptor
from secureagg.protocols.base import KEY_HOLDER, SERVER
from secureagg.protocols.paillier import PaillierAggregate, PaillierUpload
from secureagg.transport import codec
from tests.he.driver import drive, make_setup
from tests.he.keys import paillier_key

KINDS = {"paillier/request", "paillier/upload", "paillier/aggregate", "paillier/release"}


def _agg(n=4, **kw):
    kw.setdefault("clip", 1.0)
    kw.setdefault("key_bits", 2048)
    kw.setdefault("key", paillier_key())
    return sa.make_aggregator("paillier", num_clients=n, **kw)


def _updates(n, d=200, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-scale, scale, size=(d // 2, 2))] for _ in range(n)]


def _rejected(run, recipient, fragment):
    return [e for _, _, r, e in run.rejections if r == recipient and fragment in str(e)]


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
def test_sum_within_bound_with_dropouts() -> None:
    ups = _updates(5, scale=1.2)
    agg = _agg(n=5)
    res = sa.simulate(agg, ups, dropouts={2: "upload"}, seed=1)
    assert res.survivors == (0, 1, 3, 4)
    ref = sum(np.clip(ups[i][0], -1, 1) for i in res.survivors)
    err = float(np.max(np.abs(res.aggregate[0] - ref)))
    assert 0 < err <= agg.error_bound(survivors=4)
    assert res.total_weight == 4.0 and res.aggregate[0].shape == (100, 2)
    assert res.metrics["clipped"]["total"] > 0
    assert res.details["flooding_noise_std"] == 0.0
    assert {e.kind for e in res.transcript} == {"paillier/upload", "paillier/release"}


def test_weighted_sum_is_exact_on_the_weight() -> None:
    ups = _updates(3)
    agg = _agg(n=3, max_weight=5)
    res = sa.simulate(agg, ups, weights=[5, 1, 3], seed=2)
    ref = sum(w * np.clip(u[0], -1, 1) for w, u in zip([5, 1, 3], ups, strict=True))
    assert float(np.max(np.abs(res.aggregate[0] - ref))) <= agg.error_bound() * 5
    assert res.total_weight == 9.0


def test_non_integer_weight_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="integer in"):
        sa.simulate(_agg(n=3, max_weight=5), _updates(3), weights=[1.5, 1, 1])


def test_clip_is_required_and_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="clip is required"):
        sa.make_aggregator("paillier", num_clients=3)
    with pytest.raises(ConfigurationError, match="quant_bits"):
        _agg(quant_bits=12)
    with pytest.raises(ConfigurationError, match="2048 bits"):
        _agg(key_bits=3072)  # the 2048-bit test key does not match


def test_packing_overflow_is_an_error_at_construction() -> None:
    with pytest.raises(HeadroomError, match="64-bit limit"):
        _agg(n=2**33, quant_bits=32, max_weight=1024, key=None)


def test_packing_meets_the_density_target_at_n100() -> None:
    p = sa.make_aggregator("paillier", num_clients=100, clip=1.0).parameters()
    assert p["values_per_ciphertext"] == 133 and p["upload_vs_float32"] <= 3.0


def test_the_server_streams_and_re_randomises() -> None:
    setup = make_setup(_agg(), _updates(4))
    counts = []
    receive = setup.server.receive

    def counting(sender, message):
        if isinstance(message, PaillierUpload):
            counts.append(setup.server.held_ciphertexts)
        return receive(sender, message)

    setup.server.receive = counting  # type: ignore[method-assign]
    run = drive(setup)
    assert counts == [0, 2, 2, 2]  # held before each upload: one running product per position
    uploads = [m for _, _, m in run.messages("paillier/upload")]
    [(_, _, aggregate)] = run.messages("paillier/aggregate")
    pk = paillier_key().public_key
    product = [
        int(np.prod([pk.from_wire(u.ciphertexts[j]) for u in uploads]) % pk.nsquare)
        for j in range(2)
    ]
    assert [int(pk.from_wire(c)) for c in aggregate.ciphertexts] != product


def test_precomputed_blinding_is_used() -> None:
    setup = make_setup(_agg(precompute_blinding=True), _updates(4))
    pools = [c.encryptor.pool for c in setup.clients.values()]
    assert [len(p) for p in pools] == [0] * 4  # nothing before the driver's offline phase
    assert [c.precompute() for c in setup.clients.values()] == [2] * 4
    assert [c.precompute() for c in setup.clients.values()] == [0] * 4  # already topped up
    assert [len(p) for p in pools] == [2] * 4
    drive(setup)
    assert all(p.misses == 0 and len(p) == 0 and p.computed == 2 for p in pools)


def test_without_precompute_blinding_is_computed_online() -> None:
    setup = make_setup(_agg(), _updates(4))
    assert [c.precompute() for c in setup.clients.values()] == [0] * 4  # off: a no-op
    drive(setup)
    pools = [c.encryptor.pool for c in setup.clients.values()]
    assert all(p.misses == 2 and p.computed == 2 for p in pools)


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
def test_the_server_precomputes_its_re_randomisation_offline_each_factor_once() -> None:
    updates = _updates(4)
    setup = make_setup(_agg(), updates)  # the default mode: no client precomputation
    pool = setup.server.accumulator.pool
    assert len(pool) == 0
    assert setup.server.precompute() == 2  # one factor per outgoing ciphertext, before uploads
    assert setup.server.precompute() == 0  # already topped up
    factors = [int(f) for f in pool._factors]
    run = drive(setup)
    assert pool.misses == 0 and len(pool) == 0 and pool.computed == 2  # used, none online
    uploads = [m for _, _, m in run.messages("paillier/upload")]
    [(_, _, aggregate)] = run.messages("paillier/aggregate")
    pk = paillier_key().public_key
    product = [
        int(np.prod([pk.from_wire(u.ciphertexts[j]) for u in uploads]) % pk.nsquare)
        for j in range(2)
    ]
    # each outgoing ciphertext is the product times one distinct precomputed factor
    rerandomised = [int(pk.from_wire(c)) for c in aggregate.ciphertexts]
    used = [pow(p, -1, pk.nsquare) * r % pk.nsquare for p, r in zip(product, rerandomised,
                                                                     strict=True)]
    assert sorted(used) == sorted(factors) and used[0] != used[1]
    reference = sum(np.clip(u[0], -1.0, 1.0) for u in updates)
    result = setup.server.result().aggregate[0]
    assert np.max(np.abs(result - reference)) <= _agg().error_bound(survivors=4)


def test_the_server_precomputes_nothing_once_the_uploads_are_over() -> None:
    setup = make_setup(_agg(), _updates(4))
    drive(setup)
    assert setup.server.precompute() == 0
    assert setup.server.accumulator is None


def test_too_few_contributions_release_nothing() -> None:
    setup = make_setup(_agg(n=4, min_clients=3), _updates(4))
    with pytest.raises(InsufficientSurvivors):
        drive(setup, dropouts={1, 2})
    assert not setup.helpers[KEY_HOLDER].released


def test_primes_never_cross_the_wire() -> None:
    key = paillier_key()
    run = drive(make_setup(_agg(key=key), _updates(4)))
    assert {codec.decode(d).KIND for *_, d in run.wire} == KINDS
    wire = b"".join(d for *_, d in run.wire)
    for prime in (key._phe_private.p, key._phe_private.q):
        raw = int(prime).to_bytes(128, "big")
        assert raw[:32] not in wire and raw[-32:] not in wire
        assert str(prime)[:40].encode() not in wire


def test_upload_under_a_wrong_public_key_is_refused() -> None:
    other = paillier_key(2048, b"other")
    setup = make_setup(_agg(), _updates(4))
    scheme = setup.clients[1].scheme
    rogue = PaillierEncryptor(other.public_key, scheme.packing,
                              pool=BlindingPool(other.public_key))
    setup.clients[1].encryptor = rogue
    run = drive(setup)
    assert _rejected(run, 1, "another key")
    assert setup.server.result().survivor_ids == (0, 2, 3)

    # the same ciphertexts stamped with the round's fingerprint: caught by range/gcd checks at the
    # server, or (if they happen to lie below n^2) by the count and range checks after decryption
    setup = make_setup(_agg(), _updates(4))
    fp = setup.server.key_fingerprint

    def hook(stage, env):
        if isinstance(env.message, PaillierUpload) and env.sender == 1:
            values = np.full(scheme.payload_length, 3, dtype=np.uint64)
            cts = tuple(rogue.encrypt(values))
            return dataclasses.replace(env, message=dataclasses.replace(
                env.message, ciphertexts=cts, key_fingerprint=fp))
        return env

    outcome: dict[str, object] = {}
    try:
        outcome["run"] = drive(setup, hook=hook)
    except ProtocolError as exc:
        outcome["refused"] = _rejected(exc.run, KEY_HOLDER, "refused")
    if "run" in outcome:
        assert _rejected(outcome["run"], SERVER, "out of range")
        assert setup.server.result().survivor_ids == (0, 2, 3)
    else:
        assert outcome["refused"]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda pk, c: (0).to_bytes(pk.ciphertext_bytes, "big"), "out of range"),
        (lambda pk, c: pk.nsquare.to_bytes(pk.ciphertext_bytes, "big"), "out of range"),
        (lambda pk, c: pk.n.to_bytes(pk.ciphertext_bytes, "big"), "not coprime"),
        (lambda pk, c: c[:-1], "exactly 512"),
        (lambda pk, c: c + b"\x00", "exactly 512"),
    ],
    ids=["zero", "n2", "multiple-of-n", "short", "long"],
)
def test_out_of_range_ciphertexts_are_refused(make, fragment) -> None:
    pk = paillier_key().public_key
    setup = make_setup(_agg(), _updates(4))

    def hook(stage, env):
        if isinstance(env.message, PaillierUpload) and env.sender == 3:
            cts = (make(pk, env.message.ciphertexts[0]), env.message.ciphertexts[1])
            return dataclasses.replace(env, message=dataclasses.replace(
                env.message, ciphertexts=cts))
        return env

    run = drive(setup, hook=hook)
    assert _rejected(run, SERVER, fragment)
    assert setup.server.result().survivor_ids == (0, 1, 2)


def test_a_single_upload_passed_off_as_the_aggregate_is_not_released() -> None:
    setup = make_setup(_agg(), _updates(4))
    captured = {}

    def hook(stage, env):
        if isinstance(env.message, PaillierUpload) and env.sender == 0:
            captured["cts"] = env.message.ciphertexts
        if isinstance(env.message, PaillierAggregate):
            msg = dataclasses.replace(env.message, ciphertexts=captured["cts"])
            return dataclasses.replace(env, message=msg)
        return env

    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=hook)
    assert _rejected(info.value.run, KEY_HOLDER, "count slot does not match the 4 contributors")


def test_slot_values_beyond_the_encoding_are_not_released() -> None:
    """A client that puts more than 2WQ in its slots makes the key holder refuse.

    (The honest clients send -clip everywhere, i.e. slot value 0, so that the rogue sum is visible
    without carries; a malicious client can always corrupt the aggregate - see the spec.)
    """
    d = 200
    setup = make_setup(_agg(), [[np.full(d, -1.0)] for _ in range(4)])
    scheme = setup.clients[2].scheme
    limit = (1 << scheme.packing.slot_bits) - 1
    assert 2 * 4 * scheme.offset < limit - 3
    rogue_values = np.full(scheme.payload_length, limit - 3, dtype=np.uint64)
    rogue_values[-1] = 1  # an honest-looking count slot
    wide = dataclasses.replace(scheme.packing, max_value=limit, summands=1)
    pk = paillier_key().public_key
    cts = tuple(PaillierEncryptor(pk, wide, pool=BlindingPool(pk)).encrypt(rogue_values))
    assert wide.slots == scheme.packing.slots

    def hook(stage, env):
        if isinstance(env.message, PaillierUpload) and env.sender == 2:
            return dataclasses.replace(env, message=dataclasses.replace(
                env.message, ciphertexts=cts))
        return env

    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=hook)
    assert _rejected(info.value.run, KEY_HOLDER, "outside [0, 2 S W Q]")


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
       cut=st.integers(0, 600), junk=st.binary(max_size=64))
def test_fuzzed_upload_bytes_never_crash(flips, cut, junk) -> None:
    setup = make_setup(_agg(n=2, key=paillier_key()), _updates(2, d=20))
    server = setup.server
    upload = setup.clients[0].receive(SERVER, server.start()[0].message)[0].message
    data = bytearray(codec.encode(upload))
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    wire = bytes(data[: max(1, len(data) - cut)]) + junk
    try:
        server.receive(0, codec.decode(wire))
    except (MalformedMessage, ProtocolError):
        assert server.held_ciphertexts == 0
    else:
        assert server.held_ciphertexts == 1


def test_seeded_runs_are_reproducible_to_the_byte() -> None:
    agg = _agg(n=3)
    a = sa.simulate(agg, _updates(3), seed=11)
    b = sa.simulate(agg, _updates(3), seed=11)
    assert [e.sha256 for e in a.transcript] == [e.sha256 for e in b.transcript]
    assert np.array_equal(a.aggregate[0], b.aggregate[0])
