"""CKKS through TenSEAL: the only module of secureagg that imports ``tenseal``.

Threat model and invariants.

* **Roles.** :class:`CkksSecretKey` (the key holder's) creates the keys and is the only object that
  ever holds the secret key. It hands out :meth:`CkksSecretKey.public_material`: a TenSEAL context
  serialized *without* the secret key and without evaluation keys (a sum needs none).
  :class:`CkksPublicContext` is what the server and the clients build from those bytes; it refuses
  a context that holds a secret key, a symmetric context (no public key), a non-CKKS context,
  parameters above the HE-standard modulus budget, a scale <= 1, and - when the round's expected
  parameters are given - any other parameters (a mismatched context).
* **Parameters.** The default is the summation-only context N = 8192, coefficient moduli
  [60, 60, 60] (two 60-bit data primes plus the special prime; the second data prime is the room
  the aggregation's key checks mask their probes in), scale 2^40: 180 bits of modulus against
  the 218 the HE standard allows at N = 8192 for 128-bit security. A ciphertext of 4096 values is
  2 x 8192 x 2 x 8 bytes = 256 KiB, **16x** a float32 payload ([60, 60]: 8x; NVIDIA FLARE's
  [60, 40, 40, 60] context carries three data primes: about 20x).
* **Ciphertext validation** (:class:`CkksAccumulator`, :class:`CkksDecryptor`): every chunk must
  deserialize under the round's context (TenSEAL/SEAL check the parameters id and that every
  coefficient is below its modulus), hold exactly one two-component ciphertext at the first data
  level in NTT form, carry the round's scale and the expected number of values, and fit a byte
  budget. Malformed, truncated or foreign bytes raise
  :class:`~secureagg.errors.MalformedMessage`; TenSEAL's own exceptions never escape.
* **Streaming.** The server keeps one running ciphertext per chunk position and adds each
  arriving chunk into it in place (``add_``); chunking happens here, chunk by chunk, on views of
  the caller's vector.
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
* **Randomness.** Keys and encryption randomness come from SEAL's own CSPRNG (Blake2xb seeded from
  the OS); TenSEAL exposes no way to seed it, so a seeded simulation reproduces everything of a
  CKKS round except the keys and the encryption noise.

Parameters, their validation against the HE-standard table and the noise model live in
:mod:`secureagg.he.ckks_params` (no tenseal import) and are re-exported here.

>>> key = CkksSecretKey()                               # the key holder's
>>> server_view = CkksPublicContext(key.public_material())
>>> server_view.params.slots, server_view.key_fingerprint == key.key_fingerprint
(4096, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidKeyError,
    MalformedMessage,
    MissingDependencyError,
    NonFiniteInputError,
)
from secureagg.he.backend import (
    Accumulator,
    Decryptor,
    Encryptor,
    ProbeDraw,
    chunk_sizes,
    fingerprint,
    size_groups,
)
from secureagg.he.ckks_params import FFT_SAFE_BITS, FLARE_DEFAULT, CkksParameters, is_int

__all__ = [
    "CUT_LAYER_PARAMETERS",
    "FFT_SAFE_BITS",
    "FLARE_DEFAULT",
    "CkksAccumulator",
    "CkksDecryptor",
    "CkksEncryptor",
    "CkksParameters",
    "CkksPublicContext",
    "CkksSecretKey",
    "CkksZeroPool",
    "CutLayerEvaluator",
    "CutLayerSecretKey",
    "cut_layer_product_bound",
    "require_tenseal",
]

SCHEME = "ckks"
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, OverflowError, IndexError)


def require_tenseal() -> Any:
    """Import tenseal (and register SEAL's types for parameter inspection), or raise.

    Raises :class:`~secureagg.errors.MissingDependencyError` naming the ``he`` extra.
    """
    try:
        import tenseal
        import tenseal.sealapi
    except ImportError as exc:
        raise MissingDependencyError("tenseal", "he", purpose="CKKS aggregation") from exc
    return tenseal


# ------------------------------------------------------------------------------ key holder


class CkksSecretKey:
    """The key holder's CKKS key (a private TenSEAL context). Never leaves the key holder.

    ``CkksSecretKey(params)`` generates fresh keys (SEAL's CSPRNG, seeded from the OS). A user who
    runs a persistent key service constructs one and passes it to every round; the default
    aggregators create a fresh one per round instead.
    """

    def __init__(self, params: CkksParameters | None = None) -> None:
        ts = require_tenseal()
        self.params = params if params is not None else CkksParameters()
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=int(self.params.poly_modulus_degree),
            coeff_mod_bit_sizes=[int(b) for b in self.params.coeff_mod_bit_sizes],
            n_threads=1,
        )
        ctx.global_scale = float(self.params.scale)
        self._ctx = ctx
        self._public = bytes(
            ctx.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )
        self._fingerprint = fingerprint(SCHEME, self._public)

    @property
    def key_fingerprint(self) -> bytes:
        return self._fingerprint

    def public_material(self) -> bytes:
        """The public context (public key, parameters, scale; no secret or evaluation keys)."""
        return self._public

    def decryptor(self, *, scale: float | None = None) -> CkksDecryptor:
        """A decryptor for ciphertexts encoded at ``scale`` (default: the parameters' scale)."""
        return CkksDecryptor(self, scale=self.params.scale if scale is None else scale)

    def _private_context(self) -> Any:
        return self._ctx

    def __repr__(self) -> str:
        return f"CkksSecretKey(params={self.params!r}, fingerprint={self._fingerprint.hex()[:16]})"


# ------------------------------------------------------------------------------ public side


def _context_parameters(ts: Any, ctx: Any) -> tuple[int, tuple[int, ...], Any]:
    seal_ctx = ctx.seal_context().data
    parms = seal_ctx.key_context_data().parms()
    if parms.scheme() != ts.SCHEME_TYPE.CKKS.value:
        raise InvalidKeyError("the context is not a CKKS context (BFV or unknown scheme)")
    n = int(parms.poly_modulus_degree())
    bits = tuple(int(m.bit_count()) for m in parms.coeff_modulus())
    return n, bits, seal_ctx.first_parms_id()


class CkksPublicContext:
    """A validated public CKKS context, as the server and the clients hold it.

    ``data`` are the bytes of :meth:`CkksSecretKey.public_material`. Raises
    :class:`~secureagg.errors.InvalidKeyError` for a context with a secret key, a symmetric
    context, a non-CKKS or unreadable context, or parameters other than ``expected`` (a mismatched
    context), and :class:`~secureagg.errors.ConfigurationError` for insecure parameters.
    """

    def __init__(self, data: bytes, *, expected: CkksParameters | None = None) -> None:
        ts = require_tenseal()
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            raise InvalidKeyError("the public context must be non-empty bytes")
        try:
            ctx = ts.context_from(bytes(data), n_threads=1)
        except _TENSEAL_ERRORS:
            raise InvalidKeyError(
                "the public context does not deserialize (truncated, corrupted or not a TenSEAL "
                "context)"
            ) from None
        if ctx.is_private() or ctx.has_secret_key():
            raise InvalidKeyError(
                "the context holds a secret key: the server and the clients accept public "
                "contexts only (serialize it with save_secret_key=False; only the key holder "
                "keeps the secret key)"
            )
        try:
            has_public_key = bool(ctx.has_public_key())
        except ValueError:
            raise InvalidKeyError(
                "symmetric CKKS context: clients must encrypt with a public key that cannot "
                "decrypt; create the context with ENCRYPTION_TYPE.ASYMMETRIC"
            ) from None
        if not has_public_key:
            raise InvalidKeyError("the context holds no public key; clients could not encrypt")
        n, bits, first_parms_id = _context_parameters(ts, ctx)
        try:
            scale = float(ctx.global_scale)
        except _TENSEAL_ERRORS:
            raise InvalidKeyError("the context carries no scale (set global_scale)") from None
        params = CkksParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=bits, scale=scale)
        if expected is not None and params != expected:
            raise InvalidKeyError(
                f"mismatched context: it has {params.to_dict()}, the round expects "
                f"{expected.to_dict()}"
            )
        self.params = params
        self._ctx = ctx
        self._first_parms_id = list(first_parms_id)
        self._public = bytes(data)
        self._fingerprint = fingerprint(SCHEME, self._public)

    @property
    def key_fingerprint(self) -> bytes:
        return self._fingerprint

    def public_material(self) -> bytes:
        return self._public

    def encryptor(
        self, *, scale: float | None = None, pool: CkksZeroPool | None = None
    ) -> CkksEncryptor:
        return CkksEncryptor(self, scale=self.params.scale if scale is None else scale, pool=pool)

    def accumulator(self, *, length: int, scale: float | None = None) -> CkksAccumulator:
        return CkksAccumulator(
            self, length=length, scale=self.params.scale if scale is None else scale
        )


def _check_scale(params: CkksParameters, scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
        math.isfinite(scale) and scale > 1
    ):
        raise ConfigurationError(f"scale must be a finite number > 1, got {scale!r}")
    if math.log2(scale) > params.data_modulus_bits - 2:
        raise ConfigurationError(
            f"scale 2^{math.log2(scale):.1f} does not fit the {params.data_modulus_bits}-bit data "
            "modulus"
        )
    return float(scale)


def _byte_budget(params: CkksParameters) -> int:
    # A fresh ciphertext serializes to about 2 * N * primes * 8 bytes (zstd barely compresses
    # uniform residues); anything far beyond that is refused before it is parsed.
    return 2 * params.ciphertext_bytes() + 4096


def _parse_native(
    ts: Any,
    ctx: Any,
    data: bytes | memoryview,
    *,
    index: int,
    size: int,
    scale: float,
    first_parms_id: list[int],
    budget: int,
    where: str | None = None,
) -> Any:
    """Deserialize and validate one chunk into TenSEAL's C++ vector; problems: ``MalformedMessage``.

    ``data`` may be a zero-copy view of the wire (:mod:`secureagg.transport.codec`); it is copied
    once, into the short-lived ``bytes`` TenSEAL's loader takes, right before it is parsed.
    ``where`` names the chunk in error messages (default ``ciphertext chunk <index>``).
    """
    where = where or f"ciphertext chunk {index}"
    if not isinstance(data, bytes | memoryview):
        raise MalformedMessage(f"{where}: expected bytes, got {type(data).__name__}")
    length = data.nbytes if isinstance(data, memoryview) else len(data)
    if not length or length > budget:
        raise MalformedMessage(
            f"{where}: {length} bytes, outside the 1..{budget} a ciphertext of these "
            "parameters can take"
        )
    try:
        native = ts._ts_cpp.CKKSVector(ctx.data, data if isinstance(data, bytes) else bytes(data))
        count = native.size()
        parts = native.ciphertext()
    except _TENSEAL_ERRORS:
        raise MalformedMessage(
            f"{where}: does not deserialize under the expected context (corrupted, truncated, or "
            "made under other parameters: a foreign context)"
        ) from None
    if count != size:
        raise MalformedMessage(f"{where}: carries {count} values, expected {size}")
    if len(parts) != 1:
        raise MalformedMessage(f"{where}: holds {len(parts)} ciphertexts, expected exactly 1")
    ct = parts[0]
    components = ct.size()
    if components != 2:
        raise MalformedMessage(
            f"{where}: a {components}-component ciphertext; only fresh 2-component "
            "ciphertexts are accepted"
        )
    if ct.parms_id() != first_parms_id or not ct.is_ntt_form():
        raise MalformedMessage(f"{where}: not at the first data level of the round's parameters")
    if ct.scale != scale:
        raise MalformedMessage(
            f"{where}: encoded at scale {float(ct.scale)!r}, the round uses {scale!r}"
        )
    return native


def _parse_chunk(
    ts: Any,
    ctx: Any,
    data: bytes | memoryview,
    *,
    index: int,
    size: int,
    scale: float,
    first_parms_id: list[int],
    budget: int,
    where: str | None = None,
) -> Any:
    """:func:`_parse_native`, wrapped as a ``tenseal.CKKSVector``."""
    native = _parse_native(
        ts, ctx, data, index=index, size=size, scale=scale, first_parms_id=first_parms_id,
        budget=budget, where=where,
    )
    return ts.CKKSVector(data=native)


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
        if not is_int(size) or not 1 <= size <= slots:
            raise ConfigurationError(
                f"size must be an integer in 1..{slots} (values per ciphertext), got {size!r}"
            )
        return int(size)

    def fill(self, count: int, *, size: int | None = None) -> None:
        """Precompute ``count`` more encryptions of zero of ``size`` values (default N/2)."""
        if not is_int(count) or count < 0:
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
        if not is_int(length) or length < 0 or not is_int(vectors) or vectors < 0:
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


class CkksAccumulator(Accumulator):
    """Server side: validates chunks and adds them in place into one running sum per position."""

    def __init__(self, context: CkksPublicContext, *, length: int, scale: float) -> None:
        if not is_int(length) or length < 1:
            raise ConfigurationError(f"length must be a positive integer, got {length!r}")
        self._context = context
        self.scale = _check_scale(context.params, scale)
        self._sizes = chunk_sizes(int(length), context.params.slots)
        self._sums: list[Any | None] = [None] * len(self._sizes)
        self._count = 0
        self._budget = _byte_budget(context.params)

    @property
    def contributions(self) -> int:
        return self._count

    @property
    def held_ciphertexts(self) -> int:
        return sum(1 for s in self._sums if s is not None)

    @property
    def chunk_count(self) -> int:
        return len(self._sizes)

    @property
    def supports_probes(self) -> bool:
        return True

    def empty(self) -> CkksAccumulator:
        return CkksAccumulator(self._context, length=sum(self._sizes), scale=self.scale)

    def add(
        self, ciphertexts: Sequence[bytes | memoryview], *, probe: ProbeDraw | None = None
    ) -> tuple[bytes, ...]:
        """Validate each chunk and add it in place; a bad chunk rolls the contribution back.

        ``ciphertexts`` may be zero-copy views of the upload; each is copied once, into the bytes
        TenSEAL's loader takes, parsed straight into a C++ vector (no Python wrappers), validated
        and added at once - while it is still in cache - then dropped, so the server holds one
        chunk at a time beside its running sums. If a later chunk fails validation, the chunks
        already added are parsed again and subtracted (ciphertext addition is exact modular
        arithmetic, so the running sums are restored bit for bit): a contribution is added
        completely or not at all.

        With ``probe``, each chunk is also added to (sign +1) or subtracted from (sign -1) its
        size group's probe, and each probe gets its group's mask added as a plaintext at the
        round's scale (no multiplication, so no level is used): one extra ciphertext per group.
        """
        ts = require_tenseal()
        if len(ciphertexts) != len(self._sizes):
            raise MalformedMessage(
                f"expected {len(self._sizes)} ciphertext chunks, got {len(ciphertexts)}"
            )
        groups = size_groups(self._sizes)
        if probe is not None and (
            len(probe.signs) != len(self._sizes) or len(probe.masks) != len(groups)
        ):
            raise ConfigurationError(
                f"a probe draw needs {len(self._sizes)} signs and {len(groups)} masks"
            )
        group_of = {size: g for g, (size, _) in enumerate(groups)}
        probes: list[Any | None] = [None] * len(groups)
        ctx = self._context._ctx
        first_parms_id, scale, budget = self._context._first_parms_id, self.scale, self._budget
        sums, sizes = self._sums, self._sizes
        added = 0
        try:
            for i, data in enumerate(ciphertexts):
                vec = _parse_native(
                    ts,
                    ctx,
                    data,
                    index=i,
                    size=sizes[i],
                    scale=scale,
                    first_parms_id=first_parms_id,
                    budget=budget,
                )
                if probe is not None:  # before vec may become a running sum
                    g = group_of[sizes[i]]
                    current = probes[g]
                    if current is None:
                        probes[g] = vec.copy() if probe.signs[i] > 0 else vec.neg()
                    elif probe.signs[i] > 0:
                        current.add_(vec)
                    else:
                        current.sub_(vec)
                running = sums[i]
                if running is None:
                    sums[i] = vec  # deserialized straight into the running sum
                else:
                    running.add_(vec)  # in place (SEAL add_inplace)
                added += 1
        except MalformedMessage:
            self._roll_back(ciphertexts, added)
            raise
        self._count += 1
        if probe is None:
            return ()
        out: list[bytes] = []
        for g, current in enumerate(probes):
            if current is None:  # pragma: no cover - every group has at least one chunk
                raise ConfigurationError("empty probe group")
            for layer in np.asarray(probe.masks[g], dtype=np.float64).reshape(
                -1, groups[g][0]
            ):
                current.add_plain_(layer.tolist())
            out.append(current.serialize())
        return tuple(out)

    def _roll_back(self, ciphertexts: Sequence[bytes | memoryview], added: int) -> None:
        ts = require_tenseal()
        ctx = self._context._ctx
        for i in range(added):
            if self._count == 0:
                self._sums[i] = None  # this contribution was the first: nothing before it
                continue
            running = self._sums[i]
            if running is not None:  # always: positions fill on the first contribution
                data = ciphertexts[i]
                raw = data if isinstance(data, bytes) else bytes(data)
                running.sub_(ts._ts_cpp.CKKSVector(ctx.data, raw))

    def export(self) -> tuple[bytes, ...]:
        if self._count == 0:
            raise ConfigurationError("nothing was added: there is no aggregate to export")
        return tuple(s.serialize() for s in self._sums if s is not None)


class CkksDecryptor(Decryptor):
    """Key holder side: validates and decrypts an aggregate into float64 values."""

    scheme: ClassVar[str] = SCHEME

    def __init__(self, key: CkksSecretKey, *, scale: float) -> None:
        self._key = key
        self.scale = _check_scale(key.params, scale)
        ts = require_tenseal()
        _, _, first = _context_parameters(ts, key._private_context())
        self._first_parms_id = list(first)

    @property
    def key_fingerprint(self) -> bytes:
        return self._key.key_fingerprint

    def public_material(self) -> bytes:
        return self._key.public_material()

    def decrypt(
        self, ciphertexts: Sequence[bytes | memoryview], length: int
    ) -> npt.NDArray[np.float64]:
        ts = require_tenseal()
        sizes = chunk_sizes(int(length), self._key.params.slots)
        if len(ciphertexts) != len(sizes):
            raise MalformedMessage(
                f"expected {len(sizes)} ciphertext chunks, got {len(ciphertexts)}"
            )
        ctx = self._key._private_context()
        budget = _byte_budget(self._key.params)
        out = np.empty(int(length), dtype=np.float64)
        offset = 0
        for i, data in enumerate(ciphertexts):
            vec = _parse_native(
                ts,
                ctx,
                data,
                index=i,
                size=sizes[i],
                scale=self.scale,
                first_parms_id=self._first_parms_id,
                budget=budget,
            )
            out[offset : offset + sizes[i]] = vec.decrypt()
            offset += sizes[i]
        return out

    def decrypt_probe(self, data: bytes | memoryview, size: int) -> npt.NDArray[np.float64]:
        """Decrypt one key-check probe of ``size`` values (malformed input: ``MalformedMessage``).

        A probe is a masked signed sum of one client's chunks (:meth:`CkksAccumulator.add`); its
        values are meaningful only as magnitudes, which is all the key holder checks.
        """
        vec = _parse_native(
            require_tenseal(),
            self._key._private_context(),
            data,
            index=0,
            size=int(size),
            scale=self.scale,
            first_parms_id=self._first_parms_id,
            budget=_byte_budget(self._key.params),
            where="key-check probe",
        )
        return np.asarray(vec.decrypt(), dtype=np.float64)


# --- Encrypted linear layer (split learning) ---
#
# Adapters for secureagg.split.he_cut: the client (key holder) encrypts batches of activation
# rows laid out in slots, the server forms plain-weighted slot-wise sums of those ciphertexts
# (ciphertext x plaintext products and additions only: no rotation, so no Galois keys), and the
# client decrypts the sums. Threat model: the server gets a context holding no key at all (the
# client encrypts symmetrically with its own secret key), so it can evaluate but neither encrypt
# nor decrypt; IND-CPA of CKKS (RLWE, 128-bit HE-standard parameters) hides the activations.
# Every ciphertext from the other party is parsed under the expected parameters and checked for
# level, scale, size and component count; anything else is a MalformedMessage, never a TenSEAL
# exception. A ciphertext made under another key with the *same* parameters cannot be told apart
# by parsing: secureagg.split.he_cut detects it on decryption with a secret canary slot.
# Ciphertexts are parsed and checked by the same _parse_chunk as the aggregation's uploads.

#: The cut layer's CKKS parameters: N = 4096 (2048 slots), one 60-bit data prime and a 49-bit
#: special prime (109 bits: exactly the HE-standard 128-bit budget at N = 4096), scale 2^25 for the
#: inputs and for the plain weights. Products stay at scale 2^50 (no rescaling, so a single data
#: prime suffices): slot-wise sums must stay below 2^58 / 2^50 = 256 in magnitude.
CUT_LAYER_PARAMETERS = CkksParameters(
    poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49), scale=2.0**25
)
_CUT_SCHEME = "ckks-cut-layer"


def cut_layer_product_bound(params: CkksParameters) -> float:
    """Largest |slot value| of a ciphertext x plaintext product sum that decrypts correctly.

    A product carries scale ``scale^2``; decryption is exact modulo the data modulus
    ``q >= 2^(data bits - 1)``, centred, so ``|value| * scale^2`` must stay below
    ``2^(data bits - 2)`` (one bit of margin for the noise).
    """
    return float(2.0 ** (params.data_modulus_bits - 2) / (float(params.scale) ** 2))


def _cut_params_of(ts: Any, ctx: Any) -> tuple[CkksParameters, list[int]]:
    """The parameters and first data level of a cut-layer context (:func:`_context_parameters`)."""
    try:
        n, bits, first = _context_parameters(ts, ctx)
        scale = float(ctx.global_scale)
    except _TENSEAL_ERRORS:
        raise InvalidKeyError("the cut-layer context carries no readable CKKS parameters") from None
    try:
        params = CkksParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=bits, scale=scale)
    except ConfigurationError as exc:
        raise InvalidKeyError(f"the cut-layer context has unsafe parameters: {exc}") from None
    return params, list(first)


def _cut_parse(
    ts: Any,
    ctx: Any,
    data: object,
    *,
    where: str,
    params: CkksParameters,
    scale: float,
    first_parms_id: list[int],
) -> Any:
    """One cut-layer ciphertext, parsed and checked by :func:`_parse_chunk` (full slots, fresh,
    first level, ``scale``); only ``bytes`` are taken from the other party."""
    if not isinstance(data, bytes):
        raise MalformedMessage(f"{where}: expected bytes, got {type(data).__name__}")
    return _parse_chunk(
        ts, ctx, data, index=0, size=params.slots, scale=scale, first_parms_id=first_parms_id,
        budget=_byte_budget(params), where=where,
    )


def _new_cut_context(ts: Any, params: CkksParameters) -> Any:
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=int(params.poly_modulus_degree),
        coeff_mod_bit_sizes=[int(b) for b in params.coeff_mod_bit_sizes],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        n_threads=1,
    )
    ctx.global_scale = float(params.scale)
    ctx.auto_rescale = False
    ctx.auto_relin = False
    ctx.auto_mod_switch = False
    return ctx


class CutLayerSecretKey:
    """The split-learning client's CKKS key for the encrypted cut layer. Never leaves the client.

    Symmetric encryption under the secret key (cheaper than public-key encryption, and the only
    encryptor is the key holder). :meth:`evaluation_context` is what the server gets: the
    parameters only - no secret, public, relinearization or Galois key (none is needed: the server
    only multiplies by plaintexts and adds).

    >>> key = CutLayerSecretKey()
    >>> server = CutLayerEvaluator(key.evaluation_context(), expected=CUT_LAYER_PARAMETERS)
    >>> key.slots, server.key_fingerprint == key.key_fingerprint
    (2048, True)
    """

    def __init__(self, params: CkksParameters | None = None) -> None:
        ts = require_tenseal()
        self.params = params if params is not None else CUT_LAYER_PARAMETERS
        self._ctx = _new_cut_context(ts, self.params)
        self._evaluation = bytes(
            self._ctx.serialize(
                save_public_key=False,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )
        self._fingerprint = fingerprint(_CUT_SCHEME, self._evaluation)
        _, self._first_parms_id = _cut_params_of(ts, self._ctx)

    @property
    def key_fingerprint(self) -> bytes:
        """SHA-256 fingerprint of :meth:`evaluation_context`: it names the parameters only (the
        context holds no key), so two keys with the same parameters share it; a ciphertext under
        another key is caught on decryption (he_cut's canary slot), not by this."""
        return self._fingerprint

    @property
    def slots(self) -> int:
        return self.params.slots

    def evaluation_context(self) -> bytes:
        """The context the server evaluates with: parameters only, no key of any kind."""
        return self._evaluation

    def encrypt_rows(self, rows: npt.NDArray[Any]) -> tuple[bytes, ...]:
        """Encrypt each row of a ``(count, slots)`` float64 array into one ciphertext's bytes."""
        ts = require_tenseal()
        arr = np.asarray(rows)
        if arr.ndim != 2 or arr.shape[1] != self.slots or arr.dtype != np.float64:
            raise InvalidInputError(
                f"encrypt_rows takes a (count, {self.slots}) float64 array, got "
                f"{arr.dtype} {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise NonFiniteInputError("NaN or Inf in the values to encrypt")
        scale = float(self.params.scale)
        return tuple(bytes(ts.ckks_vector(self._ctx, row, scale=scale).serialize()) for row in arr)

    def decrypt_products(self, ciphertexts: Sequence[bytes]) -> npt.NDArray[np.float64]:
        """Decrypt plain-weighted sums (scale^2, first level) into a ``(count, slots)`` array.

        Raises :class:`~secureagg.errors.MalformedMessage` for bytes that are not such a
        ciphertext under these parameters.
        """
        ts = require_tenseal()
        out = np.empty((len(ciphertexts), self.slots), dtype=np.float64)
        scale = float(self.params.scale) ** 2
        for i, data in enumerate(ciphertexts):
            vec = _cut_parse(
                ts,
                self._ctx,
                data,
                where=f"cut-layer result ciphertext {i}",
                params=self.params,
                scale=scale,
                first_parms_id=self._first_parms_id,
            )
            out[i] = np.asarray(vec.decrypt(), dtype=np.float64)
        return out

    def __repr__(self) -> str:
        fp = self._fingerprint.hex()[:16]
        return f"CutLayerSecretKey(params={self.params!r}, fingerprint={fp})"


class CutLayerEvaluator:
    """The server's view of the cut-layer key: evaluates, cannot encrypt or decrypt.

    ``data`` are the bytes of :meth:`CutLayerSecretKey.evaluation_context`. Raises
    :class:`~secureagg.errors.InvalidKeyError` for a context that holds a secret key (or any
    key-switching material), is not CKKS, does not deserialize, or has parameters other than
    ``expected``.
    """

    def __init__(self, data: bytes, *, expected: CkksParameters) -> None:
        ts = require_tenseal()
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            raise InvalidKeyError("the cut-layer context must be non-empty bytes")
        try:
            ctx = ts.context_from(bytes(data), n_threads=1)
            private = bool(ctx.is_private()) or bool(ctx.has_secret_key())
        except _TENSEAL_ERRORS:
            raise InvalidKeyError(
                "the cut-layer context does not deserialize (truncated, corrupted or not a "
                "TenSEAL context)"
            ) from None
        if private:
            raise InvalidKeyError(
                "the cut-layer context holds a secret key: the server accepts key-free evaluation "
                "contexts only (CutLayerSecretKey.evaluation_context(); the secret key stays "
                "with the client)"
            )
        params, first = _cut_params_of(ts, ctx)
        if params != expected:
            raise InvalidKeyError(
                f"mismatched cut-layer context: it has {params.to_dict()}, the server expects "
                f"{expected.to_dict()}"
            )
        ctx.auto_rescale = False
        ctx.auto_relin = False
        ctx.auto_mod_switch = False
        self.params = params
        self._ctx = ctx
        self._first_parms_id = first
        self._fingerprint = fingerprint(_CUT_SCHEME, bytes(data))

    @property
    def key_fingerprint(self) -> bytes:
        return self._fingerprint

    @property
    def slots(self) -> int:
        return self.params.slots

    def weighted_sums(
        self,
        ciphertexts: Sequence[bytes],
        weights: npt.NDArray[np.float64],
        *,
        input_bound: float,
    ) -> tuple[bytes, ...]:
        """``out[t] = sum_s ct[s] * weights[t, s]`` slot-wise, for a ``(q, p, slots)`` array.

        Every ciphertext is validated (fresh, scale, level, size) before any is used.
        ``input_bound`` bounds the absolute value of every encrypted slot (the client enforces
        it); the sums are proved to fit (:func:`cut_layer_product_bound`) before anything is
        computed, else :class:`~secureagg.errors.ConfigurationError`.
        """
        ts = require_tenseal()
        w = np.asarray(weights)
        p = len(ciphertexts)
        if w.ndim != 3 or w.shape[1] != p or w.shape[2] != self.slots or w.dtype != np.float64:
            raise InvalidInputError(
                f"weights must be a (q, {p}, {self.slots}) float64 array, got {w.dtype} {w.shape}"
            )
        if not np.isfinite(w).all():
            raise NonFiniteInputError("NaN or Inf in the plaintext weights")
        worst = float(np.abs(w).sum(axis=1).max(initial=0.0)) * float(input_bound)
        bound = cut_layer_product_bound(self.params)
        if not worst < bound:
            raise ConfigurationError(
                f"the weighted sums could reach {worst:.4g} in magnitude, beyond the "
                f"{bound:.4g} the cut-layer parameters decrypt correctly; lower the activation "
                "bound or the weights' magnitude, or split the inner dimension more finely"
            )
        scale = float(self.params.scale)
        parsed = [
            _cut_parse(
                ts,
                self._ctx,
                data,
                where=f"cut-layer input ciphertext {s}",
                params=self.params,
                scale=scale,
                first_parms_id=self._first_parms_id,
            )
            for s, data in enumerate(ciphertexts)
        ]
        out: list[bytes] = []
        for t in range(w.shape[0]):
            total: Any = None
            for s, vec in enumerate(parsed):
                row = w[t, s]
                if not row.any():
                    continue
                try:
                    term = vec.mul(row)
                except ValueError:  # the plaintext rounded to zero: SEAL refuses it, adds 0
                    continue
                if total is None:
                    total = term
                else:
                    total.add_(term)
            if total is None:
                raise InvalidInputError(
                    f"output {t} has no non-zero weight: nothing to return (the caller's layout "
                    "must give every output at least one non-zero weight)"
                )
            out.append(bytes(total.serialize()))
        return tuple(out)
