"""The client side of CKKS aggregation: the encryption-of-zero pool and the encryptor.

Threat model and invariants.

* **Encryption pool** (:class:`CkksZeroPool`). SEAL's public-key encryption of a plaintext ``m``
  *is* a fresh public-key encryption of zero with ``m`` added to its first component
  (``Encryptor::encrypt``: ``encrypt_zero`` then ``c0 += m``). A client may therefore compute
  encryptions of zero ahead of a round (the expensive part: sampling ``u, e0, e1``, two NTT
  products, the division by the special prime) and, online, only encode its values and add them
  in (3-6x cheaper end to end). The result is distributed exactly like a fresh encryption of the
  same plaintext **provided each pooled ciphertext is used once**: two ciphertexts sharing one
  encryption of zero subtract to the plaintext difference. The pool hands each entry out once
  (popped, never copied), never leaves the client, and is bound to the context's key fingerprint
  and the scale; it is emptied when the context changes (:meth:`CkksZeroPool.rebind`).
* **Randomness.** Every ciphertext, pooled or fresh, carries its own randomness from SEAL's
  CSPRNG (Blake2xb seeded from the OS).
* **Streaming.** Chunking happens here, chunk by chunk, on views of the caller's vector.

>>> import numpy as np
>>> from secureagg.he.ckks.keys import CkksPublicContext, CkksSecretKey
>>> key = CkksSecretKey()
>>> encryptor = CkksPublicContext(key.public_material()).encryptor()
>>> encryptor.prefill(5000), encryptor.pool_size
(2, 2)
>>> len(list(encryptor.encrypt(np.zeros(5000)))), encryptor.pool_size
(2, 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError
from secureagg.he.backend import Encryptor, chunk_sizes
from secureagg.he.ckks.ciphertexts import _check_scale
from secureagg.he.ckks.keys import SCHEME, CkksPublicContext, require_tenseal
from secureagg.validation import is_integer_scalar

__all__ = ["CkksEncryptor", "CkksZeroPool"]


class CkksZeroPool:
    """Precomputed public-key encryptions of zero, each handed out once (a client's, offline).

    The CKKS counterpart of :class:`~secureagg.he.paillier.BlindingPool`. ``fill(count, size=s)``
    encrypts ``count`` zero vectors of ``s`` values (default: a full ciphertext, N/2 values) under
    the public context at ``scale`` - the expensive part of encryption, done before a round;
    :meth:`take` pops one (never handed out again) or returns ``None`` when none of that size is
    left (counted in :attr:`misses`; the encryptor then encrypts fresh). TenSEAL records the number
    of values in a ciphertext, so entries are kept per size; :meth:`fill_for` fills exactly the
    chunks of one vector.

    Bound to the context's key fingerprint and the scale: :meth:`rebind` drops every entry when
    either changes (a new key, a new round with fresh keys). Memory: one ciphertext per entry
    (256 KiB at N = 8192, [60, 60, 60]; a d = 10^6 upload needs 245 of them, 64 MB).

    Security: see the module docstring. Each entry is a fresh SEAL public-key encryption of zero
    with its own randomness; adding a plaintext to it gives exactly SEAL's encryption of that
    plaintext. Using an entry twice would reveal the difference of two plaintexts, so entries are
    popped, never copied, and the pool never leaves the client.
    """

    def __init__(self, context: CkksPublicContext, *, scale: float | None = None) -> None:
        self._context = context
        self.scale = _check_scale(
            context.params, context.params.scale if scale is None else scale
        )
        self._entries: dict[int, list[Any]] = {}
        self.misses = 0
        self.computed = 0

    @property
    def key_fingerprint(self) -> bytes:
        return self._context.key_fingerprint

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def available(self, size: int) -> int:
        """Entries of ``size`` values ready."""
        return len(self._entries.get(int(size), ()))

    def matches(self, context: CkksPublicContext, scale: float) -> bool:
        """True if this pool encrypts under ``context``'s public key at ``scale``."""
        return context.key_fingerprint == self.key_fingerprint and float(scale) == self.scale

    def _check_size(self, size: int) -> int:
        slots = self._context.params.slots
        if not is_integer_scalar(size) or not 1 <= size <= slots:
            raise ConfigurationError(
                f"size must be an integer in 1..{slots} (values per ciphertext), got {size!r}"
            )
        return int(size)

    def fill(self, count: int, *, size: int | None = None) -> None:
        """Precompute ``count`` more encryptions of zero of ``size`` values (default N/2)."""
        if not is_integer_scalar(count) or count < 0:
            raise ConfigurationError(f"count must be a non-negative integer, got {count!r}")
        size = self._check_size(self._context.params.slots if size is None else size)
        ts = require_tenseal()
        ctx, zeros = self._context._ctx, [0.0] * size
        bucket = self._entries.setdefault(size, [])
        for _ in range(int(count)):
            bucket.append(ts.ckks_vector(ctx, zeros, scale=self.scale).data)
            self.computed += 1

    def fill_for(self, length: int, *, vectors: int = 1) -> int:
        """Top the pool up to what encrypting ``vectors`` vectors of ``length`` values needs.

        Returns the number of encryptions of zero computed (0 if the pool already holds enough).
        """
        integers = is_integer_scalar(length) and is_integer_scalar(vectors)
        if not integers or length < 0 or vectors < 0:
            raise ConfigurationError(
                f"length and vectors must be non-negative integers, got {length!r}, {vectors!r}"
            )
        need: dict[int, int] = {}
        for size in chunk_sizes(int(length), self._context.params.slots):
            need[size] = need.get(size, 0) + int(vectors)
        made = 0
        for size, count in need.items():
            missing = count - self.available(size)
            if missing > 0:
                self.fill(missing, size=size)
                made += missing
        return made

    def take(self, size: int) -> Any | None:
        """One pooled encryption of zero of ``size`` values (TenSEAL's C++ vector), or None.

        The entry is removed: it is never handed out again. ``None`` (a miss, counted) when none of
        that size is left.
        """
        bucket = self._entries.get(int(size))
        if not bucket:
            self.misses += 1
            return None
        return bucket.pop()

    def clear(self) -> int:
        """Drop every entry; returns how many were dropped."""
        dropped = len(self)
        self._entries.clear()
        return dropped

    def rebind(self, context: CkksPublicContext, *, scale: float | None = None) -> int:
        """Bind the pool to ``context`` (and ``scale``); drops every entry if either changed.

        Returns the number of entries dropped (0 when the pool already matched).
        """
        scale = _check_scale(context.params, context.params.scale if scale is None else scale)
        if self.matches(context, scale):
            self._context = context  # same key: the entries stay valid
            return 0
        dropped = self.clear()
        self._context = context
        self.scale = scale
        return dropped

    def __repr__(self) -> str:
        return (
            f"CkksZeroPool({len(self)} entries, scale=2^{math.log2(self.scale):.0f}, "
            f"fingerprint={self.key_fingerprint.hex()[:16]})"
        )


class CkksEncryptor(Encryptor):
    """Client side: encrypts float64 vectors chunk by chunk (N/2 values per ciphertext).

    With a filled :attr:`pool` (:meth:`prefill`, ahead of a round), each chunk consumes one pooled
    encryption of zero and only encodes and adds the values online; without one (or once it is
    empty) chunks are encrypted fresh. Either way each ciphertext has its own fresh randomness.
    """

    scheme: ClassVar[str] = SCHEME

    def __init__(
        self, context: CkksPublicContext, *, scale: float, pool: CkksZeroPool | None = None
    ) -> None:
        self._context = context
        self.scale = _check_scale(context.params, scale)
        if pool is None:
            pool = CkksZeroPool(context, scale=self.scale)
        elif not isinstance(pool, CkksZeroPool) or not pool.matches(context, self.scale):
            raise ConfigurationError(
                "the encryption pool belongs to another context or scale; use "
                "pool.rebind(context, scale=...) (it drops the stale entries)"
            )
        self.pool = pool

    @property
    def key_fingerprint(self) -> bytes:
        return self._context.key_fingerprint

    @property
    def values_per_ciphertext(self) -> int:
        return self._context.params.slots

    @property
    def pool_size(self) -> int:
        return len(self.pool)

    def prefill(self, length: int) -> int:
        """Precompute the encryptions of zero one ``length``-value vector needs (offline)."""
        return self.pool.fill_for(length)

    def encrypt(self, values: npt.NDArray[Any]) -> Iterator[bytes]:
        """Yield the serialized ciphertext of each chunk of ``values`` (1-D float64).

        Each chunk is a view of ``values``; TenSEAL copies only the chunk it encodes.
        """
        ts = require_tenseal()
        flat = np.asarray(values)
        if flat.ndim != 1 or flat.dtype != np.float64:
            raise ConfigurationError("CKKS encrypts 1-D float64 arrays")
        if not self.pool.matches(self._context, self.scale):
            raise ConfigurationError(
                "the encryption pool was rebound to another context; build a new encryptor for it"
            )
        step = self.values_per_ciphertext
        ctx = self._context._ctx
        pool = self.pool
        for start in range(0, flat.size, step):
            chunk = flat[start : start + step]
            zero = pool.take(chunk.size)
            if zero is None:
                yield ts.ckks_vector(ctx, chunk, scale=self.scale).data.serialize()
            else:
                zero.add_plain_(chunk.tolist())  # c0 += Encode(chunk): SEAL's own encryption
                yield zero.serialize()
