"""The sans-I/O contract every aggregation protocol follows.

A protocol is a set of parties - one server, ``n`` clients and optionally helper parties such as
an HE key holder - that consume typed :class:`Message` objects and return :class:`Envelope`
objects addressed to other parties. Parties never open sockets, sleep, spawn threads or read
clocks; a driver (the in-memory simulator in :mod:`secureagg.transport`, or an adapter for a real
engine) moves the bytes, encodes every message with the versioned codec, times the calls and
injects faults.

The server is the one party with *collection stages*: it announces the current stage in
:attr:`ServerParty.stage`; the driver delivers what the server sent, collects the clients' replies
(a client that dropped at or before the stage stays silent), hands them to
:meth:`ServerParty.receive`, and then calls :meth:`ServerParty.end_stage`, which is the stage's
deadline: the server decides with what it has, and returns the next stage's messages. When
:attr:`ServerParty.finished` is true, :meth:`ServerParty.result` gives the aggregate.

Addressing: clients are ``0 .. n-1``; :data:`SERVER` and :data:`KEY_HOLDER` are negative ids.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "KEY_HOLDER",
    "SERVER",
    "AggregateOutcome",
    "ClientParty",
    "Envelope",
    "Message",
    "Party",
    "ServerParty",
    "message_types",
]

SERVER = -1
KEY_HOLDER = -2

_MESSAGE_TYPES: dict[str, type[Message]] = {}


@dataclass(frozen=True)
class Message:
    """Base of every protocol message: a frozen dataclass with a unique ``KIND``.

    Field types must be ones the codec knows: ``int``, ``bool``, ``float``, ``str``, ``bytes``,
    ``numpy.ndarray`` (1-D, numeric), ``tuple[int, ...]``, ``tuple[bytes, ...]``,
    ``dict[int, bytes]``, ``dict[int, int]`` and ``X | None`` of those.
    """

    KIND: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND", "")
        if not kind:
            return
        if kind in _MESSAGE_TYPES and _MESSAGE_TYPES[kind] is not cls:
            raise TypeError(f"message kind {kind!r} defined twice")
        _MESSAGE_TYPES[kind] = cls


def message_types() -> Mapping[str, type[Message]]:
    """Every registered message class by kind (for the codec)."""
    return dict(_MESSAGE_TYPES)


@dataclass(frozen=True)
class Envelope:
    """A message addressed from one party to another."""

    sender: int
    recipient: int
    message: Message


class Party(abc.ABC):
    """Anything that receives messages and answers with envelopes."""

    party_id: int

    @abc.abstractmethod
    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Consume one message; return the envelopes it causes (possibly none).

        A message out of stage, malformed, or breaking a rule raises
        :class:`~secureagg.errors.ProtocolError` (or a subclass) naming stage and sender.
        """


class ClientParty(Party):
    """A client. ``clipped`` counts values clipped by its encoder (local metric, never sent)."""

    clipped: int = 0


@dataclass
class AggregateOutcome:
    """What the server obtains at the end of a round.

    ``aggregate`` is the weighted sum over ``survivor_ids`` as float arrays in the caller's
    shapes; ``total_weight`` the sum of their weights (1 each when unweighted).
    """

    aggregate: list[npt.NDArray[np.float64]]
    survivor_ids: tuple[int, ...]
    total_weight: float
    details: dict[str, Any] = field(default_factory=dict)


class ServerParty(Party):
    """The aggregating server: explicit collection stages, streaming aggregation."""

    party_id = SERVER
    #: Names of this round's collection stages in order, e.g. ("advertise", "share", "masked",
    #: "unmask"). Drivers read it from the *instance*: it may depend on the round (SecAgg's
    #: threat mode adds "consistency"). A wrapper around a server forwards its inner ``stages``.
    stages: Sequence[str] = ()

    @property
    @abc.abstractmethod
    def stage(self) -> str:
        """The stage whose messages the server is collecting now ("done" when finished)."""

    @abc.abstractmethod
    def start(self) -> list[Envelope]:
        """The first stage's outgoing messages (may be empty if clients speak first)."""

    @abc.abstractmethod
    def end_stage(self) -> list[Envelope]:
        """Close the current stage (its deadline) and return the next stage's messages.

        Raises :class:`~secureagg.errors.InsufficientSurvivors` when too few clients remain.
        """

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """True once :meth:`result` is available."""

    @abc.abstractmethod
    def result(self) -> AggregateOutcome:
        """The round's outcome; raises :class:`~secureagg.errors.ProtocolError` if not finished."""


@dataclass
class RoundSetup:
    """The parties of one round, built by an aggregator for a driver."""

    server: ServerParty
    clients: dict[int, ClientParty]
    helpers: dict[int, Party] = field(default_factory=dict)


class RoundFactory(abc.ABC):
    """What an aggregator is to a driver: it builds the parties of a round.

    ``updates[i]`` is client ``i``'s list of float arrays (all clients share shapes); ``weights``
    are optional positive FedAvg weights. ``seed`` makes every random choice reproducible and
    exists only for tests and benchmarks: a seeded run is flagged in its outputs.
    """

    name: str
    num_clients: int
    #: Stage names a client may drop at (keys of the ``dropouts`` mapping), in protocol order.
    dropout_stages: tuple[str, ...] = ()

    @abc.abstractmethod
    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        """Build fresh parties for one round."""

    @abc.abstractmethod
    def parameters(self) -> dict[str, Any]:
        """The chosen parameters, JSON-serialisable, for reports and run directories."""
