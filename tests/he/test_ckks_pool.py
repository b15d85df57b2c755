"""The CKKS encryption pool: precomputed encryptions of zero, each used once, bound to the key."""

from __future__ import annotations

import numpy as np
import pytest

from secureagg.errors import ConfigurationError
from secureagg.he.ckks import (
    CkksParameters,
    CkksPublicContext,
    CkksSecretKey,
    CkksZeroPool,
)
from tests.he.keys import ckks_key

SLOTS = 4096


@pytest.fixture(scope="module")
def key() -> CkksSecretKey:
    return ckks_key()


@pytest.fixture(scope="module")
def public(key) -> CkksPublicContext:
    return CkksPublicContext(key.public_material(), expected=key.params)


def _sum_and_decrypt(key, public, uploads, d, scale=None):
    acc = public.accumulator(length=d, scale=scale)
    for cts in uploads:
        acc.add(cts)
    return key.decryptor(scale=scale).decrypt(acc.export(), d)


def test_fill_take_and_counters(public) -> None:
    pool = CkksZeroPool(public)
    pool.fill(2)
    pool.fill(1, size=10)
    assert len(pool) == 3 and pool.available(SLOTS) == 2 and pool.available(10) == 1
    assert pool.computed == 3 and pool.misses == 0
    first, second = pool.take(SLOTS), pool.take(SLOTS)
    assert first is not None and second is not None and first is not second
    assert pool.take(SLOTS) is None and pool.misses == 1  # empty: a miss, nothing reused
    assert pool.take(10) is not None and len(pool) == 0


def test_fill_for_tops_up_exactly_one_vector(public) -> None:
    pool = CkksZeroPool(public)
    d = 2 * SLOTS + 5
    assert pool.fill_for(d) == 3
    assert (pool.available(SLOTS), pool.available(5)) == (2, 1)
    assert pool.fill_for(d) == 0  # already enough: nothing recomputed
    assert pool.fill_for(d, vectors=2) == 3 and len(pool) == 6


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda p: p.fill(-1), "non-negative"),
        (lambda p: p.fill(1, size=0), "1..4096"),
        (lambda p: p.fill(1, size=SLOTS + 1), "1..4096"),
        (lambda p: p.fill_for(-3), "non-negative"),
    ],
)
def test_bad_pool_arguments_are_refused(public, call, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        call(CkksZeroPool(public))


def test_pooled_encryption_decrypts_like_a_fresh_one(key, public) -> None:
    d = SLOTS + 100  # a full chunk and a partial one
    x = np.random.default_rng(1).uniform(-1, 1, d)
    pooled = public.encryptor()
    assert pooled.prefill(d) == 2 and pooled.pool_size == 2
    cts_pooled = list(pooled.encrypt(x))
    assert pooled.pool_size == 0 and pooled.pool.misses == 0  # both chunks came from the pool
    cts_fresh = list(public.encryptor().encrypt(x))
    assert [len(c) for c in cts_pooled] == [len(c) for c in cts_fresh]  # same wire size
    out = _sum_and_decrypt(key, public, [cts_pooled, cts_fresh], d)
    bound = 2 * 10 * key.params.fresh_noise_std() / key.params.scale
    assert np.max(np.abs(out - 2 * x)) < bound


def test_a_pooled_ciphertext_is_never_reused(key, public) -> None:
    """Two encryptions of the same vector: different bytes, and different decryption noise.

    Had both used one encryption of zero, they would be the same ciphertext (Enc(0) + Encode(x)
    twice): identical bytes, and decryptions equal bit for bit.
    """
    x = np.linspace(-1, 1, SLOTS)
    enc = public.encryptor()
    enc.pool.fill(2)
    a = list(enc.encrypt(x))
    assert enc.pool_size == 1
    b = list(enc.encrypt(x))
    assert enc.pool_size == 0 and enc.pool.misses == 0 and enc.pool.computed == 2
    assert a != b
    c = list(enc.encrypt(x))  # pool empty: fresh encryption, still different
    assert enc.pool.misses == 1 and c not in (a, b)
    dec = key.decryptor()
    da, db = dec.decrypt(tuple(a), SLOTS), dec.decrypt(tuple(b), SLOTS)
    assert np.count_nonzero(da != db) > SLOTS // 2  # independent noise in almost every slot
    bound = 10 * key.params.fresh_noise_std() / key.params.scale
    assert np.max(np.abs(da - x)) < bound and np.max(np.abs(db - x)) < bound


def test_pool_at_the_fixed_point_scale(key, public) -> None:
    scale = 2.0**18
    ints = np.arange(-50, 50, dtype=np.float64)
    enc = public.encryptor(scale=scale)
    enc.prefill(ints.size)
    cts = list(enc.encrypt(ints))
    assert enc.pool.misses == 0
    out = _sum_and_decrypt(key, public, [cts, cts], ints.size, scale=scale)
    assert np.array_equal(np.rint(out), 2 * ints)


def test_pool_is_bound_to_the_context_and_scale(key, public) -> None:
    other = CkksPublicContext(CkksSecretKey().public_material())
    pool = CkksZeroPool(public)
    pool.fill(1)
    with pytest.raises(ConfigurationError, match="another context"):
        other.encryptor(pool=pool)
    with pytest.raises(ConfigurationError, match="another context or scale"):
        public.encryptor(scale=2.0**30, pool=pool)
    bound = public.encryptor(pool=pool)
    assert bound.pool is pool  # same key and scale: accepted
    same_key = CkksPublicContext(key.public_material())
    assert pool.rebind(same_key) == 0 and len(pool) == 1  # same key: entries stay valid
    assert pool.rebind(other) == 1 and len(pool) == 0  # a new context drops every entry
    with pytest.raises(ConfigurationError, match="rebound"):
        list(bound.encrypt(np.ones(3)))  # the old encryptor no longer uses it
    assert pool.key_fingerprint == other.key_fingerprint
    pool.fill(1)
    assert pool.rebind(other, scale=2.0**30) == 1  # a new scale drops them too
    assert pool.scale == 2.0**30


def test_encryptions_after_a_context_change_use_the_new_key(key) -> None:
    new_key = CkksSecretKey(CkksParameters())
    old = CkksPublicContext(key.public_material())
    new = CkksPublicContext(new_key.public_material())
    pool = CkksZeroPool(old)
    pool.fill(3)
    pool.rebind(new)
    enc = new.encryptor(pool=pool)
    enc.prefill(10)
    cts = list(enc.encrypt(np.ones(10)))
    out = new_key.decryptor().decrypt(tuple(cts), 10)  # decrypts under the new key only
    assert np.allclose(out, 1.0, atol=1e-6)


def test_accumulator_reads_zero_copy_views(key, public) -> None:
    x = np.full(10, 0.5)
    cts = list(public.encryptor().encrypt(x))
    wire = b"junk" + cts[0] + b"tail"
    view = memoryview(wire)[4 : 4 + len(cts[0])]
    out = _sum_and_decrypt(key, public, [[view], cts], 10)
    assert np.allclose(out, 1.0, atol=1e-6)
