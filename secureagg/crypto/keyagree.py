"""X25519 key pairs and key agreement (RFC 7748).

Threat model: a peer (or a malicious server relaying keys) may send a malformed public key or a
low-order point that forces a predictable shared secret. We reject keys that are not exactly 32
bytes and any agreement whose shared secret is all zeros (:class:`InvalidKeyError`), as RFC 7748
section 6.1 recommends. The raw shared secret is never used directly: :func:`derive_shared_key`
passes it through HKDF with a label and a context naming both parties.

A party that *relays* keys it cannot use itself (the SecAgg server) checks them with
:func:`check_public_key` before passing them on, so that one bad key is refused as its sender's
fault instead of making every honest receiver abort: it refuses wrong lengths, non-canonical
encodings (``u >= p``, including bit 255 set: another spelling of a point, which would dodge a
byte-wise duplicate check) and the points of small order (order 1, 2, 4 or 8, on the curve or its
twist: ``u`` in {0, 1, p - 1} and the two order-8 points), whose agreement with every clamped
scalar is zero.

>>> a, b = KeyPair.generate(), KeyPair.generate()
>>> agree(a.private_key, b.public_bytes) == agree(b.private_key, a.public_bytes)
True
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secureagg.crypto import kdf
from secureagg.crypto.labels import Label
from secureagg.errors import InvalidKeyError

__all__ = [
    "KEY_BYTES",
    "KeyPair",
    "agree",
    "check_public_key",
    "derive_shared_key",
    "load_public_key",
]

KEY_BYTES = 32
_P = 2**255 - 19
#: u-coordinates (canonical, below p) of the points of order dividing 8 on Curve25519 and its
#: twist: a clamped scalar (a multiple of 8) maps each of them to the zero shared secret.
#: Sources: RFC 7748 section 6.1, cr.yp.to/ecdh.html, libsodium's blocklist.
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair. ``public_bytes`` is the 32-byte raw public key."""

    private_key: X25519PrivateKey
    public_bytes: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls.from_private_bytes(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """Rebuild a key pair from 32 raw private bytes (used for known-answer vectors)."""
        if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
            raise InvalidKeyError(
                f"an X25519 private key is {KEY_BYTES} bytes, got "
                f"{len(raw) if isinstance(raw, bytes) else type(raw).__name__}"
            )
        private = X25519PrivateKey.from_private_bytes(raw)
        return cls(private, private.public_key().public_bytes_raw())

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes. Handle with care: this is secret."""
        return self.private_key.private_bytes_raw()


def load_public_key(raw: bytes) -> X25519PublicKey:
    """Parse a 32-byte public key; raise :class:`InvalidKeyError` on a wrong length or type."""
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        got = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
        raise InvalidKeyError(f"an X25519 public key is {KEY_BYTES} bytes, got {got}")
    return X25519PublicKey.from_public_bytes(raw)


def check_public_key(raw: bytes) -> bytes:
    """Validate a peer's public key for relaying or agreement; return it unchanged.

    Raises :class:`InvalidKeyError` for anything but 32 bytes, a non-canonical encoding
    (``u >= 2^255 - 19`` read little-endian, bit 255 included) or a point of small order. The
    message says which rule was broken; a public key is public, so nothing secret is involved.
    """
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        got = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
        raise InvalidKeyError(f"an X25519 public key is {KEY_BYTES} bytes, got {got}")
    u = int.from_bytes(raw, "little")
    if u >= _P:
        raise InvalidKeyError(
            "non-canonical X25519 public key encoding (u >= 2^255 - 19 or bit 255 set)"
        )
    if u in _SMALL_ORDER_U:
        raise InvalidKeyError("low-order X25519 public key: its shared secrets would be zero")
    return raw


def agree(private_key: X25519PrivateKey | KeyPair, peer_public: bytes) -> bytes:
    """The raw 32-byte X25519 shared secret with ``peer_public``.

    Raises :class:`InvalidKeyError` for a wrong-length key or a low-order point (all-zero secret).
    """
    priv = private_key.private_key if isinstance(private_key, KeyPair) else private_key
    public = load_public_key(peer_public)
    try:
        shared = priv.exchange(public)
    except ValueError:  # cryptography refuses the all-zero output of a low-order point
        raise InvalidKeyError(
            "low-order X25519 public key: the shared secret would be zero"
        ) from None
    if shared == bytes(KEY_BYTES):
        raise InvalidKeyError("low-order X25519 public key: the shared secret would be zero")
    return shared


def derive_shared_key(
    private_key: X25519PrivateKey | KeyPair,
    peer_public: bytes,
    *,
    label: Label | str,
    context: bytes,
    length: int = 32,
) -> bytes:
    """X25519 agreement followed by HKDF-SHA256 under ``label`` and ``context``.

    Both parties must pass the same ``context`` (for example session, round and the two ids in a
    canonical order) to obtain the same key.
    """
    return kdf.derive(agree(private_key, peer_public), label=label, context=context, length=length)
