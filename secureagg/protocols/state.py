"""A party's state between stages, as a message: exported, carried as bytes, restored elsewhere.

A federated engine may start a new process for every message a client receives (Flower does).
So a client party exports its state after each message (``party.export_state()``, a registered
:class:`~secureagg.protocols.base.Message`; its bytes are the versioned codec's, canonical and
without pickle: :func:`secureagg.transport.party_state.state_to_bytes`) and a fresh process
restores it (``agg.restore_client(spec, state, secret=...)``). Restoring checks the state like a
message from another party (:func:`check_state`): its kind and version, the round spec it belongs
to (by the spec's digest, which binds the session and round), the client id, the stage, and
every field's shape; anything else raises :class:`~secureagg.errors.MalformedMessage` naming it.

**Secrets.** A state holds what the client holds: its update and, for SecAgg, its key-agreement
private keys, its self-mask seed, the Shamir shares it keeps, the pairwise seeds and AEAD keys,
and (seeded test runs only) where its keystream stands. Each state class lists those fields in
``SECRET_FIELDS``. A state may be kept only where the client's own update may be kept - on the
client's node (Flower's ``Context.state`` lives on the SuperNode), encrypted at rest if the node
is shared - and never sent to the server or any other party. A long-term identity key (malicious
SecAgg) is never in a state: the restoring process passes it again as ``secret=``, from the
node's own key file.

**Helpers.** The HE key holder exports its in-round state the same way
(:class:`~secureagg.protocols.he_round.state.HEKeyHolderState`: whether it released, whom it
blamed, its attempt, the last contributors, where a seeded keystream stands) and is restored by
``agg.restore_helper(spec, state, secrets)``. Its secret key is never in the state: the restoring
process passes it again in ``secrets``, from the node's own key store.

>>> STATE_VERSION
1
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

from secureagg.errors import MalformedMessage
from secureagg.protocols.base import Message
from secureagg.protocols.spec import RoundSpec

__all__ = ["STATE_VERSION", "PartyState", "check_state"]

STATE_VERSION = 1


@dataclass(frozen=True)
class PartyState(Message):
    """What every exported state carries before its protocol's own fields."""

    #: Fields holding secrets (see the module docstring).
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    version: int
    spec_digest: bytes
    party_id: int
    stage: str


def check_state(
    state: object,
    spec: RoundSpec,
    kind: type[PartyState],
    *,
    stages: Collection[str],
    party: int | None = None,
) -> None:
    """Refuse a state that is not a ``kind`` of this round, version and a known stage, or that
    names another party than a client of the round (``party=None``) or than ``party`` (a helper
    such as the HE key holder)."""
    if not isinstance(state, kind):
        got = getattr(state, "KIND", type(state).__name__)
        raise MalformedMessage(f"expected a {kind.KIND!r} state, got {got!r}")
    if state.version != STATE_VERSION:
        raise MalformedMessage(f"state version {state.version!r} is not {STATE_VERSION}")
    if state.spec_digest != spec.digest:
        raise MalformedMessage(
            "the state belongs to another round spec (another session, round or configuration)"
        )
    if party is not None:
        if state.party_id != party:
            raise MalformedMessage(
                f"the state names party {state.party_id}, not party {party} it is restored as"
            )
    elif not 0 <= state.party_id < spec.num_clients:
        raise MalformedMessage(f"the state names client {state.party_id}, not one of the round")
    if state.stage not in stages:
        raise MalformedMessage(f"the state's stage {state.stage!r} is not one of {sorted(stages)}")
