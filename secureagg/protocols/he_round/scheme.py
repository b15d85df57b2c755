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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError
from secureagg.protocols.he_round.messages import HEAggregate, HERelease, HERequest, HEUpload

__all__ = ["HEScheme", "payload_chunks"]

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

    def __init__(self, *, dimension: int, weighted: bool) -> None:
        self.dimension = int(dimension)
        self.weighted = bool(weighted)

    @property
    def payload_length(self) -> int:
        return self.dimension + (1 if self.weighted else 0) + 1

    @property
    def released_length(self) -> int:
        return self.dimension + (1 if self.weighted else 0)

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


