"""The scheme hooks of an HE round (what differs between CKKS and Paillier) and payload chunking.

A scheme encodes a client's update into fixed-size chunks (without concatenating big tensors),
checks and post-processes the decrypted aggregate at the key holder (count slot, ranges, CKKS
flooding or rounding) and decodes the released values at the server.

>>> import numpy as np
>>> chunks = payload_chunks([np.arange(5.0)], transform=lambda x: x * 2, tail=np.array([1.0]),
...                         chunk_size=4, dtype=np.dtype(np.float64))
>>> [c.tolist() for c in chunks]
[[0.0, 2.0, 4.0, 6.0], [8.0, 1.0]]
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import ConfigurationError
from secureagg.he.backend import ProbeDraw
from secureagg.protocols.he_round.messages import (
    HEAggregate,
    HEBlame,
    HEProbedAggregate,
    HERelease,
    HERequest,
    HERetry,
    HEUpload,
)

__all__ = ["HEScheme", "ProbePlan", "payload_chunks"]

#: Bits of a double's mantissa that a mask layer uses (53 would reach the last bit).
_LAYER_BITS = 52


@dataclass(frozen=True)
class ProbePlan:
    """The public figures of one round's key-check probes (``protocols/ckks/spec.md``).

    ``groups`` lists ``(chunk size, chunks)`` per chunk-size group of the payload; each mask value
    is uniform on ``[-mask_bound, mask_bound]``, drawn in ``layers`` layers (finest step
    ``mask_step``); a decrypted probe value above ``thresholds[g]`` in magnitude marks its upload
    as not decrypting, under the round's key, to values an honest client can send.
    ``hiding_bits`` = -log2 of the statistical distance between a probe's decryption and its mask
    alone, over all the probe's values.
    """

    groups: tuple[tuple[int, int], ...]
    mask_bound: float
    layers: int
    mask_step: float
    thresholds: tuple[float, ...]
    hiding_bits: float
    value_bound: float

    def draw(self, rng: prg.Keystream) -> ProbeDraw:
        """The server's secret signs and masks for one upload (from its CSPRNG)."""
        chunks = sum(count for _, count in self.groups)
        bits = np.frombuffer(rng.read((chunks + 7) // 8), dtype=np.uint8)
        signs = tuple(
            1 if (int(bits[i // 8]) >> (i % 8)) & 1 else -1 for i in range(chunks)
        )
        masks = []
        for size, _ in self.groups:
            layers = np.empty((self.layers, size), dtype=np.float64)
            spread = self.mask_bound
            for layer in range(self.layers):
                layers[layer] = spread * (2.0 * rng.uniform(size) - 1.0)
                spread = spread * 2.0**-_LAYER_BITS
            masks.append(layers)
        return ProbeDraw(signs=signs, masks=tuple(masks))

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [list(g) for g in self.groups],
            "mask_bound": self.mask_bound,
            "mask_layers": self.layers,
            "thresholds": list(self.thresholds),
            "hiding_bits": self.hiding_bits,
            "value_bound": self.value_bound,
        }


def make_probe_plan(
    *,
    groups: tuple[tuple[int, int], ...],
    data_modulus_bits: int,
    scale: float,
    value_bound: float,
    noise_per_chunk: float,
    smoothing_std: float,
    guard_bits: int,
) -> ProbePlan:
    """The probe plan of a payload, from the public figures of its encoding.

    ``value_bound`` bounds every slot an honest client fills (values, weight, count), in slot
    units; ``noise_per_chunk`` the decryption noise of one fresh chunk per slot; ``smoothing_std``
    the standard deviation of that noise (the finest mask layer is 2^8 times finer, so the noise
    smooths its grid). The mask bound leaves ``guard_bits`` between an honest probe and the data
    modulus, where a ciphertext under another key decrypts to values of the modulus' size.
    """
    mask_bound = 2.0 ** (data_modulus_bits - 1 - guard_bits) / scale
    finest = max(smoothing_std * 2.0**-8, 2.0**-1074)
    layers = max(1, math.ceil((math.log2(mask_bound) - math.log2(finest)) / _LAYER_BITS))
    step = mask_bound * 2.0 ** (-_LAYER_BITS * layers)
    thresholds = tuple(
        mask_bound * (1.0 + 2.0**-20) + count * (value_bound + noise_per_chunk)
        for _, count in groups
    )
    # A slot's probe value is a signed sum of `count` honest values, each at most value_bound:
    # shifting a uniform [-M, M] mask by a moves it by |a| / (2M) in statistical distance.
    worst = sum(size * count * value_bound for size, count in groups) / (2 * mask_bound)
    hiding = -math.log2(worst) if worst > 0 else math.inf
    return ProbePlan(
        groups=groups, mask_bound=mask_bound, layers=layers, mask_step=step,
        thresholds=thresholds, hiding_bits=hiding, value_bound=value_bound,
    )

class HEScheme(abc.ABC):
    """What differs between schemes: encoding, the key holder's release rule, decoding.

    Payload layout of every client: ``d`` value slots, then the weight slot (weighted rounds only),
    then the count slot (always 1 per client).
    """

    name: ClassVar[str] = ""
    request_type: ClassVar[type[HERequest]]
    upload_type: ClassVar[type[HEUpload]]
    aggregate_type: ClassVar[type[HEAggregate]]
    release_type: ClassVar[type[HERelease]]
    #: The key-check messages; None for a scheme without probes (Paillier).
    probed_aggregate_type: ClassVar[type[HEProbedAggregate] | None] = None
    blame_type: ClassVar[type[HEBlame] | None] = None
    retry_type: ClassVar[type[HERetry] | None] = None

    def __init__(self, *, dimension: int, weighted: bool) -> None:
        self.dimension = int(dimension)
        self.weighted = bool(weighted)

    @property
    def payload_length(self) -> int:
        return self.dimension + (1 if self.weighted else 0) + 1

    @property
    def released_length(self) -> int:
        return self.dimension + (1 if self.weighted else 0)

    def probe_plan(self, chunk_size: int) -> ProbePlan | None:
        """The round's key-check probe plan, or None when the round runs without probes."""
        return None

    @abc.abstractmethod
    def client_chunks(
        self,
        arrays: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float,
        chunk_size: int,
        rng: Any,
    ) -> tuple[Iterator[npt.NDArray[Any]], Callable[[], int]]:
        """The encoded payload in chunks of ``chunk_size``, and a callable giving the clip count."""

    @abc.abstractmethod
    def release(
        self, decrypted: npt.NDArray[Any], *, contributors: int, rng: Any
    ) -> tuple[npt.NDArray[Any], float]:
        """Key holder: check the decrypted payload sum, return (released values, noise std).

        Raises :class:`~secureagg.errors.ProtocolError` (stage ``"release"``) when the count slot
        does not match ``contributors`` or a value lies outside what the encoding allows.
        """

    @abc.abstractmethod
    def decode(
        self, released: npt.NDArray[Any], *, contributors: int
    ) -> tuple[npt.NDArray[np.float64], float]:
        """Server: released values -> (flat float64 aggregate of length d, total weight)."""

    def check_released(self, values: npt.NDArray[Any], dtype: np.dtype[Any]) -> str:
        """A problem with a released array's type or length ("" if none)."""
        if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype != dtype:
            return f"released values must be a 1-D {dtype} array"
        if values.size != self.released_length:
            return f"released {values.size} values, expected {self.released_length}"
        if values.dtype.kind == "f" and not bool(np.isfinite(values).all()):
            return "released values contain NaN or Inf"
        return ""


def payload_chunks(
    arrays: Sequence[npt.NDArray[np.floating[Any]]],
    *,
    transform: Callable[[npt.NDArray[np.floating[Any]]], npt.NDArray[Any]],
    tail: npt.NDArray[Any],
    chunk_size: int,
    dtype: np.dtype[Any],
) -> Iterator[npt.NDArray[Any]]:
    """Chunks of ``transform(concat(arrays)) ++ tail`` without concatenating the arrays.

    Each array is read through a flat view, piece by piece; a piece never crosses a chunk
    boundary, so only one chunk-sized buffer exists at a time (each yielded chunk is a new array).
    """
    if chunk_size < 1:
        raise ConfigurationError("chunk_size must be >= 1")
    out = np.empty(chunk_size, dtype=dtype)
    fill = 0

    def pieces() -> Iterator[npt.NDArray[Any]]:
        for arr in arrays:
            flat = arr.reshape(-1)
            start = 0
            while start < flat.size:
                take = min(chunk_size - fill, flat.size - start)
                yield transform(flat[start : start + take])
                start += take
        rest = tail.astype(dtype, copy=False)
        start = 0
        while start < rest.size:
            take = min(chunk_size - fill, rest.size - start)
            yield rest[start : start + take]
            start += take

    for piece in pieces():
        out[fill : fill + piece.size] = piece
        fill += piece.size
        if fill == chunk_size:
            yield out
            out = np.empty(chunk_size, dtype=dtype)
            fill = 0
    if fill:
        yield out[:fill]


