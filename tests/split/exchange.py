"""Message-level helpers for the split parties' tests: one call of ``receive(sender, message)``.

The parties answer with envelopes (the one party contract); these unwrap the reply so that a test
can tamper with it before it goes on. A training run moves them with
:class:`secureagg.transport.driver.ExchangeDriver` instead.
"""

from __future__ import annotations

from typing import Any

from secureagg.protocols.base import SERVER, Message


def to_server(server: Any, message: Message, sender: int = 0) -> Message:
    """The server's reply to ``message`` from client ``sender``: exactly one, to that client."""
    [envelope] = server.receive(sender, message)
    assert (envelope.sender, envelope.recipient) == (SERVER, sender)
    return envelope.message


def to_client(client: Any, message: Message) -> Message | None:
    """The client's answer to the server's ``message``: the next message, or None (step done)."""
    out = client.receive(SERVER, message)
    assert len(out) <= 1 and all((e.sender, e.recipient) == (client.party_id, SERVER) for e in out)
    return out[0].message if out else None
