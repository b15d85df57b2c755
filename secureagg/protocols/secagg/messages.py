"""SecAgg / SecAgg+ messages, and the byte strings that are signed or bound as associated data.

Every message carries ``session_id`` and ``round_id``; parties reject any other value, so nothing
replays across rounds or sessions. Field layouts are fixed by the codec
(:mod:`secureagg.transport.codec`); see ``protocols/secagg/spec.md`` for the wire description.

Server -> client: :class:`AdvertiseRequest`, :class:`KeyBroadcast`, :class:`ShareDelivery`,
:class:`ConsistencyRequest` (malicious mode), :class:`UnmaskRequest`.
Client -> server: :class:`KeyAdvertisement`, :class:`EncryptedShares`, :class:`MaskedInput`,
:class:`ConsistencySignature` (malicious mode), :class:`UnmaskShares`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secureagg.protocols.base import Message

__all__ = [
    "AdvertiseRequest",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShares",
    "KeyAdvertisement",
    "KeyBroadcast",
    "MaskedInput",
    "ShareDelivery",
    "UnmaskRequest",
    "UnmaskShares",
    "advertisement_signed_bytes",
    "consistency_signed_bytes",
    "pack_keys",
    "pack_share_plaintext",
    "share_associated_data",
    "unpack_keys",
    "unpack_share_plaintext",
]

_DOMAIN = b"secureagg/v1/secagg/"


# ------------------------------------------------------------------------ server -> client


@dataclass(frozen=True)
class AdvertiseRequest(Message):
    """Stage 1 opens. ``model_digest`` binds the model/round the client is asked to work on."""

    KIND = "secagg/advertise-request"
    session_id: bytes
    round_id: int
    model_digest: bytes


@dataclass(frozen=True)
class KeyBroadcast(Message):
    """Stage 2 opens: the advertised keys of the recipient's live neighbours (``pack_keys``)."""

    KIND = "secagg/key-broadcast"
    session_id: bytes
    round_id: int
    keys: dict[int, bytes]


@dataclass(frozen=True)
class ShareDelivery(Message):
    """Stage 3 opens: the encrypted shares addressed to the recipient, by sender id."""

    KIND = "secagg/share-delivery"
    session_id: bytes
    round_id: int
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Malicious mode: the survivor list U3 the recipient is asked to sign."""

    KIND = "secagg/consistency-request"
    session_id: bytes
    round_id: int
    survivors: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Final stage opens: who survived (reveal b-shares) and who dropped (reveal key shares).

    ``signatures`` (malicious mode) are the other clients' signatures over ``survivors``.
    """

    KIND = "secagg/unmask-request"
    session_id: bytes
    round_id: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: dict[int, bytes]


# ------------------------------------------------------------------------ client -> server


@dataclass(frozen=True)
class KeyAdvertisement(Message):
    """Stage 1: two X25519 public keys; ``signature`` is empty unless malicious mode."""

    KIND = "secagg/key-advertisement"
    session_id: bytes
    round_id: int
    cipher_public_key: bytes
    mask_public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Stage 2: AEAD-encrypted Shamir shares of b_u and s_u^SK, by recipient id."""

    KIND = "secagg/encrypted-shares"
    session_id: bytes
    round_id: int
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class MaskedInput(Message):
    """Stage 3: ``y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^bits``."""

    KIND = "secagg/masked-input"
    session_id: bytes
    round_id: int
    values: npt.NDArray[np.unsignedinteger[npt.NBitBase]]


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Malicious mode: the client's signature over the survivor list it was shown."""

    KIND = "secagg/consistency-signature"
    session_id: bytes
    round_id: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskShares(Message):
    """Final stage: b-shares of survivors and mask-key shares of dropped clients, by owner id."""

    KIND = "secagg/unmask-shares"
    session_id: bytes
    round_id: int
    self_mask_shares: dict[int, bytes]
    mask_key_shares: dict[int, bytes]


# ------------------------------------------------------------------- bound and signed bytes


def _ids(ids: Iterable[int]) -> bytes:
    items = sorted(ids)
    return struct.pack(f">I{len(items)}I", len(items), *items)


def advertisement_signed_bytes(
    *,
    session_id: bytes,
    round_id: int,
    client_id: int,
    cipher_public_key: bytes,
    mask_public_key: bytes,
    model_digest: bytes,
) -> bytes:
    """What a client signs when it advertises keys: binds session, round, id, keys and model."""
    return b"".join(
        [
            _DOMAIN + b"advertise\x00",
            struct.pack(">H", len(session_id)),
            session_id,
            struct.pack(">QI", round_id, client_id),
            cipher_public_key,
            mask_public_key,
            struct.pack(">H", len(model_digest)),
            model_digest,
        ]
    )


def consistency_signed_bytes(
    *, session_id: bytes, round_id: int, survivors: Iterable[int]
) -> bytes:
    """What a client signs in the consistency round: the survivor list it was shown."""
    return b"".join(
        [
            _DOMAIN + b"consistency\x00",
            struct.pack(">H", len(session_id)),
            session_id,
            struct.pack(">Q", round_id),
            _ids(survivors),
        ]
    )


def share_associated_data(
    *, session_id: bytes, round_id: int, sender: int, recipient: int
) -> bytes:
    """AEAD associated data of an encrypted share: session, round, sender and recipient."""
    return b"".join(
        [
            _DOMAIN + b"share\x00",
            struct.pack(">H", len(session_id)),
            session_id,
            struct.pack(">QII", round_id, sender, recipient),
        ]
    )


def pack_keys(cipher_public_key: bytes, mask_public_key: bytes, signature: bytes) -> bytes:
    """Concatenate an advertisement for :class:`KeyBroadcast` (32 + 32 + 0 or 64 bytes)."""
    return cipher_public_key + mask_public_key + signature


def unpack_keys(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Inverse of :func:`pack_keys`; ``None`` if the length is not 64 or 128."""
    if len(data) not in (64, 128):
        return None
    return data[:32], data[32:64], data[64:]


def pack_share_plaintext(
    sender: int, recipient: int, self_mask_share: bytes, key_share: bytes
) -> bytes:
    """The plaintext inside one encrypted share (ids repeated inside, as in Bonawitz et al.)."""
    return struct.pack(">IIHH", sender, recipient, len(self_mask_share), len(key_share)) + (
        self_mask_share + key_share
    )


def unpack_share_plaintext(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    """Inverse of :func:`pack_share_plaintext`; ``None`` when malformed."""
    if len(data) < 12:
        return None
    sender, recipient, lb, lk = struct.unpack(">IIHH", data[:12])
    if len(data) != 12 + lb + lk:
        return None
    return sender, recipient, data[12 : 12 + lb], data[12 + lb :]
