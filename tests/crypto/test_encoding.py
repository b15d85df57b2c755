"""Fixed-point encoding: round trips, the no-overflow proof, unbiased rounding, known answers.

``protocols/crypto/vectors/encoding.json`` holds our own known answers, made by
:func:`generate_vectors` from fixed inputs and keystream seeds. After an intended, versioned change
of output, rewrite them with::

    SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_encoding.py
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import MAX_QUANTIZED, EncodedVector, FixedPointEncoder
from secureagg.errors import (
    ConfigurationError,
    HeadroomError,
    InvalidInputError,
    NonFiniteInputError,
)
from tests.vectors import h, load_vectors, regenerate, write_vectors

SIGNED = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stream(seed: bytes = b"\x07" * 32, context: bytes = b"") -> prg.Keystream:
    return prg.Keystream(seed, label=labels.TEST_VECTOR, context=context)


def signed(values: np.ndarray, bits: int) -> np.ndarray:
    return values.view(SIGNED[bits]).astype(np.int64)


def limit(bits: int) -> int:
    return 2 ** (bits - 1) - 1


class ConstantKeystream(prg.Keystream):
    """A keystream of one repeated byte: u = 0 (0x00) or u = max (0xFF). Tests only."""

    def __init__(self, byte: int) -> None:  # no super().__init__: no key is needed
        self.byte = byte

    def fill(self, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8).fill(self.byte)


# --------------------------------------------------------------------------- hypothesis inputs


@st.composite
def encoders(draw: st.DrawFn) -> FixedPointEncoder:
    bits = draw(st.sampled_from([8, 16, 32, 64]))
    max_weight = draw(st.integers(1, 4))
    room = limit(bits) // max_weight
    num_summands = draw(st.integers(1, min(room, 50)))
    headroom = draw(st.integers(0, (limit(bits) - num_summands * max_weight) // 4))
    clip = draw(st.floats(1e-3, 1e3))
    return FixedPointEncoder(
        clip=clip,
        num_summands=num_summands,
        bits=bits,
        max_weight=max_weight,
        noise_headroom=headroom,
    )


def values_for(
    enc: FixedPointEncoder, max_size: int, min_size: int = 0
) -> st.SearchStrategy[np.ndarray]:
    c = float(enc.clip)
    element = st.one_of(
        st.floats(-2 * c, 2 * c, allow_nan=False),
        st.sampled_from([c, -c, 0.0, 3 * c, -3 * c, math.nextafter(c, 0), 1e300, -1e300]),
    )
    return st.lists(element, min_size=min_size, max_size=max_size).map(
        lambda v: np.array(v, np.float64)
    )


# -------------------------------------------------------------------------------- properties


@FAST
@given(data=st.data(), enc=encoders(), seed=st.binary(min_size=32, max_size=32))
def test_round_trip_within_bound(data: st.DataObject, enc: FixedPointEncoder, seed: bytes) -> None:
    x = data.draw(values_for(enc, 40))
    weight = data.draw(st.integers(1, enc.max_weight))
    # the headroom proof's premise holds for whatever clip hypothesis picked
    assert enc.num_summands * enc.max_weight * enc.max_quantized + enc.noise_headroom <= limit(
        enc.bits
    )
    encoded = enc.encode(x, weight=weight, rng=stream(seed))
    assert encoded.values.dtype == np.dtype(f"uint{enc.bits}")
    assert encoded.values.shape == (x.size,)
    assert encoded.clipped == int(np.count_nonzero(np.abs(x) > enc.clip))
    q = signed(encoded.values, enc.bits)
    assert np.all(np.abs(q) <= weight * enc.max_quantized)  # |q| <= Q before the weight
    assert np.all(q % weight == 0)
    decoded = enc.decode(encoded.values)
    expected = weight * np.clip(x, -enc.clip, enc.clip)
    assert np.all(np.abs(decoded - expected) <= enc.error_bound(summands=1, total_weight=weight))
    per_unit = enc.decode(encoded.values, divide_by=weight)
    bound = enc.error_bound(summands=1, total_weight=weight) / weight
    assert np.all(np.abs(per_unit - np.clip(x, -enc.clip, enc.clip)) <= bound * (1 + 1e-12))


@FAST
@given(data=st.data(), enc=encoders(), seed=st.binary(min_size=32, max_size=32))
def test_weighted_sums_within_bound(
    data: st.DataObject, enc: FixedPointEncoder, seed: bytes
) -> None:
    k = data.draw(st.integers(1, min(enc.num_summands, 8)))
    size = data.draw(st.integers(0, 30))
    total = np.zeros(size, dtype=enc.dtype)
    expected = np.zeros(size)
    total_weight = 0
    for i in range(k):
        x = data.draw(values_for(enc, size, size))
        w = data.draw(st.integers(1, enc.max_weight))
        total += enc.encode(x, weight=w, rng=stream(seed, bytes([i]))).values  # wraps mod 2^bits
        expected += w * np.clip(x, -enc.clip, enc.clip)
        total_weight += w
    bound = enc.error_bound(summands=k, total_weight=total_weight)
    assert np.all(np.abs(enc.decode(total) - expected) <= bound)


@FAST
@given(
    bits=st.sampled_from([8, 16, 32, 64]),
    max_weight=st.integers(1, 5),
    data=st.data(),
    seed=st.binary(min_size=32, max_size=32),
)
def test_extreme_sums_never_wrap(
    bits: int, max_weight: int, data: st.DataObject, seed: bytes
) -> None:
    """n encodings at +-clip (and far beyond) with the largest weight sum without wraparound."""
    n = data.draw(st.integers(1, min(limit(bits) // max_weight, 64)))
    headroom = data.draw(st.integers(0, limit(bits) - n * max_weight))
    enc = FixedPointEncoder(
        clip=2.5, num_summands=n, bits=bits, max_weight=max_weight, noise_headroom=headroom
    )
    assert n * max_weight * enc.max_quantized + headroom <= limit(bits)  # the proof's premise
    x = np.array([2.5, -2.5, 1e9, -1e9, np.finfo(np.float64).max, 0.0])
    clipped = np.clip(x, -2.5, 2.5)
    total = np.zeros(x.size, dtype=enc.dtype)
    for i in range(n):
        total += enc.encode(x, weight=max_weight, rng=stream(seed, i.to_bytes(2, "big"))).values
    # the (signed) sum is exactly n * max_weight * Q at the extremes: nothing wrapped
    q = signed(total, bits)
    top = n * max_weight * enc.max_quantized
    assert np.all(np.abs(q) <= top)
    assert q[0] >= top - n * max_weight  # each term is Q or (if clip*scale < Q) Q - 1
    if 2.5 * enc.effective_scale == enc.max_quantized:
        assert q[0] == top and q[1] == -top
    assert np.sign(q[0]) == 1 and np.sign(q[1]) == -1 and np.sign(q[2]) == 1
    decoded = enc.decode(total)
    assert np.all(np.abs(decoded - n * max_weight * clipped) <= enc.error_bound())
    # noise within the reserved headroom still decodes without wrapping
    noisy = total + np.array([headroom, -headroom, 0, 0, 0, 0], dtype=np.int64).astype(enc.dtype)
    assert signed(noisy, bits)[0] == q[0] + headroom
    assert signed(noisy, bits)[1] == q[1] - headroom


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_scale_none_is_the_largest_that_fits(bits: int) -> None:
    for n, w, hr in [(1, 1, 0), (3, 2, 5), (10, 1, 0), (100, 3, 7)]:
        if n * w + hr > limit(bits):
            continue
        enc = FixedPointEncoder(
            clip=0.75, num_summands=n, bits=bits, max_weight=w, noise_headroom=hr
        )
        q = enc.max_quantized
        assert q == math.ceil(0.75 * enc.effective_scale)
        assert n * w * q + hr <= limit(bits)
        assert q == MAX_QUANTIZED or n * w * (q + 1) + hr > limit(bits)


@pytest.mark.parametrize("clip", [2.8357193047241087, 54.14170586687686, 0.1, 3.0])
def test_scale_none_never_overshoots_by_rounding(clip: float) -> None:
    """q_max / clip * clip can round above q_max (it does for the first two clips); the encoder
    must step the scale down so that Q stays at q_max."""
    enc = FixedPointEncoder(clip=clip, num_summands=1, bits=32)
    assert enc.max_quantized == MAX_QUANTIZED
    assert clip * enc.effective_scale <= MAX_QUANTIZED
    x = np.array([clip, -clip, 10 * clip])
    q = signed(enc.encode(x, rng=ConstantKeystream(0xFF)).values, 32)
    assert q.tolist() == [MAX_QUANTIZED, -MAX_QUANTIZED, MAX_QUANTIZED]


def test_encoded_values_wrap_as_twos_complement() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=1, bits=8, scale=1.0)
    out = enc.encode(np.array([-1.0, 1.0, 0.0]), rng=stream()).values
    assert out.dtype == np.uint8
    assert out.tolist() == [255, 1, 0]  # integers need no rounding: -1 -> 2^8 - 1
    assert enc.decode(out).tolist() == [-1.0, 1.0, 0.0]


# ------------------------------------------------------------------------ rounding arithmetic


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_rounding_extremes_with_constant_keystreams(bits: int) -> None:
    """u = 0 gives floor(y); the largest u (1 - 2^-22) gives ceil(y), and never Q + 1."""
    enc = FixedPointEncoder(clip=1.0, num_summands=1, bits=bits)
    s, q_max = enc.effective_scale, enc.max_quantized
    assert s == q_max  # clip 1.0: the clip maps exactly onto Q
    x = np.array([1.0, -1.0, 5.0, -5.0, 0.0, 0.3 / s, -0.3 / s, 2.5 / s, -2.5 / s, 1 / 3])
    y = np.clip(x, -1.0, 1.0) * s
    frac = y - np.floor(y)
    assert np.all((frac == 0) | (frac > 2**-20))  # so that ceil is the exact expectation
    low = signed(enc.encode(x, rng=ConstantKeystream(0x00)).values, bits)
    high = signed(enc.encode(x, rng=ConstantKeystream(0xFF)).values, bits)
    assert low.tolist() == np.floor(y).astype(np.int64).tolist()
    assert high.tolist() == np.ceil(y).astype(np.int64).tolist()
    assert int(np.abs(high).max()) == q_max == int(np.abs(low).max())


def test_largest_q_at_the_precision_cap() -> None:
    """Q = 2^30 - 1 (32 bits, one summand): the worst-case u still stays within [-Q, Q]."""
    enc = FixedPointEncoder(clip=2.0, num_summands=1, bits=32)
    assert enc.max_quantized == MAX_QUANTIZED
    x = np.array([2.0, -2.0, math.nextafter(2.0, 0), -math.nextafter(2.0, 0), 1e30, -1e30])
    for byte in (0x00, 0xFF):
        q = signed(enc.encode(x, rng=ConstantKeystream(byte)).values, 32)
        assert int(np.abs(q).max()) <= MAX_QUANTIZED
        assert q[0] == MAX_QUANTIZED and q[1] == -MAX_QUANTIZED


def test_stochastic_rounding_is_unbiased() -> None:
    enc = FixedPointEncoder(clip=10.0, num_summands=1, bits=16, scale=1.0)
    n = 200_000
    for value in (0.3, -2.7, 5.5, 0.001):
        rng = stream(context=repr(value).encode())
        q = signed(enc.encode(np.full(n, value), rng=rng).values, 16)
        frac = value - math.floor(value)
        assert set(np.unique(q).tolist()) <= {math.floor(value), math.floor(value) + 1}
        sigma = math.sqrt(frac * (1 - frac) / n)
        assert abs(float(q.mean()) - value) < 6 * sigma + 1e-9


def test_rounding_is_not_deterministic_nearest() -> None:
    """0.3 scaled units round up about 30% of the time (a plain rint would never round up)."""
    enc = FixedPointEncoder(clip=1.0, num_summands=1, bits=16, scale=1.0)
    q = signed(enc.encode(np.full(10_000, 0.3), rng=stream()).values, 16)
    assert 2700 < int(np.count_nonzero(q == 1)) < 3300


def test_float32_and_float64_inputs_agree() -> None:
    rng = np.random.default_rng(3)
    x32 = (rng.standard_normal(70_000) * 2).astype(np.float32)  # spans three internal chunks
    enc = FixedPointEncoder(clip=0.1, num_summands=7, bits=32)
    a = enc.encode(x32, rng=stream())
    b = enc.encode(x32.astype(np.float64), rng=stream())
    assert np.array_equal(a.values, b.values)
    assert a.clipped == b.clipped == int(np.count_nonzero(np.abs(x32.astype(np.float64)) > 0.1))


def test_clipped_count_is_exact_at_the_boundary() -> None:
    clip = 0.1  # not a float32: float32(0.1) is just above 0.1, so it is clipped
    enc = FixedPointEncoder(clip=clip, num_summands=1)
    f32 = np.float32(0.1)
    x = np.array([0.1, -0.1, f32, -f32, 0.05, 0.2, -7.0, math.nextafter(0.1, 1)], np.float64)
    assert enc.encode(x, rng=stream()).clipped == 5
    assert enc.encode(np.array([f32, -f32, 0.05], np.float32), rng=stream()).clipped == 2
    exact = FixedPointEncoder(clip=0.5, num_summands=1)
    assert exact.encode(np.array([0.5, -0.5, 0.25], np.float32), rng=stream()).clipped == 0


def test_shapes_dtypes_and_containers() -> None:
    enc = FixedPointEncoder(clip=4.0, num_summands=3)
    grid = np.arange(-12, 12, dtype=np.float64).reshape(2, 3, 4) / 3
    flat = enc.encode(grid.ravel(), rng=stream()).values
    assert np.array_equal(enc.encode(grid, rng=stream()).values, flat)  # C order
    assert np.array_equal(enc.encode(np.asfortranarray(grid), rng=stream()).values, flat)
    assert np.array_equal(enc.encode(grid.tolist(), rng=stream()).values, flat)
    ints = np.array([-3, 0, 2, 9])
    assert np.array_equal(
        enc.encode(ints, rng=stream()).values, enc.encode(ints.astype(float), rng=stream()).values
    )
    half = np.array([0.5, -1.25], np.float16)
    assert np.array_equal(
        enc.encode(half, rng=stream()).values, enc.encode([0.5, -1.25], rng=stream()).values
    )
    empty = enc.encode(np.array([]), rng=stream())
    assert empty.values.dtype == np.uint32 and empty.values.size == 0 and empty.clipped == 0
    assert enc.encode(2.0, rng=stream()).values.shape == (1,)


def test_default_randomness_is_fresh() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=1, bits=32)
    x = np.full(64, 0.123456789)
    assert not np.array_equal(enc.encode(x).values, enc.encode(x).values)


def test_torch_tensor_input() -> None:
    torch = pytest.importorskip("torch")
    enc = FixedPointEncoder(clip=1.0, num_summands=2)
    t = torch.linspace(-2, 2, 11)
    assert np.array_equal(
        enc.encode(t, rng=stream()).values, enc.encode(t.numpy(), rng=stream()).values
    )


# ----------------------------------------------------------------------- known-answer vectors

KAT_CASES: list[dict[str, Any]] = [
    {
        "what": "32-bit, auto scale, values inside and outside the clip",
        "params": {"clip": 1.0, "num_summands": 10},
        "inputs": [0.0, 0.5, -0.5, 0.999, -1.0, 1.0, 1.5, -3.25, 1e-9, -1e-9],
        "dtype": "float64",
        "weight": 1,
    },
    {
        "what": "32-bit, weight 3 of max 4, noise headroom",
        "params": {"clip": 2.0, "num_summands": 5, "max_weight": 4, "noise_headroom": 1000},
        "inputs": [0.1, -0.2, 0.3, -1.9, 2.0, 2.5, -0.0],
        "dtype": "float64",
        "weight": 3,
    },
    {
        "what": "8-bit, explicit scale 10",
        "params": {"clip": 1.0, "num_summands": 4, "bits": 8, "scale": 10.0},
        "inputs": [0.05, -0.05, 0.15, 0.99, -1.0, 2.0, 0.33, -0.77],
        "dtype": "float64",
        "weight": 1,
    },
    {
        "what": "16-bit, float32 inputs, clip 0.1 (not a float32)",
        "params": {"clip": 0.1, "num_summands": 100, "bits": 16},
        "inputs": [float(np.float32(v)) for v in (0.1, -0.1, 0.05, 0.0333, -0.2, 0.099)],
        "dtype": "float32",
        "weight": 1,
    },
    {
        "what": "64-bit, 10^6 summands, max weight 1000 (Q at the 2^30 - 1 cap)",
        "params": {"clip": 0.5, "num_summands": 1_000_000, "bits": 64, "max_weight": 1000},
        "inputs": [0.5, -0.5, 0.25, -0.123456789, 0.75],
        "dtype": "float64",
        "weight": 1000,
    },
]
OURS = "secureagg: encoding (generated)"


def _kat_seed(i: int) -> bytes:
    return bytes([i + 1]) * 32


def generate_vectors() -> list[dict[str, Any]]:
    vectors = []
    for i, case in enumerate(KAT_CASES):
        enc = FixedPointEncoder(**case["params"])
        seed = _kat_seed(i)
        x = np.array(case["inputs"], dtype=case["dtype"])
        rng = prg.Keystream(seed, label=labels.TEST_VECTOR)
        encoded = enc.encode(x, weight=case["weight"], rng=rng)
        le = encoded.values.astype(encoded.values.dtype.newbyteorder("<"))
        vectors.append(
            {
                "source": f"{OURS}: {case['what']}",
                "params": case["params"],
                "inputs": case["inputs"],
                "dtype": case["dtype"],
                "weight": case["weight"],
                "keystream_seed": seed.hex(),
                "keystream_label": labels.TEST_VECTOR.name,
                "effective_scale": enc.effective_scale,
                "max_quantized": enc.max_quantized,
                "clipped": encoded.clipped,
                "expected": le.tobytes().hex(),
            }
        )
    return vectors


def _load() -> list[dict[str, Any]]:
    if regenerate():
        write_vectors(
            "crypto",
            "encoding",
            description=(
                "secureagg.crypto.encoding.FixedPointEncoder(**params).encode(np.array(inputs, "
                "dtype), weight=weight, rng=prg.Keystream(keystream_seed, label=keystream_label))."
                " 'expected' is the little-endian uint{bits} output as hex; element i uses "
                "keystream bytes [4i, 4i+4)."
            ),
            generated_by=(
                "tests/crypto/test_encoding.py::generate_vectors "
                "(SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_encoding.py)"
            ),
            vectors=generate_vectors(),
        )
    return load_vectors("crypto", "encoding")


VECTORS = _load()


def test_vector_file_covers_every_case() -> None:
    assert len(VECTORS) == len(KAT_CASES)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["source"].split(": ", 1)[1])
def test_known_answer(vec: dict[str, Any]) -> None:
    enc = FixedPointEncoder(**vec["params"])
    assert enc.effective_scale == vec["effective_scale"]
    assert enc.max_quantized == vec["max_quantized"]
    rng = prg.Keystream(h(vec["keystream_seed"]), label=vec["keystream_label"])
    encoded = enc.encode(np.array(vec["inputs"], dtype=vec["dtype"]), weight=vec["weight"], rng=rng)
    assert encoded.clipped == vec["clipped"]
    le = encoded.values.astype(encoded.values.dtype.newbyteorder("<"))
    assert le.tobytes().hex() == vec["expected"]
    # and the answer decodes to the weighted, clipped input
    x = np.clip(np.array(vec["inputs"], dtype=np.float64), -enc.clip, enc.clip)
    assert np.all(
        np.abs(enc.decode(encoded.values) - vec["weight"] * x)
        <= enc.error_bound(summands=1, total_weight=vec["weight"])
    )


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_before_any_randomness(bad: float) -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=2)
    x = np.array([0.1, 0.2, bad, 0.3])
    rng = stream()
    with pytest.raises(NonFiniteInputError, match="flat index 2") as info:
        enc.encode(x, rng=rng)
    assert isinstance(info.value, ValueError)
    assert rng.read(16) == stream().read(16)  # the keystream was not touched
    with pytest.raises(NonFiniteInputError):
        enc.encode(x.astype(np.float32))


def test_non_finite_with_huge_finite_values() -> None:
    """Huge finite values overflow the fast check's sum; only true NaN/Inf fail."""
    enc = FixedPointEncoder(clip=1.0, num_summands=1)
    huge = np.array([1.7e308, 1.7e308, -1e300, 0.5], np.float64)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(huge))  # the fast path is inconclusive here
    encoded = enc.encode(huge, rng=stream())
    assert encoded.clipped == 3
    assert enc.decode(encoded.values)[:3].tolist() == pytest.approx([1.0, 1.0, -1.0], abs=1e-8)
    big32 = np.array([3e38, 3e38, -3e38, 0.0], np.float32)
    assert enc.encode(big32, rng=stream()).clipped == 3
    with pytest.raises(NonFiniteInputError, match="1 NaN and 0 infinite"):
        enc.encode(np.array([1.7e308, 1.7e308, np.nan]))
    with pytest.raises(NonFiniteInputError, match="0 NaN and 2 infinite"):
        enc.encode(np.array([np.inf, -np.inf, 0.0]))  # the sum is NaN, not inf


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"clip": 0.0}, "clip must be"),
        ({"clip": -1.0}, "clip must be"),
        ({"clip": math.nan}, "clip must be"),
        ({"clip": math.inf}, "clip must be"),
        ({"clip": True}, "clip must be"),
        ({"num_summands": 0}, "num_summands"),
        ({"num_summands": 2.0}, "num_summands"),
        ({"bits": 12}, "bits must be one of"),
        ({"bits": 128}, "bits must be one of"),
        ({"max_weight": 0}, "max_weight"),
        ({"scale": 0.0}, "scale must be"),
        ({"scale": -2.0}, "scale must be"),
        ({"scale": math.inf}, "scale must be"),
        ({"noise_headroom": -1}, "noise_headroom"),
    ],
)
def test_bad_parameters(params: dict[str, Any], fragment: str) -> None:
    full = {"clip": 1.0, "num_summands": 3} | params
    with pytest.raises(ConfigurationError, match=fragment):
        FixedPointEncoder(**full)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        FixedPointEncoder(clip=-1.0, num_summands=0, bits=12, max_weight=0, scale=-1.0)
    assert len(info.value.problems) == 5
    message = str(info.value)
    for fragment in ("clip", "num_summands", "bits", "max_weight", "scale"):
        assert fragment in message


def test_headroom_error_names_the_largest_safe_n_and_clip() -> None:
    with pytest.raises(HeadroomError) as info:
        FixedPointEncoder(clip=1.0, num_summands=1000, bits=16, scale=100.0)
    err = info.value
    assert isinstance(err, ConfigurationError) and isinstance(err, ValueError)
    assert err.max_safe_summands == 327  # 327 * 100 <= 32767 < 328 * 100
    assert err.max_safe_clip is not None
    assert str(err.max_safe_summands) in str(err) and repr(err.max_safe_clip) in str(err)
    # the named values are safe, and one more is not
    FixedPointEncoder(clip=1.0, num_summands=327, bits=16, scale=100.0)
    FixedPointEncoder(clip=err.max_safe_clip, num_summands=1000, bits=16, scale=100.0)
    with pytest.raises(HeadroomError):
        FixedPointEncoder(clip=1.0, num_summands=328, bits=16, scale=100.0)
    with pytest.raises(HeadroomError):
        FixedPointEncoder(
            clip=math.nextafter(err.max_safe_clip, 1.0), num_summands=1000, bits=16, scale=100.0
        )


def test_headroom_counts_weight_and_noise() -> None:
    FixedPointEncoder(clip=1.0, num_summands=10, bits=16, scale=100.0, max_weight=32)
    with pytest.raises(HeadroomError) as info:
        FixedPointEncoder(
            clip=1.0, num_summands=10, bits=16, scale=100.0, max_weight=32, noise_headroom=1000
        )
    assert info.value.max_safe_summands == 9  # (32767 - 1000) // (32 * 100)


def test_headroom_error_when_no_scale_fits() -> None:
    with pytest.raises(HeadroomError, match="largest safe num_summands is 63") as info:
        FixedPointEncoder(clip=1.0, num_summands=100, bits=8, max_weight=2)
    assert info.value.max_safe_summands == 63
    assert info.value.max_safe_clip is None
    FixedPointEncoder(clip=1.0, num_summands=63, bits=8, max_weight=2)
    with pytest.raises(HeadroomError) as nothing:
        FixedPointEncoder(clip=1.0, num_summands=1, bits=8, noise_headroom=127)
    assert nothing.value.max_safe_summands is None


def test_scale_beyond_the_precision_cap() -> None:
    with pytest.raises(ConfigurationError, match="2\\^30 - 1"):
        FixedPointEncoder(clip=1.0, num_summands=1, bits=64, scale=2.0**31)
    FixedPointEncoder(clip=1.0, num_summands=1, bits=64, scale=float(MAX_QUANTIZED))


def test_explicit_scale_is_used() -> None:
    enc = FixedPointEncoder(clip=1.5, num_summands=2, bits=16, scale=1000.0)
    assert enc.effective_scale == 1000.0
    assert enc.max_quantized == 1500
    assert enc.error_bound() == pytest.approx(2 / 1000.0, rel=1e-5)


@pytest.mark.parametrize("weight", [0, -1, 4, 2.0, True, None])
def test_bad_weight(weight: Any) -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=2, max_weight=3)
    with pytest.raises(ConfigurationError, match="weight"):
        enc.encode([0.5], weight=weight, rng=stream())


def test_numpy_integer_weight() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=2, max_weight=3)
    a = enc.encode([0.5, -0.25], weight=np.int64(3), rng=stream()).values
    assert np.array_equal(a, enc.encode([0.5, -0.25], weight=3, rng=stream()).values)


@pytest.mark.parametrize("bad", [["a", "b"], [1 + 2j], [True, False], [object()], [[1, 2], [3]]])
def test_non_numeric_input(bad: Any) -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=1)
    with pytest.raises(InvalidInputError):
        enc.encode(bad, rng=stream())


def test_rng_must_be_a_keystream() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=1)
    with pytest.raises(InvalidInputError, match="Keystream"):
        enc.encode([0.5], rng=np.random.default_rng(0))  # type: ignore[arg-type]


def test_decode_checks_dtype_and_divisor() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=2, bits=32)
    good = enc.encode([0.5], rng=stream()).values
    for wrong in (good.astype(np.int32), good.astype(np.uint64), good.astype(np.float64)):
        with pytest.raises(InvalidInputError, match="uint32"):
            enc.decode(wrong)
    with pytest.raises(InvalidInputError):
        enc.decode([1, 2, 3])  # type: ignore[arg-type]
    for divisor in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ConfigurationError, match="divide_by"):
            enc.decode(good, divide_by=divisor)
    grid = np.array([[0, 1], [2**32 - 1, 2**31]], dtype=np.uint32)
    decoded = enc.decode(grid, divide_by=2)
    assert decoded.shape == (2, 2) and decoded.dtype == np.float64
    assert decoded[1, 0] == -1 / enc.effective_scale / 2
    assert decoded[1, 1] == -(2**31) / enc.effective_scale / 2


def test_error_bound_arguments() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=10, max_weight=3)
    worst = enc.error_bound()
    assert worst == enc.error_bound(summands=10) == enc.error_bound(total_weight=30)
    assert worst == pytest.approx(30 / enc.effective_scale, rel=1e-5)
    assert enc.error_bound(summands=2) == pytest.approx(worst / 5)
    assert enc.error_bound(summands=0) == 0.0
    for kwargs in ({"summands": 11}, {"summands": -1}, {"total_weight": 31}, {"summands": 1.5}):
        with pytest.raises(ConfigurationError):
            enc.error_bound(**kwargs)


def test_encoder_is_frozen_and_comparable() -> None:
    enc = FixedPointEncoder(clip=1.0, num_summands=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        enc.clip = 2.0  # type: ignore[misc]
    assert enc == FixedPointEncoder(clip=1.0, num_summands=4)
    assert enc != FixedPointEncoder(clip=1.0, num_summands=5)
    encoded = enc.encode([0.0], rng=stream())
    assert isinstance(encoded, EncodedVector)
    with pytest.raises(dataclasses.FrozenInstanceError):
        encoded.clipped = 3  # type: ignore[misc]
