"""Shamir t-of-n secret sharing of byte strings over the prime field GF(2^256 + 297).

The secret (at least 32 bytes) is cut into 32-byte big-endian chunks; each chunk, an element below
``2^256 < PRIME``, gets its own random polynomial of degree ``t - 1``, all evaluated at the same
``x``: the recipient's index, 1..65535 (``x = 0`` is the secret, never a share). Coefficients are
drawn chunk by chunk, degree 1 to ``t - 1``, uniform below ``PRIME``: from the OS CSPRNG, or from
a :class:`~secureagg.crypto.prg.Keystream` (``rng.below``) only for reproducible tests and vectors.

Threat model:

* **Privacy.** Any ``t - 1`` shares reveal nothing about the secret, information-theoretically:
  for every candidate secret exactly one polynomial passes through it and those shares, so they
  are uniform whatever the secret. Only ``secret_length`` is public.
* **Integrity with more than t shares.** :func:`reconstruct` interpolates the first ``t`` shares
  (by index) and checks that every other share lies on that polynomial, else it raises the opaque
  :class:`~secureagg.errors.TamperedShareError`. This catches any altered value or index whenever
  at least ``t`` given shares are genuine; it does not say which share is bad.
* **Integrity with exactly t shares: none.** ``t`` points always fit a polynomial, so an altered
  share yields a wrong secret; knowing the indices, an attacker can shift the secret by any chosen
  amount undetected. A random alteration is only noticed when an interpolated chunk overflows its
  byte length (almost surely for a final chunk shorter than 32 bytes). Shares must therefore
  travel inside an AEAD (:mod:`secureagg.crypto.aead`), which rejects tampering.

Lagrange coefficients are cached per (indices, x) by :func:`lagrange_coefficients`, so repeated
reconstructions from the same parties cost one dot product per chunk.

For many reconstructions from different index sets (a SecAgg server: one per client, each from
its own surviving neighbours), :func:`share_values` parses a share whose header is known in
advance with one comparison, and :func:`reconstruct_points` interpolates all ``m`` points at once:
one set of barycentric weights serves both the consistency check of the ``m - t`` extra shares and
the value at 0, with one modular inversion per call. Same checks, same result as
:func:`reconstruct`.

>>> shares = split(bytes(range(32)), threshold=2, indices=[1, 2, 3])
>>> reconstruct([shares[2].to_bytes(), shares[0]]) == bytes(range(32))
True
"""

from __future__ import annotations

import functools
import math
import operator
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from secureagg.crypto import prg
from secureagg.errors import InvalidShareError, TamperedShareError

__all__ = ["CHUNK_BYTES", "MAX_INDEX", "MIN_SECRET_BYTES", "PRIME", "VERSION", "RandomCheck",
           "Share", "lagrange_coefficients", "reconstruct", "reconstruct_points", "share_values",
           "share_values_many", "split"]

PRIME = 2**256 + 297  # smallest prime above 2^256 (Pocklington certificate in the tests)
CHUNK_BYTES = 32
MIN_SECRET_BYTES = 32
MAX_INDEX = 0xFFFF
VERSION = 1
_VALUE_BYTES = 33
_HEADER = struct.Struct(">BHHI")  # version, index, threshold, secret_length
_MAX_SECRET_BYTES = 0xFFFFFFFF
_BLOCK = 32  # Horner steps between modular reductions


def _chunk_count(secret_length: int) -> int:
    return -(-secret_length // CHUNK_BYTES)


@dataclass(frozen=True)
class Share:
    """One party's share: its ``index`` (the x coordinate) and one field element per chunk.

    ``to_bytes`` layout (version 1, big-endian): version u8, index u16, threshold u16,
    secret_length u32, then each value in 33 bytes. Construction validates every field.
    """

    index: int
    threshold: int
    secret_length: int
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        index, threshold, length = self.index, self.threshold, self.secret_length
        if type(index) is not int or not 1 <= index <= MAX_INDEX:
            raise InvalidShareError(f"share index must be an int in 1..{MAX_INDEX} (0 is the "
                                    f"secret itself), got {index!r}")
        if type(threshold) is not int or not 2 <= threshold <= MAX_INDEX:
            raise InvalidShareError(f"threshold must be an int in 2..{MAX_INDEX}, "
                                    f"got {threshold!r}")
        if type(length) is not int or not MIN_SECRET_BYTES <= length <= _MAX_SECRET_BYTES:
            raise InvalidShareError(f"secret_length must be an int in {MIN_SECRET_BYTES}..2^32-1,"
                                    f" got {length!r}")
        if not isinstance(self.values, tuple | list):
            raise InvalidShareError("share values must be a tuple of ints")
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        if len(values) != _chunk_count(length):
            raise InvalidShareError(f"a share of a {length}-byte secret holds "
                                    f"{_chunk_count(length)} values, got {len(values)}")
        if not all(type(v) is int and 0 <= v < PRIME for v in values):
            raise InvalidShareError("share values must be ints in [0, PRIME)")

    def to_bytes(self) -> bytes:
        """The versioned fixed-layout encoding (9 + 33 * chunks bytes)."""
        header = _HEADER.pack(VERSION, self.index, self.threshold, self.secret_length)
        return header + b"".join(v.to_bytes(_VALUE_BYTES, "big") for v in self.values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse :meth:`to_bytes` output strictly; anything else raises InvalidShareError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidShareError(f"a share is bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size or raw[0] != VERSION:
            raise InvalidShareError(f"not a version-{VERSION} share (a {_HEADER.size}-byte "
                                    f"header starting with byte {VERSION})")
        _, index, threshold, length = _HEADER.unpack_from(raw)
        expected = _HEADER.size + _VALUE_BYTES * _chunk_count(length)
        if len(raw) != expected:
            raise InvalidShareError(f"a share of a {length}-byte secret is {expected} bytes, "
                                    f"got {len(raw)} (truncated or extended)")
        values = tuple(int.from_bytes(raw[i : i + _VALUE_BYTES], "big")
                       for i in range(_HEADER.size, expected, _VALUE_BYTES))
        return cls(index=index, threshold=threshold, secret_length=length, values=values)


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses mod PRIME of nonzero ``values`` with one modular inversion (Montgomery's trick)."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % PRIME
    inv, out = pow(acc, -1, PRIME), [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i], inv = inv * prefix[i] % PRIME, inv * values[i] % PRIME
    return out


@functools.lru_cache(maxsize=512)
def _barycentric_weights(indices: tuple[int, ...]) -> tuple[int, ...]:
    """``w_i = 1 / prod_{j != i} (x_i - x_j)``; products of small ints, one batched inversion."""
    return tuple(_batch_inverse([
        math.prod(xi - xj for xj in indices if xj != xi) % PRIME for xi in indices
    ]))


@functools.lru_cache(maxsize=1024)
def lagrange_coefficients(indices: tuple[int, ...], at: int = 0) -> tuple[int, ...]:
    """Coefficients ``l_i`` with ``f(at) = sum(l_i * f(indices[i])) mod PRIME`` for deg f < len.

    ``indices`` are distinct ints in ``[0, PRIME)`` (share indices in practice) and ``at`` an
    int in ``[0, PRIME)``. Cached (LRU, 1024 entries, about 1 MiB at t = 20); barycentric
    weights are cached per ``indices``, so a new ``at`` for known indices costs O(len(indices)).
    """
    if not isinstance(indices, tuple) or not all(type(x) is int and 0 <= x < PRIME
                                                  for x in indices) or not indices:
        raise InvalidShareError("indices must be a non-empty tuple of ints in [0, PRIME)")
    if len(set(indices)) != len(indices):
        raise InvalidShareError(f"indices must be distinct, got {sorted(indices)}")
    if type(at) is not int or not 0 <= at < PRIME:
        raise InvalidShareError(f"at must be an int in [0, PRIME), got {at!r}")
    if at in indices:
        return tuple(int(x == at) for x in indices)
    diffs = [at - x for x in indices]  # l_i(at) = prod_j (at - x_j) * w_i / (at - x_i)
    numerator, weights = math.prod(diffs) % PRIME, _barycentric_weights(indices)
    return tuple(numerator * w * d % PRIME
                 for w, d in zip(weights, _batch_inverse(diffs), strict=True))


def _check_split_args(secret: bytes, threshold: int, indices: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(secret, bytes | bytearray):
        raise InvalidShareError(f"the secret must be bytes, got {type(secret).__name__}")
    if not MIN_SECRET_BYTES <= len(secret) <= _MAX_SECRET_BYTES:
        raise InvalidShareError(f"the secret must be at least {MIN_SECRET_BYTES} bytes, got "
                                f"{len(secret)}; pad or derive a longer secret")
    xs = tuple(indices)
    if not all(type(x) is int and 1 <= x <= MAX_INDEX for x in xs):
        raise InvalidShareError(f"indices must be ints in 1..{MAX_INDEX} (0 is the secret), "
                                f"got {list(xs)}")
    if len(set(xs)) != len(xs):
        raise InvalidShareError(f"indices must be distinct, got duplicates in {list(xs)}")
    if type(threshold) is not int or threshold < 2:
        raise InvalidShareError(f"threshold must be an int >= 2, got {threshold!r}")
    if threshold > len(xs):
        raise InvalidShareError(f"threshold {threshold} exceeds the {len(xs)} indices; lower "
                                "the threshold or add recipients")
    return xs


def split(secret: bytes, *, threshold: int, indices: Sequence[int],
          rng: prg.Keystream | None = None) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the returned shares (one per index, in the
    order of ``indices``) reconstruct it and fewer reveal nothing. ``rng`` only for tests."""
    xs = _check_split_args(secret, threshold, indices)
    draw, length, polys = secrets.randbelow if rng is None else rng.below, len(secret), []
    for start in range(0, length, CHUNK_BYTES):
        coeffs = [int.from_bytes(secret[start : start + CHUNK_BYTES], "big")]
        coeffs.extend(draw(PRIME) for _ in range(threshold - 1))
        coeffs.reverse()  # Horner order: highest degree first
        polys.append([coeffs[i : i + _BLOCK] for i in range(0, threshold, _BLOCK)])
    rows = []
    for x in xs:
        values = []
        for blocks in polys:
            acc = 0
            for block in blocks:  # reduce once per block: x < 2^16 adds <= 512 bits per block
                for a in block:
                    acc = acc * x + a
                acc %= PRIME
            values.append(acc)
        rows.append(Share(x, threshold, length, tuple(values)))
    return rows


def _dot(coeffs: tuple[int, ...], column: tuple[int, ...]) -> int:
    total: int = sum(map(operator.mul, coeffs, column))
    return total % PRIME


def _on_low_degree_polynomial(indices: tuple[int, ...], shares: list[Share], t: int) -> bool:
    """True iff, for every chunk, the m > t points lie on one polynomial of degree < t.

    Dual-code (syndrome) check of Reed-Solomon codes: with ``w_i = 1 / prod_{k != i}(x_i - x_k)``
    over all m points, ``sum_i w_i F(x_i) = [x^(m-1)] F`` for the interpolant F (deg <= m-1). So
    ``S_j = sum_i w_i y_i x_i^j`` for ``j = 0 .. m-t-1`` are, in turn, the coefficients of degrees
    ``m-1`` down to ``t`` of F (each step valid once the higher ones are zero): all vanish iff
    deg F < t. Costs O(m^2) small-int products once per index set (cached) plus O((m - t) m)
    multiplications by small ints - no modular inversion per extra share.
    """
    weights = _barycentric_weights(indices)
    for chunk in range(len(shares[0].values)):
        terms = [w * s.values[chunk] % PRIME for w, s in zip(weights, shares, strict=True)]
        for _ in range(len(indices) - t):
            if sum(terms) % PRIME:
                return False
            terms = [term * x % PRIME for term, x in zip(terms, indices, strict=True)]
    return True


def reconstruct(shares: Iterable[Share | bytes]) -> bytes:
    """The secret from at least ``threshold`` shares (objects or their bytes, any order).

    Raises InvalidShareError for too few, duplicate or mismatched shares, and TamperedShareError
    when shares beyond the threshold are not on the interpolated polynomial.
    """
    parsed = [s if isinstance(s, Share) else Share.from_bytes(s) for s in shares]
    if not parsed:
        raise InvalidShareError("no shares given")
    threshold, length = parsed[0].threshold, parsed[0].secret_length
    if any(s.threshold != threshold or s.secret_length != length for s in parsed):
        raise InvalidShareError("shares disagree on threshold or secret_length; pass shares "
                                "of one sharing only")
    parsed.sort(key=operator.attrgetter("index"))
    indices = tuple(s.index for s in parsed)
    if len(set(indices)) != len(indices):
        raise InvalidShareError(f"duplicate share indices in {list(indices)}; give each once")
    if len(parsed) < threshold:
        raise InvalidShareError(f"{len(parsed)} shares given; give at least the threshold, "
                                f"{threshold}")
    if len(parsed) > threshold and not _on_low_degree_polynomial(indices, parsed, threshold):
        raise TamperedShareError()
    base = indices[:threshold]
    columns = list(zip(*(s.values for s in parsed[:threshold]), strict=True))
    coeffs = lagrange_coefficients(base, 0)
    out = bytearray()
    for pos, col in enumerate(columns):
        size = min(CHUNK_BYTES, length - pos * CHUNK_BYTES)
        value = _dot(coeffs, col)
        if value >> (8 * size):
            raise TamperedShareError()  # cannot be a chunk of this length
        out += value.to_bytes(size, "big")
    return bytes(out)


def share_values(data: bytes, *, index: int, threshold: int, secret_length: int) -> tuple[int, ...]:
    """The values of a share whose header must be exactly ``(VERSION, index, threshold,
    secret_length)``: as strict as :meth:`Share.from_bytes` followed by a check of those three
    fields, without building a :class:`Share`. Anything else raises :class:`InvalidShareError`.
    """
    return share_values_many((data,), index=index, threshold=threshold,
                             secret_length=secret_length)[0]


def share_values_many(shares: Iterable[bytes], *, index: int, threshold: int,
                      secret_length: int) -> list[tuple[int, ...]]:
    """:func:`share_values` of every share in ``shares``, all with the same header (a SecAgg
    server parses each responder's shares at once): the same checks, and all of them or an
    :class:`InvalidShareError`."""
    header = _expected_header(index, threshold, secret_length)
    chunks = _chunk_count(secret_length)
    size = _HEADER.size + _VALUE_BYTES * chunks
    items = list(shares)
    if not all(isinstance(d, bytes) and len(d) == size and d.startswith(header) for d in items):
        for d in items:
            if not isinstance(d, bytes):
                raise InvalidShareError(f"a share is bytes, got {type(d).__name__}")
        raise InvalidShareError(f"not a version-{VERSION} share with index {index}, threshold "
                                f"{threshold} and a {secret_length}-byte secret")
    if chunks == 1:
        rows: list[tuple[int, ...]] = [(int.from_bytes(d[_HEADER.size :], "big"),) for d in items]
    else:
        rows = [tuple(int.from_bytes(d[i : i + _VALUE_BYTES], "big")
                      for i in range(_HEADER.size, size, _VALUE_BYTES)) for d in items]
    if any(v >= PRIME for row in rows for v in row):
        raise InvalidShareError("share values must be ints in [0, PRIME)")
    return rows


@functools.lru_cache(maxsize=4096)
def _expected_header(index: int, threshold: int, secret_length: int) -> bytes:
    if type(index) is not int or not 1 <= index <= MAX_INDEX:
        raise InvalidShareError(f"share index must be an int in 1..{MAX_INDEX}, got {index!r}")
    if type(threshold) is not int or not 2 <= threshold <= MAX_INDEX:
        raise InvalidShareError(f"threshold must be an int in 2..{MAX_INDEX}, got {threshold!r}")
    if type(secret_length) is not int or not MIN_SECRET_BYTES <= secret_length <= _MAX_SECRET_BYTES:
        raise InvalidShareError(f"secret_length must be an int in {MIN_SECRET_BYTES}..2^32-1, "
                                f"got {secret_length!r}")
    return _HEADER.pack(VERSION, index, threshold, secret_length)


def _denominators(xs: tuple[int, ...]) -> list[int]:
    """``prod_{k != i} (x_i - x_k)`` for every i, exactly (small ints), products taken in int64
    blocks by numpy: ``x`` in 1..65535, so a block of ``62 // bits(max diff)`` factors fits."""
    m = len(xs)
    if m == 1:
        return [1]
    arr = np.fromiter(xs, dtype=np.int64, count=m)
    diffs = arr[:, None] - arr[None, :]
    np.fill_diagonal(diffs, 1)
    block = max(1, 62 // int(max(xs) - min(xs)).bit_length())
    pad = -m % block
    if pad:
        diffs = np.concatenate([diffs, np.ones((m, pad), dtype=np.int64)], axis=1)
    partial = diffs.reshape(m, -1, block).prod(axis=2)
    return [math.prod(row) for row in partial.tolist()]


class RandomCheck:
    """One random check polynomial for many :func:`reconstruct_points` calls (a SecAgg server's
    round): ``rho_0 .. rho_{e-1}`` uniform below ``PRIME`` from the OS CSPRNG, drawn when first
    needed - after every share to be checked has been received - and ``R_e(x) = sum_{j<e} rho_j
    x^j`` cached per share index ``x``.

    A call with ``m > t`` points must show that the ``e = m - t`` syndromes ``S_j = sum_i w_i y_i
    x_i^j`` all vanish. With a check it tests their random combination ``sum_j rho_j S_j = sum_i
    w_i y_i R_e(x_i) = 0`` instead: one product per point with the cached ``R_e(x_i)``, where the
    deterministic test costs ``e`` per point. If some ``S_j != 0`` the combination vanishes for
    at most a ``1 / PRIME < 2^-256`` fraction of the ``rho``; the shares are fixed before ``rho`` is
    drawn and ``rho`` is never revealed, so a tampered share passes with probability below
    ``2^-256`` per chunk (union bound over the calls). Not thread-safe; one per round.
    """

    __slots__ = ("_coefficients", "_rho", "_table")

    def __init__(self) -> None:
        self._rho: list[int] = []
        self._table: dict[int, list[int]] = {}  # x -> [R_1(x), R_2(x), ...]
        self._coefficients: dict[tuple[tuple[int, ...], int], tuple[int, ...]] = {}

    def at(self, x: int, e: int) -> int:
        """``R_e(x) mod PRIME`` (``e >= 1``)."""
        row = self._table.get(x)
        if row is not None and len(row) >= e:
            return row[e - 1]
        while len(self._rho) < e:
            self._rho.append(secrets.randbelow(PRIME))
        row = self._table.setdefault(x, [])
        if len(row) < e:
            power = pow(x, len(row), PRIME)
            acc = row[-1] if row else 0
            for j in range(len(row), e):
                acc = (acc + self._rho[j] * power) % PRIME
                row.append(acc)
                power = power * x % PRIME
        return row[e - 1]

    def coefficients(self, xs: tuple[int, ...], weights: Sequence[int], e: int
                     ) -> tuple[int, ...]:
        """``w_i R_e(x_i) mod PRIME`` for the points ``xs`` with barycentric weights ``weights``
        (or the same multiple, nonzero mod PRIME, of each): the check is then ``sum_i
        coefficient_i y_i == 0``. Cached per ``(xs, e)``."""
        key = (xs, e)
        got = self._coefficients.get(key)
        if got is None:
            at = self.at
            got = tuple([w * at(x, e) % PRIME for w, x in zip(weights, xs, strict=True)])
            self._coefficients[key] = got
        return got


@functools.lru_cache(maxsize=256)
def _point_coefficients(xs: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """For distinct share indices ``xs``: ``W_i = L / D_i`` and ``c_i = -Q W_i / x_i`` (integers,
    returned mod PRIME), with ``D_i = prod_{k != i}(x_i - x_k)``, ``L = lcm(D_i)`` and ``Q =
    prod_k (-x_k)``, and ``L^-1 mod PRIME``.

    ``W`` is ``L`` times the barycentric weights ``w_i = 1 / D_i``, so every syndrome test (``sum
    w_i y_i x_i^j == 0``) holds for ``W`` exactly when it holds for ``w``: ``L`` is a product of
    primes below 2^16, never a multiple of PRIME. The value at 0, ``-Q sum_i w_i y_i / x_i``, is
    ``L^-1 sum_i c_i y_i``; ``c_i`` is an integer since ``x_i`` divides ``Q``. One modular
    inversion, of ``L``. Cached: a SecAgg server on the complete graph reconstructs every secret
    from the same responders."""
    denominators = _denominators(xs)
    lcm = math.lcm(*denominators)
    exact = [lcm // d for d in denominators]  # each D_i divides L
    minus_q = -math.prod(xs) * (-1) ** len(xs)
    # reduced: at n = 1000 the exact integers run to ~1000 bits, and a round caches one set per
    # secret (here and in RandomCheck)
    return (tuple([w % PRIME for w in exact]),
            tuple([minus_q // x * w % PRIME for w, x in zip(exact, xs, strict=True)]),
            pow(lcm, -1, PRIME))


def reconstruct_points(indices: Sequence[int], values: Sequence[Sequence[int]], *,
                       threshold: int, secret_length: int,
                       check: RandomCheck | None = None) -> bytes:
    """The secret from ``m >= threshold`` points: ``values[i]`` (one int per chunk) at
    ``indices[i]``, as :func:`share_values` returns them. Every point must lie on one polynomial
    of degree below ``threshold`` (else :class:`TamperedShareError`, like :func:`reconstruct`);
    too few, duplicate or malformed points raise :class:`InvalidShareError`.

    Barycentric interpolation over all ``m`` points, ``w_i = 1 / prod_{k != i}(x_i - x_k)``,
    each scaled by the same integer so that only one modular inversion is needed (see
    ``_point_coefficients``): the syndromes ``sum_i w_i y_i x_i^j`` for ``j < m - t`` are the
    coefficients of degrees ``m - 1`` down to ``t`` of the interpolant and must all vanish (see
    ``_on_low_degree_polynomial``); the value at 0 is then ``-Q * sum_i w_i y_i / x_i`` with
    ``Q = prod_k (-x_k)``. With ``check`` (:class:`RandomCheck`), the syndromes are tested by
    their random combination: the same result, and the same error for tampered shares except with
    probability below ``2^-256``.
    """
    xs = tuple(indices)
    m, chunks = len(xs), _chunk_count(secret_length) if type(secret_length) is int else 0
    _expected_header(1, threshold, secret_length)  # validates threshold and secret_length
    if not all(type(x) is int and 1 <= x <= MAX_INDEX for x in xs):
        raise InvalidShareError(f"indices must be ints in 1..{MAX_INDEX}")
    if len(set(xs)) != m:
        raise InvalidShareError(f"duplicate share indices in {sorted(xs)}; give each once")
    if m < threshold:
        raise InvalidShareError(f"{m} shares given; give at least the threshold, {threshold}")
    if len(values) != m or not all(len(row) == chunks for row in values):
        raise InvalidShareError(f"give {chunks} values for each of the {m} indices")
    if not all(type(v) is int and 0 <= v < PRIME for row in values for v in row):
        raise InvalidShareError("share values must be ints in [0, PRIME)")
    weights, at_zero, inverse = _point_coefficients(xs)
    out = bytearray()
    extra = m - threshold
    combined = check.coefficients(xs, weights, extra) if check is not None and extra else None
    for chunk in range(chunks):
        column = [row[chunk] for row in values]
        value = sum(map(operator.mul, at_zero, column)) % PRIME * inverse % PRIME
        if combined is not None:
            if sum(map(operator.mul, combined, column)) % PRIME:
                raise TamperedShareError()
        elif extra:
            terms = [w * y % PRIME for w, y in zip(weights, column, strict=True)]
            for step in range(extra):
                if sum(terms) % PRIME:
                    raise TamperedShareError()
                if step + 1 < extra:  # unreduced: each step adds at most 16 bits
                    terms = [a * x for a, x in zip(terms, xs, strict=True)]
                    if step % 16 == 15:
                        terms = [a % PRIME for a in terms]
        size = min(CHUNK_BYTES, secret_length - chunk * CHUNK_BYTES)
        if value >> (8 * size):
            raise TamperedShareError()  # cannot be a chunk of this length
        out += value.to_bytes(size, "big")
    return bytes(out)
