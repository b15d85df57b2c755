"""A key holder's secret key as bytes for its own node: the framing both HE backends share.

A key holder whose process ends between two messages (a federated engine may start a fresh
process for every message) keeps its secret key on its node and reads it back. The bytes are
``magic ‖ version ‖ body ‖ SHA-256(magic ‖ version ‖ body)``: the magic names the scheme (a
CKKS key is never read as a Paillier key), the version (1 byte) the body's layout, and the
checksum refuses a flipped or lost byte anywhere before the body is parsed. Each backend defines
its body (:meth:`CkksSecretKey.to_bytes <secureagg.he.ckks.keys.CkksSecretKey.to_bytes>`,
:meth:`PaillierSecretKey.to_bytes <secureagg.he.paillier.PaillierSecretKey.to_bytes>`).

Threat model. These bytes *are* the secret key: they are node-local and never go on the wire -
not to the server, not to a client, not into a round spec or a party state. Keep them where the
key holder's key may be kept (its node or key service, encrypted at rest if the node is shared).
The checksum detects corruption, not tampering: the bytes are as trustworthy as the storage that
holds them. Never pickle: the body is a fixed layout (Paillier) or TenSEAL's own serialization
(CKKS).

>>> data = seal(b"secureagg/test-key\\x00", b"body")
>>> open_sealed(data, magic=b"secureagg/test-key\\x00", what="test key")
b'body'
"""

from __future__ import annotations

import hashlib

from secureagg.errors import MalformedMessage

__all__ = ["SECRET_KEY_VERSION", "open_sealed", "seal"]

#: The layout version of every secret-key body (one byte after the magic).
SECRET_KEY_VERSION = 1
_DIGEST = 32


def seal(magic: bytes, body: bytes) -> bytes:
    """``magic ‖ version ‖ body ‖ checksum``."""
    head = magic + bytes([SECRET_KEY_VERSION])
    return head + body + hashlib.sha256(head + body).digest()


def open_sealed(data: object, *, magic: bytes, what: str) -> bytes:
    """The body of :func:`seal`'s bytes; :class:`~secureagg.errors.MalformedMessage` naming
    ``what`` for anything else (not bytes, another scheme's key, another version, corrupted)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what} refused: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw.startswith(magic):
        name = magic.rstrip(b"\x00").decode("ascii")
        raise MalformedMessage(
            f"{what} refused: the bytes do not start with {name!r} (another scheme's key, or "
            "not a secret key)"
        )
    if len(raw) <= len(magic) + 1 + _DIGEST:
        raise MalformedMessage(f"{what} refused: {len(raw)} bytes is too short (truncated)")
    version = raw[len(magic)]
    if version != SECRET_KEY_VERSION:
        raise MalformedMessage(
            f"{what} refused: layout version {version} is not {SECRET_KEY_VERSION}"
        )
    if hashlib.sha256(raw[:-_DIGEST]).digest() != raw[-_DIGEST:]:
        raise MalformedMessage(f"{what} refused: its checksum does not match (corrupted)")
    return raw[len(magic) + 1 : -_DIGEST]
