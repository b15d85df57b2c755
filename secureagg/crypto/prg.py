"""Pseudorandom generator: a 256-bit seed and a label expanded with an AES-128-CTR keystream.

Threat model: masks built from this PRG hide client inputs from the server, so its output must be
computationally indistinguishable from uniform for anyone who lacks the seed. We use the *full*
256-bit seed (never folded): the AES key is ``HKDF-SHA256(seed, label || context)`` truncated to
128 bits (so the same seed gives independent streams for different labels, sessions and rounds)
and the counter starts at zero. The keystream is written straight into numpy arrays, with no
Python loop per element.

Why AES-128: the seeds come from X25519 agreements, which give about 128-bit security, so a
256-bit AES key would not raise the security of the masks; AES-128 has 10 rounds instead of 14
and expands masks about 1.35x faster (measured by ``benchmarks/bench_crypto.py``). A distinguisher
needs on the order of 2^64 blocks of one stream; a mask of 10^9 values is 2^28 blocks.

Outputs:

* :func:`expand` - ``count`` integers uniform over ``[0, 2^k)`` for k in {8, 16, 32, 64}; every
  value, including ``2^k - 1``, occurs (each k-bit word is k keystream bits, nothing folded).
* :func:`expand_mod` - ``count`` integers uniform modulo ``m`` (2 <= m < 2^64), by rejection
  sampling from the continuing keystream (no modulo bias).
* :func:`add_mask` - add (or subtract) ``expand(...)`` into an accumulator in place, chunk by
  chunk, without materialising the mask.
* :class:`Keystream` - a deterministic byte stream for other samplers (Shamir coefficients,
  stochastic rounding, noise) that must be reproducible from a seed in tests.

>>> import numpy as np
>>> from secureagg.crypto import labels, prg
>>> m = prg.expand(b"\\x00" * 32, label=labels.TEST_VECTOR, count=4, bits=32)
>>> m.dtype, m.shape
(dtype('uint32'), (4,))
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from secureagg.crypto import kdf
from secureagg.crypto.labels import Label
from secureagg.errors import ConfigurationError, InvalidKeyError

__all__ = [
    "KEY_BYTES",
    "SEED_BYTES",
    "SUPPORTED_BITS",
    "Keystream",
    "add_mask",
    "dtype_for_bits",
    "expand",
    "expand_mod",
    "random_seed",
    "seeded_party_stream",
]

SEED_BYTES = 32
KEY_BYTES = 16  # AES-128; see the module docstring
SUPPORTED_BITS = (8, 16, 32, 64)
_CHUNK_BYTES = 1 << 20  # keystream produced per update_into call
_ZEROS = bytes(_CHUNK_BYTES)
_ZEROS_VIEW = memoryview(_ZEROS)
_DTYPES: dict[int, type[np.unsignedinteger[Any]]] = {
    8: np.uint8,
    16: np.uint16,
    32: np.uint32,
    64: np.uint64,
}


def _ctr_slack() -> int:
    """Extra output room ``update_into`` needs past the data for AES-CTR.

    0 with cryptography's Rust backend (OpenSSL gives CTR a block size of 1); 15 with older
    backends that reserve a whole AES block. Probed once, on a throwaway all-zero key.
    """
    probe = Cipher(algorithms.AES(bytes(KEY_BYTES)), modes.CTR(bytes(16))).encryptor()
    try:
        probe.update_into(bytes(16), bytearray(16))
    except ValueError:
        return 15
    return 0


_CTR_SLACK = _ctr_slack()


def random_seed() -> bytes:
    """A fresh 256-bit seed from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def dtype_for_bits(bits: int) -> np.dtype[np.unsignedinteger[npt.NBitBase]]:
    """The unsigned numpy dtype of ``bits`` bits; raise for bits not in {8, 16, 32, 64}."""
    if bits not in _DTYPES:
        raise ConfigurationError(
            f"bits must be one of {SUPPORTED_BITS}, got {bits!r}"
        )
    return np.dtype(_DTYPES[bits])


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        got = len(seed) if isinstance(seed, bytes | bytearray) else type(seed).__name__
        raise InvalidKeyError(f"PRG seeds are {SEED_BYTES} bytes (256 bits), got {got}")
    return bytes(seed)


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ConfigurationError(f"count must be a non-negative integer, got {count!r}")
    return int(count)


class Keystream:
    """A deterministic AES-128-CTR keystream keyed by ``HKDF(seed, label || context)[:16]``.

    Successive reads continue the stream. Not thread-safe; one instance per use.
    """

    def __init__(self, seed: bytes, *, label: Label | str, context: bytes = b"") -> None:
        key = kdf.derive(_check_seed(seed), label=label, context=context, length=KEY_BYTES)
        self._start(key, 0)

    def _start(self, key: bytes, position: int) -> None:
        """AES-CTR under ``key``, ``position`` bytes into the stream (the counter block is the
        128-bit big-endian block index, as ``modes.CTR`` increments it)."""
        block, skip = divmod(position, 16)
        self._key = key
        self._position = position - skip
        self._ctx: CipherContext = Cipher(
            algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))
        ).encryptor()
        if skip:
            self.read(skip)

    #: Bytes of :meth:`state`: the AES key (16) and the stream position (u64, big-endian).
    STATE_BYTES = KEY_BYTES + 8

    def state(self) -> bytes:
        """Where the stream stands: its key and position. **Secret**: whoever holds it can
        produce every byte this stream will yield (a seeded run's keys and masks)."""
        return self._key + self._position.to_bytes(8, "big")

    @classmethod
    def resume(cls, state: bytes) -> Keystream:
        """The stream that :meth:`state` described, continuing where it stood."""
        if not isinstance(state, bytes) or len(state) != cls.STATE_BYTES:
            raise InvalidKeyError(f"a keystream state is {cls.STATE_BYTES} bytes")
        stream = cls.__new__(cls)
        stream._start(state[:KEY_BYTES], int.from_bytes(state[KEY_BYTES:], "big"))
        return stream

    def fill(self, out: npt.NDArray[np.generic]) -> None:
        """Overwrite the bytes of the C-contiguous array ``out`` with keystream."""
        if not out.flags.c_contiguous:
            raise ValueError("Keystream.fill needs a C-contiguous array")
        flat = out.reshape(-1).view(np.uint8)
        total = flat.nbytes
        self._position += total
        view = flat.data
        pos = 0
        while total - pos > _CTR_SLACK:
            n = min(_CHUNK_BYTES, total - pos - _CTR_SLACK)
            self._ctx.update_into(_ZEROS_VIEW[:n], view[pos : pos + n + _CTR_SLACK])
            pos += n
        if pos < total:  # only with an older backend that needs slack after the data
            tail = self._ctx.update(_ZEROS[: total - pos])
            flat[pos:] = np.frombuffer(tail, dtype=np.uint8)

    def read(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        n = _check_count(n)
        self._position += n
        return self._ctx.update(bytes(n))

    def words(self, count: int, bits: int) -> npt.NDArray[np.unsignedinteger[npt.NBitBase]]:
        """The next ``count`` little-endian words of ``bits`` bits, uniform over ``[0, 2^bits)``."""
        out = np.empty(_check_count(count), dtype=dtype_for_bits(bits).newbyteorder("<"))
        self.fill(out)
        return out.astype(dtype_for_bits(bits), copy=False)

    def uniform(self, count: int) -> npt.NDArray[np.float64]:
        """``count`` floats uniform on ``[0, 1)`` with 53 random bits each."""
        words = self.words(count, 64)
        words >>= np.uint64(11)
        return words.astype(np.float64) * (1.0 / (1 << 53))

    def below(self, bound: int) -> int:
        """One integer uniform on ``[0, bound)`` for any ``bound >= 1`` (rejection sampling)."""
        if bound < 1:
            raise ConfigurationError("bound must be >= 1")
        nbits = (bound - 1).bit_length()
        nbytes = (nbits + 7) // 8
        mask = (1 << nbits) - 1
        while True:
            value = int.from_bytes(self.read(nbytes), "little") & mask
            if value < bound:
                return value


def seeded_party_stream(
    seed: bytes | None,
    *,
    label: Label,
    session_id: bytes,
    round_id: int,
    party: int,
    purpose: bytes = b"",
) -> Keystream | None:
    """The keystream one party uses for ``purpose`` in a *seeded* (test/benchmark) run, else None.

    Key: SHA-256 of the run's ``seed``; context ``session_id || round (u64) || party (i32) ||
    purpose``, so every party, round and purpose gets its own stream. Unseeded runs get ``None``
    and draw from ``os.urandom`` instead.
    """
    if seed is None:
        return None
    return Keystream(
        hashlib.sha256(seed).digest(),
        label=label,
        context=session_id + struct.pack(">Qi", round_id, party) + purpose,
    )


def expand(
    seed: bytes,
    *,
    label: Label | str,
    count: int,
    bits: int = 32,
    context: bytes = b"",
) -> npt.NDArray[np.unsignedinteger[npt.NBitBase]]:
    """``count`` integers uniform over ``[0, 2^bits)``, as a new array of ``uint{bits}``."""
    dtype = dtype_for_bits(bits)
    count = _check_count(count)
    stream = Keystream(seed, label=label, context=context)
    out = np.empty(count, dtype=dtype.newbyteorder("<"))
    stream.fill(out)
    return out.astype(dtype, copy=False)


def add_mask(
    accumulator: npt.NDArray[np.unsignedinteger[npt.NBitBase]],
    seed: bytes,
    *,
    label: Label | str,
    context: bytes = b"",
    subtract: bool = False,
) -> None:
    """``accumulator += expand(seed, ...)`` (or ``-=``) modulo ``2^bits``, in place.

    The mask is generated chunk by chunk into a small scratch buffer and never materialised whole.
    ``accumulator`` must be a 1-D C-contiguous unsigned array of a supported width.
    """
    if accumulator.ndim != 1 or not accumulator.flags.c_contiguous:
        raise ValueError("accumulator must be a 1-D C-contiguous array")
    bits = accumulator.dtype.itemsize * 8
    dtype = dtype_for_bits(bits)
    if accumulator.dtype != dtype:
        raise ConfigurationError(f"accumulator dtype must be unsigned, got {accumulator.dtype}")
    stream = Keystream(seed, label=label, context=context)
    step = _CHUNK_BYTES // dtype.itemsize
    scratch = np.empty(min(step, accumulator.size), dtype=dtype.newbyteorder("<"))
    for start in range(0, accumulator.size, step):
        part = accumulator[start : start + step]
        buf = scratch[: part.size]
        stream.fill(buf)
        if subtract:
            np.subtract(part, buf, out=part, casting="unsafe")
        else:
            np.add(part, buf, out=part, casting="unsafe")


def expand_mod(
    seed: bytes,
    *,
    label: Label | str,
    count: int,
    modulus: int,
    context: bytes = b"",
) -> npt.NDArray[np.uint64]:
    """``count`` integers uniform modulo ``modulus`` (2 <= modulus < 2^64), as ``uint64``.

    Rejection sampling: draw words of ``ceil(log2 modulus)`` bits from the keystream and keep those
    below ``modulus``; at least half are kept, and the stream continues until ``count`` are found.
    """
    count = _check_count(count)
    if isinstance(modulus, bool) or not isinstance(modulus, int) or not 2 <= modulus < 1 << 64:
        raise ConfigurationError(f"modulus must be an integer in [2, 2^64), got {modulus!r}")
    nbits = (modulus - 1).bit_length()
    word_bits = next(b for b in SUPPORTED_BITS if b >= nbits)
    mask = np.uint64((1 << nbits) - 1) if nbits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    stream = Keystream(seed, label=label, context=context)
    acceptance = modulus / float(1 << nbits)
    out = np.empty(count, dtype=np.uint64)
    filled = 0
    while filled < count:
        need = count - filled
        batch = int(need / acceptance * 1.05) + 64
        words = stream.words(batch, word_bits).astype(np.uint64, copy=False) & mask
        kept = words[words < np.uint64(modulus)]
        take = min(kept.size, need)
        out[filled : filled + take] = kept[:take]
        filled += take
    return out
