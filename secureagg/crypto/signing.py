"""Ed25519 signatures (RFC 8032) for client identities in the malicious-server mode.

Threat model: a malicious server may substitute a client's advertised keys or show clients
different views. Clients sign what they advertise and what they were shown with long-term identity
keys that the user registers out of band (a client registry); peers verify against the registry.
Verification failures raise the opaque :class:`~secureagg.errors.InvalidSignature`.

>>> key = SigningKey.generate()
>>> sig = key.sign(b"message")
>>> verify(key.public_bytes, b"message", sig)
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureagg.errors import InvalidKeyError, InvalidSignature

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SigningKey",
    "public_key_from_pem",
    "public_key_pem",
    "verify",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 identity key. Give ``public_bytes`` to the client registry."""

    private_key: Ed25519PrivateKey
    public_bytes: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_bytes(Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKeyError("an Ed25519 private key is 32 bytes")
        key = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(key, key.public_key().public_bytes_raw())

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """The key in an unencrypted PEM (PKCS#8) file, as ``openssl genpkey -algorithm ed25519``
        writes it."""
        try:
            key = serialization.load_pem_private_key(bytes(data), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKeyError(f"not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKeyError("the PEM key is not an Ed25519 key")
        return cls.from_private_bytes(key.private_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        """A 64-byte signature over ``message``."""
        return self.private_key.sign(bytes(message))


def public_key_pem(public_key: bytes) -> bytes:
    """The raw Ed25519 ``public_key`` as a PEM SubjectPublicKeyInfo (what OpenSSL reads)."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKeyError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    return Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes) -> bytes:
    """The raw Ed25519 public key in ``data``: a PEM public key, the public half of a PEM
    private key, or 64 hex digits."""
    text = bytes(data).strip()
    if len(text) == 2 * PUBLIC_KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    key: object
    try:
        key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(text, password=None).public_key()
        except (ValueError, TypeError):
            raise InvalidKeyError("not an Ed25519 public key (PEM, or 64 hex digits)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidKeyError("the key is not an Ed25519 key")
    return key.public_bytes_raw()


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Return ``None`` if valid; raise :class:`InvalidSignature` otherwise.

    A public key of the wrong length raises :class:`InvalidKeyError` (misuse, not forgery).
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKeyError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature()
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, bytes(message))
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature() from None
