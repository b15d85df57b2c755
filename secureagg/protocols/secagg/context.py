"""Round context shared by SecAgg parties: public parameters and per-round derivations.

Everything here is public (known to the server and every client): the parameters, the session
and round ids, the graph, the encoder, and the client registry of identity keys. Helpers bind the
session and round into every KDF context so that no key or mask is reused across rounds.
"""

from __future__ import annotations

import builtins
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from secureagg.crypto import keyagree, labels, prg
from secureagg.crypto.encoding import FixedPointEncoder
from secureagg.protocols.secagg.graph import harary_graph
from secureagg.protocols.secagg.params import SecAggParams

__all__ = [
    "STAGES",
    "Randomness",
    "RoundContext",
]

#: The collection stages of a SecAgg round per threat mode: the one declaration that the server
#: (``SecAggServer.stages``), the client's transitions, the aggregator's ``dropout_stages`` and the
#: simulator's fault validation all read.
STAGES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "curious": ("advertise", "share", "masked", "unmask"),
        "malicious": ("advertise", "share", "masked", "consistency", "unmask"),
    }
)


@dataclass(frozen=True)
class RoundContext:
    """Public facts of one round."""

    params: SecAggParams
    session_id: bytes
    round_id: int
    encoder: FixedPointEncoder
    shapes: tuple[tuple[int, ...], ...]
    weighted: bool
    registry: Mapping[int, bytes] | None  #: client id -> Ed25519 public key (malicious mode)
    neighbours: Mapping[int, frozenset[int]] = field(init=False)

    def __post_init__(self) -> None:
        graph = harary_graph(
            self.params.num_clients,
            self.params.degree,
            session_id=self.session_id,
            round_id=self.round_id,
        )
        object.__setattr__(self, "neighbours", graph)

    @property
    def malicious(self) -> bool:
        return self.params.threat == "malicious"

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES[self.params.threat]

    def stage_after(self, stage: str) -> str:
        """The stage that follows ``stage`` in this round ("done" after the last)."""
        order = self.stages
        index = order.index(stage) + 1
        return order[index] if index < len(order) else "done"

    @property
    def dimension(self) -> int:
        """Length of the masked vector: the flattened update, plus one slot for the weight."""
        return sum(math.prod(int(d) for d in s) for s in self.shapes) + (1 if self.weighted else 0)

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger[npt.NBitBase]]:
        return prg.dtype_for_bits(self.encoder.bits)

    def pair_context(self, u: int, v: int) -> bytes:
        """KDF context for the pair {u, v}: session, round and the ids in canonical order."""
        a, b = (u, v) if u < v else (v, u)
        return self._prefix() + struct.pack(">II", a, b)

    def self_mask_context(self, u: int) -> bytes:
        return self._prefix() + struct.pack(">I", u)

    def mask_context(self) -> bytes:
        return self._prefix()

    def _prefix(self) -> bytes:
        return (
            struct.pack(">H", len(self.session_id))
            + self.session_id
            + struct.pack(">Q", self.round_id)
        )

    def pairwise_seed(self, private: keyagree.KeyPair, u: int, peer_public: bytes, v: int) -> bytes:
        """s_uv: X25519 agreement then HKDF under PAIRWISE_SEED, bound to session/round/pair."""
        return keyagree.derive_shared_key(
            private, peer_public, label=labels.PAIRWISE_SEED, context=self.pair_context(u, v)
        )

    def share_key(self, private: keyagree.KeyPair, u: int, peer_public: bytes, v: int) -> bytes:
        """The AEAD key for shares between u and v."""
        return keyagree.derive_shared_key(
            private, peer_public, label=labels.SHARE_ENCRYPTION_KEY, context=self.pair_context(u, v)
        )


class Randomness:
    """A party's randomness: the OS CSPRNG, or a seeded keystream for tests and benchmarks."""

    def __init__(self, stream: prg.Keystream | None = None) -> None:
        self._stream = stream

    @property
    def seeded(self) -> bool:
        return self._stream is not None

    def bytes(self, n: int) -> bytes:
        return os.urandom(n) if self._stream is None else self._stream.read(n)

    def export(self) -> builtins.bytes:
        """Where a seeded stream stands (secret; see :meth:`prg.Keystream.state`); ``b""`` for
        the OS CSPRNG, which has nothing to carry over."""
        return b"" if self._stream is None else self._stream.state()

    @classmethod
    def resume(cls, state: builtins.bytes) -> Randomness:
        """The randomness :meth:`export` described."""
        return cls(prg.Keystream.resume(state) if state else None)

    def keystream(self, label: labels.Label) -> prg.Keystream | None:
        """A derived keystream for a sampler, or ``None`` to let it use the OS CSPRNG."""
        if self._stream is None:
            return None
        return prg.Keystream(self._stream.read(prg.SEED_BYTES), label=label)
