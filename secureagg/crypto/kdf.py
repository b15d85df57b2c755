"""HKDF-SHA256 (RFC 5869) with a mandatory, registered label.

Threat model: the input key material (an X25519 shared secret, a seed) is secret and high-entropy;
outputs for different labels or contexts are computationally independent. The label names the
purpose (see :mod:`secureagg.crypto.labels`); ``context`` binds session, round and party ids so
that no derived key is reused across rounds, sessions or peers.

>>> from secureagg.crypto import kdf, labels
>>> key = kdf.derive(b"\\x01" * 32, label=labels.TEST_VECTOR, context=b"round-1")
>>> len(key)
32
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secureagg.crypto.labels import Label, require
from secureagg.errors import ConfigurationError

__all__ = ["derive", "hkdf_sha256"]

_MAX_LENGTH = 255 * 32


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """Plain RFC 5869 HKDF-SHA256. Used by :func:`derive`; public only for known-answer tests."""
    if not 1 <= length <= _MAX_LENGTH:
        raise ConfigurationError(f"HKDF length must be in [1, {_MAX_LENGTH}] bytes, got {length}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive(
    key_material: bytes,
    *,
    label: Label | str,
    context: bytes = b"",
    length: int = 32,
    salt: bytes | None = None,
) -> bytes:
    """Derive ``length`` bytes from ``key_material`` for the purpose named by ``label``.

    ``info`` is ``len(label)||label||context``; the length prefix makes the split unambiguous.
    Raises :class:`~secureagg.errors.UnknownLabelError` for an unregistered label.
    """
    lab = require(label)
    if not isinstance(key_material, bytes | bytearray | memoryview):
        raise TypeError("key_material must be bytes")
    if len(key_material) < 16:
        raise ConfigurationError(
            f"key material of {len(key_material)} bytes is too short; use at least 16 bytes"
        )
    return hkdf_sha256(
        bytes(key_material), salt=salt, info=lab.encoded + bytes(context), length=length
    )
