"""AES-256-GCM: known answers, round trips, and one opaque error for every failure.

``protocols/crypto/vectors/aead.json`` holds three GCM-specification vectors (typed in, never
regenerated) and our own vectors, made by :func:`generate_vectors` from fixed inputs. After an
intended, versioned change of output, rewrite ours with::

    SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_aead.py
"""

from __future__ import annotations

from typing import Any

import pytest

from secureagg.crypto import aead
from secureagg.errors import InvalidCiphertext, InvalidKeyError
from tests.vectors import h, load_vectors, regenerate, write_vectors

OURS = "secureagg: aead.encrypt with a fixed nonce (generated)"
AD = b"session-7|round-3|1->2"
MISADDRESSED_AD = b"session-7|round-3|2->1"
OPAQUE_MESSAGE = "invalid ciphertext"


def generate_vectors() -> list[dict[str, Any]]:
    """Our own known answers: fixed keys, nonces, plaintexts and AD through ``aead.encrypt``."""
    cases = [
        ("empty plaintext, protocol-style AD", bytes(range(32)), bytes(range(12)), b"", AD),
        ("short plaintext, empty AD", bytes(range(32)), bytes(range(12)), b"share", b""),
        (
            "32-byte share, protocol-style AD",
            bytes(range(32, 64)),
            bytes(range(100, 112)),
            bytes(range(200, 232)),
            AD,
        ),
        (
            "misaddressed AD of the previous case (different tag, same body)",
            bytes(range(32, 64)),
            bytes(range(100, 112)),
            bytes(range(200, 232)),
            MISADDRESSED_AD,
        ),
        ("100 bytes over a block boundary", b"\xff" * 32, b"\xaa" * 12, bytes(range(100)), AD),
    ]
    return [
        {
            "source": f"{OURS}: {what}",
            "key": key.hex(),
            "nonce": nonce.hex(),
            "plaintext": pt.hex(),
            "associated_data": ad.hex(),
            "ciphertext": aead.encrypt(key, pt, associated_data=ad, nonce=nonce).hex(),
        }
        for what, key, nonce, pt, ad in cases
    ]


def _load() -> list[dict[str, Any]]:
    if regenerate():
        try:
            kept = [v for v in load_vectors("crypto", "aead") if not v["source"].startswith(OURS)]
        except FileNotFoundError:
            kept = []
        write_vectors(
            "crypto",
            "aead",
            description=(
                "AES-256-GCM as aead.encrypt/decrypt frame it: ciphertext = nonce || body || tag. "
                "Entries whose source starts with 'GCM specification' are the McGrew-Viega test "
                "cases, typed in by hand and kept verbatim on regeneration; the others are ours. "
                "Byte strings are lowercase hex."
            ),
            generated_by=(
                "tests/crypto/test_aead.py::generate_vectors "
                "(SECUREAGG_REGENERATE_VECTORS=1 pytest tests/crypto/test_aead.py)"
            ),
            vectors=kept + generate_vectors(),
        )
    return load_vectors("crypto", "aead")


VECTORS = _load()
SPEC = [v for v in VECTORS if v["source"].startswith("GCM specification")]


def _raises_opaque(
    key: bytes, ciphertext: object, associated_data: bytes = AD
) -> InvalidCiphertext:
    with pytest.raises(InvalidCiphertext) as info:
        aead.decrypt(key, ciphertext, associated_data=associated_data)  # type: ignore[arg-type]
    exc = info.value
    assert type(exc) is InvalidCiphertext
    assert str(exc) == OPAQUE_MESSAGE
    # Nothing from cryptography (InvalidTag, ValueError) is chained into the traceback.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    return exc


# --------------------------------------------------------------------------- known answers


def test_vector_file_holds_spec_and_own_vectors() -> None:
    assert len(SPEC) == 3
    assert len(VECTORS) - len(SPEC) == len(generate_vectors())


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["source"].split(":")[-1].strip())
def test_known_answer_encrypt(vector: dict[str, Any]) -> None:
    got = aead.encrypt(
        h(vector["key"]),
        h(vector["plaintext"]),
        associated_data=h(vector["associated_data"]),
        nonce=h(vector["nonce"]),
    )
    assert got == h(vector["ciphertext"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["source"].split(":")[-1].strip())
def test_known_answer_decrypt(vector: dict[str, Any]) -> None:
    got = aead.decrypt(
        h(vector["key"]), h(vector["ciphertext"]), associated_data=h(vector["associated_data"])
    )
    assert got == h(vector["plaintext"])


def test_own_vectors_match_generator() -> None:
    ours = [v for v in VECTORS if v["source"].startswith(OURS)]
    assert ours == generate_vectors()


def test_wire_format_is_nonce_body_tag() -> None:
    for vector in VECTORS:
        ct = h(vector["ciphertext"])
        assert ct[: aead.NONCE_BYTES] == h(vector["nonce"])
        assert len(ct) == len(h(vector["plaintext"])) + aead.OVERHEAD
    assert (aead.KEY_BYTES, aead.NONCE_BYTES, aead.TAG_BYTES, aead.OVERHEAD) == (32, 12, 16, 28)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_round_trip(size: int) -> None:
    key = aead.generate_key()
    plaintext = bytes((i * 7) % 256 for i in range(size))
    ct = aead.encrypt(key, plaintext, associated_data=AD)
    assert len(ct) == size + aead.OVERHEAD
    assert aead.decrypt(key, ct, associated_data=AD) == plaintext
    if size >= 16:
        assert plaintext not in ct


def test_bytes_like_inputs_accepted() -> None:
    key = aead.generate_key()
    ct = aead.encrypt(key, bytearray(b"share"), associated_data=memoryview(AD))  # type: ignore[arg-type]  # bytes-like is accepted at run time
    by_bytearray = aead.decrypt(key, bytearray(ct), associated_data=AD)  # type: ignore[arg-type]  # bytes-like is accepted at run time
    by_view = aead.decrypt(key, memoryview(ct), associated_data=bytearray(AD))  # type: ignore[arg-type]  # bytes-like is accepted at run time
    assert by_bytearray == by_view == b"share"


def test_random_nonce_makes_encryptions_differ() -> None:
    key = aead.generate_key()
    first = aead.encrypt(key, b"same plaintext", associated_data=AD)
    second = aead.encrypt(key, b"same plaintext", associated_data=AD)
    assert first != second
    assert first[: aead.NONCE_BYTES] != second[: aead.NONCE_BYTES]
    assert aead.decrypt(key, first, associated_data=AD) == aead.decrypt(
        key, second, associated_data=AD
    )


def test_generate_key_is_fresh_and_32_bytes() -> None:
    keys = {aead.generate_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == 32 for k in keys)


# ---------------------------------------------------------------- failures: one opaque error


@pytest.fixture
def sealed() -> tuple[bytes, bytes]:
    key = aead.generate_key()
    return key, aead.encrypt(key, bytes(range(40)), associated_data=AD)


def test_every_flipped_byte_is_rejected(sealed: tuple[bytes, bytes]) -> None:
    # Covers every position class: nonce (0..11), body (12..51), tag (last 16).
    key, ct = sealed
    messages = set()
    for position in range(len(ct)):
        for bit in (0x01, 0x80):
            tampered = bytearray(ct)
            tampered[position] ^= bit
            messages.add(str(_raises_opaque(key, bytes(tampered))))
    assert messages == {OPAQUE_MESSAGE}


@pytest.mark.parametrize("cut", ["empty", "1", "27", "28", "minus-1", "no-tag"])
def test_truncated_ciphertext_rejected(sealed: tuple[bytes, bytes], cut: str) -> None:
    key, ct = sealed
    lengths = {"empty": 0, "1": 1, "27": 27, "28": 28, "minus-1": len(ct) - 1}
    truncated = ct[: -aead.TAG_BYTES] if cut == "no-tag" else ct[: lengths[cut]]
    _raises_opaque(key, truncated)


def test_truncating_an_empty_plaintext_ciphertext_rejected() -> None:
    key = aead.generate_key()
    ct = aead.encrypt(key, b"", associated_data=AD)
    assert len(ct) == aead.OVERHEAD
    assert aead.decrypt(key, ct, associated_data=AD) == b""
    _raises_opaque(key, ct[:-1])


def test_extended_ciphertext_rejected(sealed: tuple[bytes, bytes]) -> None:
    key, ct = sealed
    _raises_opaque(key, ct + b"\x00")
    _raises_opaque(key, b"\x00" + ct)


@pytest.mark.parametrize(
    "wrong_ad",
    [MISADDRESSED_AD, b"session-7|round-4|1->2", b"session-8|round-3|1->2", b"", AD + b"\x00"],
    ids=["sender-recipient-swapped", "other-round", "other-session", "empty", "extended"],
)
def test_wrong_associated_data_rejected(sealed: tuple[bytes, bytes], wrong_ad: bytes) -> None:
    key, ct = sealed
    _raises_opaque(key, ct, associated_data=wrong_ad)


def test_wrong_key_rejected(sealed: tuple[bytes, bytes]) -> None:
    key, ct = sealed
    _raises_opaque(aead.generate_key(), ct)
    _raises_opaque(bytes([key[0] ^ 1]) + key[1:], ct)


@pytest.mark.parametrize(
    "bad", [None, "00" * 40, 12345, [0] * 40], ids=["None", "str", "int", "list"]
)
def test_non_bytes_ciphertext_rejected(bad: object) -> None:
    _raises_opaque(aead.generate_key(), bad)


def test_all_failure_modes_share_type_and_message(sealed: tuple[bytes, bytes]) -> None:
    key, ct = sealed
    failures = [
        _raises_opaque(key, ct[:-1]),
        _raises_opaque(key, b""),
        _raises_opaque(key, ct, associated_data=MISADDRESSED_AD),
        _raises_opaque(aead.generate_key(), ct),
        _raises_opaque(key, bytes([ct[0] ^ 1]) + ct[1:]),
        _raises_opaque(key, ct[:-1] + bytes([ct[-1] ^ 1])),
    ]
    assert {(type(e), str(e), e.args) for e in failures} == {
        (InvalidCiphertext, OPAQUE_MESSAGE, (OPAQUE_MESSAGE,))
    }


# ---------------------------------------------------------------------------- misuse: keys


@pytest.mark.parametrize(
    "bad_key",
    [b"", b"\x00" * 16, b"\x00" * 24, b"\x00" * 31, b"\x00" * 33, "00" * 32, bytearray(32), None],
    ids=["0", "aes-128", "aes-192", "31", "33", "str", "bytearray", "None"],
)
def test_wrong_key_length_or_type_is_invalid_key(bad_key: object) -> None:
    with pytest.raises(InvalidKeyError, match="AEAD keys are 32 bytes"):
        aead.encrypt(bad_key, b"x", associated_data=AD)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError, match="AEAD keys are 32 bytes"):
        aead.decrypt(bad_key, bytes(40), associated_data=AD)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_wrong_nonce_length_rejected(size: int) -> None:
    with pytest.raises(InvalidKeyError, match="AEAD nonces are 12 bytes"):
        aead.encrypt(aead.generate_key(), b"x", associated_data=AD, nonce=bytes(size))
