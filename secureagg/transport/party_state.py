"""A party's exported state as bytes - a client's, or a helper's such as the HE key holder's -
and strict reading of one (see :mod:`secureagg.protocols.state` for what a state holds, which
fields are secret and where a state may be kept).

The bytes are the versioned codec's encoding of the state message (canonical, no pickle) followed
by its SHA-256 (label ``secureagg/v1/party-state``): a flipped or lost byte anywhere is refused
before anything is decoded. Reading refuses anything but a registered state message; the
aggregator's ``restore_client(spec, state, secret=...)`` (``restore_helper(spec, state, secrets)``
for a helper) then checks it against the round spec (its digest binds the session, round and
configuration), the party and every field. The checksum detects corruption, not tampering: a
state is as trustworthy as the node's storage that holds it.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("plain", num_clients=2)
>>> spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"s" * 16, round_id=0)
>>> client = agg.client_from_spec(spec, 0, [np.ones(3)])
>>> again = agg.restore_client(spec, state_from_bytes(state_to_bytes(client)))
>>> state_to_bytes(again) == state_to_bytes(client)
True
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from secureagg.errors import MalformedMessage
from secureagg.protocols.base import Message
from secureagg.protocols.state import PartyState
from secureagg.transport.codec import decode, encode

__all__ = ["state_from_bytes", "state_to_bytes"]

_LABEL = b"secureagg/v1/party-state\x00"
_DIGEST = 32


def _digest(body: bytes | memoryview) -> bytes:
    return hashlib.sha256(_LABEL + bytes(body)).digest()


@runtime_checkable
class StatefulParty(Protocol):
    """A party that exports its state: a client, or a helper such as the HE key holder."""

    def export_state(self) -> Message: ...


def state_to_bytes(client: StatefulParty) -> bytes:
    """The party's state now, as canonical bytes (they hold its secrets: keep them on its node)."""
    body = encode(client.export_state())
    return body + _digest(body)


def state_from_bytes(data: bytes | bytearray | memoryview) -> PartyState:
    """A state message from its bytes; :class:`~secureagg.errors.MalformedMessage` otherwise."""
    view = memoryview(bytes(data))
    if len(view) <= _DIGEST or _digest(view[:-_DIGEST]) != bytes(view[-_DIGEST:]):
        raise MalformedMessage("client state refused: its checksum does not match (corrupted)")
    message = decode(view[:-_DIGEST])
    if not isinstance(message, PartyState):
        raise MalformedMessage(f"expected a client state, got a {message.KIND!r} message")
    return message
