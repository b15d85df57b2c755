"""Faults the in-memory simulator can inject: what a network or an active adversary does to bytes.

Threat model: faults act only on *encoded bytes in transit* and on *delivery order and timing* -
never on a party's internal state. A protocol that survives these faults survives a network that
delays, reorders, drops, corrupts and replays messages. Stages are the server's collection stage
names (``ServerParty.stages``); ``client`` is a client id ``0 .. n-1``.

* :class:`Drop` - the client goes silent from ``stage`` on (the same as ``dropouts={client:
  stage}``).
* :class:`Delay` - the client's messages to the server in ``stage`` arrive only after the server
  closed that stage (they are delivered at the start of the next stage, or after the last stage).
* :class:`Reorder` - every message in ``stage`` is delivered in an order shuffled by the driver's
  keystream (reproducible under ``seed=``).
* :class:`Tamper` - XOR ``xor`` into byte ``offset`` of each message the client sends in
  ``stage`` (negative offsets count from the end; the offset is taken modulo the message
  length). If the codec then refuses the bytes, the message is recorded as rejected and the client
  is silent for it.
* :class:`Replay` - during ``stage``, inject again the bytes the client sent to the server in
  ``from_stage`` of this run (after the stage's own traffic when ``from_stage == stage``: a
  duplicate), or the explicit ``captured`` bytes (for example from another run's
  ``raw_uplink``).

>>> from secureagg.transport.faults import Delay, Tamper
>>> Tamper(client=2, stage="upload", offset=0)
Tamper(client=2, stage='upload', offset=0, xor=1)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delay", "Drop", "Fault", "Reorder", "Replay", "Tamper"]


@dataclass(frozen=True)
class Drop:
    """``client`` sends and receives nothing from ``stage`` on."""

    client: int
    stage: str


@dataclass(frozen=True)
class Delay:
    """``client``'s messages to the server in ``stage`` arrive after the stage's deadline."""

    client: int
    stage: str


@dataclass(frozen=True)
class Reorder:
    """Shuffle delivery order within ``stage`` (driver keystream)."""

    stage: str


@dataclass(frozen=True)
class Tamper:
    """XOR ``xor`` into byte ``offset`` of each of ``client``'s messages in ``stage``.

    The default offset (-1, the last byte) alters the payload rather than the header, so that the
    tampering reaches the protocol; ``offset=0`` hits the magic and the codec refuses the bytes.
    """

    client: int
    stage: str
    offset: int = -1
    xor: int = 0x01


@dataclass(frozen=True)
class Replay:
    """Resend ``client``'s earlier bytes during ``stage``.

    The bytes are those the server received from ``client`` in ``from_stage`` of this run, or
    ``captured`` when given (exactly one of the two).
    """

    client: int
    stage: str
    from_stage: str | None = None
    captured: bytes | None = None


Fault = Drop | Delay | Reorder | Tamper | Replay
