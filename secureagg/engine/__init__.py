"""Running a round on a real engine: parties on other processes or machines, messages as bytes.

The engine-independent half of a deployment adapter (the Flower adapter builds on it):

* :func:`~secureagg.engine.client.client_step` - what a node does with *one* message: it rebuilds
  its client from the round spec's bytes and its own stored state (or, at the first message,
  from its own update), hands it the message, and returns the replies and its new state. An
  engine that starts a fresh process for every message (Flower's ClientApp does) stores the state
  on the node between messages.
* :class:`~secureagg.engine.server.EngineRound` - the server side: it runs the server party, sends
  its messages through a :class:`~secureagg.engine.server.Link` to the parties elsewhere, and
  gives every stage a deadline. A reply that is missing, late, malformed or refused is a dropout
  for the protocol to handle, as in the simulator.
"""
