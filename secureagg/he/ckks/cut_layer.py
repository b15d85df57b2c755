"""The encrypted linear layer of split learning (CKKS, ciphertext x plaintext products only).

Adapters for secureagg.split.he_cut: the client (key holder) encrypts batches of activation
rows laid out in slots, the server forms plain-weighted slot-wise sums of those ciphertexts
(ciphertext x plaintext products and additions only: no rotation, so no Galois keys), and the
client decrypts the sums. Threat model: the server gets a context holding no key at all (the
client encrypts symmetrically with its own secret key), so it can evaluate but neither encrypt
nor decrypt; IND-CPA of CKKS (RLWE, 128-bit HE-standard parameters) hides the activations.
Every ciphertext from the other party is parsed under the expected parameters and checked for
level, scale, size and component count; anything else is a MalformedMessage, never a TenSEAL
exception. A ciphertext made under another key with the *same* parameters cannot be told apart
by parsing: secureagg.split.he_cut detects it on decryption with a secret canary slot.
Ciphertexts are parsed and checked by the same _parse_chunk as the aggregation's uploads.

The parameters are :data:`CUT_LAYER_PARAMETERS`; :func:`cut_layer_product_bound` bounds what a
product sum may reach and still decrypt correctly.

>>> cut_layer_product_bound(CUT_LAYER_PARAMETERS)
256.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidKeyError,
    MalformedMessage,
    NonFiniteInputError,
)
from secureagg.he.backend import fingerprint
from secureagg.he.ckks.ciphertexts import _byte_budget, _parse_chunk
from secureagg.he.ckks.keys import _TENSEAL_ERRORS, _context_parameters, require_tenseal
from secureagg.he.ckks_params import CkksParameters

__all__ = [
    "CUT_LAYER_PARAMETERS",
    "CutLayerEvaluator",
    "CutLayerSecretKey",
    "cut_layer_product_bound",
]

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
