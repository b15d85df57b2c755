"""Measure one configuration of the benchmark grid: repeated rounds through ``simulate``.

For one :class:`~secureagg.bench.grid.BenchConfig` and its aggregator, :func:`measure_config`
runs ``repeats`` timed rounds of :func:`secureagg.transport.simulate` (in this process, every
message through the codec) and one more, untimed, round under :mod:`tracemalloc` for memory.
Units: seconds and bytes.

Per round it records, from ``res.metrics`` and the transcript:

* ``round_seconds``: wall time of the ``simulate`` call (setup, offline work, every stage);
* ``client_seconds_max``: the slowest client's compute over the round (also per stage);
  ``client_seconds_total``: every client's compute summed; ``client_offline_seconds_max``: the
  slowest client's work before the round (HE encryption pools), not in the round's figures;
* ``server_seconds`` (also per stage), ``helper_seconds`` (the HE key holder; 0 elsewhere),
  ``codec_seconds`` (encoding and decoding messages, all parties), ``setup_seconds`` (key
  material, the round spec through its bytes, every party built from it);
* ``bytes_up_per_client`` / ``bytes_down_per_client``: the most any one client sent / received
  (to and from the server and other parties); ``key_holder_bytes_up`` / ``_down`` likewise for
  the HE key holder; ``spec_bytes``: the public round spec every party reads (the CKKS public
  context travels in it);
* the error: ``max_abs_error`` = max over values of ``|aggregate - plaintext sum of the
  survivors' updates|``, against ``bound``, the error the aggregator states for that many
  survivors (:func:`error_bound_of`).

Across repeats each figure is reported as ``{"median": ..., "min": ...}``; the error as the
largest over the repeats, ``within_bound`` only if every repeat was within its bound.

Test data are drawn from the CSPRNG keystream (values uniform in ``[-1, 1)``; divided by
``sqrt(d)`` for the DP configurations, so that no update exceeds the L2 clip and the reference
sum is exact); a ``seed`` makes data, keys and masks reproducible and NOT secret (tests only).
"""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.bench.floor import UnitCostCache, dropped_neighbour_pairs, floor_of, ratios
from secureagg.bench.grid import BenchConfig
from secureagg.bench.memory import replayable, server_peak_memory
from secureagg.crypto import labels, prg
from secureagg.protocols.base import KEY_HOLDER, RoundFactory
from secureagg.transport import SeededRunWarning, SimulationResult, derive_sim_seed, simulate
from secureagg.transport.results import ClippingWarning

__all__ = [
    "SCALAR_FIGURES",
    "TAIL_PROBABILITY",
    "PeerFn",
    "choose_dropouts",
    "draw_updates",
    "error_bound_of",
    "measure_config",
    "summarise_peer",
]

#: per-configuration failure probability of the noise tail bounds used for the DP bounds
TAIL_PROBABILITY = 2.0**-40
#: the figures summarised as median and min over the repeats (seconds, then bytes)
SCALAR_FIGURES: tuple[str, ...] = (
    "round_seconds",
    "client_seconds_max",
    "client_seconds_mean",
    "client_seconds_total",
    "compute_seconds_total",
    "client_offline_seconds_max",
    "server_offline_seconds",
    "server_seconds",
    "helper_seconds",
    "codec_seconds",
    "setup_seconds",
    "bytes_up_per_client",
    "bytes_down_per_client",
    "key_holder_bytes_up",
    "key_holder_bytes_down",
    "spec_bytes",
)
#: a peer: ``peer(data, dropped_ids)`` runs one round of another implementation on the same
#: ``n x d`` data with the same clients dropped and returns its JSON-ready figures
PeerFn = Callable[[npt.NDArray[np.float64], list[int]], dict[str, Any]]
_STAGE_FIGURES = ("client_seconds_max", "server_seconds", "helper_seconds")
#: per stage, bytes: the most any one client sent / received, the key holder's, and the server's
_STAGE_BYTES = (
    "client_bytes_up_max",
    "client_bytes_down_max",
    "key_holder_bytes_up",
    "key_holder_bytes_down",
    "server_bytes_in",
    "server_bytes_out",
)


def draw_updates(config: BenchConfig, master: bytes) -> npt.NDArray[np.float64]:
    """``n x d`` test updates from the CSPRNG keystream keyed by ``master``."""
    stream = prg.Keystream(
        master, label=labels.SIM_DRIVER, context=f"bench/data/{config.label}".encode()
    )
    data = stream.uniform(config.n * config.d).reshape(config.n, config.d)
    data *= 2
    data -= 1
    if config.dp != "none":
        data /= math.sqrt(config.d)  # L2 norm <= 1 = the DP configurations' clip
    return data


def choose_dropouts(
    config: BenchConfig, stages: Sequence[str], master: bytes
) -> dict[int, str]:
    """``config.dropped`` clients (drawn from the keystream), silent from ``"masked"`` where the
    protocol has that stage (SecAgg: the server must then remove their pairwise masks, its
    costly case), else from the protocol's last dropout stage (the upload)."""
    if config.dropped == 0 or not stages:
        return {}
    stream = prg.Keystream(
        master, label=labels.SIM_DRIVER, context=f"bench/dropouts/{config.label}".encode()
    )
    ids = list(range(config.n))
    for i in range(config.dropped):  # partial Fisher-Yates with the CSPRNG keystream
        j = i + stream.below(config.n - i)
        ids[i], ids[j] = ids[j], ids[i]
    stage = "masked" if "masked" in stages else stages[-1]
    return {cid: stage for cid in sorted(ids[: config.dropped])}


def _bound_fn(agg: object, survivors: int) -> float:
    fn = getattr(agg, "error_bound", None)
    if not callable(fn):
        return 0.0
    try:
        return float(fn(survivors=survivors))
    except TypeError:
        return float(fn())


def error_bound_of(agg: RoundFactory, config: BenchConfig, survivors: int) -> tuple[float, str]:
    """The per-value error bound of the released sum, and how it was obtained.

    * no DP: the aggregator's own ``error_bound(survivors=...)`` (encoding, CKKS noise);
    * distributed DP: ``(noise_headroom + survivors) / scale`` from the aggregator's
      :class:`~secureagg.dp.distributed.DistributedPlan` - the summed noise's tail bound at
      probability ``2^-tail_bits`` per value (as the encoder reserves it) plus one integer unit of
      randomized rounding per survivor;
    * central DP: the inner aggregator's bound plus the Gaussian tail
      ``noise_std * sqrt(2 ln(2 d / p))`` at ``p = 2^-40`` over all ``d`` values.
    """
    if config.dp == "distributed":
        plan = getattr(agg, "plan", None)
        headroom, scale = getattr(plan, "noise_headroom", None), getattr(plan, "scale", None)
        if isinstance(headroom, int | float) and isinstance(scale, int | float) and scale > 0:
            return (float(headroom) + survivors) / float(scale), (
                "distributed DP: (noise tail bound at 2^-tail_bits per value + one rounding "
                "unit per survivor) / scale"
            )
        return math.inf, "distributed DP: the aggregator exposes no plan"
    if config.dp == "central":
        inner = getattr(agg, "inner", agg)
        mechanism = getattr(agg, "mechanism", None)
        std = float(getattr(getattr(mechanism, "config", None), "noise_std", math.nan))
        tail = std * math.sqrt(2.0 * math.log(2.0 * config.d / TAIL_PROBABILITY))
        return _bound_fn(inner, survivors) + tail, (
            "central DP: the protocol's stated bound + Gaussian tail at 2^-40 over all values"
        )
    return _bound_fn(agg, survivors), "the aggregator's error_bound(survivors=...)"


def _per_party_bytes(res: SimulationResult, n: int) -> dict[str, int]:
    up = dict.fromkeys(range(n), 0)
    down = dict.fromkeys(range(n), 0)
    holder_up = holder_down = 0
    for entry in (*res.transcript, *res.peer_traffic):
        if entry.sender in up:
            up[entry.sender] += entry.size
        elif entry.sender == KEY_HOLDER:
            holder_up += entry.size
    for entry in (*res.downlink, *res.peer_traffic):
        if entry.recipient in down:
            down[entry.recipient] += entry.size
        elif entry.recipient == KEY_HOLDER:
            holder_down += entry.size
    return {
        "bytes_up_per_client": max(up.values(), default=0),
        "bytes_down_per_client": max(down.values(), default=0),
        "key_holder_bytes_up": holder_up,
        "key_holder_bytes_down": holder_down,
    }


def _one_round(
    agg: RoundFactory,
    updates: list[list[npt.NDArray[np.float64]]],
    dropouts: Mapping[int, str],
    seed: int | None,
    round_id: int,
) -> tuple[SimulationResult, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)  # the run is flagged as seeded instead
        warnings.simplefilter("ignore", ClippingWarning)  # counted in metrics["clipped"]
        t0 = time.perf_counter()
        res = simulate(agg, updates, dropouts=dropouts, seed=seed, round_id=round_id)
        return res, time.perf_counter() - t0


def _stage_bytes(res: SimulationResult, n: int) -> dict[str, dict[str, int]]:
    """Per stage: the most one client sent / received, the key holder's and the server's bytes."""
    out: dict[str, dict[str, int]] = {}
    up: dict[tuple[str, int], int] = {}
    down: dict[tuple[str, int], int] = {}
    for entry in (*res.transcript, *res.peer_traffic):
        up[(entry.stage, entry.sender)] = up.get((entry.stage, entry.sender), 0) + entry.size
    for entry in (*res.downlink, *res.peer_traffic):
        key = (entry.stage, entry.recipient)
        down[key] = down.get(key, 0) + entry.size
    server_in: dict[str, int] = {}
    server_out: dict[str, int] = {}
    for entry in res.transcript:
        server_in[entry.stage] = server_in.get(entry.stage, 0) + entry.size
    for entry in res.downlink:
        server_out[entry.stage] = server_out.get(entry.stage, 0) + entry.size
    for stage in res.metrics["stages"]:
        row = dict.fromkeys(_STAGE_BYTES, 0)
        for (st, party), size in up.items():
            if st != stage:
                continue
            if 0 <= party < n:
                row["client_bytes_up_max"] = max(row["client_bytes_up_max"], size)
            elif party == KEY_HOLDER:
                row["key_holder_bytes_up"] += size
        for (st, party), size in down.items():
            if st != stage:
                continue
            if 0 <= party < n:
                row["client_bytes_down_max"] = max(row["client_bytes_down_max"], size)
            elif party == KEY_HOLDER:
                row["key_holder_bytes_down"] += size
        row["server_bytes_in"] = server_in.get(stage, 0)
        row["server_bytes_out"] = server_out.get(stage, 0)
        out[stage] = row
    return out


def _client_mean(res: SimulationResult) -> float:
    """Seconds of a client that took part in every stage: per stage, the clients' summed
    seconds over the clients that sent in that stage, summed over the stages."""
    senders: dict[str, set[int]] = {}
    for entry in (*res.transcript, *res.peer_traffic):
        if entry.sender >= 0:
            senders.setdefault(entry.stage, set()).add(entry.sender)
    total = 0.0
    for stage, row in res.metrics["stages"].items():
        active = len(senders.get(stage, ()))
        if active:
            total += float(row["client_seconds_total"]) / active
    return total


def _figures(res: SimulationResult, wall: float, n: int) -> dict[str, Any]:
    totals = res.metrics["totals"]
    figures: dict[str, Any] = {
        "round_seconds": wall,
        "client_seconds_max": float(totals["client_seconds_max"]),
        "client_seconds_mean": _client_mean(res),
        "client_seconds_total": float(totals["client_seconds_total"]),
        # every party's compute in the round, the codec included (the peers' "total compute")
        "compute_seconds_total": float(totals["client_seconds_total"])
        + float(totals["server_seconds"])
        + float(totals["helper_seconds"])
        + float(totals["codec_seconds"]),
        "client_offline_seconds_max": float(res.metrics["offline"]["client_seconds_max"]),
        "server_offline_seconds": float(res.metrics["offline"].get("server_seconds", 0.0)),
        "server_seconds": float(totals["server_seconds"]),
        "helper_seconds": float(totals["helper_seconds"]),
        "codec_seconds": float(totals["codec_seconds"]),
        "setup_seconds": float(res.metrics["setup_seconds"]),
        **_per_party_bytes(res, n),
        "spec_bytes": int(res.metrics["spec_bytes"]),
    }
    stage_bytes = _stage_bytes(res, n)
    figures["stages"] = {
        stage: {**{k: float(row[k]) for k in _STAGE_FIGURES}, **stage_bytes[stage]}
        for stage, row in res.metrics["stages"].items()
    }
    return figures


def _error(
    res: SimulationResult, data: npt.NDArray[np.float64], agg: RoundFactory, config: BenchConfig
) -> dict[str, Any]:
    survivors = list(res.survivors)
    reference = data[survivors].sum(axis=0) if survivors else np.zeros(config.d)
    error = float(np.max(np.abs(res.aggregate[0] - reference)))
    bound, how = error_bound_of(agg, config, len(survivors))
    # float64 summation in another order may differ by a few ulps per addend
    tolerance = 8 * float(np.finfo(np.float64).eps) * max(1, len(survivors)) * max(
        1.0, float(np.max(np.abs(reference), initial=0.0))
    )
    return {
        "max_abs_error": error,
        "bound": bound,
        "bound_kind": how,
        "within_bound": bool(error <= bound + tolerance),
        "survivors": len(survivors),
        "clipped_values": int(res.metrics["clipped"]["total"]),
    }


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": float(statistics.median(values)), "min": float(min(values))}


def measure_config(
    config: BenchConfig,
    agg: RoundFactory,
    *,
    repeats: int,
    master: bytes,
    seed: int | None = None,
    memory: bool = True,
    floor_cache: UnitCostCache | None = None,
    peers: Mapping[str, PeerFn] | None = None,
) -> dict[str, Any]:
    """Measure ``config`` with ``agg``: ``repeats`` timed rounds (+ one traced for memory).

    ``master`` keys the test data and the dropouts (32 random bytes; derived from ``seed`` in a
    seeded run). With ``floor_cache``, SecAgg/SecAgg+ get the floor model (unit costs measured
    now, in this process) and the ratios to it. Each of ``peers`` runs one round on the same
    data and dropouts right after each of ours (interleaved, so that load drift hits both).
    Returns the JSON-ready result (see the module docstring)."""
    data = draw_updates(config, master)
    updates = [[row] for row in data]
    dropouts = choose_dropouts(config, tuple(agg.dropout_stages), master)
    rounds: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    pairs: list[int] = []
    peer_rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in peers or {}}
    for r in range(repeats):
        round_seed = None if seed is None else _round_seed(seed, config, r)
        res, wall = _one_round(agg, updates, dropouts, round_seed, r)
        rounds.append(_figures(res, wall, config.n))
        errors.append(_error(res, data, agg, config))
        if floor_cache is not None:
            pairs.append(dropped_neighbour_pairs(getattr(agg, "inner", agg), res))
        del res
        for name, peer in (peers or {}).items():
            done = peer_rounds[name]
            if done and not done[-1].get("available", True):
                continue  # the peer said it cannot run: once is enough
            done.append(peer(data, sorted(dropouts)))
    peak: int | None = None
    if memory:
        round_seed = None if seed is None else _round_seed(seed, config, repeats)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            res, _ = _one_round(agg, updates, dropouts, round_seed, repeats)
            peak = int(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        errors.append(_error(res, data, agg, config))
    figures: dict[str, Any] = {
        key: _summary([float(r[key]) for r in rounds]) for key in SCALAR_FIGURES
    }
    stages: dict[str, dict[str, dict[str, float]]] = {}
    for stage in rounds[0]["stages"]:
        stages[stage] = {
            key: _summary([float(r["stages"].get(stage, {}).get(key, 0.0)) for r in rounds])
            for key in (*_STAGE_FIGURES, *_STAGE_BYTES)
        }
    worst = max(errors, key=lambda e: e["max_abs_error"])
    result: dict[str, Any] = {}
    if memory and replayable(config):
        round_seed = None if seed is None else _round_seed(seed, config, repeats + 1)
        replay = server_peak_memory(config, agg, updates, dropouts, seed=round_seed)
        result["server_memory"] = replay
        if replay["matches_round"]:
            result["server_peak_memory_bytes"] = replay["server_peak_memory_bytes"]
    if floor_cache is not None:
        floor = floor_of(
            config.base,
            agg,
            config.d,
            survivors=int(worst["survivors"]),
            pairs=int(statistics.median(pairs)) if pairs else 0,
            cache=floor_cache,
        )
        if floor is not None:
            result["floor"] = floor
            result["ratio"] = ratios(figures, floor)
    if peer_rounds:
        result["peers"] = {name: summarise_peer(runs) for name, runs in peer_rounds.items()}
    return {
        **result,
        "figures": figures,
        "stages": stages,
        "peak_memory_bytes": peak,
        "error": {
            "max_abs_error": worst["max_abs_error"],
            "bound": min(e["bound"] for e in errors),
            "bound_kind": worst["bound_kind"],
            "within_bound": all(e["within_bound"] for e in errors),
            "rounds_checked": len(errors),
            "survivors": worst["survivors"],
            "clipped_values": max(e["clipped_values"] for e in errors),
        },
        "dropouts": {str(k): v for k, v in dropouts.items()},
        "parameters": _jsonable(agg.parameters()),
        "repeats": repeats,
    }


def summarise_peer(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A peer's rounds: every finite number as ``{"median", "min"}``, the rest as in the first.

    A peer that could not run (``{"available": False, "reason": ...}``) is returned as is."""
    if not runs:
        return {"available": False, "reason": "not run"}
    first = runs[0]
    if not first.get("available", True):
        return dict(first)
    out: dict[str, Any] = {"rounds": len(runs)}
    for key, value in first.items():
        numbers = [r.get(key) for r in runs]
        if (
            not isinstance(value, bool)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
            and all(math.isfinite(float(v)) for v in numbers if v is not None)
        ):
            out[key] = _summary([float(v) for v in numbers if v is not None])
        else:
            out[key] = _jsonable(value)
    return out


def _round_seed(seed: int, config: BenchConfig, r: int) -> int:
    raw = derive_sim_seed(seed, context=f"bench/round/{config.label}/{r}".encode(), length=8)
    return int.from_bytes(raw, "big")


def _jsonable(value: Any) -> Any:
    """Aggregator parameters, with anything that is not JSON as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
