"""Ed25519 identity signatures: RFC 8032 known answers, forgery and misuse."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from secureagg.crypto import signing
from secureagg.crypto.signing import SigningKey
from secureagg.errors import InvalidKeyError, InvalidSignature
from tests.vectors import h, load_vectors

RFC8032 = load_vectors("crypto", "ed25519_rfc8032")
IDS = ["TEST-1", "TEST-2", "TEST-3"]
(TEST2,) = [v for v in RFC8032 if "TEST 2" in v["source"]]
OPAQUE_MESSAGE = "invalid signature"


def _raises_invalid(public_key: bytes, message: bytes, signature: object) -> None:
    with pytest.raises(InvalidSignature) as info:
        signing.verify(public_key, message, signature)  # type: ignore[arg-type]
    assert type(info.value) is InvalidSignature
    assert str(info.value) == OPAQUE_MESSAGE
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


# ------------------------------------------------------------------------------- RFC 8032


def test_vector_file_holds_tests_1_to_3() -> None:
    assert [len(h(v["message"])) for v in RFC8032] == [0, 1, 2]


@pytest.mark.parametrize("vector", RFC8032, ids=IDS)
def test_rfc8032_public_key(vector: dict[str, Any]) -> None:
    key = SigningKey.from_private_bytes(h(vector["secret_key"]))
    assert key.public_bytes == h(vector["public_key"])


@pytest.mark.parametrize("vector", RFC8032, ids=IDS)
def test_rfc8032_signature(vector: dict[str, Any]) -> None:
    key = SigningKey.from_private_bytes(h(vector["secret_key"]))
    assert key.sign(h(vector["message"])) == h(vector["signature"])


@pytest.mark.parametrize("vector", RFC8032, ids=IDS)
def test_rfc8032_verify(vector: dict[str, Any]) -> None:
    # Returns None when valid; any failure raises.
    signing.verify(h(vector["public_key"]), h(vector["message"]), h(vector["signature"]))


# ------------------------------------------------------------------------------- forgeries


@pytest.mark.parametrize("vector", RFC8032, ids=IDS)
def test_tampered_message_rejected(vector: dict[str, Any]) -> None:
    pk, msg, sig = h(vector["public_key"]), h(vector["message"]), h(vector["signature"])
    _raises_invalid(pk, msg + b"\x00", sig)
    if msg:
        _raises_invalid(pk, msg[:-1], sig)
        _raises_invalid(pk, bytes([msg[0] ^ 0x01]) + msg[1:], sig)


@pytest.mark.parametrize("position", [0, 16, 31, 32, 48, 63])
@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_tampered_signature_rejected(position: int, bit: int) -> None:
    # Positions 0..31 are R, 32..63 are S (bit 0x80 of byte 63 makes S non-canonical).
    sig = bytearray(h(TEST2["signature"]))
    sig[position] ^= bit
    _raises_invalid(h(TEST2["public_key"]), h(TEST2["message"]), bytes(sig))


def test_signature_under_another_key_rejected() -> None:
    other = h(RFC8032[0]["public_key"])
    _raises_invalid(other, h(TEST2["message"]), h(TEST2["signature"]))


def test_non_point_public_key_gives_invalid_signature() -> None:
    # 32 bytes that do not encode a curve point (y >= p): a forgery attempt, not misuse.
    _raises_invalid(b"\xff" * 32, h(TEST2["message"]), h(TEST2["signature"]))


@pytest.mark.parametrize("size", [0, 1, 63, 65, 128])
def test_wrong_length_signature_rejected(size: int) -> None:
    sig = (h(TEST2["signature"]) * 2)[:size]
    _raises_invalid(h(TEST2["public_key"]), h(TEST2["message"]), sig)


@pytest.mark.parametrize(
    "bad", [None, "00" * 64, 0, bytearray(64)], ids=["None", "str", "int", "bytearray"]
)
def test_non_bytes_signature_rejected(bad: object) -> None:
    _raises_invalid(h(TEST2["public_key"]), h(TEST2["message"]), bad)


# ---------------------------------------------------------------------------------- misuse


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" * 31, b"\x01" * 33, b"\x01" * 64, "01" * 16, bytearray(32), None],
    ids=["0", "31", "33", "64", "str", "bytearray", "None"],
)
def test_wrong_public_key_is_invalid_key(bad: object) -> None:
    with pytest.raises(InvalidKeyError, match="Ed25519 public key is 32 bytes"):
        signing.verify(bad, h(TEST2["message"]), h(TEST2["signature"]))  # type: ignore[arg-type]


def test_public_key_is_checked_before_signature() -> None:
    # A wrong-length key is misuse even when the signature is also malformed.
    with pytest.raises(InvalidKeyError):
        signing.verify(b"\x01" * 31, b"m", b"")


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" * 31, b"\x01" * 33, b"\x01" * 64, "01" * 16, bytearray(32), None],
    ids=["0", "31", "33", "64", "str", "bytearray", "None"],
)
def test_from_private_bytes_wrong_length_or_type_rejected(bad: object) -> None:
    with pytest.raises(InvalidKeyError, match="Ed25519 private key is 32 bytes"):
        SigningKey.from_private_bytes(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ round trip


def test_generate_sign_verify_round_trip() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    assert key.public_bytes != other.public_bytes
    assert len(key.public_bytes) == signing.PUBLIC_KEY_BYTES == 32
    sig = key.sign(b"advertised keys, round 3")
    assert len(sig) == signing.SIGNATURE_BYTES == 64
    signing.verify(key.public_bytes, b"advertised keys, round 3", sig)
    _raises_invalid(other.public_bytes, b"advertised keys, round 3", sig)
    _raises_invalid(key.public_bytes, b"advertised keys, round 4", sig)


def test_signing_is_deterministic_and_accepts_bytes_like() -> None:
    key = SigningKey.from_private_bytes(h(TEST2["secret_key"]))
    by_bytearray = key.sign(bytearray(b"\x72"))  # type: ignore[arg-type]  # bytes-like is accepted at run time
    assert by_bytearray == key.sign(b"\x72") == h(TEST2["signature"])
    signing.verify(key.public_bytes, memoryview(b"\x72"), h(TEST2["signature"]))  # type: ignore[arg-type]  # bytes-like is accepted at run time


def test_signing_key_is_frozen() -> None:
    key = SigningKey.generate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.public_bytes = bytes(32)  # type: ignore[misc]
