"""In-memory simulator: drives any :class:`~secureagg.protocols.base.RoundFactory` for one round.

Every message crosses the versioned codec in both directions (``encode -> bytes -> decode``), so
what is measured and recorded is what a real network would carry. The driver is the only place
that reads a clock (``time.perf_counter`` around every party call) and the only place that
injects faults (:mod:`secureagg.transport.faults`); faults act on bytes and delivery, never on a
party's internals.

Threat model of the *driver itself*: it is trusted test infrastructure. It authenticates senders
(the channel says who sent what, as TLS would), so a party can only speak as itself; everything
else - dropouts, late, reordered, corrupted and replayed messages - is fair game for the protocol
to handle. A seeded run (``seed=...``) makes every random choice reproducible, including the
protocol's keys and masks; it warns with :class:`SeededRunWarning` and sets ``res.seeded``.

Per stage, the driver: delivers the server's messages (a client that dropped at or before the
stage receives nothing and sends nothing), routes the replies (to the server, to helpers such as
the HE key holder, or to other parties) until nothing is in flight, then calls
``server.end_stage()`` - the stage's deadline. A client raising
:class:`~secureagg.errors.ProtocolError` aborts and stays silent; a server refusing a message with
``ProtocolError`` is recorded in ``metrics["rejected"]`` and the round goes on.
:class:`~secureagg.errors.InsufficientSurvivors` propagates, with the partial ``transcript`` and
``metrics`` attached to the exception.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("plain", num_clients=3)
>>> res = sa.simulate(agg, [[np.full(2, i)] for i in range(3)], dropouts={2: "upload"})
>>> res.survivors, res.aggregate[0]
((0, 1), array([1., 1.]))
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    MalformedMessage,
    ProtocolError,
    SecureAggError,
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
    ClippingWarning,
    SeededRunWarning,
    SimulationResult,
    TranscriptEntry,
)
from secureagg.transport.simulate_arguments import (
    _seed_material,
    _validate_dropouts,
    _validate_fault_stages,
    _validate_faults,
    derive_sim_seed,
)
from secureagg.transport.updates import normalize_updates, normalize_weights
from secureagg.validation import is_int

__all__ = [
    "ClippingWarning",
    "SeededRunWarning",
    "SimulationResult",
    "TranscriptEntry",
    "derive_sim_seed",
    "simulate",
]

SESSION_ID_BYTES = 16
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


# ------------------------------------------------------------------------------------ driver


@dataclass
class _InFlight:
    sender: int
    recipient: int
    data: bytes


def _new_stage_metrics() -> dict[str, float]:
    return dict.fromkeys(_STAGE_COUNTERS, 0.0)


class _Driver:
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
    ) -> None:
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
        rid = getattr(msg, "round_id", self.round_id) if msg is not None else self.round_id
        return TranscriptEntry(
            stage=stage,
            kind=msg.KIND if msg is not None else "<malformed>",
            sender=sender,
            recipient=recipient,
            round_id=rid if is_int(rid) else self.round_id,
            size=len(data),
            sha256=message_digest(data),
        )

    def _decode(self, stage: str, data: bytes) -> Message:
        return self._timed(stage, "codec_seconds", lambda: decode(data))

    def _reject(self, stage: str, sender: int, recipient: int, exc: Exception) -> None:
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
        for env in envelopes:
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
        """Clients that speak first (an optional ``start()`` method) do so in the first stage."""
        wave: list[_InFlight] = []
        for cid, client in sorted(self.clients.items()):
            start = getattr(client, "start", None)
            if cid in self.silent or not callable(start):
                continue
            t0 = time.perf_counter()
            try:
                sent = start()
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


def _precompute(setup: RoundSetup) -> dict[str, float | int]:
    """Clients with a ``precompute()`` method (HE pools) run it before the round, timed apart."""
    times: list[float] = []
    for _, client in sorted(setup.clients.items()):
        precompute = getattr(client, "precompute", None)
        if callable(precompute):
            t0 = time.perf_counter()
            precompute()
            times.append(time.perf_counter() - t0)
    return {
        "client_seconds_total": sum(times),
        "client_seconds_max": max(times, default=0.0),
        "clients": len(times),
    }


def _warn_if_clipped(
    clipped: Mapping[str, Any], parameters: Mapping[str, Any], *, values_per_client: int
) -> None:
    """One :class:`ClippingWarning` for the round when any client clipped a value
    (``clipped``: the round's ``metrics["clipped"]``)."""
    counts = [int(c) for c in clipped["per_client"].values()]
    total = int(clipped["total"])
    if total <= 0:
        return
    clip = parameters.get("clip")
    bound = f"[-{clip:g}, {clip:g}]" if isinstance(clip, int | float) else "the clip bound"
    if "distributed_dp" in parameters:
        advice = (
            "the per-value bound follows from distributed_dp (its l2_clip); raise "
            "DistributedDP(l2_clip=...) to clip less"
        )
    else:
        advice = "raise it with make_aggregator(..., clip=...) if such values are legitimate"
    warnings.warn(
        f"{total} values (of {values_per_client * len(counts)} in the {len(counts)} updates) "
        f"were clipped to {bound} this round, by {sum(1 for c in counts if c)} of "
        f"{len(counts)} clients (counts in metrics['clipped']); {advice}",
        ClippingWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------------------------ public


def simulate(
    agg: RoundFactory,
    updates: Sequence[Any],
    weights: Sequence[float] | None = None,
    dropouts: Mapping[int, str] | None = None,
    seed: bytes | int | None = None,
    *,
    faults: Sequence[object] = (),
    round_id: int = 0,
    session_id: bytes | None = None,
    keep_raw: bool = False,
) -> SimulationResult:
    """Run one round of ``agg`` over the in-memory transport and return what happened.

    ``updates[i]`` is client ``i``'s list of numpy arrays or torch tensors (equal shapes across
    clients); ``weights`` optional positive FedAvg weights; ``dropouts`` maps a client id to the
    stage (one of ``agg.dropout_stages``) from which it is silent; ``faults`` are
    :mod:`~secureagg.transport.faults` objects. ``seed`` (bytes or int) is for tests and
    benchmarks only: it warns with :class:`SeededRunWarning`. ``keep_raw=True`` keeps the bytes of
    every message the server received in ``res.raw_uplink``.

    ``res.metrics`` (JSON-serialisable) holds:

    * ``"stages"``: per server stage, ``client_seconds_total`` (all clients' receive calls),
      ``client_seconds_max`` (the slowest client), ``server_seconds`` (start/receive/end_stage;
      ``end_stage`` counts for the stage it closes), ``helper_seconds``, ``codec_seconds``,
      ``bytes_up``/``messages_up`` (received by the server, as in ``res.transcript``),
      ``bytes_down``/``messages_down`` (sent by the server, ``res.downlink``) and
      ``bytes_peer``/``messages_peer`` (between other parties, ``res.peer_traffic``). Messages
      delivered after the last stage are counted under the server's final stage (``"done"``).
    * ``"totals"``: the same keys summed over stages (``client_seconds_max``: the client with
      the largest total); ``"setup_seconds"``: the aggregator's ``setup_round``.
    * ``"offline"``: work clients do *before* the round (a ``precompute()`` method, e.g. the HE
      encryption pools): ``client_seconds_total``, ``client_seconds_max`` and ``clients``; not
      part of ``"stages"``/``"totals"``, which are the round itself.
    * ``"clipped"``: ``{"per_client": {"<id>": count}, "total": count}``.
    * ``"rejected"``: ``{sender, recipient, stage, error}`` for each message the codec or the
      recipient refused; ``"client_aborts"``: ``{client, stage, error}``.
    * ``"dropouts"`` (requested), ``"silent"`` (client -> stage it went silent, including
      aborts) and ``"faults"`` (every fault applied).

    A client may speak first: if it has a ``start()`` method returning envelopes, the driver calls
    it at the beginning of the first stage.

    Raises :class:`~secureagg.errors.ConfigurationError` (all problems at once) for bad
    arguments, :class:`~secureagg.errors.InvalidInputError` for bad updates, and lets
    :class:`~secureagg.errors.InsufficientSurvivors` and client-side input errors
    (:class:`~secureagg.errors.NonFiniteInputError`) propagate.
    """
    if not isinstance(agg, RoundFactory):
        raise ConfigurationError(
            f"agg must be an aggregator (a RoundFactory, e.g. make_aggregator('plain', ...)), "
            f"got {type(agg).__name__}"
        )
    num_clients = agg.num_clients
    normalized = normalize_updates(updates, num_clients=num_clients)
    weight_values = normalize_weights(weights, num_clients=num_clients)
    faults = tuple(faults)
    problems: list[str] = []
    drop_map = _validate_dropouts(
        dropouts,
        faults,
        num_clients=num_clients,
        dropout_stages=tuple(agg.dropout_stages),
        problems=problems,
    )
    _validate_faults(faults, num_clients=num_clients, problems=problems)
    if not is_int(round_id) or not 0 <= round_id < 1 << 63:
        problems.append(f"round_id must be an integer in [0, 2^63), got {round_id!r}")
    if session_id is not None and (not isinstance(session_id, bytes) or not session_id):
        problems.append("session_id must be None or non-empty bytes")
    if seed is not None:
        try:
            _seed_material(seed)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigurationError(problems)

    seeded = seed is not None
    round_bytes = int(round_id).to_bytes(8, "big")
    if seed is not None:
        warnings.warn(
            "seeded simulation: keys, masks and every random choice are reproducible from the "
            "seed and therefore NOT secret; use seed= only for tests and benchmarks",
            SeededRunWarning,
            stacklevel=2,
        )
        round_seed: bytes | None = derive_sim_seed(seed, context=b"round-seed" + round_bytes)
        driver_seed = derive_sim_seed(seed, context=b"driver" + round_bytes)
        if session_id is None:
            session_id = derive_sim_seed(seed, context=b"session-id", length=SESSION_ID_BYTES)
    else:
        round_seed = None
        driver_seed = prg.random_seed()
        if session_id is None:
            session_id = os.urandom(SESSION_ID_BYTES)

    t0 = time.perf_counter()
    setup = agg.setup_round(
        normalized, weights=weight_values, session_id=session_id, round_id=round_id, seed=round_seed
    )
    setup_seconds = time.perf_counter() - t0
    offline = _precompute(setup)
    if sorted(setup.clients) != list(range(num_clients)):
        raise ProtocolError(
            f"the aggregator built clients {sorted(setup.clients)}, expected 0..{num_clients - 1}",
            stage="setup",
        )
    # The instance's stages: they may depend on the round (SecAgg's malicious mode adds
    # "consistency"); a server wrapper forwards its inner server's list.
    _validate_fault_stages(faults, stages=tuple(setup.server.stages), problems=problems)
    if problems:
        raise ConfigurationError(problems)

    driver = _Driver(
        setup=setup,
        agg=agg,
        drop_map=drop_map,
        faults=faults,
        driver_seed=driver_seed,
        round_id=round_id,
        keep_raw=keep_raw,
    )
    try:
        aggregate, outcome = driver.run()
    except SecureAggError as exc:
        vars(exc).update(
            transcript=list(driver.transcript),
            downlink=list(driver.downlink),
            metrics={**driver.metrics(setup_seconds=setup_seconds), "offline": offline},
        )
        raise
    metrics = {**driver.metrics(setup_seconds=setup_seconds), "offline": offline}
    parameters = agg.parameters()
    _warn_if_clipped(
        metrics["clipped"], parameters, values_per_client=sum(a.size for a in normalized[0])
    )
    shapes = [a.shape for a in normalized[0]]
    result_arrays = [np.array(a, dtype=np.float64, copy=True) for a in aggregate]
    if [a.shape for a in result_arrays] != shapes:
        raise ProtocolError(
            f"the aggregate has shapes {[a.shape for a in result_arrays]}, expected {shapes}",
            stage=driver.server.stage,
        )
    return SimulationResult(
        aggregate=result_arrays,
        survivors=tuple(int(i) for i in outcome.survivor_ids),
        total_weight=float(outcome.total_weight),
        transcript=driver.transcript,
        downlink=driver.downlink,
        metrics=metrics,
        parameters=parameters,
        seeded=seeded,
        session_id=session_id,
        round_id=round_id,
        peer_traffic=driver.peer,
        details=dict(outcome.details),
        raw_uplink=driver.raw_uplink if keep_raw else None,
    )
