"""Packed Paillier through phe and gmpy2: the only module of secureagg that imports them.

Scheme. Paillier with ``g = n + 1``: ``Enc(m; r) = (1 + m n) * r^n mod n^2`` for ``0 <= m < n``
and ``r`` uniform in ``Z*_n``; ``(1 + n)^m = 1 + m n mod n^2`` makes the message part one
multiplication, so all the cost is the *blinding factor* ``r^n mod n^2``. Ciphertexts multiply to
add plaintexts modulo ``n``. Keys come from ``phe`` (``generate_paillier_keypair``, gmpy2
accelerated; seeded runs derive the primes from a keystream instead), 3072-bit by default, and
anything below 2048 bits is refused.

Threat model and invariants.

* **Packing** (:class:`~secureagg.he.paillier_packing.SlotPacking`, BatchCrypt-style): many
  quantised values per plaintext, with the no-overflow proof in
  :mod:`secureagg.he.paillier_packing`.
* **Blinding** (:class:`BlindingPool`): factors ``r^n mod n^2`` with ``r`` uniform in ``Z*_n``
  (``secrets.randbelow``; a seeded keystream only in tests), precomputed ahead of a round if the
  caller wants, each used **exactly once** (reusing one would reveal the plaintext difference of two
  ciphertexts).
* **Validation**: every incoming ciphertext must have exactly the fixed width of
  ``ceil(2 bits(n) / 8)`` bytes, lie in ``0 < c < n^2`` and be coprime with ``n`` (gmpy2 gcd): a
  ciphertext out of range or under another key raises
  :class:`~secureagg.errors.MalformedMessage`.
* **Re-randomisation**: every ciphertext the server sends on (the aggregate) is multiplied by a
  fresh blinding factor, so it is a fresh-looking encryption of the same sum. The factors depend
  on the public key only: the server precomputes them before the uploads arrive
  (:meth:`PaillierAccumulator.prefill`, offline), each used once.
* **Decryption** with the Chinese remainder theorem: ``m_p = L(c^(p-1) mod p^2) h_p mod p`` and the
  same mod ``q``, recombined; about 4x faster than a direct ``c^lambda mod n^2``.

>>> packing = SlotPacking.for_values(key_bits=2048, max_value=65534, summands=100)
>>> packing.slot_bits, packing.slots
(23, 89)
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import (
    ConfigurationError,
    InvalidKeyError,
    MalformedMessage,
    MissingDependencyError,
)
from secureagg.he.backend import (
    Accumulator,
    Decryptor,
    Encryptor,
    ProbeDraw,
    chunk_sizes,
    fingerprint,
)
from secureagg.he.paillier_packing import SlotPacking
from secureagg.he.secret_key_bytes import open_sealed, seal
from secureagg.validation import is_integer_scalar

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "BlindingPool",
    "PaillierAccumulator",
    "PaillierDecryptor",
    "PaillierEncryptor",
    "PaillierPublicKey",
    "PaillierSecretKey",
    "SlotPacking",
    "require_gmpy2",
    "require_phe",
]

SCHEME = "paillier"
_SECRET_MAGIC = b"secureagg/paillier-secret-key\x00"
#: Longest prime a stored secret key may hold (a 32768-bit modulus; the default is 3072).
_MAX_PRIME_BYTES = 2048
MIN_KEY_BITS = 2048
DEFAULT_KEY_BITS = 3072
# Product of the primes below 1000: a public modulus sharing a factor with it is not an RSA
# modulus of two large primes.
_SMALL_PRIMES = [p for p in range(3, 1000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]
_SMALL_PRIMORIAL = math.prod([2, *_SMALL_PRIMES])


def require_gmpy2() -> Any:
    """Import gmpy2 or raise :class:`~secureagg.errors.MissingDependencyError` (``he`` extra)."""
    try:
        import gmpy2
    except ImportError as exc:
        raise MissingDependencyError("gmpy2", "he", purpose="Paillier arithmetic") from exc
    return gmpy2


def require_phe() -> Any:
    """Import phe's paillier module or raise :class:`~secureagg.errors.MissingDependencyError`."""
    try:
        from phe import paillier
    except ImportError as exc:
        raise MissingDependencyError("phe", "he", purpose="Paillier key generation") from exc
    require_gmpy2()  # phe without gmpy2 is 10-100x slower; we need gmpy2 anyway
    return paillier


# ------------------------------------------------------------------------------ public key


class PaillierPublicKey:
    """A validated Paillier public key ``n`` (g = n + 1).

    Raises :class:`~secureagg.errors.InvalidKeyError` for a modulus below ``min_bits`` (2048 by
    default: smaller keys are refused), even, a perfect square, a prime, or with a factor below
    1000 - none of which is the product of two large primes.
    """

    def __init__(self, n: int, *, min_bits: int = MIN_KEY_BITS) -> None:
        gmpy2 = require_gmpy2()
        if not is_integer_scalar(n):
            raise InvalidKeyError(f"a Paillier public key is an integer n, got {type(n).__name__}")
        n = int(n)
        bits = n.bit_length()
        if bits < max(min_bits, MIN_KEY_BITS):
            raise InvalidKeyError(
                f"Paillier keys below {max(min_bits, MIN_KEY_BITS)} bits are refused; this modulus "
                f"has {bits} bits (use 3072, the default)"
            )
        mpz_n = gmpy2.mpz(n)
        if (
            n % 2 == 0
            or math.gcd(n, _SMALL_PRIMORIAL) != 1
            or gmpy2.is_square(mpz_n)
            or gmpy2.is_prime(mpz_n)
        ):
            raise InvalidKeyError(
                "not a valid Paillier modulus: n must be the product of two distinct large primes"
            )
        self.n = n
        self.key_bits = bits
        self._n = mpz_n
        self._nsquare = mpz_n * mpz_n
        self.ciphertext_bytes = (2 * bits + 7) // 8
        self.plaintext_bytes = (bits + 7) // 8
        self._fingerprint = fingerprint(SCHEME, n.to_bytes(self.plaintext_bytes, "big"))

    @property
    def key_fingerprint(self) -> bytes:
        return self._fingerprint

    @property
    def nsquare(self) -> int:
        return int(self._nsquare)

    def public_material(self) -> bytes:
        """``n`` as big-endian bytes."""
        return self.n.to_bytes(self.plaintext_bytes, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierPublicKey:
        if not isinstance(data, bytes | bytearray) or not data:
            raise InvalidKeyError("a Paillier public key is n as non-empty big-endian bytes")
        return cls(int.from_bytes(data, "big"))

    # -- wire format ------------------------------------------------------------------------

    def to_wire(self, c: Any) -> bytes:
        """A ciphertext as exactly :attr:`ciphertext_bytes` big-endian bytes."""
        return int(c).to_bytes(self.ciphertext_bytes, "big")

    def from_wire(self, data: bytes | memoryview, *, index: int = 0) -> Any:
        """Parse and validate one ciphertext: exact width, ``0 < c < n^2``, ``gcd(c, n) = 1``.

        ``data`` may be a zero-copy view of the received message (read in place).
        """
        gmpy2 = require_gmpy2()
        where = f"ciphertext {index}"
        if not isinstance(data, bytes | memoryview):
            raise MalformedMessage(f"{where}: expected bytes, got {type(data).__name__}")
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        if length != self.ciphertext_bytes:
            raise MalformedMessage(
                f"{where}: {length} bytes, a ciphertext under this key has exactly "
                f"{self.ciphertext_bytes}"
            )
        c = gmpy2.mpz(int.from_bytes(data, "big"))
        if not 0 < c < self._nsquare:
            raise MalformedMessage(
                f"{where}: out of range (a ciphertext lies in 1..n^2-1); made under another key?"
            )
        if gmpy2.gcd(c, self._n) != 1:
            raise MalformedMessage(f"{where}: not coprime with n; not a valid ciphertext")
        return c

    # -- arithmetic -------------------------------------------------------------------------

    def blinding_factor(self, r: int) -> Any:
        """``r^n mod n^2`` (gmpy2)."""
        gmpy2 = require_gmpy2()
        return gmpy2.powmod(gmpy2.mpz(r), self._n, self._nsquare)

    def encrypt_with(self, m: int, blinding: Any) -> Any:
        """``(1 + m n) * blinding mod n^2`` for ``0 <= m < n`` (``blinding = r^n mod n^2``)."""
        gmpy2 = require_gmpy2()
        if not 0 <= m < self.n:
            raise ConfigurationError("a Paillier plaintext must lie in 0..n-1")
        return gmpy2.mpz(1 + m * self._n) * blinding % self._nsquare

    def multiply(self, a: Any, b: Any) -> Any:
        """Homomorphic addition: ``a * b mod n^2``."""
        return a * b % self._nsquare

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        short = self._fingerprint.hex()[:16]
        return f"PaillierPublicKey({self.key_bits} bits, fingerprint={short})"


# ------------------------------------------------------------------------------ blinding pool


class BlindingPool:
    """Precomputed blinding factors ``r^n mod n^2``, each handed out once.

    ``fill(count)`` precomputes (the expensive part of encryption: one ``2 bits(n)``-bit modular
    exponentiation each), so a client can do it before a round starts; :meth:`take` pops one, or
    computes one on demand when the pool is empty (counted in :attr:`misses`). ``r`` is uniform in
    ``Z*_n``: ``secrets.randbelow``, or the keystream ``rng`` in seeded tests.

    Typical use: ``pool.fill(count)`` between rounds, then ``key.encrypt_with(m, pool.take())``.
    """

    def __init__(self, public_key: PaillierPublicKey, *, rng: prg.Keystream | None = None) -> None:
        self.public_key = public_key
        self._rng = rng
        self._factors: list[Any] = []
        self.misses = 0
        self.computed = 0

    def __len__(self) -> int:
        return len(self._factors)

    def _draw_r(self) -> int:
        n = self.public_key.n
        while True:
            r = (self._rng.below(n - 1) if self._rng is not None else secrets.randbelow(n - 1)) + 1
            if math.gcd(r, n) == 1:
                return r

    def _compute(self) -> Any:
        self.computed += 1
        return self.public_key.blinding_factor(self._draw_r())

    def fill(self, count: int) -> None:
        """Precompute ``count`` more factors."""
        if not is_integer_scalar(count) or count < 0:
            raise ConfigurationError(f"count must be a non-negative integer, got {count!r}")
        self._factors.extend(self._compute() for _ in range(int(count)))

    def take(self) -> Any:
        """One fresh factor (never handed out again)."""
        if self._factors:
            return self._factors.pop()
        self.misses += 1
        return self._compute()


# ------------------------------------------------------------------------------ key holder


def _seeded_prime(gmpy2: Any, rng: prg.Keystream, bits: int) -> Any:
    raw = int.from_bytes(rng.read((bits + 7) // 8), "big") >> ((8 - bits % 8) % 8)
    return gmpy2.next_prime(gmpy2.bit_set(gmpy2.mpz(raw), bits - 1))


class PaillierSecretKey:
    """The key holder's Paillier key (phe's private key: the primes p and q). Never sent.

    Build one with :meth:`generate` (phe, 3072 bits by default; ``rng`` derives the primes from a
    keystream for seeded tests and vectors) or :meth:`from_primes`. A key holder whose process
    ends between messages keeps :meth:`to_bytes` on its own node and reads them back with
    :meth:`from_bytes`; those bytes never go on the wire.
    """

    def __init__(self, p: int, q: int) -> None:
        gmpy2 = require_gmpy2()
        paillier = require_phe()
        if not (is_integer_scalar(p) and is_integer_scalar(q)) or p == q:
            raise InvalidKeyError("p and q must be two distinct integers")
        p, q = int(p), int(q)
        if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise InvalidKeyError("p and q must be primes")
        self.public_key = PaillierPublicKey(p * q)
        self._phe_public = paillier.PaillierPublicKey(p * q)
        self._phe_private = paillier.PaillierPrivateKey(self._phe_public, p, q)
        mp, mq = gmpy2.mpz(self._phe_private.p), gmpy2.mpz(self._phe_private.q)
        self._p, self._q = mp, mq
        self._p2, self._q2 = mp * mp, mq * mq
        self._hp = gmpy2.mpz(self._phe_private.hp)
        self._hq = gmpy2.mpz(self._phe_private.hq)
        self._p_inv_q = gmpy2.invert(mp, mq)

    @classmethod
    def generate(
        cls, key_bits: int = DEFAULT_KEY_BITS, *, rng: prg.Keystream | None = None
    ) -> PaillierSecretKey:
        """Fresh keys of ``key_bits`` bits (>= 2048; refused below)."""
        if not is_integer_scalar(key_bits) or key_bits < MIN_KEY_BITS:
            raise ConfigurationError(
                f"Paillier keys below {MIN_KEY_BITS} bits are refused, got key_bits={key_bits!r} "
                f"(the default is {DEFAULT_KEY_BITS})"
            )
        key_bits = int(key_bits)
        if rng is None:
            paillier = require_phe()
            _, private = paillier.generate_paillier_keypair(n_length=key_bits)
            return cls(int(private.p), int(private.q))
        gmpy2 = require_gmpy2()
        while True:
            p = _seeded_prime(gmpy2, rng, key_bits // 2)
            q = _seeded_prime(gmpy2, rng, key_bits // 2)
            if p != q and (p * q).bit_length() == key_bits:
                return cls(int(p), int(q))

    @classmethod
    def from_primes(cls, p: int, q: int) -> PaillierSecretKey:
        return cls(p, q)

    @property
    def key_fingerprint(self) -> bytes:
        return self.public_key.key_fingerprint

    @property
    def key_bits(self) -> int:
        return self.public_key.key_bits

    def public_material(self) -> bytes:
        return self.public_key.public_material()

    def decrypt_raw(self, c: Any) -> int:
        """The plaintext of one (validated) ciphertext, by the Chinese remainder theorem."""
        gmpy2 = require_gmpy2()
        mp = (gmpy2.powmod(c, self._p - 1, self._p2) - 1) // self._p * self._hp % self._p
        mq = (gmpy2.powmod(c, self._q - 1, self._q2) - 1) // self._q * self._hq % self._q
        u = (mq - mp) * self._p_inv_q % self._q
        return int(mp + u * self._p)

    def phe_keypair(self) -> tuple[Any, Any]:
        """phe's own key objects, for comparisons with unpacked phe (benchmarks)."""
        return self._phe_public, self._phe_private

    def decryptor(self, packing: SlotPacking) -> PaillierDecryptor:
        return PaillierDecryptor(self, packing)

    # -- node-local storage (never on the wire) ----------------------------------------------

    def to_bytes(self) -> bytes:
        """The secret key as bytes **for the key holder's own node only** (they never go on the
        wire, to the server, a client or into a round spec or state): ``p`` and ``q``
        (``p < q``), each as a 4-byte big-endian length and its minimal big-endian bytes, framed
        by :mod:`secureagg.he.secret_key_bytes` (magic, version, checksum).

        :meth:`from_bytes` reads them back with the same :meth:`public_material` and
        :attr:`key_fingerprint`.
        """
        body = b"".join(
            len(raw).to_bytes(4, "big") + raw
            for raw in (_int_bytes(int(self._p)), _int_bytes(int(self._q)))
        )
        return seal(_SECRET_MAGIC, body)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PaillierSecretKey:
        """The key :meth:`to_bytes` wrote (node-local bytes; never received from another party),
        rebuilt through the constructor, so every check of a key runs again.

        Refused with :class:`~secureagg.errors.MalformedMessage`: anything but those bytes
        (another scheme's key, a corrupted or truncated one, lengths that do not add up, a
        non-minimal or zero integer, ``p >= q``) and primes the constructor refuses (not prime,
        a modulus below 2048 bits).
        """
        what = "Paillier secret key"
        body = open_sealed(data, magic=_SECRET_MAGIC, what=what)
        primes, offset = [], 0
        for name in ("p", "q"):
            if len(body) - offset < 4:
                raise MalformedMessage(f"{what} refused: {name}'s length is missing")
            size = int.from_bytes(body[offset : offset + 4], "big")
            offset += 4
            raw = body[offset : offset + size]
            if not 0 < size <= _MAX_PRIME_BYTES or len(raw) != size:
                raise MalformedMessage(
                    f"{what} refused: {name} must have 1..{_MAX_PRIME_BYTES} bytes and all of "
                    "them present"
                )
            if raw[0] == 0:
                raise MalformedMessage(f"{what} refused: {name} has a leading zero byte")
            primes.append(int.from_bytes(raw, "big"))
            offset += size
        if offset != len(body):
            raise MalformedMessage(f"{what} refused: {len(body) - offset} bytes after q")
        p, q = primes
        if not p < q:
            raise MalformedMessage(f"{what} refused: the primes must be stored with p < q")
        try:
            return cls(p, q)
        except InvalidKeyError as exc:
            raise MalformedMessage(f"{what} refused: {exc}") from None

    def __repr__(self) -> str:
        return f"PaillierSecretKey({self.public_key!r})"


def _int_bytes(value: int) -> bytes:
    """A positive integer's minimal big-endian bytes."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# ------------------------------------------------------------------------------ roles


class PaillierEncryptor(Encryptor):
    """Client side: packs uint64 slot values and encrypts one plaintext per ``slots`` values."""

    scheme: ClassVar[str] = SCHEME

    def __init__(
        self, public_key: PaillierPublicKey, packing: SlotPacking, *, pool: BlindingPool
    ) -> None:
        if packing.key_bits != public_key.key_bits:
            raise ConfigurationError(
                f"the packing is for {packing.key_bits}-bit keys, the key has {public_key.key_bits}"
            )
        if pool.public_key != public_key:
            raise ConfigurationError("the blinding pool belongs to another key")
        self.public_key = public_key
        self.packing = packing
        self.pool = pool

    @property
    def key_fingerprint(self) -> bytes:
        return self.public_key.key_fingerprint

    @property
    def values_per_ciphertext(self) -> int:
        return self.packing.slots

    @property
    def pool_size(self) -> int:
        return len(self.pool)

    def prefill(self, length: int) -> int:
        """Top the blinding pool up to one factor per ciphertext of a ``length``-value vector."""
        missing = max(0, self.ciphertext_count(int(length)) - len(self.pool))
        self.pool.fill(missing)
        return missing

    def encrypt(self, values: npt.NDArray[Any]) -> Iterator[bytes]:
        """Yield one fixed-width ciphertext per ``slots`` values (uint64 in ``0..max_value``)."""
        flat = np.asarray(values)
        if flat.ndim != 1 or flat.dtype != np.uint64:
            raise ConfigurationError("Paillier slot values are a 1-D uint64 array")
        if flat.size and int(flat.max()) > self.packing.max_value:
            raise ConfigurationError(
                f"a slot value exceeds max_value={self.packing.max_value}; the packing proof "
                "would not hold"
            )
        step = self.packing.slots
        for start in range(0, flat.size, step):
            m = self.packing.pack(flat[start : start + step])
            yield self.public_key.to_wire(self.public_key.encrypt_with(m, self.pool.take()))


class PaillierAccumulator(Accumulator):
    """Server side: range/gcd-checks ciphertexts and multiplies them into running products.

    :meth:`export` re-randomises every outgoing ciphertext with a factor from ``pool``.
    """

    def __init__(self, public_key: PaillierPublicKey, *, count: int, pool: BlindingPool) -> None:
        if not is_integer_scalar(count) or count < 1:
            raise ConfigurationError(f"count must be a positive integer, got {count!r}")
        if pool.public_key != public_key:
            raise ConfigurationError("the blinding pool belongs to another key")
        self.public_key = public_key
        self.pool = pool
        self._sums: list[Any | None] = [None] * int(count)
        self._count = 0

    @property
    def contributions(self) -> int:
        return self._count

    @property
    def held_ciphertexts(self) -> int:
        return sum(1 for s in self._sums if s is not None)

    def prefill(self) -> int:
        """Offline: top the re-randomisation pool up to one factor per outgoing ciphertext.

        The factors ``r^n mod n^2`` depend on the public key only, so the server computes them
        before the uploads arrive; :meth:`export` then takes each one exactly once (a factor is
        popped, never reused) and computes any that is missing on demand. Returns how many
        factors were computed (0 when the pool already held enough).
        """
        missing = max(0, len(self._sums) - len(self.pool))
        self.pool.fill(missing)
        return missing

    def empty(self) -> PaillierAccumulator:
        return PaillierAccumulator(self.public_key, count=len(self._sums), pool=self.pool)

    def add(
        self, ciphertexts: Sequence[bytes | memoryview], *, probe: ProbeDraw | None = None
    ) -> tuple[bytes, ...]:
        if probe is not None:
            raise ConfigurationError("Paillier accumulators build no key-check probes")
        if len(ciphertexts) != len(self._sums):
            raise MalformedMessage(
                f"expected {len(self._sums)} ciphertexts, got {len(ciphertexts)}"
            )
        parsed = [self.public_key.from_wire(data, index=i) for i, data in enumerate(ciphertexts)]
        for i, c in enumerate(parsed):
            running = self._sums[i]
            self._sums[i] = c if running is None else self.public_key.multiply(running, c)
        self._count += 1
        return ()

    def export(self) -> tuple[bytes, ...]:
        if self._count == 0:
            raise ConfigurationError("nothing was added: there is no aggregate to export")
        key = self.public_key
        return tuple(
            key.to_wire(key.multiply(s, self.pool.take())) for s in self._sums if s is not None
        )


class PaillierDecryptor(Decryptor):
    """Key holder side: validates, CRT-decrypts and unpacks an aggregate into slot sums."""

    scheme: ClassVar[str] = SCHEME

    def __init__(self, key: PaillierSecretKey, packing: SlotPacking) -> None:
        if packing.key_bits != key.key_bits:
            raise ConfigurationError("the packing does not match the key size")
        self._key = key
        self.packing = packing

    @property
    def key_fingerprint(self) -> bytes:
        return self._key.key_fingerprint

    def public_material(self) -> bytes:
        return self._key.public_material()

    def decrypt(
        self, ciphertexts: Sequence[bytes | memoryview], length: int
    ) -> npt.NDArray[np.uint64]:
        sizes = chunk_sizes(int(length), self.packing.slots)
        if len(ciphertexts) != len(sizes):
            raise MalformedMessage(f"expected {len(sizes)} ciphertexts, got {len(ciphertexts)}")
        out = np.empty(int(length), dtype=np.uint64)
        offset = 0
        for i, data in enumerate(ciphertexts):
            c = self._key.public_key.from_wire(data, index=i)
            plaintext = self._key.decrypt_raw(c)
            out[offset : offset + sizes[i]] = self.packing.unpack(plaintext, sizes[i])
            offset += sizes[i]
        return out
