"""The TenSEAL adapter: parameters, context roles, ciphertext validation, streaming sums."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureagg.errors import ConfigurationError, InvalidKeyError, MalformedMessage
from secureagg.he.backend import HE_STANDARD_MAX_MODULUS_BITS, chunk_sizes
from secureagg.he.ckks import (
    FLARE_DEFAULT,
    CkksParameters,
    CkksPublicContext,
    CkksSecretKey,
)
from tests.he.keys import ckks_key

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def key() -> CkksSecretKey:
    return ckks_key()


@pytest.fixture(scope="module")
def public(key) -> CkksPublicContext:
    return CkksPublicContext(key.public_material(), expected=key.params)


# ------------------------------------------------------------------------------ parameters


def test_default_parameters_are_the_summation_context() -> None:
    p = CkksParameters()
    assert (p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.scale) == (8192, (60, 60, 60), 2**40)
    assert p.total_modulus_bits == 180 <= HE_STANDARD_MAX_MODULUS_BITS[8192] == 218
    assert p.slots == 4096 and p.data_modulus_bits == 120
    # two polynomials of 8192 64-bit words per data prime per 4096 float32 values: 16x
    assert p.ciphertext_bytes() / (4 * p.slots) == pytest.approx(16.0, abs=0.1)
    assert FLARE_DEFAULT.ciphertext_bytes() / (4 * p.slots) == pytest.approx(24.0, abs=0.1)


@pytest.mark.parametrize(
    ("n", "bits", "fragment"),
    [
        (4096, (60, 60), "HE-standard budget of 109"),
        (8192, (60, 60, 60, 60), "HE-standard budget of 218"),
        (16384, (60,) * 8, "HE-standard budget of 438"),
        (3000, (60, 60), "poly_modulus_degree must be one of"),
        (8192, (60,), "at least two moduli"),
        (8192, (61, 60), "17..60 bits"),
        (8192, (), "integers"),
    ],
)
def test_insecure_or_invalid_parameters_are_refused(n, bits, fragment) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        CkksParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=bits)


def test_parameters_at_the_budget_are_accepted() -> None:
    assert CkksParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(54, 55), scale=2.0**30)
    assert CkksParameters(poly_modulus_degree=16384, coeff_mod_bit_sizes=(60,) * 7 + (18,))


@pytest.mark.parametrize("scale", [1.0, 0.5, 0, -3.0, float("inf"), float("nan"), 2.0**119])
def test_bad_scale_is_refused(scale) -> None:
    with pytest.raises(ConfigurationError, match="scale"):
        CkksParameters(scale=scale)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        CkksParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 60, 60), scale=1.0)
    assert len(info.value.problems) == 2


# ------------------------------------------------------------------------------ context roles


def test_public_material_has_no_secret_key(key) -> None:
    ctx = ts.context_from(key.public_material())
    assert not ctx.is_private() and not ctx.has_secret_key() and ctx.has_public_key()


def test_context_with_secret_key_is_refused_at_the_server(key) -> None:
    private = key._private_context().serialize(save_secret_key=True)
    with pytest.raises(InvalidKeyError, match="secret key"):
        CkksPublicContext(private)


def test_symmetric_context_is_refused() -> None:
    sym = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    sym.global_scale = 2.0**40
    with pytest.raises(InvalidKeyError, match="symmetric"):
        CkksPublicContext(sym.serialize(save_secret_key=False))
    with pytest.raises(InvalidKeyError, match="secret key"):  # and with its key: refused anyway
        CkksPublicContext(sym.serialize(save_secret_key=True))


def test_bfv_context_is_refused() -> None:
    bfv = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=8192, plain_modulus=1032193)
    with pytest.raises(InvalidKeyError, match="not a CKKS context"):
        CkksPublicContext(bfv.serialize(save_secret_key=False))


@pytest.mark.parametrize("data", [b"", b"garbage", bytes(100)])
def test_unreadable_context_is_refused(data) -> None:
    with pytest.raises(InvalidKeyError):
        CkksPublicContext(data)


def test_truncated_context_is_refused(key) -> None:
    with pytest.raises(InvalidKeyError):
        CkksPublicContext(key.public_material()[:1000])


def test_mismatched_context_is_refused(key) -> None:
    with pytest.raises(InvalidKeyError, match="mismatched context"):
        CkksPublicContext(key.public_material(), expected=FLARE_DEFAULT)
    with pytest.raises(InvalidKeyError, match="mismatched context"):
        CkksPublicContext(key.public_material(), expected=CkksParameters(scale=2.0**30))


# ------------------------------------------------------------------------------ round trip


def _encrypt(public, values, scale=None):
    return list(public.encryptor(scale=scale).encrypt(np.asarray(values, dtype=np.float64)))


def test_chunking_and_round_trip(key, public) -> None:
    d = 2 * 4096 + 10
    x = np.random.default_rng(0).uniform(-1, 1, d)
    cts = _encrypt(public, x)
    assert len(cts) == 3 == len(chunk_sizes(d, 4096))
    acc = public.accumulator(length=d)
    for _ in range(3):
        acc.add(cts)
    assert acc.contributions == 3 and acc.held_ciphertexts == 3
    out = key.decryptor().decrypt(acc.export(), d)
    # The same ciphertext added three times: its noise triples (it is not independent noise).
    bound = 3 * 10 * key.params.fresh_noise_std() / key.params.scale
    assert np.max(np.abs(out - 3 * x)) < bound


def test_server_state_does_not_grow_with_contributions(public) -> None:
    d = 5000
    cts = _encrypt(public, np.ones(d))
    acc = public.accumulator(length=d)
    held = []
    for _ in range(5):
        acc.add(cts)
        held.append(acc.held_ciphertexts)
    assert held == [2] * 5


def test_failed_contribution_leaves_the_sum_untouched(key, public) -> None:
    d = 9000
    good = _encrypt(public, np.full(d, 0.25))
    acc = public.accumulator(length=d)
    acc.add(good)
    bad = [good[0], good[1][:-7], good[2]]  # valid first chunk, truncated second
    with pytest.raises(MalformedMessage, match="chunk 1"):
        acc.add(bad)
    assert acc.contributions == 1
    out = key.decryptor().decrypt(acc.export(), d)
    assert np.allclose(out, 0.25, atol=1e-6)  # the first chunk of `bad` was not added


def test_a_late_bad_chunk_rolls_the_sums_back_bit_for_bit(public) -> None:
    d = 9000
    first, second = _encrypt(public, np.full(d, 0.5)), _encrypt(public, np.full(d, -0.5))
    acc = public.accumulator(length=d)
    acc.add(first)
    before = acc.export()
    bad = [second[0], second[1], second[2][:-1]]  # two good chunks are added, then the third fails
    with pytest.raises(MalformedMessage, match="chunk 2"):
        acc.add(bad)
    assert acc.export() == before and acc.contributions == 1  # exact modular subtraction


def test_a_bad_first_contribution_leaves_nothing_behind(public) -> None:
    d = 9000
    good = _encrypt(public, np.full(d, 0.5))
    acc = public.accumulator(length=d)
    with pytest.raises(MalformedMessage, match="chunk 1"):
        acc.add([good[0], b"junk", good[2]])
    assert acc.held_ciphertexts == 0 and acc.contributions == 0
    acc.add(good)
    assert acc.held_ciphertexts == 3 and acc.contributions == 1


# ------------------------------------------------------------------------------ bad bytes


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: [b"", *c[1:]], "bytes, outside"),
        (lambda c: [c[0][:100], *c[1:]], "does not deserialize"),
        (lambda c: [c[0][:len(c[0]) // 2], *c[1:]], "does not deserialize"),
        (lambda c: [b"\x00" * len(c[0]), *c[1:]], "does not deserialize"),
        (lambda c: [c[0] * 3, *c[1:]], "outside"),
        (lambda c: c[:1], "expected 2 ciphertext chunks"),
        (lambda c: c + c[:1], "expected 2 ciphertext chunks"),
        (lambda c: [c[1], c[0]], "carries"),  # chunks swapped: sizes do not match
        (lambda c: ["text", c[1]], "expected bytes"),
    ],
)
def test_malformed_chunks_are_refused(public, mutate, fragment) -> None:
    cts = _encrypt(public, np.ones(5000))
    acc = public.accumulator(length=5000)
    with pytest.raises(MalformedMessage, match=fragment):
        acc.add(mutate(cts))
    assert acc.contributions == 0


@pytest.mark.parametrize(
    "params",
    [
        FLARE_DEFAULT,
        CkksParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 40), scale=2.0**30),
    ],
    ids=["flare", "n4096"],
)
def test_foreign_parameters_are_refused(public, params) -> None:
    other = CkksPublicContext(CkksSecretKey(params).public_material())
    foreign = _encrypt(other, np.ones(10), scale=2.0**30)
    with pytest.raises(MalformedMessage, match=r"does not deserialize|bytes, outside"):
        public.accumulator(length=10).add(foreign)


def test_wrong_scale_is_refused(public) -> None:
    cts = _encrypt(public, np.ones(10), scale=2.0**30)
    with pytest.raises(MalformedMessage, match="scale"):
        public.accumulator(length=10).add(cts)


def test_three_component_ciphertext_is_refused(key, public) -> None:
    ctx = key._private_context().copy()
    ctx.auto_relin = False
    ctx.auto_rescale = False
    vec = ts.ckks_vector(ctx, [1.0, 2.0], scale=2.0**20)
    square = (vec * vec).serialize()  # size-3 ciphertext at scale 2^40
    with pytest.raises(MalformedMessage):
        public.accumulator(length=2).add([square])


def test_decryptor_validates_too(key) -> None:
    with pytest.raises(MalformedMessage):
        key.decryptor().decrypt([b"junk"], 10)
    with pytest.raises(MalformedMessage, match="expected 1"):
        key.decryptor().decrypt([], 10)


@FUZZ
@given(
    data=st.data(),
    cut=st.integers(min_value=0, max_value=131_400),
    flips=st.lists(st.tuples(st.integers(0, 131_300), st.integers(1, 255)), max_size=4),
)
def test_fuzzed_ciphertext_bytes_never_crash(public, data, cut, flips) -> None:
    base = _encrypt(public, np.ones(8))[0]
    kind = data.draw(st.sampled_from(["truncate", "flip", "random", "append"]))
    if kind == "truncate":
        blob = base[: cut % len(base)]
    elif kind == "flip":
        buf = bytearray(base)
        for pos, xor in flips:
            buf[pos % len(buf)] ^= xor
        blob = bytes(buf)
    elif kind == "random":
        blob = data.draw(st.binary(max_size=2048))
    else:
        blob = base + data.draw(st.binary(min_size=1, max_size=64))
    acc = public.accumulator(length=8)
    try:
        acc.add([blob])
    except MalformedMessage:
        assert acc.contributions == 0
    else:  # a flipped coefficient is still a well-formed ciphertext (CKKS is malleable)
        assert acc.contributions == 1
