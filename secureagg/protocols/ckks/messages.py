"""CKKS aggregation messages: the generic HE round messages under their own ``ckks/...`` kinds.

Fields (see :mod:`secureagg.protocols.he_round`): every message carries ``session_id``,
``round_id`` and the key fingerprint (SHA-256 of the public context). ``ciphertexts`` are TenSEAL
serializations of one CKKS vector each (at most N/2 values); the release carries float64 values
(flooded) or, with the fixed-point encoding, int64 exact sums.

>>> CkksUpload.KIND
'ckks/upload'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from secureagg.protocols.he_round import (
    HEAggregate,
    HEBlame,
    HEProbedAggregate,
    HERelease,
    HERequest,
    HERetry,
    HEUpload,
)

__all__ = [
    "CkksAggregate",
    "CkksBlame",
    "CkksProbedAggregate",
    "CkksRelease",
    "CkksRequest",
    "CkksRetry",
    "CkksUpload",
]


@dataclass(frozen=True)
class CkksRequest(HERequest):
    """Server -> client: upload your encrypted update."""

    KIND: ClassVar[str] = "ckks/request"


@dataclass(frozen=True)
class CkksUpload(HEUpload):
    """Client -> server: one serialized CKKS vector per chunk."""

    KIND: ClassVar[str] = "ckks/upload"


@dataclass(frozen=True)
class CkksAggregate(HEAggregate):
    """Server -> key holder: the running sums, one per chunk."""

    KIND: ClassVar[str] = "ckks/aggregate"


@dataclass(frozen=True)
class CkksRelease(HERelease):
    """Key holder -> server: the flooded (float64) or exactly rounded (int64) aggregate."""

    KIND: ClassVar[str] = "ckks/release"


@dataclass(frozen=True)
class CkksRetry(HERetry):
    """Server -> client: upload again (attempt >= 1), after the key holder refused others."""

    KIND: ClassVar[str] = "ckks/retry"


@dataclass(frozen=True)
class CkksProbedAggregate(HEProbedAggregate):
    """Server -> key holder: the running sums and each contributor's masked key-check probes."""

    KIND: ClassVar[str] = "ckks/probed-aggregate"


@dataclass(frozen=True)
class CkksBlame(HEBlame):
    """Key holder -> server: the contributors whose probes failed; the sums were not decrypted."""

    KIND: ClassVar[str] = "ckks/blame"
