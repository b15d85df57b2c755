"""Running a round on a real engine: parties on other processes or machines, messages as bytes.

The engine-independent half of a deployment adapter (the Flower adapter builds on it):

* :func:`~secureagg.engine.client.client_step` - what a node does with *one* message: it rebuilds
  its client from the round spec's bytes and its own stored state (or, at the first message,
  from its own update - or without it, for a protocol that first uses it later: SecAgg/SecAgg+
  take it at ``masked``), hands it the message, and returns the replies and its new state. An
  engine that starts a fresh process for every message (Flower's ClientApp does) stores the state
  on the node between messages.
* :func:`~secureagg.engine.helper.helper_step` - the same for a helper's node (the HE key
  holder's): it rebuilds the key holder from the spec, its own secret key and its stored state,
  so the round's one decryption survives a fresh process for every message.
* :class:`~secureagg.engine.server.EngineRound` - the server side: it runs the server party, sends
  its messages through a :class:`~secureagg.engine.server.Link` to the parties elsewhere, and
  gives every stage a deadline. A reply that is missing, late, malformed or refused is a dropout
  for the protocol to handle, as in the simulator.
"""

from secureagg.engine.client import ClientStep, client_step
from secureagg.engine.helper import helper_step
from secureagg.engine.server import Answer, EngineRound, Link, RoundRecord

__all__ = [
    "Answer",
    "ClientStep",
    "EngineRound",
    "Link",
    "RoundRecord",
    "client_step",
    "helper_step",
]
