"""The AES-128-CTR PRG: known answers, determinism, domain separation, uniformity, errors.

``protocols/crypto/vectors/prg.json`` holds our own known answers, made by
:func:`generate_vectors` from fixed inputs. After an intended, versioned change of output (which
also needs new labels, see ``crypto/labels.py``), rewrite them with::

    SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_prg.py

Statistical tests use fixed seeds, so they are deterministic: they cannot flake, and they fail
only if the output changes into something non-uniform (or suspiciously too uniform).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import numpy as np
import pytest

from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, InvalidKeyError, UnknownLabelError
from tests.vectors import h, load_vectors, regenerate, write_vectors

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
LABEL = labels.TEST_VECTOR

# chi-square critical values at p = 1e-6 (lower, upper), from scipy.stats.chi2.ppf; used when
# scipy is not installed.
_CHI2_BOUNDS = {
    15: (1.2160, 56.493),
    63: (23.161, 131.37),
    96: (43.844, 176.78),
    255: (161.65, 377.08),
}


def _chi2_ok(counts: np.ndarray, expected: float) -> tuple[bool, float]:
    """True if the chi-square statistic of ``counts`` is neither too large nor too small."""
    stat = float(np.sum((counts - expected) ** 2 / expected))
    df = counts.size - 1
    try:
        from scipy.special import chdtrc  # survival function of chi-square
    except ImportError:
        lo, hi = _CHI2_BOUNDS[df]
        return lo < stat < hi, stat
    p = float(chdtrc(df, stat))
    return 1e-6 < p < 1 - 1e-6, stat


# ------------------------------------------------------------------------- known-answer vectors

EXPAND_CASES: list[tuple[str, bytes, str, bytes, int, int]] = [
    ("8-bit, zero seed", bytes(32), LABEL.name, b"", 8, 40),
    ("16-bit", SEED, LABEL.name, b"", 16, 24),
    ("32-bit", SEED, LABEL.name, b"", 32, 16),
    ("32-bit, with context", SEED, LABEL.name, b"session-7|round-3", 32, 16),
    ("64-bit", SEED, LABEL.name, b"", 64, 8),
    ("self-mask label, 32-bit", SEED, labels.SELF_MASK.name, b"session-7|round-3|u=5", 32, 9),
    ("pairwise-mask label, 32-bit", OTHER_SEED, labels.PAIRWISE_MASK.name, b"r1|3-9", 32, 5),
    ("count 0", SEED, LABEL.name, b"", 32, 0),
    ("odd byte count (3 x 8-bit)", SEED, LABEL.name, b"", 8, 3),
]
# Long outputs (crossing the 1 MiB internal chunk) are pinned by their SHA-256.
LONG_CASES: list[tuple[str, bytes, str, bytes, int, int]] = [
    ("300000 x 32-bit (crosses the 1 MiB chunk)", SEED, LABEL.name, b"", 32, 300_000),
    ("150001 x 64-bit", OTHER_SEED, labels.SELF_MASK.name, b"ctx", 64, 150_001),
]
MOD_CASES: list[tuple[str, bytes, str, bytes, int, int]] = [
    ("small prime 97", SEED, LABEL.name, b"", 97, 20),
    ("2^31 - 1", SEED, LABEL.name, b"", 2**31 - 1, 8),
    ("2^31 + 11 (about half the draws rejected)", SEED, LABEL.name, b"", 2**31 + 11, 8),
    ("2^61 - 1", SEED, labels.SHAMIR_COEFFICIENTS.name, b"ctx", 2**61 - 1, 6),
    ("2^64 - 59 (largest 64-bit prime)", OTHER_SEED, LABEL.name, b"", 2**64 - 59, 4),
    ("modulus 2", SEED, LABEL.name, b"", 2, 16),
]
OURS = "secureagg: prg (generated)"


def generate_vectors() -> list[dict[str, Any]]:
    """Our own known answers: fixed seeds, labels and contexts through ``prg``."""
    vectors: list[dict[str, Any]] = []
    for what, seed, label, context, bits, count in EXPAND_CASES:
        out = prg.expand(seed, label=label, count=count, bits=bits, context=context)
        vectors.append(
            {
                "source": f"{OURS}: expand, {what}",
                "kind": "expand",
                "seed": seed.hex(),
                "label": label,
                "context": context.hex(),
                "bits": bits,
                "count": count,
                "expected": out.astype(out.dtype.newbyteorder("<")).tobytes().hex(),
            }
        )
    for what, seed, label, context, bits, count in LONG_CASES:
        out = prg.expand(seed, label=label, count=count, bits=bits, context=context)
        raw = out.astype(out.dtype.newbyteorder("<")).tobytes()
        vectors.append(
            {
                "source": f"{OURS}: expand, {what}",
                "kind": "expand_sha256",
                "seed": seed.hex(),
                "label": label,
                "context": context.hex(),
                "bits": bits,
                "count": count,
                "expected_sha256": hashlib.sha256(raw).hexdigest(),
            }
        )
    for what, seed, label, context, modulus, count in MOD_CASES:
        out = prg.expand_mod(seed, label=label, count=count, modulus=modulus, context=context)
        vectors.append(
            {
                "source": f"{OURS}: expand_mod, {what}",
                "kind": "expand_mod",
                "seed": seed.hex(),
                "label": label,
                "context": context.hex(),
                "modulus": str(modulus),
                "count": count,
                "expected": [str(int(v)) for v in out],
            }
        )
    return vectors


def _load() -> list[dict[str, Any]]:
    if regenerate():
        write_vectors(
            "crypto",
            "prg",
            description=(
                "secureagg.crypto.prg: AES-128-CTR keystream under HKDF-SHA256(seed, "
                "len(label)||label||context), counter from zero. 'expand' entries give the "
                "little-endian output words as hex; 'expand_sha256' the SHA-256 of that byte "
                "string; 'expand_mod' the rejection-sampled values as decimal strings. Seeds and "
                "contexts are lowercase hex; labels are registered names (crypto/labels.py)."
            ),
            generated_by=(
                "tests/crypto/test_prg.py::generate_vectors "
                "(SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_prg.py)"
            ),
            vectors=generate_vectors(),
        )
    return load_vectors("crypto", "prg")


VECTORS = _load()


def test_vector_file_covers_every_case() -> None:
    kinds = [v["kind"] for v in VECTORS]
    assert kinds.count("expand") == len(EXPAND_CASES)
    assert kinds.count("expand_sha256") == len(LONG_CASES)
    assert kinds.count("expand_mod") == len(MOD_CASES)


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: v["source"].split(": ", 1)[1])
def test_known_answer(vec: dict[str, Any]) -> None:
    seed, context = h(vec["seed"]), h(vec["context"])
    if vec["kind"] == "expand_mod":
        out = prg.expand_mod(
            seed, label=vec["label"], count=vec["count"], modulus=int(vec["modulus"]),
            context=context,
        )
        assert [str(int(v)) for v in out] == vec["expected"]
        return
    out = prg.expand(
        seed, label=vec["label"], count=vec["count"], bits=vec["bits"], context=context
    )
    raw = out.astype(out.dtype.newbyteorder("<")).tobytes()
    if vec["kind"] == "expand":
        assert raw.hex() == vec["expected"]
    else:
        assert hashlib.sha256(raw).hexdigest() == vec["expected_sha256"]


def test_known_answer_is_the_keystream_read_as_words() -> None:
    """expand() is exactly Keystream.read() interpreted as little-endian words."""
    vec = next(v for v in VECTORS if v["kind"] == "expand" and v["bits"] == 32 and v["count"])
    stream = prg.Keystream(h(vec["seed"]), label=vec["label"], context=h(vec["context"]))
    assert stream.read(4 * vec["count"]).hex() == vec["expected"]


# --------------------------------------------------------------- determinism and domain separation


def test_same_inputs_same_stream() -> None:
    a = prg.expand(SEED, label=LABEL, count=1000, bits=32, context=b"c")
    b = prg.expand(SEED, label=LABEL.name, count=1000, bits=32, context=b"c")
    assert np.array_equal(a, b)
    s1 = prg.Keystream(SEED, label=LABEL, context=b"c")
    s2 = prg.Keystream(SEED, label=LABEL, context=b"c")
    assert s1.read(100) == s2.read(100)


@pytest.mark.parametrize(
    ("seed", "label", "context"),
    [
        (OTHER_SEED, LABEL, b""),
        (SEED, labels.SELF_MASK, b""),
        (SEED, LABEL, b"round-2"),
        (SEED, LABEL, b"\x00"),
    ],
    ids=["seed", "label", "context", "context-one-zero-byte"],
)
def test_any_input_change_gives_an_unrelated_stream(
    seed: bytes, label: labels.Label, context: bytes
) -> None:
    base = prg.expand(SEED, label=LABEL, count=256, bits=32)
    other = prg.expand(seed, label=label, context=context, count=256, bits=32)
    # unrelated streams agree on a 32-bit word with probability 2^-32
    assert np.count_nonzero(base == other) == 0


def test_a_prefix_is_the_shorter_stream() -> None:
    long = prg.expand(SEED, label=LABEL, count=5000, bits=16)
    short = prg.expand(SEED, label=LABEL, count=1234, bits=16)
    assert np.array_equal(long[:1234], short)


def test_successive_reads_continue_the_stream() -> None:
    whole = prg.Keystream(SEED, label=LABEL).read(3 * 2**20 + 37)
    stream = prg.Keystream(SEED, label=LABEL)
    parts = [stream.read(5), stream.read(2**20 + 11), stream.read(0)]
    buf = np.empty(2**21 + 21, dtype=np.uint8)  # fill() continues the same stream
    stream.fill(buf)
    parts.append(buf.tobytes())
    assert b"".join(parts) == whole


def test_words_match_expand_and_little_endian_bytes() -> None:
    stream = prg.Keystream(SEED, label=LABEL)
    words = stream.words(10, 64)
    assert words.dtype == np.uint64
    assert np.array_equal(words, prg.expand(SEED, label=LABEL, count=10, bits=64))
    raw = prg.Keystream(SEED, label=LABEL).read(8)
    assert int(words[0]) == int.from_bytes(raw, "little")


# ------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
@pytest.mark.parametrize("count", [0, 1, 7, 1000])
def test_expand_dtype_and_count(bits: int, count: int) -> None:
    out = prg.expand(SEED, label=LABEL, count=count, bits=bits)
    assert out.dtype == np.dtype(f"uint{bits}")
    assert out.shape == (count,)
    assert prg.dtype_for_bits(bits) == out.dtype


def test_count_zero_everywhere() -> None:
    assert prg.expand(SEED, label=LABEL, count=0).size == 0
    assert prg.expand_mod(SEED, label=LABEL, count=0, modulus=97).size == 0
    empty = np.empty(0, dtype=np.uint32)
    prg.add_mask(empty, SEED, label=LABEL)
    assert empty.size == 0
    assert prg.Keystream(SEED, label=LABEL).read(0) == b""


def test_top_value_occurs_8_bit() -> None:
    out = prg.expand(SEED, label=LABEL, count=256 * 64, bits=8)
    assert int(out.max()) == 255
    assert np.unique(out).size == 256  # every value, 0 and 255 included


def test_top_value_occurs_16_bit() -> None:
    out = prg.expand(SEED, label=LABEL, count=2**16 * 40, bits=16)
    assert int(out.max()) == 2**16 - 1
    assert int(np.count_nonzero(out == 2**16 - 1)) > 10  # expected 40
    assert np.unique(out).size == 2**16


def test_64_bit_words_use_the_full_width() -> None:
    out = prg.expand(SEED, label=LABEL, count=4096, bits=64)
    assert int(np.count_nonzero(out >= np.uint64(2**63))) in range(1800, 2300)
    assert int(np.bitwise_or.reduce(out)) == 2**64 - 1  # every bit position is used


# -------------------------------------------------------------------------------- uniformity


def test_chi_square_8_bit() -> None:
    n = 256 * 2000
    counts = np.bincount(prg.expand(SEED, label=LABEL, count=n, bits=8), minlength=256)
    ok, stat = _chi2_ok(counts.astype(np.float64), n / 256)
    assert ok, f"chi-square {stat:.1f} with 255 degrees of freedom"


def test_chi_square_fails_for_a_biased_source() -> None:
    """The check itself can fail: folding 9 bits into 8 (a modulo bias) is caught."""
    raw = prg.expand(SEED, label=LABEL, count=256 * 2000, bits=16) % 384 % 256
    counts = np.bincount(raw, minlength=256).astype(np.float64)
    ok, _ = _chi2_ok(counts, raw.size / 256)
    assert not ok
    too_even = np.full(256, 2000.0)  # a counter would look like this
    assert not _chi2_ok(too_even, 2000.0)[0]


def test_chi_square_fallback_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hard-coded critical values give the same verdicts when scipy is missing."""
    good = np.bincount(prg.expand(SEED, label=LABEL, count=256 * 500, bits=8), minlength=256)
    bad = good.astype(np.float64)
    bad[:128] += 40.0
    with_scipy = (_chi2_ok(good.astype(np.float64), 500.0)[0], _chi2_ok(bad, 520.0)[0])
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # import now raises ImportError
    without = (_chi2_ok(good.astype(np.float64), 500.0)[0], _chi2_ok(bad, 520.0)[0])
    assert with_scipy == without == (True, False)


def test_expand_mod_small_prime_is_uniform() -> None:
    n = 97 * 1000
    out = prg.expand_mod(SEED, label=LABEL, count=n, modulus=97)
    assert out.dtype == np.uint64
    assert int(out.max()) == 96 and int(out.min()) == 0
    ok, stat = _chi2_ok(np.bincount(out.astype(np.int64), minlength=97).astype(float), n / 97)
    assert ok, f"chi-square {stat:.1f}"


def test_expand_mod_large_prime_bucketed() -> None:
    modulus = 2**31 - 1
    n = 64 * 1000
    out = prg.expand_mod(SEED, label=LABEL, count=n, modulus=modulus)
    assert int(out.max()) < modulus
    ok, stat = _chi2_ok(_buckets(out, modulus, 64), n / 64)
    assert ok, f"chi-square {stat:.1f}"


def _buckets(values: np.ndarray, modulus: int, k: int) -> np.ndarray:
    return np.bincount(
        ((values * np.uint64(k)) // np.uint64(modulus)).astype(np.int64), minlength=k
    ).astype(np.float64)


@pytest.mark.parametrize("modulus", [2**31 + 11, 3 * 2**30])
def test_expand_mod_has_no_modulo_bias(modulus: int) -> None:
    """Rejection keeps the output uniform although 25-50% of the 32-bit draws are rejected."""
    n = 16 * 4000
    out = prg.expand_mod(SEED, label=LABEL, count=n, modulus=modulus)
    assert int(out.max()) < modulus
    ok, stat = _chi2_ok(_buckets(out, modulus, 16), n / 16)
    assert ok, f"chi-square {stat:.1f}"


def test_bucket_test_catches_the_naive_reduction() -> None:
    """``word % m`` with m = 3 * 2^30 makes the lowest third twice as likely; the test sees it."""
    modulus = 3 * 2**30
    n = 16 * 4000
    naive = prg.expand(SEED, label=LABEL, count=n, bits=32).astype(np.uint64) % np.uint64(modulus)
    assert not _chi2_ok(_buckets(naive, modulus, 16), n / 16)[0]


@pytest.mark.parametrize("modulus", [2, 3, 255, 256, 257, 2**32 - 5, 2**32, 2**63 + 1, 2**64 - 1])
def test_expand_mod_in_range(modulus: int) -> None:
    out = prg.expand_mod(SEED, label=LABEL, count=500, modulus=modulus)
    assert out.shape == (500,)
    assert int(out.max()) < modulus
    if modulus <= 3:
        assert set(out.tolist()) == set(range(modulus))


def test_uniform_and_below() -> None:
    stream = prg.Keystream(SEED, label=LABEL)
    u = stream.uniform(10_000)
    assert u.dtype == np.float64
    assert float(u.min()) >= 0.0
    assert float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.02
    assert stream.below(1) == 0
    draws = [stream.below(10) for _ in range(2000)]
    assert set(draws) == set(range(10))
    big = 2**200 + 3
    assert all(0 <= stream.below(big) < big for _ in range(20))


# -------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_add_mask_matches_expand_and_cancels(bits: int) -> None:
    dtype = prg.dtype_for_bits(bits)
    rng = np.random.default_rng(bits)
    n = 300_001 if bits == 32 else 5_003  # 32-bit crosses the internal chunk
    acc = rng.integers(0, 2**bits, size=n, dtype=np.uint64).astype(dtype)
    original = acc.copy()
    mask = prg.expand(SEED, label=labels.PAIRWISE_MASK, count=n, bits=bits, context=b"r")
    prg.add_mask(acc, SEED, label=labels.PAIRWISE_MASK, context=b"r")
    assert acc.dtype == dtype
    assert np.array_equal(acc, original + mask)  # numpy uint arithmetic wraps mod 2^bits
    assert not np.array_equal(acc, original)
    prg.add_mask(acc, SEED, label=labels.PAIRWISE_MASK, context=b"r", subtract=True)
    assert np.array_equal(acc, original)


def test_add_mask_subtract_first_then_add() -> None:
    acc = np.zeros(100, dtype=np.uint32)
    prg.add_mask(acc, SEED, label=LABEL, subtract=True)
    assert np.array_equal(acc, np.uint32(0) - prg.expand(SEED, label=LABEL, count=100))
    prg.add_mask(acc, SEED, label=LABEL)
    assert not acc.any()


def test_add_mask_rejects_bad_accumulators() -> None:
    with pytest.raises(ValueError, match="1-D"):
        prg.add_mask(np.zeros((2, 3), dtype=np.uint32), SEED, label=LABEL)
    with pytest.raises(ValueError, match="C-contiguous"):
        prg.add_mask(np.zeros(10, dtype=np.uint32)[::2], SEED, label=LABEL)
    with pytest.raises(ConfigurationError):
        prg.add_mask(np.zeros(10, dtype=np.int32), SEED, label=LABEL)
    with pytest.raises(ConfigurationError):
        prg.add_mask(np.zeros(10, dtype=np.float64), SEED, label=LABEL)


def test_fill_needs_contiguous() -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        prg.Keystream(SEED, label=LABEL).fill(np.zeros(10, dtype=np.uint32)[::2])


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("seed", [b"", bytes(16), bytes(31), bytes(33), bytes(64), "0" * 32, 7])
def test_seed_must_be_32_bytes(seed: Any) -> None:
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        prg.expand(seed, label=LABEL, count=4)
    with pytest.raises(InvalidKeyError):
        prg.Keystream(seed, label=LABEL)
    with pytest.raises(InvalidKeyError):
        prg.expand_mod(seed, label=LABEL, count=4, modulus=97)
    with pytest.raises(InvalidKeyError):
        prg.add_mask(np.zeros(4, dtype=np.uint32), seed, label=LABEL)


def test_bytearray_seed_is_accepted() -> None:
    assert np.array_equal(
        prg.expand(bytearray(SEED), label=LABEL, count=8), prg.expand(SEED, label=LABEL, count=8)
    )


@pytest.mark.parametrize("bits", [0, 1, 12, 24, 48, 128, -32])
def test_unsupported_bits(bits: int) -> None:
    with pytest.raises(ConfigurationError, match="bits must be one of"):
        prg.expand(SEED, label=LABEL, count=4, bits=bits)
    with pytest.raises(ConfigurationError):
        prg.Keystream(SEED, label=LABEL).words(4, bits)
    with pytest.raises(ConfigurationError):
        prg.dtype_for_bits(bits)


@pytest.mark.parametrize("count", [-1, -100, 1.5, "3", True, None])
def test_bad_count(count: Any) -> None:
    with pytest.raises(ConfigurationError, match="count"):
        prg.expand(SEED, label=LABEL, count=count)
    with pytest.raises(ConfigurationError):
        prg.expand_mod(SEED, label=LABEL, count=count, modulus=97)
    with pytest.raises(ConfigurationError):
        prg.Keystream(SEED, label=LABEL).read(count)


def test_numpy_integer_count_is_accepted() -> None:
    assert prg.expand(SEED, label=LABEL, count=np.int64(5)).shape == (5,)


@pytest.mark.parametrize("label", ["secureagg/v1/no-such-label", "", "self-mask"])
def test_unknown_label_string(label: str) -> None:
    with pytest.raises(UnknownLabelError):
        prg.expand(SEED, label=label, count=4)
    with pytest.raises(UnknownLabelError):
        prg.Keystream(SEED, label=label)
    with pytest.raises(UnknownLabelError):
        prg.add_mask(np.zeros(4, dtype=np.uint32), SEED, label=label)


def test_forged_label_object_is_rejected() -> None:
    forged = labels.Label(LABEL.name, "not the registered object")
    with pytest.raises(UnknownLabelError):
        prg.expand(SEED, label=forged, count=4)


@pytest.mark.parametrize("modulus", [-5, 0, 1, 2**64, 2**70, True, 97.0, "97"])
def test_modulus_out_of_range(modulus: Any) -> None:
    with pytest.raises(ConfigurationError, match="modulus"):
        prg.expand_mod(SEED, label=LABEL, count=4, modulus=modulus)


def test_below_rejects_non_positive_bound() -> None:
    with pytest.raises(ConfigurationError):
        prg.Keystream(SEED, label=LABEL).below(0)


def test_random_seed_is_fresh() -> None:
    seeds = {prg.random_seed() for _ in range(8)}
    assert len(seeds) == 8
    assert all(len(s) == prg.SEED_BYTES == 32 for s in seeds)
