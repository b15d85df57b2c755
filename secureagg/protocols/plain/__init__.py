"""The plain baseline: clients upload their updates in the clear. **Insecure on purpose.**

The server learns every individual update. Use it only as the reference point that secure
protocols are benchmarked against (same driver, same codec, same metrics), or when there is
nothing to protect. See :mod:`secureagg.protocols.plain.parties` for the invariants it keeps.

>>> from secureagg.protocols.plain import PlainServer, PlainClient, PlainUpload, PlainRequest
>>> PlainServer.stages
('upload',)
"""

from secureagg.protocols.plain.messages import PlainRequest, PlainUpload
from secureagg.protocols.plain.parties import UPLOAD, PlainClient, PlainServer

__all__ = ["UPLOAD", "PlainClient", "PlainRequest", "PlainServer", "PlainUpload"]
