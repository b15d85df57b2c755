"""Misbehaving parties for ``sa.simulate``: an aggregator whose round has one rewritten party.

``sa.simulate`` only injects faults on bytes in transit; a client that *chooses* what it sends (a
bad key, a copied key) or a server that deviates from the protocol is played here, by wrapping
the honest party built by the real aggregator. Everything else - codec, driver, metrics - is the
real deployed path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from secureagg.protocols.base import (
    ClientParty,
    Envelope,
    Message,
    RoundFactory,
    RoundSetup,
)

# rewrite(client, outgoing message) -> the message to send instead
Rewrite = Callable[[Any, Message], Message]


class RewritingClient(ClientParty):
    """An honest client whose outgoing messages pass through ``rewrite`` first."""

    def __init__(self, inner: Any, rewrite: Rewrite) -> None:
        self.inner = inner
        self.party_id = inner.party_id
        self._rewrite = rewrite

    @property
    def clipped(self) -> int:  # type: ignore[override]
        return int(getattr(self.inner, "clipped", 0))

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        out = self.inner.receive(sender, message)
        return [Envelope(e.sender, e.recipient, self._rewrite(self.inner, e.message)) for e in out]


class Tampered(RoundFactory):
    """``inner``'s rounds with ``edit(setup)`` applied after every ``setup_round``."""

    def __init__(self, inner: RoundFactory, edit: Callable[[RoundSetup], None]) -> None:
        self.inner = inner
        self.edit = edit
        self.name = inner.name
        self.num_clients = inner.num_clients
        self.dropout_stages = inner.dropout_stages
        self.last_setup: RoundSetup | None = None

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    def setup_round(
        self,
        updates: Sequence[Any],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        setup = self.inner.setup_round(
            updates, weights=weights, session_id=session_id, round_id=round_id, seed=seed
        )
        self.edit(setup)
        self.last_setup = setup
        return setup


def rewriting_client(agg: RoundFactory, client: int, rewrite: Rewrite) -> Tampered:
    """``agg`` with client ``client`` rewriting what it sends."""

    def edit(setup: RoundSetup) -> None:
        setup.clients[client] = RewritingClient(setup.clients[client], rewrite)

    return Tampered(agg, edit)
