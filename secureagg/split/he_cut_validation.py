"""What both parties of the encrypted cut layer check on a message, and how messages are bound.

Threat model: the other party is buggy or adversarial, and a driver may build a message without
its constructor. Every message names the session and the step (:func:`same_step`); a response
carries the SHA-256 digest of the request it answers, and the backward request that of the
forward (:func:`request_digest`, :func:`backward_digest`, under the label
``secureagg/v1/split/he-cut/digest``), so a message out of stage, from another step or another
batch is refused and nothing is applied. Arrays are checked for shape, dtype, finiteness and
``activation_bound`` (:func:`check_matrix`, :func:`received_matrix`), ciphertext fields for being
a tuple of bytes (:func:`ciphertext_tuple`). Pure numpy and hashlib: no key material here.

>>> s = b"s" * 16
>>> request_digest(b"forward", s, 0, [b"ct"]) == request_digest(b"forward", s, 1, [b"ct"])
False
>>> same_step(s, 3, s, 3), same_step(s, True, s, 1), same_step(b"t" * 16, 3, s, 3)
(True, False, False)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from secureagg.errors import InvalidInputError, MalformedMessage, NonFiniteInputError
from secureagg.split.he_cut_messages import BackwardRequest

__all__ = [
    "backward_digest",
    "check_matrix",
    "ciphertext_tuple",
    "finite_number",
    "received_matrix",
    "request_digest",
    "same_step",
    "session_text",
]

FloatArray = npt.NDArray[np.float64]
_DIGEST_LABEL = b"secureagg/v1/split/he-cut/digest\x00"


def finite_number(value: object) -> bool:
    """A real int or float (not a bool), neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def request_digest(kind: bytes, session_id: bytes, step: int, parts: Sequence[bytes]) -> bytes:
    """SHA-256 over the label, ``kind``, session, step and the length-prefixed ``parts``."""
    h = hashlib.sha256(_DIGEST_LABEL + kind + b"\x00" + session_id + step.to_bytes(8, "big"))
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def _array_digest(arrays: Sequence[FloatArray | None]) -> list[bytes]:
    return [b"" if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays]


def check_matrix(
    value: object, shape: tuple[int, ...], what: str, *, bound: float | None = None
) -> FloatArray:
    """``value`` as a finite float64 array of ``shape``, within ``bound`` if one is given."""
    arr = np.asarray(value)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(
            f"{what} must be a float array of shape {shape}, got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NonFiniteInputError(f"NaN or Inf in {what}; nothing was sent or applied")
    if bound is not None and float(np.abs(arr).max(initial=0.0)) > bound:
        raise InvalidInputError(
            f"{what} has entries beyond activation_bound={bound}; scale them down (or raise the "
            "bound, within what the CKKS parameters allow)"
        )
    return arr


def received_matrix(
    value: object, shape: tuple[int, ...], what: str, *, bound: float | None = None
) -> FloatArray:
    """A flat array from a message, checked to fill ``shape`` exactly, then checked as a matrix.

    ``shape`` comes from the configuration (Python ints), so ``math.prod`` is exact.
    """
    size = math.prod(shape)
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.size != size:
        got = (
            f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        raise InvalidInputError(
            f"{what} must carry a 1-D array of {size} values (shape {shape}, flattened), "
            f"got {got}"
        )
    arr = value
    return check_matrix(arr.reshape(shape), shape, what, bound=bound)


def same_step(session_id: object, step: object, own_session: bytes, own_step: int) -> bool:
    """Whether a message's session id and step are exactly this party's (a bool is no step)."""
    return (
        isinstance(session_id, bytes | bytearray | memoryview)
        and bytes(session_id) == own_session
        and isinstance(step, int)
        and not isinstance(step, bool)
        and step == own_step
    )


def session_text(session_id: object) -> str:
    """A short, safe rendering of a received session id for an error message."""
    if isinstance(session_id, bytes | bytearray | memoryview):
        return bytes(session_id[:4]).hex()
    return type(session_id).__name__


def ciphertext_tuple(value: object, what: str) -> tuple[bytes, ...]:
    """A message's ciphertext tuple, or MalformedMessage (a driver may skip the constructor)."""
    if not isinstance(value, tuple | list) or not all(
        isinstance(b, bytes | bytearray | memoryview) for b in value
    ):
        raise MalformedMessage(f"{what} must be a tuple of ciphertext bytes")
    return tuple(value)


def backward_digest(request: BackwardRequest) -> bytes:
    """The digest that binds a backward request: its forward digest, ciphertexts and arrays."""
    parts = [request.forward_digest, *request.gradient_ciphertexts]
    parts += _array_digest([request.weight_gradient, request.bias_gradient, request.plain_gradient])
    return request_digest(b"backward", request.session_id, request.step, parts)
