"""Paillier aggregation messages: the generic HE round messages under ``paillier/...`` kinds.

``ciphertexts`` are fixed-width big-endian integers (``ceil(2 bits(n) / 8)`` bytes each: 768 for a
3072-bit key), one per packed plaintext; the release carries int64 exact slot sums (offsets
removed). Every message binds ``session_id``, ``round_id`` and the key fingerprint (SHA-256 of
``n``).

>>> PaillierUpload.KIND
'paillier/upload'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from secureagg.protocols.he_round import HEAggregate, HERelease, HERequest, HEUpload

__all__ = ["PaillierAggregate", "PaillierRelease", "PaillierRequest", "PaillierUpload"]


@dataclass(frozen=True)
class PaillierRequest(HERequest):
    """Server -> client: upload your encrypted update."""

    KIND: ClassVar[str] = "paillier/request"


@dataclass(frozen=True)
class PaillierUpload(HEUpload):
    """Client -> server: one ciphertext per packed plaintext."""

    KIND: ClassVar[str] = "paillier/upload"


@dataclass(frozen=True)
class PaillierAggregate(HEAggregate):
    """Server -> key holder: the re-randomised running products."""

    KIND: ClassVar[str] = "paillier/aggregate"


@dataclass(frozen=True)
class PaillierRelease(HERelease):
    """Key holder -> server: exact int64 sums of the quantised, weighted values (and weights)."""

    KIND: ClassVar[str] = "paillier/release"
