"""A small in-test driver for HE rounds that records the bytes of *every* message.

``sa.simulate`` is the real driver; this one exists so that tests can see every message on every
link (client -> server, server -> key holder, key holder -> server, server -> clients), rewrite a
message in flight (a malicious party) and inspect the parties. Messages cross the codec both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from secureagg.errors import InsufficientSurvivors, ProtocolError
from secureagg.protocols.base import KEY_HOLDER, SERVER, Envelope, RoundSetup
from secureagg.transport import codec

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


def drive(
    setup: RoundSetup, *, dropouts: Collection[int] = (), hook: Hook | None = None
) -> HERun:
    """Run one round; InsufficientSurvivors and the server's end-of-stage errors propagate."""
    run = HERun(setup)
    server = setup.server
    holder = setup.helpers[KEY_HOLDER]
    out = server.start()
    while not server.finished:
        stage = server.stage
        pending: list[Envelope] = list(out)
        while pending:
            env = pending.pop(0)
            if hook is not None:
                replaced = hook(stage, env)
                if replaced is None:
                    continue
                env = replaced
            if env.recipient in dropouts or env.sender in dropouts:
                continue
            data = codec.encode(env.message)
            run.wire.append((stage, env.sender, env.recipient, data))
            msg = codec.decode(data)
            if env.recipient == SERVER:
                party = server
            elif env.recipient == KEY_HOLDER:
                party = holder
            else:
                party = setup.clients[env.recipient]
            try:
                pending.extend(party.receive(env.sender, msg))
            except InsufficientSurvivors as exc:
                if env.recipient == SERVER:
                    raise
                run.rejections.append((stage, env.sender, env.recipient, exc))
            except ProtocolError as exc:
                run.rejections.append((stage, env.sender, env.recipient, exc))
        try:
            out = server.end_stage()
        except ProtocolError as exc:
            vars(exc)["run"] = run  # tests read the rejections that led here
            raise
    return run
