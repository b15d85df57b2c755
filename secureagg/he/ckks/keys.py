"""The CKKS keys: the key holder's secret key and the public context everyone else holds.

This module owns the ``tenseal`` import (:func:`require_tenseal`) and the tuple of TenSEAL
exceptions every boundary of :mod:`secureagg.he.ckks` catches (``_TENSEAL_ERRORS``), so that no
TenSEAL exception escapes the package.

Threat model and invariants.

* **Roles.** :class:`CkksSecretKey` (the key holder's) creates the keys and is the only object that
  ever holds the secret key. It hands out :meth:`CkksSecretKey.public_material`: a TenSEAL context
  serialized *without* the secret key and without evaluation keys (a sum needs none). Its
  :meth:`CkksSecretKey.to_bytes` (the secret key, for the key holder's own node between two
  processes) never go on the wire.
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
* **Randomness.** Keys and encryption randomness come from SEAL's own CSPRNG (Blake2xb seeded from
  the OS); TenSEAL exposes no way to seed it, so a seeded simulation reproduces everything of a
  CKKS round except the keys and the encryption noise.

Parameters, their validation against the HE-standard table and the noise model live in
:mod:`secureagg.he.ckks_params` (no tenseal import).

>>> key = CkksSecretKey()                               # the key holder's
>>> server_view = CkksPublicContext(key.public_material())
>>> server_view.params.slots, server_view.key_fingerprint == key.key_fingerprint
(4096, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureagg.errors import InvalidKeyError, MalformedMessage, MissingDependencyError
from secureagg.he.backend import fingerprint
from secureagg.he.ckks_params import CkksParameters
from secureagg.he.secret_key_bytes import open_sealed, seal

if TYPE_CHECKING:
    from secureagg.he.ckks.encryption import CkksEncryptor, CkksZeroPool
    from secureagg.he.ckks.summation import CkksAccumulator, CkksDecryptor

__all__ = ["CkksPublicContext", "CkksSecretKey", "require_tenseal"]

SCHEME = "ckks"
_MAGIC = b"secureagg/ckks-secret-key\x00"
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
    aggregators create a fresh one per round instead. A key holder whose process ends between
    messages keeps :meth:`to_bytes` on its own node and reads them back with :meth:`from_bytes`;
    those bytes never go on the wire.
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
        self._adopt(ctx)

    def _adopt(self, ctx: Any) -> None:
        """Hold the private context ``ctx`` and derive its public material."""
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
        from secureagg.he.ckks.summation import CkksDecryptor  # the summation side imports this

        return CkksDecryptor(self, scale=self.params.scale if scale is None else scale)

    def _private_context(self) -> Any:
        return self._ctx

    # -- node-local storage (never on the wire) ----------------------------------------------

    def to_bytes(self) -> bytes:
        """The secret key as bytes **for the key holder's own node only** (they never go on the
        wire, to the server, a client or into a round spec or state): TenSEAL's own
        serialization with the secret and public key (no evaluation keys, which a sum does not
        need), framed by :mod:`secureagg.he.secret_key_bytes` (magic, version, checksum).

        :meth:`from_bytes` reads them back with the same :meth:`public_material` and
        :attr:`key_fingerprint`.
        """
        body = bytes(
            self._ctx.serialize(
                save_public_key=True,
                save_secret_key=True,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )
        return seal(_MAGIC, body)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CkksSecretKey:
        """The key :meth:`to_bytes` wrote (node-local bytes; never received from another party).

        Refused with :class:`~secureagg.errors.MalformedMessage`: anything but those bytes
        (another scheme's key, a corrupted or truncated one, a context without a secret or a
        public key, not CKKS, or whose secret key does not decrypt what its public key
        encrypts); with :class:`~secureagg.errors.ConfigurationError`: insecure parameters.
        """
        ts = require_tenseal()
        what = "CKKS secret key"
        body = open_sealed(data, magic=_MAGIC, what=what)
        try:
            ctx = ts.context_from(body, n_threads=1)
        except _TENSEAL_ERRORS:
            raise MalformedMessage(f"{what} refused: not a TenSEAL context") from None
        if not (ctx.is_private() and ctx.has_secret_key()):
            raise MalformedMessage(f"{what} refused: the context holds no secret key")
        try:
            has_public_key = bool(ctx.has_public_key())
        except ValueError:  # a symmetric context
            has_public_key = False
        if not has_public_key:
            raise MalformedMessage(f"{what} refused: the context holds no public key")
        try:
            n, bits, _ = _context_parameters(ts, ctx)
            scale = float(ctx.global_scale)
        except (InvalidKeyError, *_TENSEAL_ERRORS) as exc:
            raise MalformedMessage(f"{what} refused: {exc}") from None
        key = cls.__new__(cls)
        key.params = CkksParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=bits, scale=scale)
        key._adopt(ctx)
        probe = [1.0, -0.5, 0.25]
        try:
            back = ts.ckks_vector(ctx, probe).decrypt()
        except _TENSEAL_ERRORS:
            back = []
        if len(back) != len(probe) or any(
            abs(a - b) > 1e-3 for a, b in zip(back, probe, strict=True)
        ):
            raise MalformedMessage(
                f"{what} refused: its secret key does not decrypt what its public key encrypts"
            )
        return key

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
        from secureagg.he.ckks.encryption import CkksEncryptor  # the encryptor imports this

        return CkksEncryptor(self, scale=self.params.scale if scale is None else scale, pool=pool)

    def accumulator(self, *, length: int, scale: float | None = None) -> CkksAccumulator:
        from secureagg.he.ckks.summation import CkksAccumulator  # the summation side imports this

        return CkksAccumulator(
            self, length=length, scale=self.params.scale if scale is None else scale
        )
