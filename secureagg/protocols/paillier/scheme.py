"""How a packed-Paillier round encodes, releases and decodes.

Encoding (client). Each value is clipped to ``[-clip, clip]`` and stochastically rounded to a
``quant_bits``-bit signed integer ``q`` with ``|q| <= Q = 2^(quant_bits - 1) - 1`` by the
fixed-point encoder (:mod:`secureagg.crypto.encoding`, ``num_summands=1``: the headroom for the
sum lives in the slot width, below). The slot value is ``w * q + W * Q``, in ``[0, 2 W Q]`` for an
integer weight ``1 <= w <= W``; the weight slot holds ``w`` and the count slot ``1``. Slots are
packed into plaintexts by :class:`~secureagg.he.paillier.SlotPacking` for ``n`` summands of
values up to ``V = 2 W Q``: slot width ``s = bits(n V)``, ``floor((key_bits - 1) / s)`` slots
per ciphertext, with the no-overflow proof in :mod:`secureagg.he.paillier` (the constructor
raises :class:`~secureagg.errors.HeadroomError` when it cannot hold). 16-bit quantisation at
``n = 100``: 23-bit slots, 133 values per 3072-bit ciphertext (89 at 2048 bits), 5.8 bytes per
value.

Release (key holder). The decrypted count slot must equal the number of contributors ``S``; every
value slot sum must lie in ``[0, 2 S W Q]`` and the weight sum in ``[S, S W]`` (else the release is
refused); the offsets ``S W Q`` are removed and the exact int64 sums released. Paillier is exact:
no noise is added, and none is needed.

Error bound (server's decoded sum, per value): stochastic rounding is off by less than one
quantum per value, so the sum of ``S`` contributions with total weight ``T`` is within
``T / scale`` (``scale = Q / clip``) of ``sum(w_i clip(x_i))``.

>>> scheme = PaillierScheme(key_bits=3072, dimension=1000, weighted=False, num_clients=100,
...                         clip=1.0)
>>> scheme.packing.slot_bits, scheme.packing.slots, scheme.offset
(23, 133, 32767)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import FixedPointEncoder
from secureagg.errors import ConfigurationError, ProtocolError
from secureagg.he.paillier import SlotPacking
from secureagg.protocols.he_round import RELEASE, HEScheme, payload_chunks
from secureagg.protocols.paillier.messages import (
    PaillierAggregate,
    PaillierRelease,
    PaillierRequest,
    PaillierUpload,
)

__all__ = ["QUANT_BITS", "PaillierScheme"]

QUANT_BITS = (8, 16, 32)
_SIGNED = {8: np.int8, 16: np.int16, 32: np.int32}


class PaillierScheme(HEScheme):
    """The packed-Paillier encoding of one round (public: every party builds the same one)."""

    name: ClassVar[str] = "paillier"
    request_type = PaillierRequest
    upload_type = PaillierUpload
    aggregate_type = PaillierAggregate
    release_type = PaillierRelease

    def __init__(
        self,
        *,
        key_bits: int,
        dimension: int,
        weighted: bool,
        num_clients: int,
        clip: float,
        quant_bits: int = 16,
        max_weight: int = 1,
    ) -> None:
        super().__init__(dimension=dimension, weighted=weighted)
        problems: list[str] = []
        if isinstance(quant_bits, bool) or quant_bits not in QUANT_BITS:
            problems.append(f"quant_bits must be one of {QUANT_BITS}, got {quant_bits!r}")
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 1:
            problems.append(f"max_weight must be an integer >= 1, got {max_weight!r}")
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            problems.append(f"num_clients must be a positive integer, got {num_clients!r}")
        if problems:
            raise ConfigurationError(problems)
        self.encoder = FixedPointEncoder(clip=clip, num_summands=1, bits=quant_bits)
        self.quant_bits = quant_bits
        self.clip = float(clip)
        self.max_weight = int(max_weight)
        self.num_clients = int(num_clients)
        self.offset = self.max_weight * self.encoder.max_quantized  # W * Q
        self.packing = SlotPacking.for_values(
            key_bits=key_bits, max_value=2 * self.offset, summands=self.num_clients
        )

    @property
    def scale(self) -> float:
        return self.encoder.effective_scale

    # ------------------------------------------------------------------------------ client

    def client_chunks(
        self,
        arrays: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float,
        chunk_size: int,
        rng: Any,
    ) -> tuple[Iterator[npt.NDArray[Any]], Callable[[], int]]:
        w = int(weight)
        if w != weight or not 1 <= w <= self.max_weight:
            raise ConfigurationError(
                f"weight must be an integer in [1, max_weight={self.max_weight}], got {weight!r} "
                "(raise max_weight in make_aggregator for larger FedAvg weights)"
            )
        encoder, signed, offset = self.encoder, _SIGNED[self.quant_bits], self.offset
        stream = rng if rng is not None else prg.Keystream(
            prg.random_seed(), label=labels.STOCHASTIC_ROUNDING
        )
        clipped = [0]

        def transform(piece: npt.NDArray[np.floating[Any]]) -> npt.NDArray[Any]:
            encoded = encoder.encode(piece, rng=stream)
            clipped[0] += encoded.clipped
            q = encoded.values.view(signed).astype(np.int64)
            if w != 1:
                q *= w
            q += offset
            return q.astype(np.uint64)

        tail = np.array(([w] if self.weighted else []) + [1], dtype=np.uint64)
        chunks = payload_chunks(
            arrays, transform=transform, tail=tail, chunk_size=chunk_size,
            dtype=np.dtype(np.uint64),
        )
        return chunks, lambda: clipped[0]

    # ------------------------------------------------------------------------------ key holder

    def release(
        self, decrypted: npt.NDArray[Any], *, contributors: int, rng: Any
    ) -> tuple[npt.NDArray[Any], float]:
        s = int(contributors)
        if int(decrypted[-1]) != s:
            # Never echo the decrypted count: nothing decrypted leaves the key holder but the
            # released aggregate (the text reaches the server and, in simulation, the caller).
            raise ProtocolError(
                "release refused: the decrypted count slot does not match the "
                f"{s} contributors the server named",
                stage=RELEASE,
            )
        d = self.dimension
        values = decrypted[:d]
        if values.size and int(values.max()) > 2 * s * self.offset:
            raise ProtocolError(
                "release refused: a decrypted slot sum lies outside [0, 2 S W Q]", stage=RELEASE
            )
        out = np.empty(self.released_length, dtype=np.int64)
        out[:d] = values.astype(np.int64) - s * self.offset
        if self.weighted:
            total = int(decrypted[d])
            if not s <= total <= s * self.max_weight:
                raise ProtocolError(
                    "release refused: the decrypted weight sum is outside [S, S * max_weight]",
                    stage=RELEASE,
                )
            out[d] = total
        return out, 0.0

    # ------------------------------------------------------------------------------ server

    def decode(
        self, released: npt.NDArray[Any], *, contributors: int
    ) -> tuple[npt.NDArray[np.float64], float]:
        problem = self.check_released(released, np.dtype(np.int64))
        if problem:
            raise ProtocolError(problem, stage=RELEASE)
        d = self.dimension
        bound = int(contributors) * self.offset
        if d and int(np.max(np.abs(released[:d]))) > bound:
            raise ProtocolError("released sums exceed S * W * Q", stage=RELEASE)
        flat = released[:d].astype(np.float64) / self.scale
        total = float(released[d]) if self.weighted else float(contributors)
        return flat, total

    # ------------------------------------------------------------------------------ bounds

    def error_bound(self, *, summands: int) -> float:
        """``S * W / scale`` (with a 2^-18 relative slack for float64 decoding)."""
        s = max(1, int(summands))
        return s * self.max_weight * (1.0 + 2.0**-18) / self.scale

    def parameters(self) -> dict[str, Any]:
        packing = self.packing
        ct_bytes = (2 * packing.key_bits + 7) // 8
        return {
            "quant_bits": self.quant_bits,
            "clip": self.clip,
            "scale": self.scale,
            "max_quantized": self.encoder.max_quantized,
            "max_weight": self.max_weight,
            "packing": packing.to_dict(),
            "values_per_ciphertext": packing.slots,
            "ciphertext_bytes": ct_bytes,
            "upload_vs_float32": ct_bytes / (4.0 * packing.slots),
            "release_protection": "exact (Paillier decryption carries no noise)",
        }
