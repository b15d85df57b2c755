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
  [60, 60] (one 60-bit data prime plus the special prime), scale 2^40: 120 bits of modulus against
  the 218 the HE standard allows at N = 8192 for 128-bit security. A ciphertext of 4096 values is
  2 x 8192 x 8 bytes = 128 KiB, **8x** a float32 payload (NVIDIA FLARE's [60, 40, 40, 60] context
  carries three data primes: about 20x).
* **Ciphertext validation** (:class:`CkksAccumulator`, :class:`CkksDecryptor`): every chunk must
  deserialize under the round's context (TenSEAL/SEAL check the parameters id and that every
  coefficient is below its modulus), hold exactly one two-component ciphertext at the first data
  level in NTT form, carry the round's scale and the expected number of values, and fit a byte
  budget. Malformed, truncated or foreign bytes raise
  :class:`~secureagg.errors.MalformedMessage`; TenSEAL's own exceptions never escape.
* **Streaming.** The server keeps one running ciphertext per chunk position and adds each
  arriving chunk into it in place (``add_``); chunking happens here, chunk by chunk, on views of
  the caller's vector.
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
    InvalidKeyError,
    MalformedMessage,
    MissingDependencyError,
)
from secureagg.he.backend import Accumulator, Decryptor, Encryptor, chunk_sizes, fingerprint
from secureagg.he.ckks_params import FFT_SAFE_BITS, FLARE_DEFAULT, CkksParameters, is_int

__all__ = [
    "FFT_SAFE_BITS",
    "FLARE_DEFAULT",
    "CkksAccumulator",
    "CkksDecryptor",
    "CkksEncryptor",
    "CkksParameters",
    "CkksPublicContext",
    "CkksSecretKey",
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

    def encryptor(self, *, scale: float | None = None) -> CkksEncryptor:
        return CkksEncryptor(self, scale=self.params.scale if scale is None else scale)

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


def _parse_chunk(
    ts: Any,
    ctx: Any,
    data: bytes,
    *,
    index: int,
    size: int,
    scale: float,
    first_parms_id: list[int],
    budget: int,
) -> Any:
    """Deserialize and validate one chunk; any problem is a ``MalformedMessage``."""
    where = f"ciphertext chunk {index}"
    if not isinstance(data, bytes):
        raise MalformedMessage(f"{where}: expected bytes, got {type(data).__name__}")
    if not data or len(data) > budget:
        raise MalformedMessage(
            f"{where}: {len(data)} bytes, outside the 1..{budget} a ciphertext of these "
            "parameters can take"
        )
    try:
        vec = ts.ckks_vector_from(ctx, data)
        native = vec.data  # the C++ object: one binding call per check, no wrapper layers
        count = native.size()
        parts = native.ciphertext()
    except _TENSEAL_ERRORS:
        raise MalformedMessage(
            f"{where}: does not deserialize under the round's context (corrupted, truncated, or "
            "made under other parameters)"
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
    return vec


class CkksEncryptor(Encryptor):
    """Client side: encrypts float64 vectors chunk by chunk (N/2 values per ciphertext)."""

    scheme: ClassVar[str] = SCHEME

    def __init__(self, context: CkksPublicContext, *, scale: float) -> None:
        self._context = context
        self.scale = _check_scale(context.params, scale)

    @property
    def key_fingerprint(self) -> bytes:
        return self._context.key_fingerprint

    @property
    def values_per_ciphertext(self) -> int:
        return self._context.params.slots

    def encrypt(self, values: npt.NDArray[Any]) -> Iterator[bytes]:
        """Yield the serialized ciphertext of each chunk of ``values`` (1-D float64).

        Each chunk is a view of ``values``; TenSEAL copies only the chunk it encodes.
        """
        ts = require_tenseal()
        flat = np.asarray(values)
        if flat.ndim != 1 or flat.dtype != np.float64:
            raise ConfigurationError("CKKS encrypts 1-D float64 arrays")
        step = self.values_per_ciphertext
        ctx = self._context._ctx
        for start in range(0, flat.size, step):
            chunk = flat[start : start + step]
            vec = ts.ckks_vector(ctx, chunk, scale=self.scale)
            yield bytes(vec.serialize())


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

    def add(self, ciphertexts: Sequence[bytes]) -> None:
        ts = require_tenseal()
        if len(ciphertexts) != len(self._sizes):
            raise MalformedMessage(
                f"expected {len(self._sizes)} ciphertext chunks, got {len(ciphertexts)}"
            )
        ctx = self._context._ctx
        parsed = [
            _parse_chunk(
                ts,
                ctx,
                data,
                index=i,
                size=self._sizes[i],
                scale=self.scale,
                first_parms_id=self._context._first_parms_id,
                budget=self._budget,
            )
            for i, data in enumerate(ciphertexts)
        ]
        for i, vec in enumerate(parsed):
            running = self._sums[i]
            if running is None:
                self._sums[i] = vec  # deserialized straight into the running sum
            else:
                running.add_(vec)  # in place
        self._count += 1

    def export(self) -> tuple[bytes, ...]:
        if self._count == 0:
            raise ConfigurationError("nothing was added: there is no aggregate to export")
        return tuple(bytes(s.serialize()) for s in self._sums if s is not None)


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

    def decrypt(self, ciphertexts: Sequence[bytes], length: int) -> npt.NDArray[np.float64]:
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
            vec = _parse_chunk(
                ts,
                ctx,
                data,
                index=i,
                size=sizes[i],
                scale=self.scale,
                first_parms_id=self._first_parms_id,
                budget=budget,
            )
            out[offset : offset + sizes[i]] = np.asarray(vec.decrypt(), dtype=np.float64)
            offset += sizes[i]
        return out
