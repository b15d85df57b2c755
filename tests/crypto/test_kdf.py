"""HKDF-SHA256 (RFC 5869 known answers) and the labelled ``kdf.derive``."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from secureagg.crypto import kdf, labels
from secureagg.crypto.labels import Label
from secureagg.errors import ConfigurationError, UnknownLabelError
from tests.vectors import h, load_vectors

RFC5869 = load_vectors("crypto", "hkdf_rfc5869")
KEY_MATERIAL = bytes(range(32))
MAX_LENGTH = 255 * 32


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["source"].split(",")[1].strip() for v in vectors]


# ------------------------------------------------------------------------------- RFC 5869


def test_rfc5869_file_holds_test_cases_1_to_3() -> None:
    assert len(RFC5869) == 3
    assert [v["length"] for v in RFC5869] == [42, 82, 42]
    assert all(len(h(v["okm"])) == v["length"] for v in RFC5869)


@pytest.mark.parametrize("vector", RFC5869, ids=_ids(RFC5869))
def test_hkdf_sha256_matches_rfc5869(vector: dict[str, Any]) -> None:
    okm = kdf.hkdf_sha256(
        h(vector["ikm"]), salt=h(vector["salt"]), info=h(vector["info"]), length=vector["length"]
    )
    assert okm == h(vector["okm"])


@pytest.mark.parametrize("vector", RFC5869, ids=_ids(RFC5869))
def test_rfc5869_prk_is_hmac_of_salt_and_ikm(vector: dict[str, Any]) -> None:
    # Checks the typed-in file itself (PRK = HMAC-SHA256(salt, IKM), salt defaults to 32 zeros).
    salt = h(vector["salt"]) or bytes(32)
    assert hmac.new(salt, h(vector["ikm"]), hashlib.sha256).digest() == h(vector["prk"])


def test_rfc5869_case3_empty_salt_equals_no_salt() -> None:
    (case3,) = [v for v in RFC5869 if v["salt"] == ""]
    ikm, info, length = h(case3["ikm"]), h(case3["info"]), case3["length"]
    with_none = kdf.hkdf_sha256(ikm, salt=None, info=info, length=length)
    with_empty = kdf.hkdf_sha256(ikm, salt=b"", info=info, length=length)
    with_zeros = kdf.hkdf_sha256(ikm, salt=bytes(32), info=info, length=length)
    assert with_none == with_empty == with_zeros == h(case3["okm"])


@pytest.mark.parametrize("length", [0, -1, MAX_LENGTH + 1])
def test_hkdf_sha256_rejects_out_of_range_length(length: int) -> None:
    with pytest.raises(ConfigurationError, match=r"HKDF length must be in \[1, 8160\]"):
        kdf.hkdf_sha256(KEY_MATERIAL, salt=None, info=b"", length=length)


# ----------------------------------------------------------------------------- derive: labels


def test_derive_equals_hkdf_with_length_prefixed_label_and_context() -> None:
    for label, context, length, salt in [
        (labels.TEST_VECTOR, b"", 32, None),
        (labels.TEST_VECTOR, b"round-1", 32, None),
        (labels.PAIRWISE_SEED, b"session|round|1|2", 16, None),
        (labels.SHARE_ENCRYPTION_KEY, b"\x00\x01", 64, b"salt"),
    ]:
        expected = kdf.hkdf_sha256(
            KEY_MATERIAL, salt=salt, info=label.encoded + context, length=length
        )
        got = kdf.derive(KEY_MATERIAL, label=label, context=context, length=length, salt=salt)
        assert got == expected
        assert len(got) == length


def test_derive_info_is_exactly_length_prefix_label_context() -> None:
    # Spelled out once by hand, independent of Label.encoded.
    name = b"secureagg/v1/test/vector"
    info = len(name).to_bytes(2, "big") + name + b"ctx"
    assert kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, context=b"ctx") == kdf.hkdf_sha256(
        KEY_MATERIAL, salt=None, info=info, length=32
    )


def test_derive_default_length_is_32() -> None:
    assert len(kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR)) == 32


def test_derive_accepts_registered_name() -> None:
    by_object = kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, context=b"c")
    by_name = kdf.derive(KEY_MATERIAL, label="secureagg/v1/test/vector", context=b"c")
    assert by_object == by_name


def test_derive_rejects_unknown_label_name() -> None:
    with pytest.raises(UnknownLabelError, match="secureagg/v1/test/nope"):
        kdf.derive(KEY_MATERIAL, label="secureagg/v1/test/nope")


def test_derive_rejects_label_object_not_from_registry() -> None:
    forged_same_name = Label(labels.TEST_VECTOR.name, labels.TEST_VECTOR.purpose)
    assert forged_same_name == labels.TEST_VECTOR  # equal by value, but not the registered object
    with pytest.raises(UnknownLabelError):
        kdf.derive(KEY_MATERIAL, label=forged_same_name)
    with pytest.raises(UnknownLabelError):
        kdf.derive(KEY_MATERIAL, label=Label("secureagg/v1/test/unregistered", "made up"))


@pytest.mark.parametrize("bad", [b"secureagg/v1/test/vector", None, 7, ""])
def test_derive_rejects_non_label(bad: object) -> None:
    with pytest.raises(UnknownLabelError):
        kdf.derive(KEY_MATERIAL, label=bad)  # type: ignore[arg-type]


def test_unknown_label_is_rejected_before_key_material_is_checked() -> None:
    with pytest.raises(UnknownLabelError):
        kdf.derive(b"short", label="not-a-label")


# ------------------------------------------------------------------------ derive: separation


def test_every_registered_label_gives_a_different_output() -> None:
    outputs = {kdf.derive(KEY_MATERIAL, label=lab, context=b"ctx") for lab in labels.ALL_LABELS}
    assert len(outputs) == len(labels.ALL_LABELS)


def test_different_contexts_give_different_outputs() -> None:
    contexts = [b"", b"\x00", b"round-1", b"round-2", b"session-a|round-1", b"session-b|round-1"]
    outputs = [kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, context=c) for c in contexts]
    assert len(set(outputs)) == len(contexts)


def test_different_key_material_or_salt_gives_different_outputs() -> None:
    base = kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR)
    assert kdf.derive(bytes(32), label=labels.TEST_VECTOR) != base
    assert kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, salt=b"s") != base


def test_same_inputs_give_same_output() -> None:
    first = kdf.derive(KEY_MATERIAL, label=labels.PAIRWISE_SEED, context=b"1|2", length=48)
    second = kdf.derive(KEY_MATERIAL, label=labels.PAIRWISE_SEED, context=b"1|2", length=48)
    assert first == second


def test_shorter_output_is_prefix_of_longer() -> None:
    # HKDF property: L only truncates the expand stream (so L is NOT a domain separator).
    short = kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, length=16)
    long = kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, length=64)
    assert long[:16] == short


# -------------------------------------------------------------------------- derive: bounds


@pytest.mark.parametrize("length", [1, 32, MAX_LENGTH])
def test_derive_length_bounds_accepted(length: int) -> None:
    assert len(kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, length=length)) == length


@pytest.mark.parametrize("length", [0, -5, MAX_LENGTH + 1])
def test_derive_length_out_of_bounds_rejected(length: int) -> None:
    with pytest.raises(ConfigurationError, match="HKDF length"):
        kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR, length=length)


@pytest.mark.parametrize("size", [0, 1, 15])
def test_short_key_material_rejected(size: int) -> None:
    with pytest.raises(ConfigurationError, match=f"key material of {size} bytes is too short"):
        kdf.derive(bytes(size), label=labels.TEST_VECTOR)


def test_sixteen_bytes_of_key_material_is_enough() -> None:
    assert len(kdf.derive(bytes(16), label=labels.TEST_VECTOR)) == 32


def test_bytes_like_key_material_gives_same_output() -> None:
    expected = kdf.derive(KEY_MATERIAL, label=labels.TEST_VECTOR)
    by_bytearray = kdf.derive(bytearray(KEY_MATERIAL), label=labels.TEST_VECTOR)  # type: ignore[arg-type]  # bytes-like is accepted at run time
    by_view = kdf.derive(memoryview(KEY_MATERIAL), label=labels.TEST_VECTOR)  # type: ignore[arg-type]  # bytes-like is accepted at run time
    assert by_bytearray == by_view == expected


def test_non_bytes_key_material_rejected() -> None:
    with pytest.raises(TypeError, match="key_material must be bytes"):
        kdf.derive("0" * 32, label=labels.TEST_VECTOR)  # type: ignore[arg-type]
