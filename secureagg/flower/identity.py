"""A node's Ed25519 identity key for malicious-mode SecAgg+, kept in a file on the node.

In malicious mode every client signs its key advertisement with its identity key, and the round
spec lists every client's public identity key; the server can then not impersonate a client or
swap keys between them. On Flower the key is a file on the SuperNode, named by the node config
(``secureagg-identity-key="/path/key.pem"``). The file may be:

- a PKCS#8 PEM Ed25519 private key (``secureagg flower keygen`` / :func:`write_identity_key`
  writes one, with mode 0600, and prints the public key to register with the server), or
- an OpenSSH Ed25519 private key (``ssh-keygen -t ed25519 -N "" -f key``).

This key is not Flower's node-authentication key: Flower 1.42 authenticates SuperNodes to the
SuperLink with ECDSA keys (``--auth-supernode-private-key``, registered with ``flwr supernode
register``), which decide which machines may connect at all. Our Ed25519 identity decides which
client a signed key advertisement comes from inside a round, so that not even the SuperLink's
operator can swap it. A deployment in malicious mode uses both (``docs/flower.md``).

The operator lists the public keys of the nodes it admits (one hex or ``ssh-ed25519`` line each)
in the file the server is given (``identities=``); a node whose key is not listed is not admitted
to a malicious-mode round.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureagg.crypto.signing import SigningKey
from secureagg.errors import ConfigurationError

__all__ = ["load_identity_key", "read_allowed_keys", "write_identity_key"]


def load_identity_key(path: str | os.PathLike[str]) -> SigningKey:
    """The Ed25519 identity key in ``path`` (PEM PKCS#8 or OpenSSH); a clear error otherwise."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the identity key {file}: {exc}") from None
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{file} is not an unencrypted private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{file} holds a {type(key).__name__}, not an Ed25519 key")
    return SigningKey.from_private_bytes(key.private_bytes_raw())


def write_identity_key(path: str | os.PathLike[str]) -> bytes:
    """Write a fresh Ed25519 identity key to ``path`` (mode 0600, never overwriting); return its
    public key (32 bytes) for the server's list of admitted nodes."""
    file = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{file} exists; an identity key is never overwritten") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key.public_key().public_bytes_raw()


def _public_key(line: str) -> bytes:
    if line.startswith("ssh-ed25519 "):
        key = serialization.load_ssh_public_key(line.encode())
        if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the prefix says ed25519
            raise ValueError("not an Ed25519 key")
        return key.public_bytes_raw()
    raw = bytes.fromhex(line) if len(line) == 64 else base64.b64decode(line, validate=True)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def read_allowed_keys(path: str | os.PathLike[str]) -> frozenset[bytes]:
    """The admitted nodes' public identity keys: one per line (64 hex digits, base64 of 32 bytes,
    or an ``ssh-ed25519 AAAA... comment`` line); ``#`` starts a comment."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the identities file {file}: {exc}") from None
    keys: set[bytes] = set()
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("ssh-ed25519 "):
            line = " ".join(line.split()[:2])
        try:
            keys.add(_public_key(line))
        except ValueError as exc:
            raise ConfigurationError(
                f"{file}:{number}: not an Ed25519 public key ({exc})"
            ) from None
    if not keys:
        raise ConfigurationError(f"{file} lists no public key")
    return frozenset(keys)
