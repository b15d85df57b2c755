"""The server side of a round on an engine: stage deadlines over a link to parties elsewhere.

:class:`EngineRound` runs the server party of a round in this process and reaches every other
party (clients; an HE key holder on a designated node) through a :class:`Link`, the engine's way
of delivering bytes and bringing answers back. Every message has a ticket and its answer carries
it: an answer to another stage's message (late) or to no message of ours is recorded and
dropped, never delivered to the server. Each stage has a deadline: the stage closes when
every party asked has answered or the deadline passes, whichever is first, and the server then
decides with what arrived (``end_stage``). A party that did not answer in time, whose process
failed, or whose reply does not decode or is refused, is a dropout of that stage - handled by the
protocol exactly as in the simulator. Below the protocol's threshold the round raises
:class:`~secureagg.errors.InsufficientSurvivors` and releases nothing.

Everything the server receives is recorded as in simulation (kind, sender, stage, size, sha256;
:func:`secureagg.transport.driver.transcript_entry`), with per-stage wall seconds, bytes, the
server's own compute seconds (``server_seconds``: start, receive and end_stage, the latter for the
stage it opens), the parties' compute seconds as they report them (``client_seconds_max`` and
``_total``), the parties that timed out and the refusals.

Threat model: the link is the engine's (Flower: its SuperLink); it authenticates which node an
answer comes from. Everything in an answer is bytes from another party, decoded strictly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from secureagg.errors import InsufficientSurvivors, MalformedMessage, ProtocolError
from secureagg.protocols.base import SERVER, AggregateOutcome, Envelope, ServerParty
from secureagg.transport.codec import decode, encode
from secureagg.transport.driver import transcript_entry
from secureagg.transport.results import TranscriptEntry

__all__ = ["Answer", "EngineRound", "Link", "RoundRecord"]


@dataclass(frozen=True)
class Answer:
    """What one party sent back for the message ``ticket`` (what :meth:`Link.send` returned):
    its replies (recipient, bytes), possibly none, or ``error`` when it failed (refused, crashed,
    was killed)."""

    party: int
    ticket: int
    replies: tuple[tuple[int, bytes], ...] = ()
    error: str = ""
    #: the seconds the party says it computed for this answer (0 when unknown)
    compute: float = 0.0


class Link(Protocol):
    """How an engine moves bytes to the parties elsewhere and brings their answers back."""

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        """Deliver ``data`` from ``sender`` to ``recipient``; return the message's ticket (unique
        in the round), which its answer carries (one answer follows, or none)."""

    def collect(self, *, until: float) -> list[Answer]:
        """Answers that have arrived, waiting for at least one until ``until``
        (``time.monotonic()`` seconds); ``[]`` when none came by then."""


@dataclass
class RoundRecord:
    """What the server side saw: the transcript (``transcript`` what it received, ``downlink``
    what it sent), per-stage figures, timeouts and refusals."""

    transcript: list[TranscriptEntry] = field(default_factory=list)
    downlink: list[TranscriptEntry] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    timed_out: dict[str, list[int]] = field(default_factory=dict)
    late: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


class EngineRound:
    """One round: the server party here, every other party through ``link``.

    ``deadlines`` maps a stage to its seconds (``default_deadline`` for the others).
    """

    def __init__(
        self,
        server: ServerParty,
        link: Link,
        *,
        round_id: int,
        default_deadline: float = 60.0,
        deadlines: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.link = link
        self.round_id = round_id
        self.default_deadline = float(default_deadline)
        self.deadlines = dict(deadlines or {})
        self.clock = clock
        self.record = RoundRecord()

    def _stage(self, stage: str) -> dict[str, float]:
        return self.record.stages.setdefault(
            stage, {"seconds": 0.0, "bytes_up": 0, "bytes_down": 0, "messages_up": 0,
                    "messages_down": 0, "server_seconds": 0.0, "client_seconds_max": 0.0,
                    "client_seconds_total": 0.0}
        )

    def _send(self, stage: str, envelopes: list[Envelope], asked: dict[int, int]) -> None:
        """Send the server's envelopes; ``asked`` maps each ticket to the party it went to."""
        for env in envelopes:
            data = encode(env.message)
            self.record.downlink.append(
                transcript_entry(stage, SERVER, env.recipient, data, env.message, self.round_id)
            )
            figures = self._stage(stage)
            figures["bytes_down"] += len(data)
            figures["messages_down"] += 1
            asked[self.link.send(env.recipient, SERVER, data)] = env.recipient

    def _receive(self, stage: str, sender: int, data: bytes, asked: dict[int, int]) -> None:
        figures = self._stage(stage)
        figures["bytes_up"] += len(data)
        figures["messages_up"] += 1
        try:
            message = decode(data)
        except MalformedMessage as exc:
            self.record.transcript.append(
                transcript_entry(stage, sender, SERVER, data, None, self.round_id)
            )
            self._reject(stage, sender, exc)
            return
        self.record.transcript.append(
            transcript_entry(stage, sender, SERVER, data, message, self.round_id)
        )
        t0 = time.perf_counter()
        try:
            replies = self.server.receive(sender, message)
        except InsufficientSurvivors:
            raise
        except ProtocolError as exc:
            self._reject(stage, sender, exc)
            return
        finally:
            figures["server_seconds"] += time.perf_counter() - t0
        self._send(stage, replies, asked)

    def _reject(self, stage: str, sender: int, exc: Exception) -> None:
        self.record.rejected.append(
            {"stage": stage, "sender": sender, "error": f"{type(exc).__name__}: {exc}"}
        )

    def run(self) -> AggregateOutcome:
        """Run the round to its end; the server's outcome (``InsufficientSurvivors`` below the
        threshold, nothing released)."""
        server = self.server
        t0 = time.perf_counter()
        out = server.start()
        started_seconds = time.perf_counter() - t0
        while not server.finished:
            stage = server.stage
            started = self.clock()
            figures = self._stage(stage)
            figures["server_seconds"] += started_seconds
            asked: dict[int, int] = {}
            self._send(stage, out, asked)
            until = started + self.deadlines.get(stage, self.default_deadline)
            while asked and self.clock() < until:
                for answer in self.link.collect(until=until):
                    if asked.get(answer.ticket) != answer.party:  # another stage's, or forged
                        self.record.late.append(
                            {"stage": stage, "party": answer.party, "ticket": answer.ticket}
                        )
                        continue
                    del asked[answer.ticket]
                    figures["client_seconds_max"] = max(figures["client_seconds_max"],
                                                        answer.compute)
                    figures["client_seconds_total"] += answer.compute
                    if answer.error:
                        self.record.failed.append(
                            {"stage": stage, "party": answer.party, "error": answer.error}
                        )
                        continue
                    for recipient, data in answer.replies:
                        if recipient != SERVER:
                            self._reject(stage, answer.party, ProtocolError(
                                f"a reply addressed to party {recipient}: parties talk to the "
                                "server only", stage=stage, node_ids=[answer.party],
                            ))
                            continue
                        self._receive(stage, answer.party, data, asked)
            if asked:
                self.record.timed_out[stage] = sorted(set(asked.values()))
            figures["seconds"] += self.clock() - started
            t0 = time.perf_counter()
            out = server.end_stage()
            started_seconds = time.perf_counter() - t0  # counted for the stage it opens
        return server.result()
