"""An HE client's state between stages: the format and its field checks (written by
:meth:`HEClient.export_state <secureagg.protocols.he_round.client.HEClient.export_state>`, read by
:meth:`HEClient.restore`).

The client holds its update (secret), its FedAvg weight, its upload stage and attempt, and - in a
seeded test run with the fixed-point encoding - where its stochastic-rounding keystream stands
(secret). Its encryptor is rebuilt from the round spec's public key; a pool of precomputed
encryptions of zero is *not* carried over (each pooled entry must be used once and never leave
the client's memory): a restored client encrypts afresh. See :mod:`secureagg.protocols.state`
for where a state may be kept.

>>> HEClientState.KIND, HEClientState.SECRET_FIELDS
('he/client-state', ('update', 'randomness'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import MalformedMessage
from secureagg.protocols.he_round.stages import MAX_ATTEMPTS
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import PartyState, check_state

__all__ = ["HEClientState", "check_fields"]

_STAGES = ("await-request", "done")


@dataclass(frozen=True)
class HEClientState(PartyState):
    """One HE client between two stages."""

    KIND: ClassVar[str] = "he/client-state"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("update", "randomness")

    attempt: int
    update: npt.NDArray[Any]
    weight: float
    clipped: int
    randomness: bytes


def check_fields(spec: RoundSpec, state: object) -> HEClientState:
    """``state`` as this round's HE client state, every field checked."""
    check_state(state, spec, HEClientState, stages=_STAGES)
    if not isinstance(state, HEClientState):  # pragma: no cover - check_state refuses it
        raise MalformedMessage("not an HE client state")
    update = state.update
    problems = []
    if (
        not isinstance(update, np.ndarray)
        or update.dtype not in (np.float32, np.float64)
        or update.size != spec.dimension
    ):
        problems.append(f"the update must be {spec.dimension} float32 or float64 values")
    if not -1 <= state.attempt < MAX_ATTEMPTS or (state.stage == "done") != (state.attempt >= 0):
        problems.append("the upload attempt does not fit the stage")
    if not (math.isfinite(state.weight) and state.weight > 0) or state.clipped < 0:
        problems.append("weight must be finite and > 0, clipped >= 0")
    if len(state.randomness) not in (0, prg.Keystream.STATE_BYTES):
        problems.append("the randomness state has the wrong size")
    if problems:
        raise MalformedMessage("HE client state refused: " + "; ".join(problems))
    return state
