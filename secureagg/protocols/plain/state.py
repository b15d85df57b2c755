"""A plain client's state between stages: its clipped, weighted values (secret) and its stage.

>>> PlainClientState.KIND, PlainClientState.SECRET_FIELDS
('plain/client-state', ('values',))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import MalformedMessage
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import PartyState, check_state

__all__ = ["PlainClientState", "check_fields"]


@dataclass(frozen=True)
class PlainClientState(PartyState):
    """One plain client between two stages."""

    KIND: ClassVar[str] = "plain/client-state"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("values",)

    values: npt.NDArray[Any]
    weight: float
    clipped: int


def check_fields(spec: RoundSpec, state: object) -> PlainClientState:
    """``state`` as this round's plain client state, every field checked."""
    check_state(state, spec, PlainClientState, stages=("await-request", "done"))
    if not isinstance(state, PlainClientState):  # pragma: no cover - check_state refuses it
        raise MalformedMessage("not a plain client state")
    values = state.values
    if (
        not isinstance(values, np.ndarray)
        or values.dtype != np.float64
        or values.size != spec.dimension
        or not (math.isfinite(state.weight) and state.weight > 0)
        or state.clipped < 0
    ):
        raise MalformedMessage(
            f"plain client state refused: {spec.dimension} float64 values, a finite weight > 0 "
            "and a clip count >= 0 expected"
        )
    return state
