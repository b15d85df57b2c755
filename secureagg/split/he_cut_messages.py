"""The encrypted cut layer's messages (:mod:`secureagg.split.he_cut`), registered with the codec.

Matrices travel flat (row-major) and the receiver reshapes them to the shape the configuration
fixes; ciphertexts travel as bytes. Each message's constructor checks the field *types*, so that
:func:`secureagg.transport.decode` refuses a malformed one (``MalformedMessage``) and a driver
cannot build one; sizes, values and order are the receiving party's to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import InvalidInputError
from secureagg.protocols.base import Message

__all__ = [
    "BackwardRequest",
    "BackwardResponse",
    "CutSetup",
    "ForwardRequest",
    "ForwardResponse",
]

FloatArray = npt.NDArray[np.float64]

# Codec-registered messages (secureagg.transport.encode/decode; no pickle): matrices travel flat
# (row-major) and the receiver reshapes them to the shape the configuration fixes. Each message's
# constructor checks the field *types* (so decode refuses a malformed one with MalformedMessage
# and a driver cannot build one); sizes, values and order are the receiving party's to check.

_BLOB_TYPES = (bytes, bytearray, memoryview)


def _check_fields(message: Message, *, blobs: Sequence[str] = (), arrays: Sequence[str] = (),
                  optional_arrays: Sequence[str] = (), blob_tuples: Sequence[str] = ()) -> None:
    what = type(message).__name__
    problems: list[str] = []
    step = getattr(message, "step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        problems.append(f"step must be an int, got {type(step).__name__}")
    for name in ("session_id", *blobs):
        if not isinstance(getattr(message, name), _BLOB_TYPES):
            problems.append(f"{name} must be bytes, got {type(getattr(message, name)).__name__}")
    for name in blob_tuples:
        value = getattr(message, name)
        if not isinstance(value, tuple) or not all(isinstance(b, _BLOB_TYPES) for b in value):
            problems.append(f"{name} must be a tuple of bytes")
    for name in (*arrays, *optional_arrays):
        value = getattr(message, name)
        if value is None and name in optional_arrays:
            continue
        if not isinstance(value, np.ndarray) or value.ndim != 1:
            problems.append(f"{name} must be a 1-D numpy array (a flattened matrix)")
    if problems:
        raise InvalidInputError(f"{what}: " + "; ".join(problems))


@dataclass(frozen=True)
class CutSetup(Message):
    """Client -> server, once: session id, the key-free evaluation context, and the configuration
    summary as canonical JSON (:meth:`HeCutConfig.summary`)."""

    KIND: ClassVar[str] = "split/he-setup"
    session_id: bytes
    evaluation_context: bytes
    config_json: str

    def __post_init__(self) -> None:
        _check_fields(self, blobs=("evaluation_context",))
        if not isinstance(self.config_json, str):
            raise InvalidInputError("CutSetup: config_json must be a str")


@dataclass(frozen=True)
class ForwardRequest(Message):
    """Client -> server: Enc(A') for step ``step``."""

    KIND: ClassVar[str] = "split/he-forward"
    session_id: bytes
    step: int
    key_fingerprint: bytes
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_fields(self, blobs=("key_fingerprint",), blob_tuples=("ciphertexts",))


@dataclass(frozen=True)
class ForwardResponse(Message):
    """Server -> client: Enc(partial sums of A' W'), bound to the request's digest."""

    KIND: ClassVar[str] = "split/he-forward-reply"
    session_id: bytes
    step: int
    request_digest: bytes
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_fields(self, blobs=("request_digest",), blob_tuples=("ciphertexts",))


@dataclass(frozen=True, eq=False)
class BackwardRequest(Message):
    """Client -> server: Enc(G) (or G), and the clipped, noised gradient of W and b.

    ``weight_gradient`` is ``in x out`` and ``plain_gradient`` ``batch x out``, both flat.
    """

    KIND: ClassVar[str] = "split/he-backward"
    session_id: bytes
    step: int
    forward_digest: bytes
    weight_gradient: FloatArray
    bias_gradient: FloatArray
    gradient_ciphertexts: tuple[bytes, ...] = ()
    plain_gradient: FloatArray | None = None

    def __post_init__(self) -> None:
        _check_fields(
            self,
            blobs=("forward_digest",),
            arrays=("weight_gradient", "bias_gradient"),
            optional_arrays=("plain_gradient",),
            blob_tuples=("gradient_ciphertexts",),
        )


@dataclass(frozen=True, eq=False)
class BackwardResponse(Message):
    """Server -> client: Enc(partial sums of G W^T) (or G W^T in plaintext, ``batch x in``,
    flat), computed with W before the step."""

    KIND: ClassVar[str] = "split/he-backward-reply"
    session_id: bytes
    step: int
    request_digest: bytes
    ciphertexts: tuple[bytes, ...] = ()
    plain_input_gradient: FloatArray | None = None

    def __post_init__(self) -> None:
        _check_fields(
            self,
            blobs=("request_digest",),
            optional_arrays=("plain_input_gradient",),
            blob_tuples=("ciphertexts",),
        )
