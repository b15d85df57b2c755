"""A round spec's bytes: the codec's encoding, and strict reading of a spec from another party.

:class:`~secureagg.protocols.spec.RoundSpec` is a registered message, so its bytes are the
versioned codec's (:mod:`secureagg.transport.codec`: canonical, no pickle). Reading adds the
spec's own checks (:meth:`~secureagg.protocols.spec.RoundSpec.problems`, which include its
digest, so a flipped or lost byte anywhere is refused) and, when the reader knows its session,
the session id.

>>> from secureagg.protocols.spec import RoundSpec
>>> spec = RoundSpec.build(protocol="plain", options={}, session_id=b"s" * 16, round_id=0,
...                        num_clients=2, shapes=[(3,)], weighted=False)
>>> spec_from_bytes(spec_to_bytes(spec), session_id=b"s" * 16) == spec
True
"""

from __future__ import annotations

from secureagg.errors import MalformedMessage
from secureagg.protocols.spec import RoundSpec
from secureagg.transport.codec import decode, encode

__all__ = ["spec_from_bytes", "spec_to_bytes"]


def spec_to_bytes(spec: RoundSpec) -> bytes:
    """The spec's canonical bytes (what the server publishes to every party)."""
    if not isinstance(spec, RoundSpec):
        raise MalformedMessage(f"expected a RoundSpec, got {type(spec).__name__}")
    return encode(spec)


def spec_from_bytes(
    data: bytes | bytearray | memoryview, *, session_id: bytes | None = None
) -> RoundSpec:
    """Decode a spec from another party, strictly.

    The codec's checks, then the spec's own, then - when the caller knows its session - the
    session id. Anything wrong raises :class:`~secureagg.errors.MalformedMessage` naming what: a
    flipped or truncated byte, another kind of message, an invalid field, another session.
    """
    message = decode(data)
    if not isinstance(message, RoundSpec):
        raise MalformedMessage(f"expected a round spec, got a {message.KIND!r} message")
    problems = message.problems()
    if problems:
        raise MalformedMessage("round spec refused: " + "; ".join(problems))
    if session_id is not None and message.session_id != session_id:
        raise MalformedMessage("round spec from another session refused")
    return message
