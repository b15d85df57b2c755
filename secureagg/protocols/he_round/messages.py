"""Messages of one HE aggregation round (generic; scheme packages subclass them for a ``KIND``).

Every message carries ``session_id``, ``round_id`` and the key fingerprint (SHA-256 over the scheme
name and the public key material); parties refuse any other value. Field types are those the
codec knows; ciphertexts are ``bytes | memoryview`` (TenSEAL serializations for CKKS, fixed-width
big-endian integers for Paillier): the sender builds them as ``bytes``, the codec decodes them as
zero-copy read-only views of the received message, so the server parses each ciphertext straight
from the wire instead of first copying every one into its own ``bytes`` object.

>>> HEUpload.KIND   # generic base: only the scheme subclasses are registered with the codec
''
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from secureagg.protocols.base import Message

__all__ = [
    "HEAggregate",
    "HEBlame",
    "HEProbedAggregate",
    "HERelease",
    "HERequest",
    "HERetry",
    "HEUpload",
]

@dataclass(frozen=True)
class HERequest(Message):
    """Server -> client: "upload your encrypted update for this round and key"."""

    session_id: bytes
    round_id: int
    key_fingerprint: bytes


@dataclass(frozen=True)
class HEUpload(Message):
    """Client -> server: one ciphertext per chunk of the encoded update."""

    session_id: bytes
    round_id: int
    key_fingerprint: bytes
    ciphertexts: tuple[bytes | memoryview, ...]


@dataclass(frozen=True)
class HEAggregate(Message):
    """Server -> key holder: the running sums and the ids of the clients summed into them."""

    session_id: bytes
    round_id: int
    key_fingerprint: bytes
    contributors: tuple[int, ...]
    ciphertexts: tuple[bytes | memoryview, ...]


@dataclass(frozen=True)
class HERelease(Message):
    """Key holder -> server: the decrypted aggregate (values, and the weight sum when weighted).

    ``values`` is float64 (CKKS, flooded) or int64 (exact integer sums: CKKS fixed point, Paillier);
    ``noise_std`` the standard deviation of the flooding noise added to each value (0 if none);
    with the key holder's release post-processing, the noise that post-processing states.
    """

    session_id: bytes
    round_id: int
    key_fingerprint: bytes
    contributors: tuple[int, ...]
    values: npt.NDArray[Any]
    noise_std: float




@dataclass(frozen=True)
class HERetry(HERequest):
    """Server -> client: "upload again" after the key holder refused other clients' uploads.

    ``attempt`` counts the uploads of the round (the first request is attempt 0); a client
    answers each attempt at most once, and only after it has uploaded before.
    """

    attempt: int


@dataclass(frozen=True)
class HEProbedAggregate(HEAggregate):
    """Server -> key holder: the running sums, plus every contributor's key-check probes.

    ``probes`` holds, for each contributor in ``contributors`` order, one masked probe per
    chunk-size group of the payload; ``attempt`` is the upload attempt they come from.
    """

    attempt: int
    probes: tuple[bytes | memoryview, ...]


@dataclass(frozen=True)
class HEBlame(Message):
    """Key holder -> server: these contributors' uploads do not decrypt to what an honest client
    sends (another key, or values far outside the encoding); nothing was decrypted from the sums.
    """

    session_id: bytes
    round_id: int
    key_fingerprint: bytes
    attempt: int
    contributors: tuple[int, ...]
    refused: tuple[int, ...]
