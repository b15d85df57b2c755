"""What :func:`~secureagg.transport.simulator.simulate` returns: result and transcript entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


class SeededRunWarning(UserWarning):
    """A simulation ran with ``seed=``: keys, masks and choices are reproducible, not secret."""


class ClippingWarning(UserWarning):
    """Values of some updates exceeded the aggregator's clip bound and were clipped this round.

    Clipping is correct behaviour (the bound is what makes the sum safe), but a clipped update is
    not the update the user trained: :func:`simulate` warns once per call with the count, the
    bound and how to raise it. Silence it with ``warnings.simplefilter("ignore", ClippingWarning)``
    once the bound is chosen on purpose; the counts stay in ``metrics["clipped"]``.
    """


@dataclass(frozen=True)
class TranscriptEntry:
    """One message on the wire: who sent it to whom, in which stage, its size and sha256.

    ``kind`` is ``"<malformed>"`` for bytes the codec refused; ``round_id`` is the message's own
    ``round_id`` field when it has one, else the simulated round.
    """

    stage: str
    kind: str
    sender: int
    recipient: int
    round_id: int
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` returns. ``aggregate`` is in the caller's shapes, float64."""

    aggregate: list[npt.NDArray[np.float64]]
    survivors: tuple[int, ...]
    total_weight: float
    transcript: list[TranscriptEntry]
    downlink: list[TranscriptEntry]
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    seeded: bool
    session_id: bytes
    round_id: int
    #: messages between parties other than the server (client <-> helper, client <-> client)
    peer_traffic: list[TranscriptEntry] = field(default_factory=list)
    #: the server's ``AggregateOutcome.details``
    details: dict[str, Any] = field(default_factory=dict)
    #: raw bytes of every server-received message, parallel to ``transcript`` (``keep_raw=True``)
    raw_uplink: list[bytes] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no arrays, no raw bytes)."""
        return {
            "survivors": list(self.survivors),
            "total_weight": self.total_weight,
            "seeded": self.seeded,
            "session_id": self.session_id.hex(),
            "round_id": self.round_id,
            "parameters": self.parameters,
            "metrics": self.metrics,
        }


def _global(party: int, slots: Sequence[int]) -> int:
    return slots[party] if 0 <= party < len(slots) else party


def transcript_lines(
    round_number: int,
    slots: Sequence[int],
    *,
    up: Sequence[TranscriptEntry],
    down: Sequence[TranscriptEntry] = (),
    peer: Sequence[TranscriptEntry] = (),
) -> list[dict[str, Any]]:
    """JSON lines for ``transcript.jsonl`` (``round`` = ``round_number``, ``direction`` up, down or
    peer) with each protocol slot mapped to ``slots[slot]`` (a client id, a party id); the server,
    helpers and slots beyond ``slots`` keep their ids."""
    lines: list[dict[str, Any]] = []
    for direction, entries in (("up", up), ("down", down), ("peer", peer)):
        for e in entries:
            row = e.to_dict()
            row["sender"] = _global(e.sender, slots)
            row["recipient"] = _global(e.recipient, slots)
            lines.append({"round": round_number, "direction": direction, **row})
    return lines
