"""CKKS homomorphic aggregation (sans-I/O): messages, the encoding/release scheme, flooding.

The parties are the generic HE round parties of :mod:`secureagg.protocols.he_round` (client,
server, key holder) driven by :class:`CkksScheme`; the TenSEAL adapter is
:mod:`secureagg.he.ckks`. The specification is ``protocols/ckks/spec.md``.

>>> from secureagg.protocols.ckks import CkksUpload
>>> CkksUpload.KIND
'ckks/upload'
"""

from secureagg.protocols.ckks.messages import (
    CkksAggregate,
    CkksBlame,
    CkksProbedAggregate,
    CkksRelease,
    CkksRequest,
    CkksRetry,
    CkksUpload,
)
from secureagg.protocols.ckks.scheme import CkksScheme

__all__ = [
    "CkksAggregate",
    "CkksBlame",
    "CkksProbedAggregate",
    "CkksRelease",
    "CkksRequest",
    "CkksRetry",
    "CkksScheme",
    "CkksUpload",
]
