"""Authenticated encryption with associated data: AES-256-GCM.

Threat model: the channel (and the server relaying shares) is untrusted. Every ciphertext is bound
to its associated data (session, round, sender, recipient), so a share re-addressed to another
client, replayed into another round, truncated or altered fails to decrypt. Every failure raises
the same opaque :class:`~secureagg.errors.InvalidCiphertext`; nothing in the error depends on the
key or plaintext. Nonces are 96 random bits from the OS CSPRNG, prepended to the ciphertext; keys
must be used for fewer than 2^32 messages (each protocol key encrypts a handful).

>>> key = generate_key()
>>> ct = encrypt(key, b"share", associated_data=b"session|round|1->2")
>>> decrypt(key, ct, associated_data=b"session|round|1->2")
b'share'
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureagg.errors import InvalidCiphertext, InvalidKeyError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "OVERHEAD",
    "TAG_BYTES",
    "decrypt",
    "encrypt",
    "generate_key",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES


def generate_key() -> bytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def _cipher(key: bytes) -> AESGCM:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise InvalidKeyError(f"AEAD keys are {KEY_BYTES} bytes (AES-256-GCM)")
    return AESGCM(key)


def encrypt(
    key: bytes, plaintext: bytes, *, associated_data: bytes, nonce: bytes | None = None
) -> bytes:
    """Encrypt and authenticate; returns ``nonce || ciphertext || tag``.

    ``nonce`` is for known-answer tests only; leave it ``None`` so a random nonce is drawn.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise InvalidKeyError(f"AEAD nonces are {NONCE_BYTES} bytes")
    return nonce + _cipher(key).encrypt(nonce, bytes(plaintext), bytes(associated_data))


def decrypt(key: bytes, ciphertext: bytes, *, associated_data: bytes) -> bytes:
    """Verify and decrypt. Any failure raises :class:`InvalidCiphertext` and nothing else."""
    cipher = _cipher(key)
    if not isinstance(ciphertext, bytes | bytearray | memoryview) or len(ciphertext) < OVERHEAD:
        raise InvalidCiphertext()
    data = bytes(ciphertext)
    try:
        return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], bytes(associated_data))
    except (InvalidTag, ValueError, TypeError):
        raise InvalidCiphertext() from None
