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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.bench.grid import BenchConfig
from secureagg.crypto import labels, prg
from secureagg.protocols.base import KEY_HOLDER, RoundFactory
from secureagg.transport import SeededRunWarning, SimulationResult, derive_sim_seed, simulate
from secureagg.transport.results import ClippingWarning

__all__ = [
    "SCALAR_FIGURES",
    "TAIL_PROBABILITY",
    "choose_dropouts",
    "draw_updates",
    "error_bound_of",
    "measure_config",
]

#: per-configuration failure probability of the noise tail bounds used for the DP bounds
TAIL_PROBABILITY = 2.0**-40
#: the figures summarised as median and min over the repeats (seconds, then bytes)
SCALAR_FIGURES: tuple[str, ...] = (
    "round_seconds",
    "client_seconds_max",
    "client_seconds_total",
    "client_offline_seconds_max",
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
_STAGE_FIGURES = ("client_seconds_max", "server_seconds", "helper_seconds")


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


def _figures(res: SimulationResult, wall: float, n: int) -> dict[str, Any]:
    totals = res.metrics["totals"]
    figures: dict[str, Any] = {
        "round_seconds": wall,
        "client_seconds_max": float(totals["client_seconds_max"]),
        "client_seconds_total": float(totals["client_seconds_total"]),
        "client_offline_seconds_max": float(res.metrics["offline"]["client_seconds_max"]),
        "server_seconds": float(totals["server_seconds"]),
        "helper_seconds": float(totals["helper_seconds"]),
        "codec_seconds": float(totals["codec_seconds"]),
        "setup_seconds": float(res.metrics["setup_seconds"]),
        **_per_party_bytes(res, n),
        "spec_bytes": int(res.metrics["spec_bytes"]),
    }
    figures["stages"] = {
        stage: {k: float(row[k]) for k in _STAGE_FIGURES}
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
) -> dict[str, Any]:
    """Measure ``config`` with ``agg``: ``repeats`` timed rounds (+ one traced for memory).

    ``master`` keys the test data and the dropouts (32 random bytes; derived from ``seed`` in a
    seeded run). Returns the JSON-ready result (see the module docstring)."""
    data = draw_updates(config, master)
    updates = [[row] for row in data]
    dropouts = choose_dropouts(config, tuple(agg.dropout_stages), master)
    rounds: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for r in range(repeats):
        round_seed = None if seed is None else _round_seed(seed, config, r)
        res, wall = _one_round(agg, updates, dropouts, round_seed, r)
        rounds.append(_figures(res, wall, config.n))
        errors.append(_error(res, data, agg, config))
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
            for key in _STAGE_FIGURES
        }
    worst = max(errors, key=lambda e: e["max_abs_error"])
    return {
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
