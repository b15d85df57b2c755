"""X25519 agreement: RFC 7748 known answers, key validation and the derived shared key."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secureagg.crypto import kdf, keyagree, labels
from secureagg.crypto.keyagree import KeyPair
from secureagg.errors import InvalidKeyError, UnknownLabelError
from tests.vectors import h, load_vectors

VECTORS = load_vectors("crypto", "x25519_rfc7748")
SCALARMULT = [v for v in VECTORS if v["kind"] == "scalarmult"]
ITERATED = [v for v in VECTORS if v["kind"] == "iterated"]
(DH,) = [v for v in VECTORS if v["kind"] == "dh"]
LOW_ORDER = [v for v in VECTORS if v["kind"] == "low_order"]

P = 2**255 - 19
A24_NUMERATOR = 486662  # Montgomery coefficient A of Curve25519


def _private(raw_hex: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(h(raw_hex))


def _has_order_dividing_8(u_hex: str) -> bool:
    """Independent check of the vector file: [8]P is the point at infinity (x-only doubling)."""
    raw = bytearray(h(u_hex))
    raw[31] &= 0x7F  # RFC 7748 decodeUCoordinate masks bit 255
    x, z = int.from_bytes(raw, "little") % P, 1
    for _ in range(3):
        x, z = (
            (x * x - z * z) ** 2 % P,
            4 * x * z * (x * x + A24_NUMERATOR * x * z + z * z) % P,
        )
    return z == 0


# ------------------------------------------------------------------------------- RFC 7748


def test_vector_file_holds_every_kind() -> None:
    assert len(SCALARMULT) == 2
    assert [v["iterations"] for v in ITERATED] == [1, 1000]
    assert len(LOW_ORDER) >= 7


@pytest.mark.parametrize("vector", SCALARMULT, ids=["5.2-vector-1", "5.2-vector-2"])
def test_rfc7748_scalar_multiplication(vector: dict[str, Any]) -> None:
    # cryptography clamps the scalar and masks bit 255 of u, as RFC 7748 section 5 specifies.
    assert keyagree.agree(_private(vector["scalar"]), h(vector["u"])) == h(vector["output"])


@pytest.mark.parametrize("vector", ITERATED, ids=lambda v: f"{v['iterations']}-iterations")
def test_rfc7748_iterated(vector: dict[str, Any]) -> None:
    k = u = h(vector["start"])
    for _ in range(vector["iterations"]):
        k, u = keyagree.agree(X25519PrivateKey.from_private_bytes(k), u), k
    assert k == h(vector["output"])


def test_rfc7748_diffie_hellman_public_keys() -> None:
    alice = KeyPair.from_private_bytes(h(DH["alice_private"]))
    bob = KeyPair.from_private_bytes(h(DH["bob_private"]))
    assert alice.public_bytes == h(DH["alice_public"])
    assert bob.public_bytes == h(DH["bob_public"])


def test_rfc7748_diffie_hellman_shared_secret() -> None:
    alice = KeyPair.from_private_bytes(h(DH["alice_private"]))
    bob = KeyPair.from_private_bytes(h(DH["bob_private"]))
    shared = h(DH["shared"])
    assert keyagree.agree(alice, h(DH["bob_public"])) == shared
    assert keyagree.agree(bob, h(DH["alice_public"])) == shared
    assert keyagree.agree(alice.private_key, bob.public_bytes) == shared


def test_private_bytes_round_trip() -> None:
    alice = KeyPair.from_private_bytes(h(DH["alice_private"]))
    assert alice.private_bytes() == h(DH["alice_private"])


# ------------------------------------------------------------------------- low-order points


@pytest.mark.parametrize("vector", LOW_ORDER, ids=lambda v: v["u"][:8] + "..." + v["u"][-4:])
def test_low_order_vector_really_has_small_order(vector: dict[str, Any]) -> None:
    assert _has_order_dividing_8(vector["u"])


def test_small_order_check_is_not_trivially_true() -> None:
    assert not _has_order_dividing_8(DH["alice_public"])
    assert not _has_order_dividing_8("09" + "00" * 31)


@pytest.mark.parametrize("vector", LOW_ORDER, ids=lambda v: v["u"][:8] + "..." + v["u"][-4:])
def test_low_order_point_rejected(vector: dict[str, Any]) -> None:
    u = h(vector["u"])
    for private in (
        KeyPair.from_private_bytes(h(DH["alice_private"])),
        KeyPair.from_private_bytes(h(DH["bob_private"])),
        KeyPair.generate(),
    ):
        with pytest.raises(InvalidKeyError, match="low-order X25519 public key"):
            keyagree.agree(private, u)
        with pytest.raises(InvalidKeyError, match="low-order X25519 public key"):
            keyagree.derive_shared_key(private, u, label=labels.PAIRWISE_SEED, context=b"ctx")


# ----------------------------------------------------------------------- malformed keys


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_wrong_length_public_key_rejected(size: int) -> None:
    me = KeyPair.generate()
    with pytest.raises(InvalidKeyError, match=f"X25519 public key is 32 bytes, got {size}"):
        keyagree.agree(me, b"\x09" * size)
    with pytest.raises(InvalidKeyError):
        keyagree.load_public_key(b"\x09" * size)
    with pytest.raises(InvalidKeyError):
        keyagree.derive_shared_key(me, b"\x09" * size, label=labels.PAIRWISE_SEED, context=b"")


@pytest.mark.parametrize(
    "bad",
    [None, 9, "09" * 32, "\x09" * 32, [9] * 32, bytearray(h("09" + "00" * 31))],
    ids=["None", "int", "hex-str", "str-32", "list", "bytearray"],
)
def test_non_bytes_public_key_rejected(bad: object) -> None:
    with pytest.raises(InvalidKeyError, match="X25519 public key is 32 bytes"):
        keyagree.agree(KeyPair.generate(), bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        keyagree.load_public_key(bad)  # type: ignore[arg-type]


def test_load_public_key_round_trip() -> None:
    pair = KeyPair.generate()
    assert keyagree.load_public_key(pair.public_bytes).public_bytes_raw() == pair.public_bytes


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" * 31, b"\x01" * 33, b"\x01" * 64, "01" * 16, bytearray(32), None],
    ids=["0", "31", "33", "64", "str", "bytearray", "None"],
)
def test_from_private_bytes_wrong_length_or_type_rejected(bad: object) -> None:
    with pytest.raises(InvalidKeyError, match="X25519 private key is 32 bytes"):
        KeyPair.from_private_bytes(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------- agreement semantics


def test_agreement_is_symmetric_and_peer_specific() -> None:
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    ab = keyagree.agree(a, b.public_bytes)
    assert ab == keyagree.agree(b, a.public_bytes)
    assert len(ab) == keyagree.KEY_BYTES == 32
    assert keyagree.agree(a, c.public_bytes) != ab
    assert keyagree.agree(c, b.public_bytes) != ab


def test_generate_gives_fresh_keys() -> None:
    pairs = [KeyPair.generate() for _ in range(8)]
    assert len({p.public_bytes for p in pairs}) == 8
    assert len({p.private_bytes() for p in pairs}) == 8
    assert all(len(p.public_bytes) == 32 for p in pairs)


def test_key_pair_is_frozen() -> None:
    pair = KeyPair.generate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.public_bytes = bytes(32)  # type: ignore[misc]


def test_derive_shared_key_is_symmetric() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    context = b"session|round-1|1|2"
    key_a = keyagree.derive_shared_key(
        a, b.public_bytes, label=labels.PAIRWISE_SEED, context=context
    )
    key_b = keyagree.derive_shared_key(
        b, a.public_bytes, label=labels.PAIRWISE_SEED, context=context
    )
    assert key_a == key_b
    assert len(key_a) == 32


def test_derive_shared_key_is_hkdf_of_the_raw_agreement() -> None:
    alice = KeyPair.from_private_bytes(h(DH["alice_private"]))
    got = keyagree.derive_shared_key(
        alice, h(DH["bob_public"]), label=labels.SHARE_ENCRYPTION_KEY, context=b"ctx", length=48
    )
    expected = kdf.derive(
        h(DH["shared"]), label=labels.SHARE_ENCRYPTION_KEY, context=b"ctx", length=48
    )
    assert got == expected
    assert len(got) == 48
    assert got[:32] != h(DH["shared"])  # the raw secret is never used directly


def test_derive_shared_key_is_bound_to_context_and_label() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()

    def derive(label: labels.Label, context: bytes) -> bytes:
        return keyagree.derive_shared_key(a, b.public_bytes, label=label, context=context)

    keys = [
        derive(labels.PAIRWISE_SEED, b"session|round-1|1|2"),
        derive(labels.PAIRWISE_SEED, b"session|round-2|1|2"),
        derive(labels.PAIRWISE_SEED, b"other-session|round-1|1|2"),
        derive(labels.SHARE_ENCRYPTION_KEY, b"session|round-1|1|2"),
    ]
    assert len(set(keys)) == len(keys)


def test_derive_shared_key_rejects_unknown_label() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    with pytest.raises(UnknownLabelError):
        keyagree.derive_shared_key(a, b.public_bytes, label="secureagg/v1/nope", context=b"")
