"""Messages of the plain (insecure) baseline protocol.

Threat model: none. A :class:`PlainUpload` carries a client's (clipped, weighted) update in the
clear; the server, and anyone on the wire, sees it. The messages exist so that every benchmark and
test can compare a secure protocol with the same work done without protection, through the same
codec and driver.

Both messages carry ``round_id`` and ``session_id`` so that the server can refuse a message from
another round or session (a replay), exactly like the secure protocols do.

>>> import numpy as np
>>> up = PlainUpload(round_id=0, session_id=b"s" * 16, values=np.zeros(3), weight=1.0)
>>> up.KIND
'plain/upload'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.protocols.base import Message

__all__ = ["PlainRequest", "PlainUpload"]


@dataclass(frozen=True)
class PlainRequest(Message):
    """Server -> client: "send your update for this round"."""

    KIND: ClassVar[str] = "plain/request"

    round_id: int
    session_id: bytes


@dataclass(frozen=True)
class PlainUpload(Message):
    """Client -> server: the flattened update, already clipped and multiplied by ``weight``.

    ``values`` is a 1-D float64 array with as many elements as all the update's tensors together.
    """

    KIND: ClassVar[str] = "plain/upload"

    round_id: int
    session_id: bytes
    values: npt.NDArray[np.float64]
    weight: float
