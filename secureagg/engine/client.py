"""One message at a node: rebuild the client from bytes, deliver, export the state again.

An engine may start a fresh process for every message a node receives. :func:`client_step` is
what that process runs: it reads the round spec from its bytes (strictly, bound to the session it
expects), rebuilds the aggregator from the spec alone, builds the client - from the node's own
update at the first message, from the node's stored state afterwards - delivers the message and
returns the replies as bytes together with the state to store until the next message.

A protocol that first uses the update after its first stage (SecAgg/SecAgg+: at ``masked``; the
aggregator's ``update_stage``) lets the first message come without it: the client is built
awaiting its update, and the message that brings the update (at the latest, that stage's) passes
it to the restored client (a client that has its update ignores one passed again). Until then
the stored state holds no update, so an engine that carries the state in and out of a fresh
process per message moves only the client's keys.

Threat model: everything arriving here (spec, message, stored state) is checked like bytes from
another party; a refusal raises a :class:`~secureagg.errors.SecureAggError` subclass and the node
sends nothing (the server sees a dropout). The state holds the node's secrets: the engine must
keep it on the node (see :mod:`secureagg.protocols.state`). The update is read once, at the
message that brings it; afterwards it is in the state.

>>> import numpy as np, secureagg as sa
>>> from secureagg.transport.round_spec import spec_to_bytes
>>> agg = sa.make_aggregator("plain", num_clients=2)
>>> spec = agg.round_spec(shapes=[(2,)], weighted=False, session_id=b"s" * 16, round_id=0)
>>> server = agg.server_from_spec(spec)
>>> (request, _) = server.start()
>>> from secureagg.transport.codec import encode
>>> step = client_step(spec_to_bytes(spec), None, request.sender, encode(request.message),
...                    client_id=0, update=[np.ones(2)])
>>> [recipient for recipient, _ in step.replies], len(step.state) > 0
([-1], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators import aggregator_for
from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.transport.codec import decode, encode
from secureagg.transport.party_state import state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_from_bytes

__all__ = ["ClientStep", "client_step"]


@dataclass(frozen=True)
class ClientStep:
    """The replies to send, ``(recipient, message bytes)``, and the state to keep on the node.

    ``error`` is set only by :func:`~secureagg.engine.helper.helper_step`, when the helper
    refused the message (``"<error class>: <text>"``; no replies): the state must be kept all
    the same, since a refusal can change it (a refused or failed decryption uses up the round).
    """

    replies: tuple[tuple[int, bytes], ...]
    state: bytes
    error: str = ""


def client_step(
    spec_bytes: bytes,
    state: bytes | None,
    sender: int,
    message: bytes,
    *,
    client_id: int,
    update: Sequence[npt.NDArray[np.floating[Any]]] | None = None,
    weight: float | None = None,
    secret: Any = None,
    session_id: bytes | None = None,
    seed: bytes | None = None,
) -> ClientStep:
    """Deliver one message to client ``client_id``; see the module docstring. ``update`` and
    ``weight``: the node's, read at the first message, or - a client built without them - at the
    first later message that passes them (then also ``seed``, as at the first message); a client
    that has its update ignores them. ``seed`` seeds the client's randomness, as
    ``sa.simulate(seed=...)`` does: for tests and comparisons only, never in a private run."""
    spec = spec_from_bytes(spec_bytes, session_id=session_id)
    agg = aggregator_for(spec)
    if state is None:
        if update is not None:
            client = agg.client_from_spec(
                spec, client_id, update, weight=weight, secret=secret, seed=seed
            )
        elif agg.update_stage is not None:
            client = agg.client_awaiting_update(spec, client_id, secret=secret, seed=seed)
        else:
            raise ConfigurationError(
                f"client {client_id}: the first message of a round needs the node's update"
            )
    else:
        client = agg.restore_client(spec, state_from_bytes(state), secret=secret)
        if client.party_id != client_id:
            raise MalformedMessage(
                f"the stored state is client {client.party_id}'s, this node is {client_id}"
            )
        if update is not None and getattr(client, "awaiting_update", False):
            agg.supply_update(spec, client, update, weight=weight, seed=seed)
    replies = client.receive(sender, decode(message))
    return ClientStep(
        replies=tuple((e.recipient, encode(e.message)) for e in replies),
        state=state_to_bytes(client),
    )
