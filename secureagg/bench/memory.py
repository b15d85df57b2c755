"""The server's own peak memory: a recorded round's uplink replayed into a lone server.

``simulate`` runs every party in one process, so its tracemalloc peak is the whole simulation's
(n clients' updates and states and the server). To see what the *server* needs - the figure a
deployment sizes its aggregation host by - :func:`server_peak_memory` records one round's uplink
(``keep_raw=True``), rebuilds only the server from the round's public facts, and feeds it the
recorded messages one at a time, decoded as they arrive, under tracemalloc: the peak is what the
server allocates while it runs (its state, one decoded message in flight, the unmasking), not the
messages waiting in the recording. The replayed aggregate must equal the round's, bit for bit,
or the figure is not reported.

Available for SecAgg and SecAgg+ under the curious threat model without DP (the SecAgg server is
rebuilt from its :class:`~secureagg.protocols.secagg.context.RoundContext`); other
configurations report the whole simulation's peak only.
"""

from __future__ import annotations

import gc
import tracemalloc
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from secureagg.bench.grid import BenchConfig
from secureagg.errors import ProtocolError
from secureagg.transport import SeededRunWarning, simulate
from secureagg.transport.codec import decode
from secureagg.transport.results import ClippingWarning

__all__ = ["replayable", "server_peak_memory"]


def replayable(config: BenchConfig) -> bool:
    return config.base in ("secagg", "secagg+") and config.threat == "curious" and (
        config.dp == "none"
    )


def server_peak_memory(
    config: BenchConfig,
    agg: Any,
    updates: Sequence[Sequence[Any]],
    dropouts: Mapping[int, str],
    *,
    seed: int | None,
) -> dict[str, Any]:
    """One recorded round replayed into a lone server under tracemalloc (module docstring)."""
    from secureagg.protocols.secagg.context import RoundContext
    from secureagg.protocols.secagg.server import SecAggServer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)
        warnings.simplefilter("ignore", ClippingWarning)
        res = simulate(agg, updates, dropouts=dropouts, seed=seed, keep_raw=True)
    raw = res.raw_uplink or []
    entries = list(res.transcript)
    expected = res.aggregate[0]
    session_id, round_id = res.session_id, res.round_id
    del res
    ctx = RoundContext(
        params=agg.params,
        session_id=session_id,
        round_id=round_id,
        encoder=agg.encoder,
        shapes=((config.d,),),
        weighted=False,
        registry=None,
    )
    server = SecAggServer(ctx, model_digest=agg.model_digest)
    gc.collect()
    rejected = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        server.start()
        for entry, data in zip(entries, raw, strict=True):
            while server.stage != entry.stage and not server.finished:
                server.end_stage()
            try:
                server.receive(entry.sender, decode(data))
            except ProtocolError:
                rejected += 1
        while not server.finished:
            server.end_stage()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    outcome = server.result()
    aggregate = np.asarray(outcome.aggregate[0])
    return {
        "server_peak_memory_bytes": int(peak),
        "messages_replayed": len(raw),
        "rejected": rejected,
        "vector_bytes": int(config.d * np.dtype(agg.encoder.dtype).itemsize),
        "matches_round": _same(aggregate, expected),
        "method": "the round's uplink (keep_raw) replayed into a lone SecAggServer rebuilt "
        "from the round's public facts, one decoded message at a time, under tracemalloc",
    }


def _same(replayed: Any, expected: Any) -> bool:
    try:
        a = np.asarray(replayed, dtype=np.float64).reshape(-1)
        b = np.asarray(expected, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.array_equal(a, b))
