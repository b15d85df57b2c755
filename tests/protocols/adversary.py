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
    Party,
    Provision,
    RoundFactory,
    RoundSetup,
    ServerParty,
)
from secureagg.protocols.spec import RoundSpec

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
    """``inner``'s rounds with ``edit(setup)`` applied once its parties are built from the spec."""

    def __init__(self, inner: RoundFactory, edit: Callable[[RoundSetup], None]) -> None:
        self.inner = inner
        self.edit = edit
        self.name = inner.name
        self.num_clients = inner.num_clients
        self.dropout_stages = inner.dropout_stages
        self.last_setup: RoundSetup | None = None

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    def spec_options(self) -> dict[str, Any]:
        return self.inner.spec_options()

    def provision(self, **kwargs: Any) -> Provision:
        return self.inner.provision(**kwargs)

    def round_spec(self, **kwargs: Any) -> RoundSpec:
        return self.inner.round_spec(**kwargs)

    def server_from_spec(self, spec: RoundSpec, **kwargs: Any) -> ServerParty:
        return self.inner.server_from_spec(spec, **kwargs)

    def client_from_spec(self, spec: RoundSpec, client_id: int, update: Any,
                         **kwargs: Any) -> ClientParty:
        return self.inner.client_from_spec(spec, client_id, update, **kwargs)

    def helpers_from_spec(self, spec: RoundSpec, secrets: Any, **kwargs: Any) -> dict[int, Party]:
        return self.inner.helpers_from_spec(spec, secrets, **kwargs)

    def parties_from_spec(self, spec: RoundSpec, updates: Sequence[Any],
                          **kwargs: Any) -> RoundSetup:
        setup = self.inner.parties_from_spec(spec, updates, **kwargs)
        self.edit(setup)
        self.last_setup = setup
        return setup


def rewriting_client(agg: RoundFactory, client: int, rewrite: Rewrite) -> Tampered:
    """``agg`` with client ``client`` rewriting what it sends."""

    def edit(setup: RoundSetup) -> None:
        setup.clients[client] = RewritingClient(setup.clients[client], rewrite)

    return Tampered(agg, edit)
