"""An HE client's and the HE key holder's state between stages: the formats and their field
checks (written by :meth:`HEClient.export_state
<secureagg.protocols.he_round.client.HEClient.export_state>` and :meth:`HEKeyHolder.export_state
<secureagg.protocols.he_round.key_holder.HEKeyHolder.export_state>`, read by
:meth:`HEClient.restore` and :meth:`HEKeyHolder.load_state`).

The client holds its update (secret), its FedAvg weight, its upload stage and attempt, and - in a
seeded test run with the fixed-point encoding - where its stochastic-rounding keystream stands
(secret). Its encryptor is rebuilt from the round spec's public key; a pool of precomputed
encryptions of zero is *not* carried over (each pooled entry must be used once and never leave
the client's memory): a restored client encrypts afresh. See :mod:`secureagg.protocols.state`
for where a state may be kept.

The key holder holds whether it released the round's one decryption (a refused or failed one
counts: a restored key holder must never decrypt a second aggregate), the clients it blamed, its
key-check attempt, the contributors of the last attempt, and - in a seeded test run - where its
flooding keystream stands (secret). Its secret key is *not* in the state: the restoring process
passes it again, from the node's own key store, and it is checked against the round spec's
public key.

>>> HEClientState.KIND, HEClientState.SECRET_FIELDS
('he/client-state', ('update', 'randomness'))
>>> HEKeyHolderState.KIND, HEKeyHolderState.SECRET_FIELDS
('he/key-holder-state', ('randomness',))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import MalformedMessage
from secureagg.protocols.base import KEY_HOLDER
from secureagg.protocols.he_round.stages import MAX_ATTEMPTS
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import PartyState, check_state

__all__ = [
    "KEY_HOLDER_STAGES",
    "HEClientState",
    "HEKeyHolderState",
    "check_fields",
    "check_key_holder_fields",
]

_STAGES = ("await-request", "done")
#: The key holder's stages: before its one decryption, and after it (released, refused or failed).
KEY_HOLDER_STAGES = ("await-aggregate", "done")


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


@dataclass(frozen=True)
class HEKeyHolderState(PartyState):
    """The HE key holder between two messages (its secret key is never in it)."""

    KIND: ClassVar[str] = "he/key-holder-state"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("randomness",)

    released: bool
    blamed: tuple[int, ...]
    attempt: int
    last: tuple[int, ...] | None
    randomness: bytes


def _ids(ids: tuple[int, ...], num_clients: int) -> bool:
    """Whether ``ids`` are distinct, sorted client ids of the round."""
    return list(ids) == sorted(set(ids)) and all(0 <= i < num_clients for i in ids)


def check_key_holder_fields(
    spec: RoundSpec, state: object, *, probed: bool, min_clients: int
) -> HEKeyHolderState:
    """``state`` as this round's key holder state, every field checked (``probed``: the round
    checks every upload's key-check probes)."""
    check_state(state, spec, HEKeyHolderState, stages=KEY_HOLDER_STAGES, party=KEY_HOLDER)
    if not isinstance(state, HEKeyHolderState):  # pragma: no cover - check_state refuses it
        raise MalformedMessage("not an HE key holder state")
    problems = []
    if state.released != (state.stage == "done"):
        problems.append("released does not fit the stage")
    attempt = state.attempt
    if not 0 <= attempt <= (MAX_ATTEMPTS if probed else 0):
        problems.append(
            f"the key-check attempt must lie in [0, {MAX_ATTEMPTS if probed else 0}] in this round"
        )
    if probed and state.released and attempt == 0:
        problems.append("a key-checked round releases only after checking an attempt")
    if not _ids(state.blamed, spec.num_clients) or (state.blamed and attempt == 0):
        problems.append("blamed must be distinct, sorted client ids, after an attempt")
    last = state.last
    if (last is None) != (attempt == 0) or (
        last is not None
        and (not _ids(last, spec.num_clients) or len(last) < min_clients)
    ):
        problems.append(
            f"the last contributors must be at least {min_clients} distinct, sorted client ids "
            "after an attempt, and none before"
        )
    if len(state.randomness) not in (0, prg.Keystream.STATE_BYTES):
        problems.append("the randomness state has the wrong size")
    if problems:
        raise MalformedMessage("HE key holder state refused: " + "; ".join(problems))
    return state
