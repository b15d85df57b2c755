"""Privacy events: immutable facts that accounting, budgets, ledgers and audits consume.

Invariant (DESIGN.md): whatever spends privacy - a DP-SGD step, a central Gaussian release, a
SecAgg round carrying distributed noise - *emits* one of these frozen events to a sink it was
given; nothing reaches into a training loop or a protocol to find out what happened. An event
records only public parameters of the mechanism (noise, clip, sampling rate, counts of clients),
never data, gradients or noise values. Each event knows its ``scope``:

* ``"sample"`` - sample-level DP of one data holder's records (DP-SGD); ``party`` names the holder
  (a client id, or ``None`` for a single trainer);
* ``"user"`` - user-level DP of the released aggregate across rounds (central or distributed DP;
  ``party`` is ``None``).

Sinks implement :class:`EventSink` (one method, ``emit``). :class:`MemorySink` keeps events in a
list, :class:`JsonLinesSink` appends one JSON object per line to a file, :class:`FanOut` copies to
several sinks; :class:`~secureagg.dp.accounting.PrivacyAccountant` is a sink too.

>>> sink = MemorySink()
>>> sink.emit(GaussianSteps(scope="sample", party=None, noise_multiplier=1.0, sample_rate=0.01,
...                         clip=1.0, steps=1, mechanism="dp-sgd"))
>>> event_from_dict(sink.events[0].to_dict()) == sink.events[0]
True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from secureagg.errors import ConfigurationError, InvalidInputError

__all__ = [
    "BudgetStop",
    "DistributedNoiseRound",
    "EventSink",
    "FanOut",
    "GaussianSteps",
    "JsonLinesSink",
    "MechanismConfigured",
    "MemorySink",
    "PrivacyEvent",
    "Scope",
    "SeededNoise",
    "event_from_dict",
    "events_to_json",
]

Scope = Literal["sample", "user"]
_SCOPES = ("sample", "user")
_EVENT_TYPES: dict[str, type[PrivacyEvent]] = {}


def _finite(value: float, name: str, problems: list[str], *, low: float = 0.0) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not (
        math.isfinite(value) and value >= low
    ):
        problems.append(f"{name} must be a finite number >= {low}, got {value!r}")


@dataclass(frozen=True)
class PrivacyEvent:
    """Base of every privacy event. ``KIND`` names the type in JSON."""

    KIND: ClassVar[str] = ""
    scope: Scope
    party: int | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.KIND:
            _EVENT_TYPES[cls.KIND] = cls

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.scope not in _SCOPES:
            problems.append(f"scope must be 'sample' or 'user', got {self.scope!r}")
        party: object = self.party
        if party is not None and (isinstance(party, bool) or not isinstance(party, int)):
            problems.append(f"party must be an int or None, got {self.party!r}")
        self._validate(problems)
        if problems:
            raise ConfigurationError(problems)

    def _validate(self, problems: list[str]) -> None:
        """Subclasses append their own problems."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a ``"kind"`` key; :func:`event_from_dict` inverts it."""
        out: dict[str, Any] = {"kind": self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = json.loads(json.dumps(dict(value)))
            out[f.name] = value
        return out


@dataclass(frozen=True)
class GaussianSteps(PrivacyEvent):
    """``steps`` applications of the Poisson-sampled Gaussian mechanism.

    ``noise_multiplier`` is the noise standard deviation divided by the L2 ``clip`` (the
    sensitivity); ``sample_rate`` the Poisson inclusion probability of one record (DP-SGD) or one
    client (central DP; 1.0 when every client takes part). ``mechanism`` is ``"dp-sgd"`` or
    ``"central-gaussian"``.
    """

    KIND: ClassVar[str] = "gaussian_steps"
    noise_multiplier: float
    sample_rate: float
    clip: float
    steps: int = 1
    mechanism: str = "dp-sgd"

    def _validate(self, problems: list[str]) -> None:
        _finite(self.noise_multiplier, "noise_multiplier", problems)
        _finite(self.clip, "clip", problems)
        if not (isinstance(self.sample_rate, int | float) and 0 < self.sample_rate <= 1):
            problems.append(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be an integer >= 1, got {self.steps!r}")


@dataclass(frozen=True)
class DistributedNoiseRound(PrivacyEvent):
    """One SecAgg round whose sum carries integer noise added by the clients.

    All magnitudes are in the integer (encoded) domain: ``client_variance`` is the per-coordinate
    noise variance of one client's share; ``survivors`` clients' shares reached the sum, so its
    noise variance is ``survivors * client_variance``; ``l2_sensitivity`` / ``l1_sensitivity``
    bound one client's integer contribution; ``dimension`` is its length. ``provisioned`` is the
    survivor count the noise was provisioned for (``clients`` minus the expected dropouts);
    ``sample_rate`` the Poisson client-sampling rate (1.0: no sampling, no amplification).
    ``worst_case`` marks the pre-round budget check at the smallest survivor count SecAgg allows.
    """

    KIND: ClassVar[str] = "distributed_noise_round"
    mechanism: Literal["skellam", "ddgauss"]
    round_id: int
    clients: int
    survivors: int
    provisioned: int
    client_variance: float
    l2_sensitivity: float
    l1_sensitivity: float
    dimension: int
    sample_rate: float = 1.0
    seeded: bool = False
    worst_case: bool = False

    def _validate(self, problems: list[str]) -> None:
        if self.mechanism not in ("skellam", "ddgauss"):
            problems.append(f"mechanism must be 'skellam' or 'ddgauss', got {self.mechanism!r}")
        for name in ("round_id", "clients", "survivors", "provisioned", "dimension"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("client_variance", "l2_sensitivity", "l1_sensitivity"):
            _finite(getattr(self, name), name, problems)
        if not (isinstance(self.sample_rate, int | float) and 0 < self.sample_rate <= 1):
            problems.append(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")


@dataclass(frozen=True)
class MechanismConfigured(PrivacyEvent):
    """A mechanism was set up: its public parameters (JSON values), for the ledger and audits."""

    KIND: ClassVar[str] = "mechanism_configured"
    mechanism: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def _validate(self, problems: list[str]) -> None:
        try:
            frozen = json.loads(json.dumps(dict(self.parameters), allow_nan=True))
        except (TypeError, ValueError) as exc:
            problems.append(f"parameters must be JSON-serialisable: {exc}")
            return
        object.__setattr__(self, "parameters", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash((self.KIND, self.scope, self.party, self.mechanism))


@dataclass(frozen=True)
class SeededNoise(PrivacyEvent):
    """A noise source or sampler was seeded for a test: its output is reproducible, NOT private."""

    KIND: ClassVar[str] = "seeded_noise"
    source: str


@dataclass(frozen=True)
class BudgetStop(PrivacyEvent):
    """The budget stopped a step or round *before* it ran: nothing was released.

    ``spent`` is ε so far, ``would_be`` ε had the step or round run, at ``delta``; ``unit`` is
    ``"step"`` or ``"round"`` and ``index`` its 0-based number in this scope.
    """

    KIND: ClassVar[str] = "budget_stop"
    spent: float
    would_be: float
    max_epsilon: float
    delta: float
    unit: str
    index: int


def event_from_dict(data: Mapping[str, Any]) -> PrivacyEvent:
    """Rebuild an event from :meth:`PrivacyEvent.to_dict` output (a ledger line)."""
    kind = data.get("kind")
    cls = _EVENT_TYPES.get(str(kind))
    if cls is None:
        raise InvalidInputError(
            f"unknown privacy event kind {kind!r}; known: {sorted(_EVENT_TYPES)}"
        )
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names - {"kind"})
    if unknown:
        raise InvalidInputError(f"{kind}: unknown fields {unknown}")
    return cls(**{k: v for k, v in data.items() if k != "kind"})


# ---------------------------------------------------------------------------------------- sinks


@runtime_checkable
class EventSink(Protocol):
    """Anything that accepts privacy events."""

    def emit(self, event: PrivacyEvent) -> None:
        """Record ``event``. Must not raise for a well-formed event."""


class MemorySink:
    """Keeps every event in :attr:`events`, in order."""

    def __init__(self) -> None:
        self.events: list[PrivacyEvent] = []

    def emit(self, event: PrivacyEvent) -> None:
        if not isinstance(event, PrivacyEvent):
            raise InvalidInputError(f"expected a PrivacyEvent, got {type(event).__name__}")
        self.events.append(event)


class JsonLinesSink:
    """Appends each event as one JSON line to ``path`` (created if missing), flushed at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: PrivacyEvent) -> None:
        if not isinstance(event, PrivacyEvent):
            raise InvalidInputError(f"expected a PrivacyEvent, got {type(event).__name__}")
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")

    def read(self) -> list[PrivacyEvent]:
        """Every event written so far."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [event_from_dict(json.loads(line)) for line in lines if line.strip()]


class FanOut:
    """Copies every event to each of ``sinks`` in order."""

    def __init__(self, *sinks: EventSink) -> None:
        bad = [type(s).__name__ for s in sinks if not isinstance(s, EventSink)]
        if bad:
            raise ConfigurationError(f"not event sinks (no emit method): {bad}")
        self.sinks: tuple[EventSink, ...] = tuple(sinks)

    def emit(self, event: PrivacyEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)


def events_to_json(events: Iterable[PrivacyEvent]) -> list[dict[str, Any]]:
    """JSON-ready list of events."""
    return [e.to_dict() for e in events]
