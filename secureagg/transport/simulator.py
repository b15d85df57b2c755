"""In-memory simulator: one round of any :class:`~secureagg.protocols.base.RoundFactory`.

:func:`simulate` builds the round the way a deployment does: the aggregator provisions the
round's key material, writes the public :class:`~secureagg.protocols.spec.RoundSpec`, and every
party is built from the spec *as read back from its bytes*
(:func:`~secureagg.transport.round_spec.spec_from_bytes`) plus only what it holds - the server
nothing, each client its own update, weight and secret, the key holder its key. The one driver
(:class:`~secureagg.transport.driver.Driver`) then moves the encoded messages stage by stage,
injects the faults asked for and measures everything; see its module for the delivery rules and
the driver's own threat model.

A seeded run (``seed=...``) makes every random choice reproducible, including the protocol's keys
and masks; it warns with :class:`SeededRunWarning` and sets ``res.seeded``.
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from secureagg.crypto import prg
from secureagg.errors import (
    ConfigurationError,
    ProtocolError,
    SecureAggError,
)
from secureagg.protocols.base import (
    RoundFactory,
    RoundSetup,
)
from secureagg.transport.driver import Driver
from secureagg.transport.results import (
    ClippingWarning,
    SeededRunWarning,
    SimulationResult,
    TranscriptEntry,
)
from secureagg.transport.round_spec import spec_from_bytes, spec_to_bytes
from secureagg.transport.simulate_arguments import (
    SESSION_ID_BYTES,
    _seed_material,
    _validate_dropouts,
    _validate_fault_stages,
    _validate_faults,
    derive_sim_seed,
    seeded_round,
)
from secureagg.transport.updates import normalize_updates, normalize_weights
from secureagg.validation import is_int

__all__ = [
    "ClippingWarning",
    "SeededRunWarning",
    "SimulationResult",
    "TranscriptEntry",
    "derive_sim_seed",
    "seeded_round",
    "simulate",
]
def _precompute(setup: RoundSetup) -> dict[str, float | int]:
    """Every client's and the server's :meth:`Party.precompute` (HE pools, the Paillier server's
    re-randomisation factors) before the round, timed apart: the client figures cover the
    clients that did some; ``server_seconds`` is 0 when the server had nothing to precompute."""
    times: list[float] = []
    for _, client in sorted(setup.clients.items()):
        t0 = time.perf_counter()
        made = client.precompute()
        if made > 0:  # a party with nothing to precompute does no offline work
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    server_made = setup.server.precompute()
    server_seconds = time.perf_counter() - t0 if server_made > 0 else 0.0
    return {
        "client_seconds_total": sum(times),
        "client_seconds_max": max(times, default=0.0),
        "clients": len(times),
        "server_seconds": server_seconds,
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
      the largest total); ``"setup_seconds"``: building the round (key material, the round spec
      through its bytes, every party from the spec); ``"spec_bytes"``: the spec's encoded size.
    * ``"offline"``: work done *before* the round (a ``precompute()`` method: the HE clients'
      encryption pools, the Paillier server's re-randomisation factors):
      ``client_seconds_total``, ``client_seconds_max``, ``clients`` and ``server_seconds``; not
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
        round_seed: bytes | None
        round_seed, seeded_session = seeded_round(seed, round_id)
        driver_seed = derive_sim_seed(seed, context=b"driver" + round_bytes)
        if session_id is None:
            session_id = seeded_session
    else:
        round_seed = None
        driver_seed = prg.random_seed()
        if session_id is None:
            session_id = os.urandom(SESSION_ID_BYTES)

    t0 = time.perf_counter()
    # The deployed path: key material, the public round spec, and every party built from the
    # spec *as read back from its bytes* plus only what that party holds.
    provision = agg.provision(session_id=session_id, round_id=round_id, seed=round_seed)
    spec = agg.round_spec(
        shapes=[tuple(int(d) for d in np.shape(a)) for a in normalized[0]],
        weighted=weight_values is not None,
        session_id=session_id,
        round_id=round_id,
        public_keys=provision.public,
    )
    spec_bytes = spec_to_bytes(spec)
    spec = spec_from_bytes(spec_bytes, session_id=session_id)
    setup = agg.parties_from_spec(
        spec, normalized, weights=weight_values, secrets=provision.secrets, seed=round_seed
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

    driver = Driver(
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
            metrics={**driver.metrics(setup_seconds=setup_seconds), "offline": offline,
                     "spec_bytes": len(spec_bytes)},
        )
        raise
    metrics = {**driver.metrics(setup_seconds=setup_seconds), "offline": offline,
               "spec_bytes": len(spec_bytes)}
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
