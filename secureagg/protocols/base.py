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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, InvalidInputError, ProtocolError

if TYPE_CHECKING:  # the spec module imports this one
    from secureagg.protocols.spec import RoundSpec

__all__ = [
    "KEY_HOLDER",
    "SERVER",
    "AggregateOutcome",
    "ClientParty",
    "Envelope",
    "Message",
    "Party",
    "Provision",
    "RoundFactory",
    "RoundSetup",
    "ServerParty",
    "check_update",
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
    """Anything that receives messages and answers with envelopes: the one party contract.

    Every party of every protocol has :meth:`receive`; :meth:`start` (what it sends before it
    receives anything) and :meth:`precompute` (offline work before the round) are declared here
    once, with the defaults of a party that has neither, so a driver calls them on every party
    instead of probing for them.
    """

    party_id: int

    def start(self) -> list[Envelope]:
        """The messages this party sends before it receives any (default: none)."""
        return []

    def precompute(self) -> int:
        """Offline work before the round, timed apart by the driver; returns how many items of
        work it did (default: none, 0)."""
        return 0

    @property
    def finished(self) -> bool:
        """Whether this party's part of the round is over (a party with a ``stage``: when it
        reads ``"done"``)."""
        return getattr(self, "stage", None) == "done"

    def result(self) -> Any:
        """What this party obtained from the round. The server's is the aggregate; a client's
        and a key holder's part ends with what they sent, so they have none and say so."""
        raise ProtocolError(
            f"{type(self).__name__} obtains no result from the round; the server does",
            stage=str(getattr(self, "stage", "done")),
        )

    @abc.abstractmethod
    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Consume one message; return the envelopes it causes (possibly none).

        A message out of stage, malformed, or breaking a rule raises
        :class:`~secureagg.errors.ProtocolError` (or a subclass) naming stage and sender.
        """


class ClientParty(Party):
    """A client. ``clipped`` counts values clipped by its encoder (local metric, never sent);
    ``spec_digest`` is the digest of the round spec it was built from (its exported state is
    bound to it).

    Between stages a client exports its state (:meth:`export_state`, a message its aggregator's
    ``restore_client`` reads back in a fresh process; :mod:`secureagg.protocols.state`).
    """

    clipped: int = 0
    spec_digest: bytes = b""

    def export_state(self) -> Message:
        """This client's state between two stages, as a message (secrets marked in it)."""
        raise ConfigurationError(f"{type(self).__name__} cannot export its state")


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


@dataclass(frozen=True)
class Provision:
    """A round's key material: ``public`` goes into the round spec (party id -> bytes); each
    entry of ``secrets`` (party id -> that party's secret object) is handed to that party alone."""

    public: Mapping[int, bytes] = field(default_factory=dict)
    secrets: Mapping[int, Any] = field(default_factory=dict)


class RoundFactory(abc.ABC):
    """What an aggregator is to a driver: it describes a round and builds its parties.

    The deployed path, which the simulator also takes: :meth:`provision` makes the round's key
    material (in a deployment the key holder and the clients make their own), :meth:`round_spec`
    the public :class:`~secureagg.protocols.spec.RoundSpec`, and each party is built from the spec
    plus only what it holds - :meth:`server_from_spec` (nothing), :meth:`client_from_spec` (its own
    update, weight and secret), :meth:`helpers_from_spec` (the key holder's secret key). A process
    that holds only the spec's bytes rebuilds the aggregator with
    :func:`secureagg.aggregators.aggregator_for` (``make_aggregator(spec.protocol,
    num_clients=..., **spec options)``): :meth:`spec_options` are exactly those options.

    ``updates[i]`` is client ``i``'s list of float arrays (all clients share shapes); ``weights``
    are optional positive FedAvg weights. ``seed`` makes every random choice reproducible and
    exists only for tests and benchmarks: a seeded run is flagged in its outputs.
    """

    name: str
    num_clients: int
    #: Stage names a client may drop at (keys of the ``dropouts`` mapping), in protocol order.
    dropout_stages: tuple[str, ...] = ()
    #: The stage at which a client first uses its update, when that is not its first stage: a
    #: client may then be built without it (:meth:`client_awaiting_update`) and given it before
    #: that stage (:meth:`supply_update`). ``None``: a client is built with its update.
    update_stage: str | None = None
    #: The aggregator's name in a round spec (its make_aggregator name); wrappers keep the inner's.
    @property
    def protocol(self) -> str:
        return self.name

    @abc.abstractmethod
    def spec_options(self) -> dict[str, Any]:
        """The public options (JSON values) that rebuild this aggregator from a round spec."""

    def provision(
        self, *, session_id: bytes, round_id: int, seed: bytes | None
    ) -> Provision:
        """The round's key material (default: none)."""
        return Provision()

    def model_digest(self) -> bytes:
        """SHA-256 of the model the round belongs to, bound into the spec (default: none)."""
        return b""

    def round_spec(
        self,
        *,
        shapes: Sequence[Sequence[int]],
        weighted: bool,
        session_id: bytes,
        round_id: int,
        public_keys: Mapping[int, bytes] | None = None,
    ) -> RoundSpec:
        """The public spec of one round: this aggregator's protocol, options and model digest,
        and the round's ids, shapes, weighting and public key material. Aggregators that need
        key material check it, then call this."""
        # spec.py imports this module (RoundSpec is a Message), so it is imported here, on use.
        from secureagg.protocols.spec import RoundSpec

        return RoundSpec.build(
            protocol=self.protocol, options=self.spec_options(), session_id=session_id,
            round_id=round_id, num_clients=self.num_clients, shapes=shapes, weighted=weighted,
            public_keys=public_keys, model_digest=self.model_digest(),
        )

    def check_spec(self, spec: RoundSpec) -> None:
        """Refuse a spec for another number of clients than this aggregator's."""
        if spec.num_clients != self.num_clients:
            raise ConfigurationError(
                f"the spec is for {spec.num_clients} clients, this aggregator for "
                f"{self.num_clients}"
            )

    @abc.abstractmethod
    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> ServerParty:
        """The server of the round described by ``spec`` (it holds no update)."""

    @abc.abstractmethod
    def client_from_spec(
        self,
        spec: RoundSpec,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        secret: Any = None,
        seed: bytes | None = None,
    ) -> ClientParty:
        """Client ``client_id`` of the round, from the spec and what it alone holds."""

    def client_awaiting_update(
        self, spec: RoundSpec, client_id: int, *, secret: Any = None, seed: bytes | None = None
    ) -> ClientParty:
        """Client ``client_id`` built without its update (only if :attr:`update_stage` is set)."""
        raise ConfigurationError(f"a {self.protocol!r} client is built with its update")

    def supply_update(
        self,
        spec: RoundSpec,
        client: Any,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        seed: bytes | None = None,
    ) -> None:
        """Give a client built without its update (or restored before it was given) its update
        and weight, checked as :meth:`client_from_spec` checks them, before :attr:`update_stage`;
        ``seed`` is the round's seed as :meth:`client_from_spec` took it (seeded runs only)."""
        raise ConfigurationError(f"a {self.protocol!r} client is built with its update")

    def helpers_from_spec(
        self, spec: RoundSpec, secrets: Mapping[int, Any], *, seed: bytes | None = None
    ) -> dict[int, Party]:
        """The helper parties (an HE key holder), each from the spec and its own secret."""
        return {}

    def restore_client(self, spec: RoundSpec, state: Message, *, secret: Any = None) -> ClientParty:
        """The client a state exported between stages describes (checked like a message), with
        its ``secret`` passed again (an identity key is never in a state)."""
        raise ConfigurationError(f"the {self.name!r} aggregator cannot restore a client")

    def restore_helper(self, spec: RoundSpec, state: Message, secrets: Mapping[int, Any]) -> Party:
        """The helper party (an HE key holder) a state exported between messages describes
        (checked like a message), with its own secret passed again in ``secrets`` as for
        :meth:`helpers_from_spec` (a secret key is never in a state)."""
        raise ConfigurationError(f"the {self.name!r} aggregator has no helper party to restore")

    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        """Every party of one round, each built from the spec and its own inputs (in memory)."""
        shapes = self._round_shapes(updates, weights)
        provision = self.provision(session_id=session_id, round_id=round_id, seed=seed)
        spec = self.round_spec(
            shapes=shapes, weighted=weights is not None, session_id=session_id,
            round_id=round_id, public_keys=provision.public,
        )
        return self.parties_from_spec(
            spec, updates, weights=weights, secrets=provision.secrets, seed=seed
        )

    def parties_from_spec(
        self,
        spec: RoundSpec,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        secrets: Mapping[int, Any],
        seed: bytes | None,
    ) -> RoundSetup:
        """The server, every client and the helpers, each from ``spec`` and its own inputs."""
        self._round_shapes(updates, weights)
        server = self.server_from_spec(spec, seed=seed)
        clients = {
            cid: self.client_from_spec(
                spec, cid, updates[cid],
                weight=None if weights is None else float(weights[cid]),
                secret=secrets.get(cid), seed=seed,
            )
            for cid in range(spec.num_clients)
        }
        # A helper (the HE key holder) gets only the helpers' secrets, never a client's.
        helper_secrets = {p: s for p, s in secrets.items() if p not in clients}
        return RoundSetup(
            server=server, clients=clients,
            helpers=self.helpers_from_spec(spec, helper_secrets, seed=seed),
        )

    def _round_shapes(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        weights: Sequence[float] | None,
    ) -> list[tuple[int, ...]]:
        n = self.num_clients
        if len(updates) != n:
            raise InvalidInputError(f"got updates for {len(updates)} clients, expected {n}")
        if weights is not None and len(weights) != n:
            raise ConfigurationError(f"got {len(weights)} weights for {n} clients")
        if not len(updates[0]):
            raise InvalidInputError("client 0: the update holds no tensors")
        return [tuple(int(d) for d in np.shape(a)) for a in updates[0]]

    @abc.abstractmethod
    def parameters(self) -> dict[str, Any]:
        """The chosen parameters, JSON-serialisable, for reports and run directories."""


def check_update(
    spec: RoundSpec, client_id: int, update: Sequence[npt.NDArray[np.floating[Any]]]
) -> list[npt.NDArray[np.floating[Any]]]:
    """A client's update as arrays, refused unless its shapes are the spec's."""
    arrays = [np.asarray(a) for a in update]
    shapes = tuple(tuple(int(d) for d in a.shape) for a in arrays)
    if shapes != spec.shapes:
        raise InvalidInputError(
            f"client {client_id}: update shapes {list(shapes)} differ from the round's "
            f"{list(spec.shapes)}"
        )
    if sum(math.prod(s) for s in shapes) != spec.dimension:  # pragma: no cover - same shapes
        raise InvalidInputError(f"client {client_id}: wrong number of values")
    return arrays
