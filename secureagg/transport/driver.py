"""The one driver: moves the encoded bytes of one round between its parties, stage by stage.

Every message crosses the versioned codec in both directions (``encode -> bytes -> decode``), so
what is measured and recorded is what a real network would carry. The driver is the only place
that reads a clock (``time.perf_counter`` around every party call) and the only place that
injects faults (:mod:`secureagg.transport.faults`); faults act on bytes and delivery, never on a
party's internals. It calls every party through the one party contract
(:class:`~secureagg.protocols.base.Party`: ``start``, ``precompute``, ``receive``; the server's
``stage``, ``end_stage``, ``finished`` and ``result``).

Threat model of the *driver itself*: it is trusted test infrastructure. It authenticates senders
(the channel says who sent what, as TLS would), so a party can only speak as itself; everything
else - dropouts, late, reordered, corrupted and replayed messages - is fair game for the protocol
to handle.

Per stage, the driver: delivers the server's messages (a client that dropped at or before the
stage receives nothing and sends nothing), routes the replies (to the server, to helpers such as
the HE key holder, or to other parties) until nothing is in flight, then calls
``server.end_stage()`` - the stage's deadline. A client raising
:class:`~secureagg.errors.ProtocolError` aborts and stays silent; a server refusing a message with
``ProtocolError`` is recorded in ``metrics["rejected"]`` and the round goes on.
:class:`~secureagg.errors.InsufficientSurvivors` propagates. :func:`secureagg.simulate` builds the
round and hands it to :class:`Driver`.

An exchange without collection stages - split learning: one exchange per training step, started
by the envelopes a client's training loop produced - goes through :class:`ExchangeDriver`, the
same delivery (codec both ways, the same transcript entries, every party called through
``receive(sender, message)``) without stages, deadlines or faults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import (
    InsufficientSurvivors,
    MalformedMessage,
    ProtocolError,
)
from secureagg.protocols.base import (
    SERVER,
    ClientParty,
    Envelope,
    Message,
    Party,
    RoundFactory,
    RoundSetup,
    ServerParty,
)
from secureagg.transport.codec import decode, encode, message_digest
from secureagg.transport.faults import Delay, Reorder, Replay, Tamper
from secureagg.transport.results import (
    TranscriptEntry,
)
from secureagg.validation import is_int

__all__ = ["Driver", "ExchangeDriver", "transcript_entry"]

_MAX_WAVES = 10_000  # replies-to-replies within one stage; a protocol looping forever is a bug
_STAGE_COUNTERS = (
    "client_seconds_total",
    "client_seconds_max",
    "server_seconds",
    "helper_seconds",
    "codec_seconds",
    "bytes_up",
    "bytes_down",
    "bytes_peer",
    "messages_up",
    "messages_down",
    "messages_peer",
)

_T = TypeVar("_T")


@dataclass
class _InFlight:
    sender: int
    recipient: int
    data: bytes


def _new_stage_metrics() -> dict[str, float]:
    return dict.fromkeys(_STAGE_COUNTERS, 0.0)


def transcript_entry(
    stage: str, sender: int, recipient: int, data: bytes, msg: Message | None, round_id: int
) -> TranscriptEntry:
    """The record of one message on the wire: the message's own ``round_id`` when it has one."""
    rid = getattr(msg, "round_id", round_id) if msg is not None else round_id
    return TranscriptEntry(
        stage=stage,
        kind=msg.KIND if msg is not None else "<malformed>",
        sender=sender,
        recipient=recipient,
        round_id=rid if is_int(rid) else round_id,
        size=len(data),
        sha256=message_digest(data),
    )


class Driver:
    """One round's parties, the faults to inject, and what was sent, received and measured."""

    def __init__(
        self,
        *,
        setup: RoundSetup,
        agg: RoundFactory,
        drop_map: dict[int, str],
        faults: Sequence[object],
        driver_seed: bytes,
        round_id: int,
        keep_raw: bool,
        intercept: Callable[[str, Envelope], Envelope | None] | None = None,
    ) -> None:
        """``intercept(stage, envelope)`` - for tests and adversaries only - sees every envelope a
        party sends before it is encoded and returns the one to send instead (None: send
        nothing): a party that *chooses* what it sends, which no fault on bytes can play."""
        self.server: ServerParty = setup.server
        self.clients: dict[int, ClientParty] = dict(setup.clients)
        self.helpers: dict[int, Party] = dict(setup.helpers)
        self.dropout_stages = tuple(agg.dropout_stages)
        self.drop_map = drop_map
        self.round_id = round_id
        self.keep_raw = keep_raw
        self.keystream = prg.Keystream(driver_seed, label=labels.SIM_DRIVER, context=b"delivery")
        self.delays = {(f.client, f.stage) for f in faults if isinstance(f, Delay)}
        self.reorders = {f.stage for f in faults if isinstance(f, Reorder)}
        self.tampers: dict[tuple[int, str], list[Tamper]] = {}
        for f in faults:
            if isinstance(f, Tamper):
                self.tampers.setdefault((f.client, f.stage), []).append(f)
        self.replays = [f for f in faults if isinstance(f, Replay)]
        self.capture_keys = {(f.client, f.from_stage) for f in self.replays if f.from_stage}
        self.captured: dict[tuple[int, str], list[bytes]] = {}

        self.visited: list[str] = []
        self.silent: dict[int, str] = {}  # client id -> stage at which it went silent
        self.delayed: list[tuple[str, _InFlight]] = []
        self.stage_metrics: dict[str, dict[str, float]] = {}
        self.client_time: dict[str, dict[int, float]] = {}
        self.transcript: list[TranscriptEntry] = []
        self.downlink: list[TranscriptEntry] = []
        self.peer: list[TranscriptEntry] = []
        self.raw_uplink: list[bytes] = []
        self.rejected: list[dict[str, Any]] = []
        self.client_aborts: list[dict[str, Any]] = []
        self.fault_log: list[dict[str, Any]] = []
        self.intercept = intercept
        #: Every refusal as (stage, sender, recipient, the exception), for inspection.
        self.errors: list[tuple[str, int, int, Exception]] = []
        #: With ``keep_raw``: every message on every link, as (stage, sender, recipient, bytes).
        self.wire: list[tuple[str, int, int, bytes]] = []

    # -- bookkeeping --------------------------------------------------------------------------

    def _m(self, stage: str) -> dict[str, float]:
        if stage not in self.stage_metrics:
            self.stage_metrics[stage] = _new_stage_metrics()
            self.client_time[stage] = {}
        return self.stage_metrics[stage]

    def _timed(self, stage: str, key: str, fn: Callable[[], _T]) -> _T:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self._m(stage)[key] += time.perf_counter() - t0

    def _entry(
        self, stage: str, sender: int, recipient: int, data: bytes, msg: Message | None
    ) -> TranscriptEntry:
        return transcript_entry(stage, sender, recipient, data, msg, self.round_id)

    def _decode(self, stage: str, data: bytes) -> Message:
        return self._timed(stage, "codec_seconds", lambda: decode(data))

    def _reject(self, stage: str, sender: int, recipient: int, exc: Exception) -> None:
        self.errors.append((stage, sender, recipient, exc))
        self.rejected.append(
            {
                "sender": sender,
                "recipient": recipient,
                "stage": stage,
                "error": f"{type(exc).__name__}: {exc}",
            }
        )

    # -- sending ------------------------------------------------------------------------------

    def _emit(
        self, stage: str, expected_sender: int, envelopes: Iterable[Envelope]
    ) -> list[_InFlight]:
        """Encode what a party sent; apply faults; record downlink/peer traffic."""
        out: list[_InFlight] = []
        for sent in envelopes:
            env = sent
            if self.intercept is not None and isinstance(sent, Envelope):
                replaced = self.intercept(stage, sent)
                if replaced is None:
                    continue
                env = replaced
            if not isinstance(env, Envelope) or env.sender != expected_sender:
                raise ProtocolError(
                    f"party {expected_sender} emitted {env!r}; a party may only send envelopes "
                    "in its own name",
                    stage=stage,
                    node_ids=[expected_sender],
                )
            t0 = time.perf_counter()
            data = encode(env.message)
            self._m(stage)["codec_seconds"] += time.perf_counter() - t0
            sender, recipient = env.sender, env.recipient
            for tamper in self.tampers.get((sender, stage), ()):
                index = tamper.offset % len(data)
                buf = bytearray(data)
                buf[index] ^= tamper.xor
                data = bytes(buf)
                self.fault_log.append(
                    {
                        "fault": "tamper",
                        "client": sender,
                        "stage": stage,
                        "recipient": recipient,
                        "offset": index,
                        "xor": tamper.xor,
                    }
                )
            item = _InFlight(sender, recipient, data)
            if self.keep_raw:
                self.wire.append((stage, sender, recipient, data))
            metrics = self._m(stage)
            if sender == SERVER:
                self.downlink.append(self._entry(stage, sender, recipient, data, env.message))
                metrics["bytes_down"] += len(data)
                metrics["messages_down"] += 1
            elif recipient != SERVER:
                self.peer.append(self._entry(stage, sender, recipient, data, env.message))
                metrics["bytes_peer"] += len(data)
                metrics["messages_peer"] += 1
            if recipient == SERVER and (sender, stage) in self.delays:
                self.delayed.append((stage, item))
                continue
            out.append(item)
        return out

    # -- delivering ---------------------------------------------------------------------------

    def _to_server(self, stage: str, item: _InFlight) -> list[_InFlight]:
        data, sender = item.data, item.sender
        metrics = self._m(stage)
        metrics["bytes_up"] += len(data)
        metrics["messages_up"] += 1
        if self.keep_raw:
            self.raw_uplink.append(data)
        if (sender, stage) in self.capture_keys:
            self.captured.setdefault((sender, stage), []).append(data)
        try:
            message = self._decode(stage, data)
        except MalformedMessage as exc:
            self.transcript.append(self._entry(stage, sender, SERVER, data, None))
            self._reject(stage, sender, SERVER, exc)
            return []
        self.transcript.append(self._entry(stage, sender, SERVER, data, message))
        try:
            replies = self._timed(
                stage, "server_seconds", lambda: self.server.receive(sender, message)
            )
        except InsufficientSurvivors:
            raise
        except ProtocolError as exc:
            self._reject(stage, sender, SERVER, exc)
            return []
        return self._emit(stage, SERVER, replies)

    def _deliver(self, stage: str, item: _InFlight) -> list[_InFlight]:
        recipient, sender = item.recipient, item.sender
        self._m(stage)
        if recipient == SERVER:
            return self._to_server(stage, item)
        if recipient in self.clients:
            if recipient in self.silent:
                return []
            party: Party = self.clients[recipient]
        elif recipient in self.helpers:
            party = self.helpers[recipient]
        else:
            raise ProtocolError(
                f"envelope addressed to unknown party {recipient}", stage=stage, node_ids=[sender]
            )
        try:
            message = self._decode(stage, item.data)
        except MalformedMessage as exc:
            self._reject(stage, sender, recipient, exc)
            return []
        t0 = time.perf_counter()
        try:
            replies = party.receive(sender, message)
        except ProtocolError as exc:
            if recipient in self.clients:
                self.errors.append((stage, sender, recipient, exc))
                self.client_aborts.append(
                    {"client": recipient, "stage": stage, "error": f"{type(exc).__name__}: {exc}"}
                )
                self.silent[recipient] = stage
            else:
                self._reject(stage, sender, recipient, exc)
            return []
        finally:
            elapsed = time.perf_counter() - t0
            if recipient in self.clients:
                times = self.client_time[stage]
                times[recipient] = times.get(recipient, 0.0) + elapsed
            else:
                self._m(stage)["helper_seconds"] += elapsed
        return self._emit(stage, recipient, replies)

    def _shuffle(self, items: list[_InFlight]) -> list[_InFlight]:
        for i in range(len(items) - 1, 0, -1):
            j = self.keystream.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items

    def _drain(self, stage: str, wave: list[_InFlight]) -> None:
        for _ in range(_MAX_WAVES):
            if not wave:
                return
            if stage in self.reorders:
                wave = self._shuffle(wave)
                self.fault_log.append({"fault": "reorder", "stage": stage, "messages": len(wave)})
            following: list[_InFlight] = []
            for item in wave:
                following.extend(self._deliver(stage, item))
            wave = following
        raise ProtocolError(
            f"messages still in flight after {_MAX_WAVES} exchanges; the protocol does not settle",
            stage=stage,
        )

    # -- stages -------------------------------------------------------------------------------

    def _enter(self, stage: str) -> None:
        self._m(stage)
        self.visited.append(stage)
        here = self.dropout_stages.index(stage) if stage in self.dropout_stages else None
        for cid, drop_stage in self.drop_map.items():
            if cid in self.silent:
                continue
            passed = drop_stage in self.visited or (
                here is not None and self.dropout_stages.index(drop_stage) <= here
            )
            if passed:
                self.silent[cid] = stage

    def _replays(self, stage: str) -> list[_InFlight]:
        out: list[_InFlight] = []
        for fault in self.replays:
            if fault.stage != stage:
                continue
            if fault.captured is not None:
                payloads = [fault.captured]
            else:
                payloads = list(self.captured.get((fault.client, str(fault.from_stage)), []))
            self.fault_log.append(
                {
                    "fault": "replay",
                    "client": fault.client,
                    "stage": stage,
                    "from_stage": fault.from_stage,
                    "messages": len(payloads),
                }
            )
            out.extend(_InFlight(fault.client, SERVER, data) for data in payloads)
        return out

    def _deliver_late(self, stage: str) -> None:
        late, self.delayed = self.delayed, []
        for sent_stage, item in late:
            self.fault_log.append(
                {
                    "fault": "delay",
                    "client": item.sender,
                    "stage": sent_stage,
                    "delivered_in": stage,
                }
            )
        self._drain(stage, [item for _, item in late])

    def run(self) -> tuple[list[npt.NDArray[np.float64]], Any]:
        server = self.server
        out = self._timed_start()
        first = True
        guard = 0
        while not server.finished:
            stage = server.stage
            self._enter(stage)
            self._deliver_late(stage)
            wave = self._emit(stage, SERVER, out)
            if first:
                wave += self._client_starts(stage)
                first = False
            self._drain(stage, wave)
            self._drain(stage, self._replays(stage))
            out = self._timed(stage, "server_seconds", server.end_stage)
            guard += 1
            if guard > 10 * max(1, len(server.stages)) + 10:
                raise ProtocolError("the server never finishes", stage=stage)
        final = server.stage
        if out or self.delayed:
            self._deliver_late(final)
            self._drain(final, self._emit(final, SERVER, out))
        outcome = server.result()
        return outcome.aggregate, outcome

    def _timed_start(self) -> list[Envelope]:
        t0 = time.perf_counter()
        out = self.server.start()
        self._m(self.server.stage)["server_seconds"] += time.perf_counter() - t0
        return out

    def _client_starts(self, stage: str) -> list[_InFlight]:
        """Clients that speak first (:meth:`Party.start` returns messages) do so in the first
        stage."""
        wave: list[_InFlight] = []
        for cid, client in sorted(self.clients.items()):
            if cid in self.silent:
                continue
            t0 = time.perf_counter()
            try:
                sent = client.start()
            except ProtocolError as exc:
                self.client_aborts.append(
                    {"client": cid, "stage": stage, "error": f"{type(exc).__name__}: {exc}"}
                )
                self.silent[cid] = stage
                continue
            finally:
                times = self.client_time[stage]
                times[cid] = times.get(cid, 0.0) + time.perf_counter() - t0
            wave += self._emit(stage, cid, sent)
        return wave

    def metrics(self, *, setup_seconds: float) -> dict[str, Any]:
        stages: dict[str, dict[str, float | int]] = {}
        per_client_total: dict[int, float] = {}
        for stage, values in self.stage_metrics.items():
            times = self.client_time.get(stage, {})
            row: dict[str, float | int] = dict(values)
            row["client_seconds_total"] = sum(times.values())
            row["client_seconds_max"] = max(times.values(), default=0.0)
            for key in (
                "bytes_up",
                "bytes_down",
                "bytes_peer",
                "messages_up",
                "messages_down",
                "messages_peer",
            ):
                row[key] = int(values[key])
            stages[stage] = row
            for cid, seconds in times.items():
                per_client_total[cid] = per_client_total.get(cid, 0.0) + seconds
        totals: dict[str, float | int] = {
            key: sum(row[key] for row in stages.values()) for key in _STAGE_COUNTERS
        }
        totals["client_seconds_max"] = max(per_client_total.values(), default=0.0)
        clipped = {
            str(cid): int(getattr(self.clients[cid], "clipped", 0)) for cid in sorted(self.clients)
        }
        return {
            "stages": stages,
            "totals": totals,
            "setup_seconds": setup_seconds,
            "clipped": {"per_client": clipped, "total": sum(clipped.values())},
            "rejected": list(self.rejected),
            "client_aborts": list(self.client_aborts),
            "dropouts": {str(cid): stage for cid, stage in sorted(self.drop_map.items())},
            "silent": {str(cid): stage for cid, stage in sorted(self.silent.items())},
            "faults": list(self.fault_log),
        }


class ExchangeDriver:
    """One exchange without collection stages, moved through the codec until none is in flight.

    ``parties`` maps party id to :class:`~secureagg.protocols.base.Party`. :meth:`run` takes the
    envelopes that start the exchange (a split client's step; a party's ``start()``) and, wave by
    wave, encodes each envelope, records it, decodes the bytes, shows the decoded envelope to
    ``observe`` and hands the message to ``recipient.receive(sender, message)``; the envelopes
    that returns (a party speaks only in its own name) are the next wave. Records, as
    :class:`Driver` does: :attr:`transcript` (what the server received: kind, sender, recipient,
    ``round_id``, size, sha256), :attr:`downlink` (what the server sent), :attr:`peer` (the rest),
    :attr:`raw_uplink` (the server-received bytes, with ``keep_raw``), :attr:`bytes_by_kind`
    (both directions, in the order first sent), :attr:`codec_seconds` and :attr:`seconds` (each
    party's time in ``receive``).

    It injects no fault and swallows no error: a refused message (``ProtocolError``,
    ``InvalidInputError``, ``MalformedMessage``, ...) propagates to the caller, with what was
    recorded up to it kept; the refusing party stays in its stage and the caller decides (the
    split parties' ``abandon``).
    """

    def __init__(
        self, parties: Mapping[int, Party], *, stage: str, round_id: int, keep_raw: bool = False
    ) -> None:
        self.parties = dict(parties)
        self.stage = stage
        self.round_id = round_id
        self.keep_raw = keep_raw
        self.transcript: list[TranscriptEntry] = []
        self.downlink: list[TranscriptEntry] = []
        self.peer: list[TranscriptEntry] = []
        self.raw_uplink: list[bytes] = []
        self.bytes_by_kind: dict[str, int] = {}
        self.codec_seconds = 0.0
        self.seconds: dict[int, float] = {}

    def run(
        self, envelopes: Iterable[Envelope], *, observe: Callable[[Envelope], None] | None = None
    ) -> None:
        """Deliver ``envelopes`` and every reply they cause, until nothing is in flight."""
        wave = [self._checked(env, env.sender if isinstance(env, Envelope) else None)
                for env in envelopes]
        for _ in range(_MAX_WAVES):
            if not wave:
                return
            following: list[Envelope] = []
            for env in wave:
                following.extend(self._deliver(env, observe))
            wave = following
        raise ProtocolError(
            f"messages still in flight after {_MAX_WAVES} exchanges; the protocol does not settle",
            stage=self.stage,
        )

    def _checked(self, env: object, sender: int | None) -> Envelope:
        if not isinstance(env, Envelope) or env.sender != sender or sender not in self.parties:
            raise ProtocolError(
                f"party {sender} emitted {env!r}; a party may only send envelopes in its own name",
                stage=self.stage,
                node_ids=[] if sender is None else [sender],
            )
        if env.recipient not in self.parties:
            raise ProtocolError(
                f"envelope addressed to unknown party {env.recipient}",
                stage=self.stage,
                node_ids=[env.sender],
            )
        return env

    def _deliver(
        self, env: Envelope, observe: Callable[[Envelope], None] | None
    ) -> list[Envelope]:
        sender, recipient = env.sender, env.recipient
        t0 = time.perf_counter()
        data = encode(env.message)
        message = decode(data)
        self.codec_seconds += time.perf_counter() - t0
        entry = transcript_entry(self.stage, sender, recipient, data, message, self.round_id)
        self.bytes_by_kind[entry.kind] = self.bytes_by_kind.get(entry.kind, 0) + len(data)
        if recipient == SERVER:
            self.transcript.append(entry)
            if self.keep_raw:
                self.raw_uplink.append(data)
        elif sender == SERVER:
            self.downlink.append(entry)
        else:
            self.peer.append(entry)
        if observe is not None:
            observe(Envelope(sender, recipient, message))
        t0 = time.perf_counter()
        try:
            replies = self.parties[recipient].receive(sender, message)
        finally:
            self.seconds[recipient] = self.seconds.get(recipient, 0.0) + time.perf_counter() - t0
        return [self._checked(reply, recipient) for reply in replies]
