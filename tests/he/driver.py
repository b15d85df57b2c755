"""HE rounds through the one driver, with every message's bytes kept and a hook to rewrite them.

``sa.simulate`` builds rounds from the spec; tests here build the parties themselves
(``make_setup``), then run them through :class:`secureagg.transport.driver.Driver` - the same
driver ``simulate`` uses - with ``keep_raw`` (the bytes of every message on every link) and its
``intercept`` hook (a party rewriting a message it sends: a malicious party). Messages cross the
codec both ways, as always.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from secureagg.errors import ProtocolError
from secureagg.protocols.base import Envelope, RoundSetup
from secureagg.transport import codec
from secureagg.transport.driver import Driver

# hook(stage, envelope) -> envelope to deliver instead (or None to drop it)
Hook = Callable[[str, Envelope], Envelope | None]


@dataclass
class HERun:
    setup: RoundSetup
    wire: list[tuple[str, int, int, bytes]] = field(default_factory=list)
    rejections: list[tuple[str, int, int, Exception]] = field(default_factory=list)

    def messages(self, kind: str) -> list[tuple[int, int, object]]:
        """(sender, recipient, decoded message) of every message of ``kind`` on the wire."""
        out = []
        for _, sender, recipient, data in self.wire:
            msg = codec.decode(data)
            if kind == msg.KIND:
                out.append((sender, recipient, msg))
        return out


def make_setup(agg, updates, *, weights=None, session_id=b"S" * 16, round_id=0, seed=b"t"):
    return agg.setup_round(
        updates, weights=weights, session_id=session_id, round_id=round_id, seed=seed
    )


@dataclass
class _Stages:
    dropout_stages: tuple[str, ...]


def drive(
    setup: RoundSetup, *, dropouts: Collection[int] = (), hook: Hook | None = None
) -> HERun:
    """Run one round; InsufficientSurvivors and the server's end-of-stage errors propagate
    (with the run attached as ``exc.run``); parties' refusals are in ``run.rejections``."""
    stages = tuple(setup.server.stages)
    driver = Driver(
        setup=setup,
        agg=_Stages(stages),  # type: ignore[arg-type]
        drop_map={u: stages[0] for u in dropouts},
        faults=(),
        driver_seed=bytes(32),
        round_id=0,
        keep_raw=True,
        intercept=hook,
    )
    run = HERun(setup)
    try:
        driver.run()
    except ProtocolError as exc:
        vars(exc)["run"] = run  # tests read the rejections that led here
        raise
    finally:
        run.wire[:] = [w for w in driver.wire if not (set(w[1:3]) & set(dropouts))]
        run.rejections[:] = driver.errors
    return run
