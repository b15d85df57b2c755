"""The floor model of masked aggregation, with its unit costs measured on this machine, in the run.

What a SecAgg / SecAgg+ round cannot avoid (``ANCHORS.md``; Bonawitz et al. 2017, Bell et al.
2020), per client with ``k`` neighbours and Shamir threshold ``t``, and for the server with
``|U3|`` survivors and ``P`` (dropped-after-sharing, surviving neighbour) pairs::

    floor_client = t_quant + (k + 1) t_mask + 2k t_agree + 2 t_share(k, t)
    floor_server = |U3| t_add + |U3| t_mask + P t_mask

* ``t_quant``: encoding one client's ``d`` float values (clip, scale, stochastic rounding);
* ``t_mask``: expanding one ``d``-value mask from a seed (AES-128-CTR keystream) and adding it;
* ``t_add``: adding one ``d``-value vector into the running sum (numpy, in place);
* ``t_agree``: one X25519 agreement + HKDF;
* ``t_share``: Shamir-sharing one 32-byte secret to ``k`` parties with threshold ``t``.

Only SecAgg and SecAgg+ have a floor model (under either threat model, with or without DP: the
floor counts neither signatures nor noise, so the ratio shows what they cost on top). Plain
aggregation is itself the unprotected reference; HE protocols are compared with their peers (bare
TenSEAL, ``phe``) instead.

The unit costs are measured by :func:`measure_unit_costs` in the benchmark's own process, just
before the configuration is measured (cached per ``(d, k, t, bits)``), as medians of repeats:
the ratios ``measured / floor`` are of two figures taken on the same machine, under the same load.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from secureagg.crypto import keyagree, labels, prg, shamir

__all__ = [
    "FLOOR_FORMULA",
    "UnitCostCache",
    "dropped_neighbour_pairs",
    "floor_of",
    "floor_seconds",
    "measure_unit_costs",
    "median_seconds",
    "ratios",
]

FLOOR_FORMULA = {
    "client": "t_quant + (k + 1) t_mask + 2k t_agree + 2 t_share(k, t)",
    "server": "|U3| t_add + |U3| t_mask + P t_mask",
}
_CONTEXT = b"secureagg/bench/unit-cost"


def median_seconds(fn: Callable[[], object], *, repeats: int, budget: float = 0.02) -> float:
    """Median over ``repeats`` of the mean time of a batch of calls, after one warm-up call.

    A batch has as many calls as fit in ``budget`` seconds (1 to 200), so that a repeat of a
    fast operation is not all timer overhead and a slow one is not repeated for long."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    number = max(1, min(200, int(budget / max(warm, 1e-7))))
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return float(statistics.median(times))


def measure_unit_costs(encoder: Any, d: int, *, k: int, t: int, repeats: int = 5) -> dict[str, Any]:
    """``t_quant``, ``t_mask``, ``t_add`` at ``d`` values and ``t_agree``, ``t_share(k, t)``.

    ``encoder`` is the aggregator's fixed-point encoder (its ``dtype`` and ``encode``)."""
    dtype = encoder.dtype
    acc = np.zeros(d, dtype=dtype)
    seed = prg.random_seed()
    stream = prg.Keystream(prg.random_seed(), label=labels.SIM_DRIVER, context=_CONTEXT)
    x = stream.uniform(d) * 2 - 1
    vec = encoder.encode(x).values

    def mask() -> None:
        prg.add_mask(acc, seed, label=labels.PAIRWISE_MASK, context=_CONTEXT)

    def add() -> None:
        np.add(acc, vec, out=acc)

    def quant() -> None:
        encoder.encode(x)

    mine = keyagree.KeyPair.generate()
    peer = keyagree.KeyPair.generate().public_bytes

    def agree() -> None:
        keyagree.derive_shared_key(mine, peer, label=labels.PAIRWISE_SEED, context=_CONTEXT)

    secret = os.urandom(32)
    indices = list(range(1, k + 1))

    def share() -> None:
        shamir.split(secret, threshold=t, indices=indices)

    return {
        "d": d,
        "k": k,
        "t": t,
        "bits": int(encoder.bits),
        "repeats": repeats,
        "t_quant": median_seconds(quant, repeats=repeats),
        "t_mask": median_seconds(mask, repeats=repeats),
        "t_add": median_seconds(add, repeats=repeats),
        "t_agree": median_seconds(agree, repeats=repeats),
        "t_share": median_seconds(share, repeats=repeats) if k >= 1 and t >= 1 else 0.0,
    }


class UnitCostCache:
    """Unit costs measured once per ``(d, k, t, bits)`` in a run, then reused."""

    def __init__(self, *, repeats: int = 5) -> None:
        self.repeats = repeats
        self._costs: dict[tuple[int, int, int, int], dict[str, Any]] = {}

    def get(self, encoder: Any, d: int, *, k: int, t: int) -> dict[str, Any]:
        key = (d, k, t, int(encoder.bits))
        if key not in self._costs:
            self._costs[key] = measure_unit_costs(encoder, d, k=k, t=t, repeats=self.repeats)
        return self._costs[key]

    def all(self) -> list[dict[str, Any]]:
        return list(self._costs.values())


def dropped_neighbour_pairs(agg: Any, res: Any) -> int:
    """``P``: pairs (client that shared its keys but sent no masked input, surviving neighbour).

    The server removes one pairwise mask per such pair. Needs SecAgg's ``details`` (``u2``,
    ``u3``) and the round's communication graph."""
    from secureagg.protocols.secagg.graph import harary_graph

    details = getattr(res, "details", None) or {}
    if "u2" not in details or "u3" not in details:
        return 0
    graph = harary_graph(
        agg.num_clients, agg.params.degree, session_id=res.session_id, round_id=res.round_id
    )
    u3 = set(details["u3"])
    dropped = set(details["u2"]) - u3
    return sum(len(graph[u] & u3) for u in dropped)


def floor_seconds(
    unit_costs: Mapping[str, Any], *, survivors: float, pairs: float
) -> tuple[float, float]:
    """``(floor_client, floor_server)`` of :data:`FLOOR_FORMULA` from ``unit_costs`` (as returned
    by :func:`measure_unit_costs`, whose ``k`` it uses), ``|U3| = survivors`` and ``P = pairs``."""
    c = unit_costs
    k = c["k"]
    client = c["t_quant"] + (k + 1) * c["t_mask"] + 2 * k * c["t_agree"] + 2 * c["t_share"]
    server = survivors * (c["t_add"] + c["t_mask"]) + pairs * c["t_mask"]
    return float(client), float(server)


def _masked_inner(agg: Any) -> Any | None:
    inner = getattr(agg, "inner", agg)
    if hasattr(inner, "params") and hasattr(inner, "encoder") and hasattr(inner.params, "degree"):
        return inner
    return None


def floor_of(
    base: str, agg: Any, d: int, *, survivors: int, pairs: int, cache: UnitCostCache
) -> dict[str, Any] | None:
    """The floor of one round of ``agg`` (``base`` its registered name), or None without one.

    Returns ``{"client_seconds", "server_seconds", "formula", "unit_costs"}``."""
    if base in ("secagg", "secagg+"):
        inner = _masked_inner(agg)
        if inner is None:
            return None
        k, t = int(inner.params.degree), int(inner.params.threshold)
        c = cache.get(inner.encoder, d, k=k, t=t)
        client, server = floor_seconds(c, survivors=survivors, pairs=pairs)
        return {
            "client_seconds": client,
            "server_seconds": server,
            "survivors": survivors,
            "pairs": pairs,
            "formula": {"client": FLOOR_FORMULA["client"], "server": FLOOR_FORMULA["server"]},
            "unit_costs": c,
            # Not in the model (ANCHORS.md's floor), shown beside it: the server must also agree
            # one key per (dropped, surviving neighbour) pair to recompute that pair's mask seed.
            "not_in_floor": {"server_pair_agreements_seconds": pairs * c["t_agree"]},
        }
    return None


def ratios(figures: Mapping[str, Any], floor: Mapping[str, Any]) -> dict[str, float | None]:
    """Measured medians over the floor: the mean client (over a client that took part in every
    stage), the slowest client and the server; and the busiest client's upload over every stage
    against its payload at ``bits`` per value (ANCHORS.md: "upload ~ 1.0x of a 32-bit
    payload")."""

    def over(value: float, base: float) -> float | None:
        return value / base if base > 0 else None

    return {
        "client_mean_over_floor": over(
            float(figures["client_seconds_mean"]["median"]), floor["client_seconds"]
        ),
        "client_max_over_floor": over(
            float(figures["client_seconds_max"]["median"]), floor["client_seconds"]
        ),
        "server_over_floor": over(
            float(figures["server_seconds"]["median"]), floor["server_seconds"]
        ),
        "upload_over_payload": over(
            float(figures["bytes_up_per_client"]["median"]),
            int(floor["unit_costs"]["d"]) * int(floor["unit_costs"]["bits"]) / 8,
        ),
    }
