"""One message at a helper's node (the HE key holder's): rebuild it from bytes, deliver, export.

The key holder's counterpart of :func:`~secureagg.engine.client.client_step`, for an engine that
starts a fresh process for every message (Flower's ClientApp does). :func:`helper_step` reads the
round spec from its bytes (strictly, bound to the session it expects), rebuilds the aggregator
from the spec alone, builds the helper from the spec and its own secret key - afresh at the first
message, from the node's stored state afterwards (``restore_helper``) - delivers the message and
returns the replies as bytes together with the state to store until the next message.

Threat model: everything arriving here (spec, message, stored state) is checked like bytes from
another party; the secret key comes from the node's own key store (``secrets``, e.g. read with
``CkksSecretKey.from_bytes``/``PaillierSecretKey.from_bytes``), is checked against the key the
spec names, and is never in the state nor in a reply. A spec, state or message that does not
decode or does not fit raises a :class:`~secureagg.errors.SecureAggError` subclass (the stored
state is unchanged and stays valid). A message the helper *refuses* does not raise: the step
carries the refusal in ``error``, no replies, and the new state, which the engine must store all
the same - the key holder's one decryption per round is used up by a refused or failed one too,
so dropping that state would let a second aggregate be decrypted.

>>> from secureagg.engine import helper_step
>>> helper_step.__name__
'helper_step'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secureagg.aggregators import aggregator_for
from secureagg.engine.client import ClientStep
from secureagg.errors import ConfigurationError, SecureAggError
from secureagg.protocols.base import Party
from secureagg.transport.codec import decode, encode
from secureagg.transport.party_state import StatefulParty, state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_from_bytes

__all__ = ["helper_step"]


def helper_step(
    spec_bytes: bytes,
    state: bytes | None,
    sender: int,
    message: bytes,
    *,
    secrets: Mapping[int, Any],
    session_id: bytes | None = None,
) -> ClientStep:
    """Deliver one message to the round's helper (the HE key holder); see the module docstring.

    ``secrets`` maps the helper's party id to its secret key (``{KEY_HOLDER: key}``), as for
    ``helpers_from_spec``; pass only the helper's own secrets.
    """
    spec = spec_from_bytes(spec_bytes, session_id=session_id)
    agg = aggregator_for(spec)
    helper: Party
    if state is None:
        helpers = agg.helpers_from_spec(spec, secrets)
        if len(helpers) != 1:
            raise ConfigurationError(
                f"the {spec.protocol!r} round has {len(helpers)} helper parties, not one"
            )
        (helper,) = helpers.values()
    else:
        helper = agg.restore_helper(spec, state_from_bytes(state), secrets)
    if not isinstance(helper, StatefulParty):
        raise ConfigurationError(f"the {spec.protocol!r} round's helper cannot export its state")
    decoded = decode(message)
    try:
        replies = helper.receive(sender, decoded)
    except SecureAggError as exc:
        return ClientStep(
            replies=(), state=state_to_bytes(helper), error=f"{type(exc).__name__}: {exc}"
        )
    return ClientStep(
        replies=tuple((e.recipient, encode(e.message)) for e in replies),
        state=state_to_bytes(helper),
    )
