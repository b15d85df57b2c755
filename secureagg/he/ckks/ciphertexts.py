"""Parsing and validating one serialized CKKS ciphertext under the round's context.

Threat model and invariants.

* **Ciphertext validation** (:class:`~secureagg.he.ckks.summation.CkksAccumulator`,
  :class:`~secureagg.he.ckks.summation.CkksDecryptor`, the cut layer): every chunk must
  deserialize under the round's context (TenSEAL/SEAL check the parameters id and that every
  coefficient is below its modulus), hold exactly one two-component ciphertext at the first data
  level in NTT form, carry the round's scale and the expected number of values, and fit a byte
  budget. Malformed, truncated or foreign bytes raise
  :class:`~secureagg.errors.MalformedMessage`; TenSEAL's own exceptions never escape.
* **Size before parsing.** A chunk longer than twice a fresh ciphertext of the parameters (plus
  4 KiB) is refused before TenSEAL sees it (:func:`_byte_budget`).
* **Scale.** Every encryptor, accumulator and decryptor checks its scale with :func:`_check_scale`:
  finite, > 1 and leaving at least two bits of the data modulus for the values.

The summation side (:mod:`secureagg.he.ckks.summation`) and the cut layer
(:mod:`secureagg.he.ckks.cut_layer`) parse every ciphertext from another party through
:func:`_parse_native` / :func:`_parse_chunk`.

>>> from secureagg.he.ckks_params import CkksParameters
>>> _byte_budget(CkksParameters()) == 2 * CkksParameters().ciphertext_bytes() + 4096
True
>>> _check_scale(CkksParameters(), 2.0**40)
1099511627776.0
"""

from __future__ import annotations

import math
from typing import Any

from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.he.ckks.keys import _TENSEAL_ERRORS
from secureagg.he.ckks_params import CkksParameters

__all__: list[str] = []  # package-private helpers: see secureagg.he.ckks for the public names


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
