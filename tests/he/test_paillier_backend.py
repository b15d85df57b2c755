"""The phe/gmpy2 adapter: key sizes, blinding pool, packing proof, ciphertext validation."""

from __future__ import annotations

import inspect

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secureagg as sa
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, HeadroomError, InvalidKeyError, MalformedMessage
from secureagg.he.paillier import (
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    BlindingPool,
    PaillierAccumulator,
    PaillierEncryptor,
    PaillierPublicKey,
    PaillierSecretKey,
)
from secureagg.he.paillier_packing import SlotPacking
from tests.he.keys import paillier_key

PROPS = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def key() -> PaillierSecretKey:
    return paillier_key()


@pytest.fixture(scope="module")
def packing(key) -> SlotPacking:
    return SlotPacking.for_values(key_bits=key.key_bits, max_value=65534, summands=5)


# ------------------------------------------------------------------------------ keys


def test_default_key_size_is_3072_and_2048_is_the_floor() -> None:
    assert DEFAULT_KEY_BITS == 3072 and MIN_KEY_BITS == 2048
    assert inspect.signature(PaillierSecretKey.generate).parameters["key_bits"].default == 3072
    agg = sa.make_aggregator("paillier", num_clients=3, clip=1.0)
    assert agg.parameters()["key_bits"] == 3072


@pytest.mark.parametrize("bits", [512, 1024, 2047])
def test_keys_below_2048_bits_are_refused(bits) -> None:
    with pytest.raises(ConfigurationError, match="below 2048 bits are refused"):
        PaillierSecretKey.generate(bits)
    with pytest.raises(ConfigurationError, match="below 2048 bits are refused"):
        sa.make_aggregator("paillier", num_clients=3, clip=1.0, key_bits=bits)


def test_small_public_modulus_is_refused() -> None:
    p, q = gmpy2.next_prime(2**511), gmpy2.next_prime(2**512)
    with pytest.raises(InvalidKeyError, match="below 2048 bits are refused"):
        PaillierPublicKey(int(p * q))


@pytest.mark.parametrize(
    "make",
    [
        lambda n: n + 1,  # even
        lambda n: int(gmpy2.next_prime(n)),  # prime
        lambda n: int(gmpy2.isqrt(n)) ** 2,  # perfect square
        lambda n: 3 * (n // 3 + 1),  # small factor
    ],
    ids=["even", "prime", "square", "small-factor"],
)
def test_malformed_public_modulus_is_refused(key, make) -> None:
    with pytest.raises(InvalidKeyError, match="not a valid Paillier modulus"):
        PaillierPublicKey(make(key.public_key.n))


def test_secret_key_validation(key) -> None:
    with pytest.raises(InvalidKeyError):
        PaillierSecretKey(7, 7)
    with pytest.raises(InvalidKeyError, match="primes"):
        PaillierSecretKey(key._phe_private.p + 2, key._phe_private.q)


def test_seeded_keys_are_reproducible_and_exact_size() -> None:
    a = PaillierSecretKey.generate(2048, rng=prg.Keystream(b"\x05" * 32, label=labels.TEST_VECTOR))
    b = PaillierSecretKey.generate(2048, rng=prg.Keystream(b"\x05" * 32, label=labels.TEST_VECTOR))
    assert a.public_key.n == b.public_key.n and a.key_bits == 2048


def test_crt_decryption_matches_phe(key) -> None:
    phe_public, phe_private = key.phe_keypair()
    for m in (0, 1, 12345, key.public_key.n - 1):
        c = phe_public.raw_encrypt(m)
        assert key.decrypt_raw(gmpy2.mpz(c)) == phe_private.raw_decrypt(c) == m


# ------------------------------------------------------------------------------ blinding


def test_blinding_pool_hands_out_each_factor_once(key) -> None:
    pool = BlindingPool(key.public_key)
    pool.fill(4)
    taken = [pool.take() for _ in range(6)]
    assert len(pool) == 0 and pool.misses == 2 and pool.computed == 6
    assert len({int(t) for t in taken}) == 6  # no factor reused


def test_blinding_factors_are_nth_residues(key) -> None:
    # r^n mod n^2 decrypts to 0: it is an encryption of zero
    pool = BlindingPool(key.public_key)
    assert key.decrypt_raw(pool.take()) == 0


def test_seeded_pool_is_reproducible(key) -> None:
    def draw():
        pool = BlindingPool(
            key.public_key, rng=prg.Keystream(bytes(32), label=labels.TEST_VECTOR)
        )
        return [int(pool.take()) for _ in range(2)]

    assert draw() == draw()


# ------------------------------------------------------------------------------ packing


def test_packing_density_targets() -> None:
    # 16-bit quantisation (values 0..2*32767) with headroom for 100 summands
    for bits, slots in ((3072, 133), (2048, 89)):
        p = SlotPacking.for_values(key_bits=bits, max_value=2 * 32767, summands=100)
        assert p.slot_bits == 23 and p.slots == slots >= 50
        assert (bits // 4) / (4 * p.slots) <= 3.0  # upload vs float32


def test_packing_overflow_is_refused_at_construction() -> None:
    with pytest.raises(HeadroomError, match="largest safe number of summands is 16") as info:
        SlotPacking(key_bits=2048, slot_bits=20, max_value=65534, summands=100)
    assert info.value.max_safe_summands == 16
    with pytest.raises(HeadroomError, match="64-bit limit"):
        SlotPacking.for_values(key_bits=2048, max_value=2**40, summands=2**30)


@PROPS
@given(
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=2**20),
    st.integers(min_value=1, max_value=60),
    st.data(),
)
def test_packed_sums_never_carry(summands, max_value, count, data) -> None:
    p = SlotPacking.for_values(key_bits=2048, max_value=max_value, summands=summands)
    k = min(count, p.slots)
    rows = [
        np.array(data.draw(st.lists(st.integers(0, max_value), min_size=k, max_size=k)),
                 dtype=np.uint64)
        for _ in range(summands)
    ]
    total = sum(p.pack(r) for r in rows)
    assert total < 2 ** (2048 - 1)
    assert p.unpack(total, k).tolist() == sum(r.astype(object) for r in rows).tolist()


def test_worst_case_sum_fills_the_slots_exactly(packing) -> None:
    top = np.full(packing.slots, packing.max_value, dtype=np.uint64)
    total = packing.pack(top) * packing.summands
    assert packing.unpack(total, packing.slots).tolist() == [
        packing.max_value * packing.summands
    ] * packing.slots


def test_plaintext_beyond_the_slots_is_refused(packing) -> None:
    with pytest.raises(MalformedMessage, match="exceeds its packed slots"):
        packing.unpack(1 << (3 * packing.slot_bits), 3)


# ------------------------------------------------------------------------------ ciphertexts


def _roundtrip_setup(key, packing):
    pool = BlindingPool(key.public_key)
    enc = PaillierEncryptor(key.public_key, packing, pool=pool)
    values = np.arange(150, dtype=np.uint64) * 400
    return enc, values


def test_prefill_tops_up_one_factor_per_ciphertext(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    assert enc.pool_size == 0
    assert enc.prefill(values.size) == 2 and enc.pool_size == 2
    assert enc.prefill(values.size) == 0  # already enough
    first = list(enc.encrypt(values))
    assert enc.pool_size == 0 and enc.pool.misses == 0
    second = list(enc.encrypt(values))
    assert enc.pool.misses == 2 and first != second  # fresh factors, never a reused one


def test_ciphertexts_are_read_from_zero_copy_views(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    cts = list(enc.encrypt(values))
    wire = b"".join(cts)
    views = [memoryview(wire)[i * len(cts[0]) : (i + 1) * len(cts[0])] for i in range(2)]
    acc = PaillierAccumulator(key.public_key, count=2, pool=BlindingPool(key.public_key))
    acc.add(views)
    out = key.decryptor(packing).decrypt(acc.export(), 150)
    assert np.array_equal(out, values)
    with pytest.raises(MalformedMessage, match="exactly"):
        key.public_key.from_wire(views[0][:-1])


def test_encrypt_add_rerandomise_decrypt(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    cts = list(enc.encrypt(values))
    assert len(cts) == 2 and all(len(c) == 512 for c in cts)
    acc = PaillierAccumulator(key.public_key, count=2, pool=BlindingPool(key.public_key))
    acc.add(cts)
    acc.add(list(enc.encrypt(values)))
    product = [key.public_key.multiply(*(key.public_key.from_wire(c) for c in pair))
               for pair in zip(cts, cts, strict=True)]
    exported = acc.export()
    assert [key.public_key.from_wire(e) for e in exported] != product  # re-randomised
    out = key.decryptor(packing).decrypt(exported, 150)
    assert out.tolist() == (2 * values).tolist()
    assert acc.held_ciphertexts == 2


def test_accumulator_prefill_pools_one_factor_per_outgoing_ciphertext(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    pool = BlindingPool(key.public_key)
    acc = PaillierAccumulator(key.public_key, count=2, pool=pool)
    assert acc.prefill() == 2 and acc.prefill() == 0 and len(pool) == 2
    acc.add(list(enc.encrypt(values)))
    acc.add(list(enc.encrypt(values)))
    out = key.decryptor(packing).decrypt(acc.export(), 150)
    assert out.tolist() == (2 * values).tolist()
    assert len(pool) == 0 and pool.misses == 0 and pool.computed == 2
    acc.export()  # a second export takes fresh factors, computed on demand: none is reused
    assert pool.misses == 2 and pool.computed == 4


def test_two_encryptions_of_the_same_values_differ(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    assert list(enc.encrypt(values)) != list(enc.encrypt(values))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda pk: 0, "out of range"),
        (lambda pk: pk.nsquare, "out of range"),
        (lambda pk: pk.nsquare + 5, "out of range"),
        (lambda pk: 1 << (8 * pk.ciphertext_bytes), "exactly 512"),
        (lambda pk: pk.n, "not coprime"),
        (lambda pk: 2 * pk.n, "not coprime"),
    ],
)
def test_out_of_range_ciphertexts_are_refused(key, make, fragment) -> None:
    pk = key.public_key
    value = make(pk)
    width = max(pk.ciphertext_bytes, (value.bit_length() + 7) // 8)
    data = value.to_bytes(width, "big")
    with pytest.raises(MalformedMessage, match=fragment):
        pk.from_wire(data)


def test_wrong_width_is_refused(key) -> None:
    pk = key.public_key
    with pytest.raises(MalformedMessage, match="exactly 512"):
        pk.from_wire(b"\x01" * 511)
    with pytest.raises(MalformedMessage, match="expected bytes"):
        pk.from_wire("00" * 512)


def test_failed_contribution_leaves_the_products_untouched(key, packing) -> None:
    enc, values = _roundtrip_setup(key, packing)
    acc = PaillierAccumulator(key.public_key, count=2, pool=BlindingPool(key.public_key))
    acc.add(list(enc.encrypt(values)))
    good = list(enc.encrypt(values))
    with pytest.raises(MalformedMessage, match="ciphertext 1"):
        acc.add([good[0], bytes(512)])
    assert acc.contributions == 1
    assert key.decryptor(packing).decrypt(acc.export(), 150).tolist() == values.tolist()


def test_wrong_public_key_is_detected(key, packing) -> None:
    other = paillier_key(2048, b"other")
    assert other.key_fingerprint != key.key_fingerprint
    with pytest.raises(ConfigurationError, match="another key"):
        PaillierEncryptor(key.public_key, packing, pool=BlindingPool(other.public_key))
    # a ciphertext under another key is out of range or decrypts to slots that overflow
    enc = PaillierEncryptor(other.public_key, packing, pool=BlindingPool(other.public_key))
    foreign = next(enc.encrypt(np.ones(10, dtype=np.uint64)))

    def open_foreign() -> None:
        packing.unpack(key.decrypt_raw(key.public_key.from_wire(foreign)), 10)

    with pytest.raises(MalformedMessage):
        open_foreign()


def test_encryptor_refuses_values_beyond_the_packing_bound(key, packing) -> None:
    enc, _ = _roundtrip_setup(key, packing)
    with pytest.raises(ConfigurationError, match="max_value"):
        list(enc.encrypt(np.array([packing.max_value + 1], dtype=np.uint64)))
