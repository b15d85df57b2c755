"""The small interface every homomorphic-encryption backend implements, split by role.

Threat model. Homomorphic aggregation has three roles, and each gets exactly the key material it
needs, never more:

* a **client** holds an :class:`Encryptor`: public key material plus the encoding parameters of the
  round. It can encrypt, never decrypt. It may precompute the randomness of its encryptions ahead
  of a round (:meth:`Encryptor.prefill`: Paillier blinding factors, CKKS encryptions of zero);
  each precomputed item is used for exactly one ciphertext and never leaves the client;
* the **server** holds an :class:`Accumulator`: public key material only. It validates incoming
  ciphertext bytes (a malformed, truncated or foreign ciphertext raises
  :class:`~secureagg.errors.MalformedMessage`, never crashes) and adds them *in place* into one
  running sum per ciphertext position, so its state does not grow with the number of clients;
* the **key holder** holds a :class:`Decryptor`: the secret key. It decrypts only what the
  protocol above lets it (aggregates of at least ``min_clients`` contributions).

Invariant of :meth:`Accumulator.add`: a contribution is added completely or not at all, so a bad
chunk in the middle of an upload cannot corrupt the sum. Paillier validates every ciphertext of a
contribution before the first one is multiplied in; CKKS adds each chunk as soon as it is
validated (while it is in cache, one chunk held at a time) and, if a later chunk fails, subtracts
the ones already added - exact modular arithmetic, so the sums are restored bit for bit.

Backends: :mod:`secureagg.he.ckks` (TenSEAL, the only package importing ``tenseal``) and
:mod:`secureagg.he.paillier` (``phe`` + ``gmpy2``, the only module importing them). Neither
optional dependency is imported before it is used; a missing one raises
:class:`~secureagg.errors.MissingDependencyError` naming the ``he`` extra.

>>> from secureagg.he.backend import HE_STANDARD_MAX_MODULUS_BITS, chunk_sizes
>>> HE_STANDARD_MAX_MODULUS_BITS[8192]
218
>>> chunk_sizes(10, 4)
(4, 4, 2)
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError

__all__ = [
    "HE_STANDARD_MAX_MODULUS_BITS",
    "Accumulator",
    "Decryptor",
    "Encryptor",
    "ProbeDraw",
    "chunk_sizes",
    "fingerprint",
    "size_groups",
]

#: Largest total coefficient-modulus size (bits, including the special prime) for 128-bit classical
#: security with a ternary secret, by ring dimension N: the HomomorphicEncryption.org standard
#: (Albrecht et al. 2018, Table 1), which SEAL enforces as ``sec_level_type.tc128``.
HE_STANDARD_MAX_MODULUS_BITS: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}


def chunk_sizes(length: int, per_ciphertext: int) -> tuple[int, ...]:
    """How many values each ciphertext of a ``length``-value vector carries (last one partial)."""
    if length < 0 or per_ciphertext < 1:
        raise ConfigurationError(
            f"need length >= 0 and per_ciphertext >= 1, got {length} and {per_ciphertext}"
        )
    full, rest = divmod(length, per_ciphertext)
    return (per_ciphertext,) * full + ((rest,) if rest else ())


def fingerprint(scheme: str, public_material: bytes) -> bytes:
    """SHA-256 over the scheme name and the public key material: what every message binds."""
    h = hashlib.sha256()
    h.update(b"secureagg/v1/he/key-fingerprint\x00")
    h.update(scheme.encode("ascii") + b"\x00")
    h.update(public_material)
    return h.digest()


@dataclass(frozen=True)
class ProbeDraw:
    """The server's secret draw for one client's key-check probes (see :meth:`Accumulator.add`).

    ``signs`` holds +1 or -1 per chunk of the upload; ``masks`` one array per *chunk-size group*
    (the chunks of one size, in order of first appearance: the full chunks, then a shorter last
    chunk) of shape ``(layers, group chunk size)``: the mask is the sum of its layers, each added
    as its own plaintext (a double carries 53 bits, so a mask finer than that is drawn as a coarse
    layer plus finer ones). Both come from the server's CSPRNG after the upload has arrived, and
    never leave the server.
    """

    signs: tuple[int, ...]
    masks: tuple[npt.NDArray[np.float64], ...]


def size_groups(sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(chunk size, how many chunks)`` per size, in order of first appearance.

    >>> size_groups((4, 4, 2))
    ((4, 2), (2, 1))
    """
    order: dict[int, int] = {}
    for size in sizes:
        order[size] = order.get(size, 0) + 1
    return tuple(order.items())


class Encryptor(abc.ABC):
    """Client side: encrypts a vector into ciphertext chunks (public material only)."""

    scheme: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def key_fingerprint(self) -> bytes:
        """:func:`fingerprint` of the public key this encryptor uses."""

    @property
    @abc.abstractmethod
    def values_per_ciphertext(self) -> int:
        """How many vector entries one ciphertext carries."""

    def ciphertext_count(self, length: int) -> int:
        """Number of ciphertexts a ``length``-value vector becomes."""
        return len(chunk_sizes(length, self.values_per_ciphertext))

    @property
    def pool_size(self) -> int:
        """Precomputed encryption randomness ready (ciphertexts' worth); 0 without a pool."""
        return 0

    def prefill(self, length: int) -> int:
        """Precompute (offline) what encrypting one ``length``-value vector needs.

        Tops the pool up; returns how many ciphertexts' worth were computed (0 if the pool already
        held enough, or if the backend has no pool). :meth:`encrypt` uses the pool first and
        falls back to fresh randomness when it runs out.
        """
        return 0

    @abc.abstractmethod
    def encrypt(self, values: npt.NDArray[Any]) -> Iterator[bytes]:
        """Encrypt ``values`` chunk by chunk, yielding each ciphertext's bytes as it is made."""


class Accumulator(abc.ABC):
    """Server side: one running ciphertext per position, added into in place."""

    @property
    @abc.abstractmethod
    def contributions(self) -> int:
        """How many contributions have been added."""

    @property
    @abc.abstractmethod
    def held_ciphertexts(self) -> int:
        """Ciphertexts currently held (the running sums): independent of the client count."""

    @abc.abstractmethod
    def add(
        self, ciphertexts: Sequence[bytes | memoryview], *, probe: ProbeDraw | None = None
    ) -> tuple[bytes, ...]:
        """Validate every ciphertext of one contribution, then add them into the running sums.

        ``ciphertexts`` may be zero-copy views of the received message (the codec decodes
        ``bytes | memoryview`` fields that way).

        With ``probe`` (backends whose :attr:`supports_probes` is true), also returns the
        contribution's *key-check probes*, one ciphertext per chunk-size group: the signed sum
        ``sum_k signs[k] * chunk_k`` of the group's chunks plus the group's plaintext mask. The key
        holder decrypts them to check that the upload decrypts under the round's key to bounded
        values; the mask hides what they hold. Without ``probe`` it returns ``()``.

        Raises :class:`~secureagg.errors.MalformedMessage` (and changes nothing) if any chunk is
        malformed, truncated, of the wrong length or count, or not valid under this public key.
        """

    @property
    def supports_probes(self) -> bool:
        """Whether :meth:`add` can build key-check probes (CKKS: yes; Paillier: no)."""
        return False

    def prefill(self) -> int:
        """Offline, before any contribution: precompute the input-independent work of
        :meth:`export` (Paillier: the re-randomisation factors). Returns how many items were
        computed (default: nothing to precompute, 0)."""
        return 0

    @abc.abstractmethod
    def empty(self) -> Accumulator:
        """A new accumulator with the same key, length and scale, holding nothing."""

    @abc.abstractmethod
    def export(self) -> tuple[bytes, ...]:
        """The running sums as bytes, ready to send to the key holder."""


class Decryptor(abc.ABC):
    """Key holder side: holds the secret key; decrypts aggregates."""

    scheme: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def key_fingerprint(self) -> bytes:
        """:func:`fingerprint` of the matching public key."""

    @abc.abstractmethod
    def public_material(self) -> bytes:
        """The public key material, as sent (out of band) to the server and the clients."""

    @abc.abstractmethod
    def decrypt(self, ciphertexts: Sequence[bytes | memoryview], length: int) -> npt.NDArray[Any]:
        """Decrypt an aggregate of ``length`` values (malformed input: ``MalformedMessage``)."""

    def decrypt_probe(self, data: bytes | memoryview, size: int) -> npt.NDArray[np.float64]:
        """Decrypt one key-check probe of ``size`` values (backends with probes only)."""
        raise ConfigurationError(f"the {self.scheme or 'this'} backend has no key-check probes")
