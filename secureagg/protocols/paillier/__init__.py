"""Packed-Paillier homomorphic aggregation (sans-I/O): messages and the encoding/release scheme.

The parties are the generic HE round parties of :mod:`secureagg.protocols.he_round` driven by
:class:`PaillierScheme`; the phe/gmpy2 adapter is :mod:`secureagg.he.paillier`. The specification
is ``protocols/paillier/spec.md``.

>>> from secureagg.protocols.paillier import PaillierUpload
>>> PaillierUpload.KIND
'paillier/upload'
"""

from secureagg.protocols.paillier.messages import (
    PaillierAggregate,
    PaillierRelease,
    PaillierRequest,
    PaillierUpload,
)
from secureagg.protocols.paillier.scheme import PaillierScheme

__all__ = [
    "PaillierAggregate",
    "PaillierRelease",
    "PaillierRequest",
    "PaillierScheme",
    "PaillierUpload",
]
