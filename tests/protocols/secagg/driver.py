"""SecAgg rounds through the one driver, with a hook to play a malicious server.

Tests build the parties (``make_setup``) and run them through
:class:`secureagg.transport.driver.Driver` - the driver ``sa.simulate`` uses - with its
``intercept`` hook rewriting what the server sends to each client (a malicious server), which no
network fault can do, and inspect the parties' state. Messages cross the codec in both
directions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

import secureagg as sa
from secureagg.protocols.base import SERVER, Envelope, Message, RoundSetup
from secureagg.transport import codec
from secureagg.transport.driver import Driver

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


@dataclass
class _Stages:
    dropout_stages: tuple[str, ...]


def drive(
    setup: RoundSetup,
    *,
    dropouts: Mapping[int, str] | None = None,
    server_hook: ServerHook | None = None,
    stages: tuple[str, ...],
) -> DriverRun:
    """Run one round. Raises InsufficientSurvivors/ProtocolError from the server, like simulate."""
    run = DriverRun(setup)

    def intercept(stage: str, env: Envelope) -> Envelope | None:
        if server_hook is None or env.sender != SERVER:
            return env
        msg = server_hook(stage, env.recipient, codec.decode(codec.encode(env.message)))
        return None if msg is None else Envelope(env.sender, env.recipient, msg)

    driver = Driver(
        setup=setup,
        agg=_Stages(stages),  # type: ignore[arg-type]
        drop_map=dict(dropouts or {}),
        faults=(),
        driver_seed=bytes(32),
        round_id=0,
        keep_raw=True,
        intercept=intercept,
    )
    try:
        driver.run()
    finally:
        run.uplink[:] = [
            (stage, sender, codec.decode(data))
            for stage, sender, recipient, data in driver.wire
            if recipient == SERVER
        ]
        for stage, sender, recipient, exc in driver.errors:
            if recipient == SERVER:
                run.server_rejections.append((stage, sender, exc))
            elif recipient in setup.clients:
                run.client_errors.setdefault(recipient, exc)
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
