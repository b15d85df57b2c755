"""A SecAgg / SecAgg+ client's state between stages: the format and its field checks.

:meth:`SecAggClient.export_state <secureagg.protocols.secagg.client.SecAggClient.export_state>`
writes it; :meth:`SecAggClient.restore` reads it back.

What the client holds after each stage (see :mod:`secureagg.protocols.state` for where a state may
be kept): after ``advertise`` its two X25519 private keys; after ``share`` also its peers' public
keys, the AEAD key and pairwise seed it agreed with each, its self-mask seed and the Shamir shares
it keeps of its own secrets; after ``masked`` the shares it received and the senders the server
listed; after ``consistency`` the survivor list it signed. The update and the FedAvg weight are
there until the masked input is computed from them at ``masked`` (the update is empty after it),
or - a client built without its update (``SecAggClient(update=None)``) - from when they are
supplied, before ``masked``: until then the update is empty and the weight a placeholder 1. An
empty update thus means "not supplied yet" in a stage up to ``masked`` and "sent" after it; the
encoding is unchanged (a reader that predates this refuses such a state, it does not misread it).
Its identity key (malicious mode) is not in the state: the restoring process passes it again.

>>> SecAggClientState.KIND, "pair_seeds" in SecAggClientState.SECRET_FIELDS
('secagg/client-state', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import MalformedMessage
from secureagg.protocols.secagg.context import RoundContext
from secureagg.protocols.state import PartyState

__all__ = ["SecAggClientState", "check_fields"]

_KEY = 32


@dataclass(frozen=True)
class SecAggClientState(PartyState):
    """One SecAgg client between two stages (fields: the client's own, by stage)."""

    KIND: ClassVar[str] = "secagg/client-state"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = (
        "update", "cipher_private_key", "mask_private_key", "self_mask_seed", "held_self_mask",
        "held_mask_key", "share_keys", "pair_seeds", "randomness",
    )

    aborted: bool
    update: npt.NDArray[Any]
    weight: int
    clipped: int
    model_digest: bytes
    cipher_private_key: bytes
    mask_private_key: bytes
    peer_ids: tuple[int, ...]
    peer_cipher_keys: tuple[bytes, ...]
    peer_mask_keys: tuple[bytes, ...]
    share_view: tuple[int, ...]
    held_self_mask: dict[int, bytes]
    held_mask_key: dict[int, bytes]
    signed_survivors: tuple[int, ...] | None
    self_mask_seed: bytes
    share_keys: dict[int, bytes]
    pair_seeds: dict[int, bytes]
    randomness: bytes


def check_fields(state: SecAggClientState, context: RoundContext) -> None:
    """Every field's type and size, as the codec cannot know them."""
    n = context.params.num_clients
    update = state.update
    expected = context.dimension - (1 if context.weighted else 0)
    problems: list[str] = []
    # empty: not supplied yet (up to ``masked``) or dropped with the masked input (after it)
    if (
        not isinstance(update, np.ndarray)
        or update.dtype not in (np.float32, np.float64)
        or update.size not in (0, expected)
    ):
        problems.append(f"the update must be {expected} float32 or float64 values, or none")
    if state.weight < 1 or state.clipped < 0:
        problems.append("weight must be >= 1 and clipped >= 0")
    if len(state.cipher_private_key) not in (0, _KEY) or len(state.mask_private_key) != len(
        state.cipher_private_key
    ):
        problems.append("the key-agreement private keys must be two 32-byte keys or none")
    ids = (*state.peer_ids, *state.share_view, *state.held_self_mask, *state.held_mask_key,
           *state.share_keys, *state.pair_seeds, *(state.signed_survivors or ()))
    if any(not 0 <= v < n for v in ids):
        problems.append("the state names a client that is not in the round")
    if not len(state.peer_ids) == len(state.peer_cipher_keys) == len(state.peer_mask_keys):
        problems.append("peer ids and keys differ in number")
    keys = (*state.peer_cipher_keys, *state.peer_mask_keys, *state.share_keys.values(),
            *state.pair_seeds.values())
    if any(len(k) != _KEY for k in keys):
        problems.append("peer keys, share keys and pairwise seeds are 32 bytes each")
    if len(state.self_mask_seed) not in (0, prg.SEED_BYTES):
        problems.append(f"the self-mask seed is {prg.SEED_BYTES} bytes")
    if len(state.randomness) not in (0, prg.Keystream.STATE_BYTES):
        problems.append("the randomness state has the wrong size")
    if problems:
        raise MalformedMessage("SecAgg client state refused: " + "; ".join(problems))
