"""Tests for secureagg.crypto.shamir: field, vectors, threshold properties, tampering, errors.

Regenerate the known-answer vectors (only after an intended, versioned change of output) with
``SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_shamir.py -k regenerate``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secureagg.crypto import labels, prg, shamir
from secureagg.errors import InvalidShareError, TamperedShareError
from tests.vectors import h, load_vectors, regenerate, write_vectors

P = shamir.PRIME
FAST = settings(max_examples=60, deadline=None)


def stream(seed: bytes, context: bytes = b"tests/crypto/test_shamir") -> prg.Keystream:
    return prg.Keystream(seed, label=labels.TEST_VECTOR, context=context)


def naive_interpolate(points: list[tuple[int, int]], at: int) -> int:
    """Textbook Lagrange interpolation, one inversion per term (independent of the module)."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num = den = 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (at - xj) % P
                den = den * (xi - xj) % P
        total += yi * num * pow(den, -1, P)
    return total % P


def reference_split(secret: bytes, threshold: int, indices: list[int],
                    rng: prg.Keystream) -> list[bytes]:
    """The documented construction written out naively: coefficients chunk by chunk, degree 1
    to t-1, via rng.below(PRIME); f(x) = sum a_k x^k; the version-1 byte layout."""
    polys = []
    for start in range(0, len(secret), 32):
        chunk = int.from_bytes(secret[start : start + 32], "big")
        polys.append([chunk] + [rng.below(P) for _ in range(threshold - 1)])
    out = []
    for x in indices:
        values = [sum(a * pow(x, k, P) for k, a in enumerate(poly)) % P for poly in polys]
        header = bytes([1]) + x.to_bytes(2, "big") + threshold.to_bytes(2, "big")
        header += len(secret).to_bytes(4, "big")
        out.append(header + b"".join(v.to_bytes(33, "big") for v in values))
    return out


# ------------------------------------------------------------------------------------ the field


def miller_rabin(n: int, bases: list[int]) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def small_primes(count: int) -> list[int]:
    found: list[int] = []
    n = 2
    while len(found) < count:
        if all(n % p for p in found):
            found.append(n)
        n += 1
    return found


def test_prime_is_probable_prime_above_2_256() -> None:
    bases = [*small_primes(64), 2**64 + 13, 3**100 % P, 0xDEADBEEF12345]
    assert P > 2**256
    assert P.bit_length() == 257
    assert miller_rabin(P, bases)
    # the test itself can fail: Fermat number 2^256+1 passes base 2 but not all bases
    assert miller_rabin(2**256 + 1, [2])
    assert not miller_rabin(2**256 + 1, bases)


def test_prime_is_the_smallest_above_2_256() -> None:
    for m in range(2**256 + 1, P):
        assert m % 2 == 0 or pow(3, m - 1, m) != 1, f"{m - 2**256} is not proven composite"


def test_prime_pocklington_certificate() -> None:
    """Deterministic proof: Pocklington's criterion twice, then deterministic Miller-Rabin
    (first 13 prime bases suffice below 3.3e24, Sorenson-Webster 2015)."""
    q2 = 2956539135407950972181
    assert q2 < 3317044064679887385961981
    assert miller_rabin(q2, small_primes(13))
    q1 = 474233203066845416735444346211990045207
    for n, q in ((q1, q2), (P, q1)):
        assert (n - 1) % q == 0
        assert q > math.isqrt(n)
        witness = next(
            a for a in range(2, 100)
            if pow(a, n - 1, n) == 1 and math.gcd(pow(a, (n - 1) // q, n) - 1, n) == 1
        )
        assert witness >= 2


# --------------------------------------------------------------------------- known answers

VECTOR_CASES: list[tuple[bytes, int, list[int], bytes, bytes]] = [
    (bytes(range(32)), 2, [1, 2, 3], bytes([1]) * 32, b"shamir/kat/1"),
    (bytes(range(100, 145)), 3, [5, 1, 9, 200], bytes([2]) * 32, b"shamir/kat/2"),
    (bytes(range(255, 191, -1)), 4, [1, 2, 3, 4, 5, 65535], bytes([3]) * 32, b"shamir/kat/3"),
    (bytes(100), 5, [7, 3, 11, 13, 2, 60000, 17], bytes(range(32)), b"shamir/kat/4"),
]


def make_vector(secret: bytes, threshold: int, indices: list[int], seed: bytes,
                context: bytes) -> dict[str, Any]:
    shares = shamir.split(secret, threshold=threshold, indices=indices,
                          rng=stream(seed, context))
    return {
        "secret": secret.hex(), "threshold": threshold, "indices": indices,
        "seed": seed.hex(), "label": labels.TEST_VECTOR.name, "context": context.hex(),
        "shares": [s.to_bytes().hex() for s in shares],
        "reconstructed": shamir.reconstruct(shares[:threshold]).hex(),
    }


def test_regenerate_vectors() -> None:
    if not regenerate():
        pytest.skip("set SECUREAGG_REGENERATE_VECTORS=1 to rewrite shamir.json")
    write_vectors(
        "crypto", "shamir",
        description="Shamir t-of-n over GF(2^256+297); coefficients from prg.Keystream"
        "(seed, label, context).below(PRIME), chunk by chunk, degree 1..t-1",
        generated_by="tests/crypto/test_shamir.py::test_regenerate_vectors",
        vectors=[make_vector(*case) for case in VECTOR_CASES],
    )


VECTORS = [] if regenerate() else load_vectors("crypto", "shamir")


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"t{v['threshold']}")
def test_known_answer_vectors(vector: dict[str, Any]) -> None:
    secret, threshold, indices = h(vector["secret"]), vector["threshold"], vector["indices"]
    expected = [h(s) for s in vector["shares"]]
    rng = prg.Keystream(h(vector["seed"]), label=labels.lookup(vector["label"]),
                        context=h(vector["context"]))
    shares = shamir.split(secret, threshold=threshold, indices=indices, rng=rng)
    assert [s.to_bytes() for s in shares] == expected
    rng = prg.Keystream(h(vector["seed"]), label=labels.lookup(vector["label"]),
                        context=h(vector["context"]))
    assert reference_split(secret, threshold, indices, rng) == expected
    assert h(vector["reconstructed"]) == secret
    assert shamir.reconstruct(expected) == secret
    assert shamir.reconstruct(expected[-threshold:]) == secret
    with pytest.raises(InvalidShareError):
        shamir.reconstruct(expected[: threshold - 1])


def test_vectors_cover_the_edges() -> None:
    if regenerate():
        pytest.skip("vectors are being rewritten")
    lengths = {len(h(v["secret"])) for v in VECTORS}
    assert any(n % 32 for n in lengths)
    assert any(n % 32 == 0 for n in lengths)
    assert any(65535 in v["indices"] for v in VECTORS)
    assert any(len(v["indices"]) > v["threshold"] for v in VECTORS)


# --------------------------------------------------------------------------------- properties


@st.composite
def sharings(draw: st.DrawFn, min_extra: int = 0) -> tuple[bytes, int, list[int], list[Any]]:
    secret = draw(st.binary(min_size=32, max_size=100))
    threshold = draw(st.integers(2, 6))
    n = threshold + draw(st.integers(min_extra, 3))
    indices = draw(st.lists(st.integers(1, 65535), min_size=n, max_size=n, unique=True))
    seed = draw(st.binary(min_size=32, max_size=32))
    shares = shamir.split(secret, threshold=threshold, indices=indices, rng=stream(seed))
    return secret, threshold, indices, shares


@FAST
@given(sharings(), st.data())
def test_any_t_shares_reconstruct(case: Any, data: st.DataObject) -> None:
    secret, threshold, indices, shares = case
    assert [s.index for s in shares] == indices
    chosen = data.draw(st.permutations(shares))[:threshold]
    as_bytes = data.draw(st.lists(st.booleans(), min_size=threshold, max_size=threshold))
    mixed = [s.to_bytes() if b else s for s, b in zip(chosen, as_bytes, strict=True)]
    assert shamir.reconstruct(mixed) == secret
    assert shamir.reconstruct(shares) == secret  # all n: the extras verify, no false alarm
    for c in range(len(shares[0].values)):  # the shares lie on one polynomial per chunk
        points = [(s.index, s.values[c]) for s in chosen]
        chunk = int.from_bytes(secret[32 * c : 32 * c + 32], "big")
        assert naive_interpolate(points, 0) == chunk
        assert all(naive_interpolate(points, s.index) == s.values[c] for s in shares)


@FAST
@given(sharings(), st.data())
def test_t_minus_one_shares_are_refused(case: Any, data: st.DataObject) -> None:
    _, threshold, _, shares = case
    chosen = data.draw(st.permutations(shares))[: threshold - 1]
    with pytest.raises(InvalidShareError, match="at least the threshold"):
        shamir.reconstruct(chosen)


@FAST
@given(sharings(), st.binary(min_size=100, max_size=100))
def test_t_minus_one_shares_fit_every_secret(case: Any, other: bytes) -> None:
    """Information-theoretic privacy: t-1 shares of one secret are completed, by one more
    point, into a valid sharing of any other secret of that length (a unique polynomial)."""
    secret, threshold, indices, shares = case
    other = other[: len(secret)]
    seen = shares[: threshold - 1]
    fresh = next(x for x in range(1, 65536) if x not in indices)
    values = []
    for c in range(len(seen[0].values)):
        target = int.from_bytes(other[32 * c : 32 * c + 32], "big")
        points = [(0, target)] + [(s.index, s.values[c]) for s in seen]
        values.append(naive_interpolate(points, fresh))
    completion = shamir.Share(fresh, threshold, len(secret), tuple(values))
    assert shamir.reconstruct([*seen, completion]) == other
    assert shamir.reconstruct([*seen, shares[threshold - 1]]) == secret


@FAST
@given(sharings())
def test_serialization_round_trip(case: Any) -> None:
    secret, threshold, _, shares = case
    for share in shares:
        raw = share.to_bytes()
        assert len(raw) == 9 + 33 * math.ceil(len(secret) / 32)
        assert raw[0] == 1
        assert int.from_bytes(raw[1:3], "big") == share.index
        assert int.from_bytes(raw[3:5], "big") == threshold
        assert int.from_bytes(raw[5:9], "big") == len(secret)
        assert shamir.Share.from_bytes(raw) == share
        assert shamir.Share.from_bytes(bytearray(raw)) == share
        assert shamir.Share.from_bytes(memoryview(raw)) == share


def test_os_randomness_by_default() -> None:
    secret = bytes(range(40))
    a = shamir.split(secret, threshold=3, indices=[1, 2, 3, 4])
    b = shamir.split(secret, threshold=3, indices=[1, 2, 3, 4])
    assert a != b  # fresh coefficients each time
    assert shamir.reconstruct(a[1:]) == shamir.reconstruct(b[:3]) == secret
    seeded = [shamir.split(secret, threshold=3, indices=[1, 2, 3, 4], rng=stream(bytes(32)))
              for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_threshold_equal_to_n_and_large_sharing() -> None:
    secret = bytes(range(64))
    shares = shamir.split(secret, threshold=5, indices=[65535, 1, 300, 7, 42])
    assert shamir.reconstruct(shares) == secret
    big = shamir.split(secret, threshold=51, indices=range(1, 101), rng=stream(bytes(32)))
    assert shamir.reconstruct(big[49:]) == secret
    assert shamir.reconstruct(big) == secret


def test_lagrange_coefficients_are_cached_and_correct() -> None:
    shares = shamir.split(bytes(32), threshold=3, indices=[4, 8, 15, 16], rng=stream(bytes(32)))
    shamir.lagrange_coefficients.cache_clear()
    shamir.reconstruct(shares[:3])
    first = shamir.lagrange_coefficients.cache_info()
    shamir.reconstruct(list(reversed(shares[:3])))
    second = shamir.lagrange_coefficients.cache_info()
    assert (first.misses, second.misses, second.hits - first.hits) == (1, 1, 1)
    shamir._barycentric_weights.cache_clear()
    shamir.reconstruct(shares)  # one extra share: checked by the syndrome over all 4 indices
    assert shamir.lagrange_coefficients.cache_info().misses == 1  # the base set, toward 0
    assert shamir._barycentric_weights.cache_info().currsize == 1  # all 4 (base was cached)
    indices = (4, 8, 15)
    poly = [11, 2**255 + 3, 7]
    f = [sum(a * x**k for k, a in enumerate(poly)) % P for x in (*indices, 0, 16)]
    for at, want in ((0, f[3]), (16, f[4]), (8, f[1])):
        coeffs = shamir.lagrange_coefficients(indices, at)
        assert sum(c * y for c, y in zip(coeffs, f[:3], strict=True)) % P == want
    assert shamir.lagrange_coefficients(indices, 15) == (0, 0, 1)


# ---------------------------------------------------------------------------------- tampering


@FAST
@given(sharings(min_extra=1), st.data())
def test_tampered_share_detected_with_more_than_t(case: Any, data: st.DataObject) -> None:
    _, threshold, _, shares = case
    chosen = data.draw(st.permutations(shares))[: threshold + 1]
    assert len(chosen) == threshold + 1
    victim = data.draw(st.integers(0, threshold))
    chunk = data.draw(st.integers(0, len(chosen[victim].values) - 1))
    delta = data.draw(st.integers(1, P - 1))
    values = list(chosen[victim].values)
    values[chunk] = (values[chunk] + delta) % P
    chosen[victim] = dataclasses.replace(chosen[victim], values=tuple(values))
    with pytest.raises(TamperedShareError):
        shamir.reconstruct(chosen)
    with pytest.raises(TamperedShareError):
        shamir.reconstruct([s.to_bytes() for s in chosen])


def test_tampered_index_detected_with_more_than_t() -> None:
    shares = shamir.split(bytes(range(32)), threshold=2, indices=[1, 2, 3], rng=stream(bytes(32)))
    moved = dataclasses.replace(shares[1], index=4)
    with pytest.raises(TamperedShareError):
        shamir.reconstruct([shares[0], moved, shares[2]])


def test_exactly_t_shares_cannot_detect_a_targeted_shift() -> None:
    """Pinned behaviour: with exactly t shares, adding l_k(0)^-1 to share k's first value makes
    the secret's first chunk one larger, silently (the AEAD must catch tampering, not Shamir)."""
    secret = bytes(range(64))
    shares = shamir.split(secret, threshold=3, indices=[2, 5, 9, 11], rng=stream(bytes(32)))
    chosen = shares[:3]
    coeff = shamir.lagrange_coefficients((2, 5, 9), 0)[1]
    values = list(chosen[1].values)
    values[0] = (values[0] + pow(coeff, -1, P)) % P
    chosen[1] = dataclasses.replace(chosen[1], values=tuple(values))
    wrong = shamir.reconstruct(chosen)
    shifted = (int.from_bytes(secret[:32], "big") + 1).to_bytes(32, "big") + secret[32:]
    assert wrong == shifted != secret
    with pytest.raises(TamperedShareError):  # one more genuine share exposes it
        shamir.reconstruct([*chosen, shares[3]])


def test_exactly_t_shares_overflowing_chunk_is_detected() -> None:
    secret = bytes(range(33))  # final chunk of 1 byte
    shares = shamir.split(secret, threshold=2, indices=[1, 2], rng=stream(bytes(32)))
    delta = 2**200 + 12345
    coeff = shamir.lagrange_coefficients((1, 2), 0)[0]
    assert (secret[32] + coeff * delta) % P >= 256  # precondition: the result cannot fit
    values = (shares[0].values[0], (shares[0].values[1] + delta) % P)
    with pytest.raises(TamperedShareError):
        shamir.reconstruct([dataclasses.replace(shares[0], values=values), shares[1]])


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("secret", "threshold", "indices", "match"),
    [
        (bytes(31), 2, [1, 2], "at least 32 bytes"),
        (b"", 2, [1, 2], "at least 32 bytes"),
        ("x" * 32, 2, [1, 2], "must be bytes"),
        (list(range(32)), 2, [1, 2], "must be bytes"),
        (bytes(32), 1, [1, 2], "threshold must be"),
        (bytes(32), 0, [1, 2], "threshold must be"),
        (bytes(32), True, [1, 2], "threshold must be"),
        (bytes(32), 2.0, [1, 2], "threshold must be"),
        (bytes(32), 3, [1, 2], "exceeds"),
        (bytes(32), 2, [1, 1, 2], "distinct"),
        (bytes(32), 2, [0, 1, 2], "1..65535"),
        (bytes(32), 2, [1, 65536], "1..65535"),
        (bytes(32), 2, [-1, 2], "1..65535"),
        (bytes(32), 2, [1, 2.0], "1..65535"),
        (bytes(32), 2, [1, "2"], "1..65535"),
        (bytes(32), 2, [True, 2], "1..65535"),
    ],
)
def test_split_rejects(secret: Any, threshold: Any, indices: Any, match: str) -> None:
    with pytest.raises(InvalidShareError, match=match):
        shamir.split(secret, threshold=threshold, indices=indices)


def test_reconstruct_rejects() -> None:
    a = shamir.split(bytes(32), threshold=2, indices=[1, 2, 3], rng=stream(bytes(32)))
    b = shamir.split(bytes(32), threshold=3, indices=[1, 2, 3], rng=stream(bytes(32)))
    c = shamir.split(bytes(40), threshold=2, indices=[1, 2, 3], rng=stream(bytes(32)))
    with pytest.raises(InvalidShareError, match="no shares"):
        shamir.reconstruct([])
    with pytest.raises(InvalidShareError, match="at least the threshold, 2"):
        shamir.reconstruct([a[0]])
    with pytest.raises(InvalidShareError, match="duplicate"):
        shamir.reconstruct([a[0], a[0], a[1]])
    with pytest.raises(InvalidShareError, match="disagree"):
        shamir.reconstruct([a[0], b[1], b[2]])
    with pytest.raises(InvalidShareError, match="disagree"):
        shamir.reconstruct([a[0], c[1]])
    with pytest.raises(InvalidShareError, match="a share is bytes"):
        shamir.reconstruct([a[0], "not a share"])  # type: ignore[list-item]
    with pytest.raises(InvalidShareError, match="version-1"):
        shamir.reconstruct([a[0], b"garbage"])


def _raw(index: int = 1, threshold: int = 2, length: int = 32,
         values: tuple[int, ...] = (5,), version: int = 1) -> bytes:
    header = bytes([version]) + index.to_bytes(2, "big") + threshold.to_bytes(2, "big")
    return header + length.to_bytes(4, "big") + b"".join(v.to_bytes(33, "big") for v in values)


def test_raw_layout_matches_to_bytes() -> None:
    share = shamir.Share(index=1, threshold=2, secret_length=32, values=(5,))
    assert share.to_bytes() == _raw()
    assert shamir.Share.from_bytes(_raw()) == share


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_raw()[:-1], "truncated"),
        (_raw()[:9], "truncated"),
        (_raw()[:8], "version-1"),
        (b"", "version-1"),
        (_raw() + b"\x00", "truncated or extended"),
        (_raw(values=(5, 6)), "truncated or extended"),
        (_raw(version=0), "version-1"),
        (_raw(version=2), "version-1"),
        (_raw(values=(P,)), r"\[0, PRIME\)"),
        (_raw(values=(2**264 - 1,)), r"\[0, PRIME\)"),
        (_raw(index=0), "1..65535"),
        (_raw(threshold=1), "threshold"),
        (_raw(threshold=0), "threshold"),
        (_raw(length=31), "secret_length"),
        (_raw(length=0, values=()), "secret_length"),
        ("01" * 42, "a share is bytes"),
    ],
)
def test_from_bytes_rejects(data: Any, match: str) -> None:
    with pytest.raises(InvalidShareError, match=match):
        shamir.Share.from_bytes(data)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"index": 0}, "1..65535"),
        ({"index": 65536}, "1..65535"),
        ({"index": True}, "1..65535"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": 65536}, "threshold"),
        ({"secret_length": 31}, "secret_length"),
        ({"secret_length": 2**32}, "secret_length"),
        ({"values": (1, 2)}, "holds 1 values"),
        ({"values": ()}, "holds 1 values"),
        ({"values": (P,)}, "PRIME"),
        ({"values": (-1,)}, "PRIME"),
        ({"values": (1.0,)}, "PRIME"),
        ({"values": 7}, "tuple of ints"),
    ],
)
def test_share_rejects(fields: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"index": 1, "threshold": 2, "secret_length": 32, "values": (0,)}
    with pytest.raises(InvalidShareError, match=match):
        shamir.Share(**(base | fields))


def test_share_is_frozen_and_values_are_a_tuple() -> None:
    share = shamir.Share(index=3, threshold=2, secret_length=33, values=[1, 2])  # type: ignore[arg-type]
    assert share.values == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        share.index = 4  # type: ignore[misc]
    assert hash(share) == hash(shamir.Share(3, 2, 33, (1, 2)))


@pytest.mark.parametrize(
    ("indices", "at", "match"),
    [
        ((), 0, "non-empty"),
        ((1, 1), 0, "distinct"),
        ((1, P), 0, r"\[0, PRIME\)"),
        ((1, -2), 0, r"\[0, PRIME\)"),
        ((1, 2), P, "at must be"),
        ((1, 2), -1, "at must be"),
    ],
)
def test_lagrange_coefficients_rejects(indices: Any, at: int, match: str) -> None:
    with pytest.raises(InvalidShareError, match=match):
        shamir.lagrange_coefficients(indices, at)


def test_lagrange_coefficients_needs_a_hashable_tuple() -> None:
    with pytest.raises(TypeError, match="unhashable"):
        shamir.lagrange_coefficients([1, 2], 0)  # type: ignore[arg-type]


# ------------------------------------------------- share_values / reconstruct_points (issue 15)


def _points(shares: list[shamir.Share]) -> tuple[list[int], list[tuple[int, ...]]]:
    indices = [s.index for s in shares]
    values = [
        shamir.share_values(
            s.to_bytes(), index=s.index, threshold=s.threshold, secret_length=s.secret_length
        )
        for s in shares
    ]
    return indices, values


@FAST
@given(
    threshold=st.integers(2, 12),
    extra=st.integers(0, 20),
    length=st.sampled_from([32, 33, 64, 95]),
    top=st.sampled_from([40, 1000, shamir.MAX_INDEX]),
    data=st.data(),
    random_check=st.booleans(),
)
def test_reconstruct_points_agrees_with_reconstruct(threshold, extra, length, top, data,
                                                    random_check) -> None:
    # the random-combination check (one RandomCheck shared by every call, as a server's round
    # uses it) gives the same results and catches the same alterations
    check = shamir.RandomCheck() if random_check else None
    indices = data.draw(
        st.lists(
            st.integers(1, top), min_size=threshold + extra, max_size=threshold + extra, unique=True
        ).filter(lambda xs: len(xs) >= threshold)
    )
    secret = data.draw(st.binary(min_size=length, max_size=length))
    shares = shamir.split(secret, threshold=threshold, indices=indices, rng=stream(secret[:32]))
    xs, values = _points(shares)
    assert shamir.reconstruct_points(
        xs, values, threshold=threshold, secret_length=length, check=check
    ) == secret == shamir.reconstruct(shares)
    # any order, exactly t of them
    order = data.draw(st.permutations(range(len(xs))))[:threshold]
    assert shamir.reconstruct_points(
        [xs[i] for i in order], [values[i] for i in order], threshold=threshold,
        secret_length=length, check=check,
    ) == secret
    if extra:  # one altered value among more than t points is always caught
        i = data.draw(st.integers(0, len(xs) - 1))
        chunk = data.draw(st.integers(0, len(values[i]) - 1))
        delta = data.draw(st.integers(1, P - 1))
        bad = list(values)
        row = list(bad[i])
        row[chunk] = (row[chunk] + delta) % P
        bad[i] = tuple(row)
        with pytest.raises(TamperedShareError):
            shamir.reconstruct_points(xs, bad, threshold=threshold, secret_length=length,
                                      check=check)


@pytest.mark.parametrize("check", [None, "random"])
def test_reconstruct_points_catches_a_moved_index(check) -> None:
    shares = shamir.split(bytes(range(32)), threshold=3, indices=[1, 2, 3, 4, 5])
    _, values = _points(shares)
    with pytest.raises(TamperedShareError):
        shamir.reconstruct_points([1, 2, 3, 4, 6], values, threshold=3, secret_length=32,
                                  check=shamir.RandomCheck() if check else None)


def test_reconstruct_points_from_one_index_set_many_times() -> None:
    """A complete-graph server reconstructs every secret from the same responders: the cached
    coefficients of that index set serve every secret, and an altered share among them is still
    caught after a cache hit."""
    xs = list(range(3, 40, 2))
    check = shamir.RandomCheck()
    for k in range(4):
        secret = bytes([k]) * 32
        _, values = _points(shamir.split(secret, threshold=7, indices=xs))
        for c in (None, check):
            assert shamir.reconstruct_points(xs, values, threshold=7, secret_length=32,
                                             check=c) == secret
    values = [list(v) for v in values]
    values[-1][0] = (values[-1][0] + 1) % P
    for c in (None, check):
        with pytest.raises(TamperedShareError):
            shamir.reconstruct_points(xs, values, threshold=7, secret_length=32, check=c)


def test_random_check_is_the_random_combination_of_the_syndromes() -> None:
    """R_e(x) = sum_{j<e} rho_j x^j, from fresh CSPRNG coefficients, extended as e grows; a
    points set whose only nonzero syndrome is the highest one is caught (the deterministic check
    tests every syndrome; the combination must not drop any)."""
    check = shamir.RandomCheck()
    r1, r3 = check.at(7, 1), check.at(7, 3)
    rho = check._rho
    assert len(rho) == 3 and r1 == rho[0] % P
    assert r3 == (rho[0] + rho[1] * 7 + rho[2] * 49) % P
    assert check.at(7, 2) == (rho[0] + rho[1] * 7) % P
    assert shamir.RandomCheck().at(7, 3) != r3  # fresh coefficients per check (p = 2^-256)
    # 5 points of f(x) = x^2 against threshold 2: of the interpolant's coefficients of degrees
    # 4, 3, 2 (syndromes S_0, S_1, S_2) only the last one tested, S_2, is nonzero
    xs = [1, 2, 3, 4, 5]
    values = [(x * x,) for x in xs]
    for c in (None, shamir.RandomCheck()):
        with pytest.raises(TamperedShareError):
            shamir.reconstruct_points(xs, values, threshold=2, secret_length=32, check=c)
    # with threshold 3 the same points are a valid sharing of f(0) = 0
    assert shamir.reconstruct_points(xs, values, threshold=3, secret_length=32,
                                     check=shamir.RandomCheck()) == bytes(32)


@pytest.mark.parametrize(
    ("indices", "values", "kw", "match"),
    [
        ([1, 2], [(1,), (2,)], {"threshold": 3}, "at least the threshold"),
        ([1, 1, 2], [(1,), (2,), (3,)], {}, "duplicate"),
        ([0, 1, 2], [(1,), (2,), (3,)], {}, "indices must be ints"),
        ([1, 2, True], [(1,), (2,), (3,)], {}, "indices must be ints"),
        ([1, 2, 3], [(1,), (2,)], {}, "values for each"),
        ([1, 2, 3], [(1,), (2,), (3, 4)], {}, "values for each"),
        ([1, 2, 3], [(1,), (2,), (P,)], {}, r"\[0, PRIME\)"),
        ([1, 2, 3], [(1,), (2,), (-1,)], {}, r"\[0, PRIME\)"),
        ([1, 2, 3], [(1,), (2,), (3,)], {"threshold": 1}, "threshold"),
        ([1, 2, 3], [(1,), (2,), (3,)], {"secret_length": 31}, "secret_length"),
    ],
)
def test_reconstruct_points_rejects(indices, values, kw, match) -> None:
    args = {"threshold": 2, "secret_length": 32} | kw
    with pytest.raises(InvalidShareError, match=match):
        shamir.reconstruct_points(indices, values, **args)


def test_share_values_is_as_strict_as_from_bytes_plus_the_header() -> None:
    share = shamir.split(bytes(range(40)), threshold=2, indices=[7, 8])[0]
    raw = share.to_bytes()
    assert shamir.share_values(raw, index=7, threshold=2, secret_length=40) == share.values
    for kw in ({"index": 8}, {"threshold": 3}, {"secret_length": 41}):
        with pytest.raises(InvalidShareError):
            shamir.share_values(raw, **({"index": 7, "threshold": 2, "secret_length": 40} | kw))
    for bad in (raw[:-1], raw + b"\x00", b"\x02" + raw[1:], raw[:9] + b"\xff" * 33 + raw[42:]):
        with pytest.raises(InvalidShareError):
            shamir.share_values(bad, index=7, threshold=2, secret_length=40)
    with pytest.raises(InvalidShareError):
        shamir.share_values(bytearray(raw), index=7, threshold=2, secret_length=40)  # type: ignore[arg-type]
    with pytest.raises(InvalidShareError):
        shamir.share_values(raw, index=0, threshold=2, secret_length=40)


@pytest.mark.parametrize("length", [32, 40])
def test_share_values_many_is_share_values_of_each_or_an_error(length: int) -> None:
    """A SecAgg server parses a responder's shares at once: the values of every share, or the
    same error as share_values for the first bad one, wherever it sits in the batch."""
    shares = [shamir.split(bytes([i]) * length, threshold=2, indices=[5, 6])[0].to_bytes()
              for i in range(4)]
    kw = {"index": 5, "threshold": 2, "secret_length": length}
    assert shamir.share_values_many(shares, **kw) == [
        shamir.share_values(raw, **kw) for raw in shares]
    assert shamir.share_values_many([], **kw) == []
    top = shares[0][:9] + (shamir.PRIME).to_bytes(33, "big") + shares[0][42:]  # value = PRIME
    for bad in (shares[1][:-1], b"\x02" + shares[1][1:], top,
                shamir.split(bytes(length), threshold=2, indices=[5, 6])[1].to_bytes()):
        for at in (0, 2, 4):
            batch = [*shares[:at], bad, *shares[at:]]
            with pytest.raises(InvalidShareError):
                shamir.share_values_many(batch, **kw)
    with pytest.raises(InvalidShareError, match="a share is bytes, got bytearray"):
        shamir.share_values_many([*shares, bytearray(shares[0])], **kw)  # type: ignore[list-item]
