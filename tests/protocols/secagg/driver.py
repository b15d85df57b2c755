"""A minimal in-test driver for SecAgg parties with hooks to play a malicious server.

The real driver is ``secureagg.simulate``; this one exists so that tests can rewrite what the
server sends to each client (a malicious server), which no network fault can do, and inspect the
parties' state. Messages still cross the codec in both directions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

import secureagg as sa
from secureagg.errors import InsufficientSurvivors, ProtocolError
from secureagg.protocols.base import SERVER, Envelope, Message, RoundSetup
from secureagg.transport import codec

# hook(stage, recipient, message) -> message to deliver instead (or None to drop it)
ServerHook = Callable[[str, int, Message], Message | None]


@dataclass
class DriverRun:
    setup: RoundSetup
    uplink: list[tuple[str, int, Message]] = field(default_factory=list)
    client_errors: dict[int, Exception] = field(default_factory=dict)
    server_rejections: list[tuple[str, int, Exception]] = field(default_factory=list)


def make_setup(agg, updates, *, weights=None, session_id=b"S" * 16, round_id=0, seed=b"t"):
    return agg.setup_round(
        updates, weights=weights, session_id=session_id, round_id=round_id, seed=seed
    )


def drive(
    setup: RoundSetup,
    *,
    dropouts: Mapping[int, str] | None = None,
    server_hook: ServerHook | None = None,
    stages: tuple[str, ...],
) -> DriverRun:
    """Run one round. Raises InsufficientSurvivors/ProtocolError from the server, like simulate."""
    run = DriverRun(setup)
    dropouts = dict(dropouts or {})
    server = setup.server
    out = server.start()
    while not server.finished:
        stage = server.stage
        index = stages.index(stage)
        for env in out:
            u = env.recipient
            if u in run.client_errors:
                continue
            if u in dropouts and stages.index(dropouts[u]) <= index:
                continue
            msg: Message | None = codec.decode(codec.encode(env.message))
            if server_hook is not None and msg is not None:
                msg = server_hook(stage, u, msg)
            if msg is None:
                continue
            try:
                replies = setup.clients[u].receive(SERVER, msg)
            except ProtocolError as exc:
                run.client_errors[u] = exc
                continue
            for reply in replies:
                wire = codec.decode(codec.encode(reply.message))
                run.uplink.append((stage, u, wire))
                try:
                    server.receive(u, wire)
                except InsufficientSurvivors:
                    raise
                except ProtocolError as exc:
                    run.server_rejections.append((stage, u, exc))
        out = server.end_stage()
    return run


def plaintext_sum(updates, ids, weights=None):
    total = [np.zeros_like(np.asarray(a, dtype=np.float64)) for a in updates[0]]
    for u in ids:
        w = 1.0 if weights is None else float(weights[u])
        for i, a in enumerate(updates[u]):
            total[i] += w * np.asarray(a, dtype=np.float64)
    return total


def grid_updates(agg, n, shapes, *, seed=0):
    """Updates on the encoder's grid (multiples of 1/scale), so rounding is exact."""
    rng = np.random.default_rng(seed)
    scale = agg.encoder.effective_scale
    q = agg.encoder.max_quantized
    return [
        [rng.integers(-q, q + 1, size=s).astype(np.float64) / scale for s in shapes]
        for _ in range(n)
    ]


__all__ = ["DriverRun", "Envelope", "drive", "grid_updates", "make_setup", "plaintext_sum", "sa"]
