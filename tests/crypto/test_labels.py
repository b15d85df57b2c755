"""The label registry: versioned, unique, prefix-free encodings, strict lookup."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from secureagg.crypto import labels
from secureagg.crypto.labels import Label
from secureagg.errors import UnknownLabelError

NAME_PATTERN = re.compile(r"secureagg/v[1-9][0-9]*(/[a-z0-9][a-z0-9-]*)+")

# Names that derived keys, masks and vectors already depend on (and the labels.py docstring shows).
# Renaming one silently changes every output derived under it; a new derivation gets a new,
# versioned label instead. Adding labels is fine and needs no change here.
PINNED = {
    "SELF_MASK": "secureagg/v1/secagg/self-mask",
    "PAIRWISE_MASK": "secureagg/v1/secagg/pairwise-mask",
    "PAIRWISE_SEED": "secureagg/v1/secagg/pairwise-seed",
    "SHARE_ENCRYPTION_KEY": "secureagg/v1/secagg/share-key",
    "TEST_VECTOR": "secureagg/v1/test/vector",
}


def test_registry_is_not_empty_and_holds_labels() -> None:
    assert len(labels.ALL_LABELS) >= len(PINNED)
    assert all(isinstance(label, Label) for label in labels.ALL_LABELS)


@pytest.mark.parametrize(("attribute", "name"), sorted(PINNED.items()))
def test_pinned_label_names(attribute: str, name: str) -> None:
    label = getattr(labels, attribute)
    assert label.name == name
    assert label in labels.ALL_LABELS


def test_every_name_is_versioned_ascii_path() -> None:
    for label in labels.ALL_LABELS:
        assert NAME_PATTERN.fullmatch(label.name), label.name
        assert label.name.isascii()


def test_every_label_states_its_purpose() -> None:
    for label in labels.ALL_LABELS:
        assert label.purpose.strip(), label.name


def test_names_and_encodings_are_unique() -> None:
    names = [label.name for label in labels.ALL_LABELS]
    assert len(set(names)) == len(names)
    assert len({label.encoded for label in labels.ALL_LABELS}) == len(names)
    assert len({id(label) for label in labels.ALL_LABELS}) == len(names)


def test_module_constants_are_the_registered_objects() -> None:
    constants = [v for v in vars(labels).values() if isinstance(v, Label)]
    assert {id(c) for c in constants} == {id(label) for label in labels.ALL_LABELS}


@pytest.mark.parametrize("label", labels.ALL_LABELS, ids=lambda lab: lab.name)
def test_lookup_returns_the_registered_object(label: Label) -> None:
    assert labels.lookup(label.name) is label
    assert labels.require(label.name) is label
    assert labels.require(label) is label


@pytest.mark.parametrize(
    "name",
    ["secureagg/v1/test/nope", "", "secureagg/v1/test/vector/", "SECUREAGG/V1/TEST/VECTOR"],
)
def test_lookup_unknown_name_raises(name: str) -> None:
    with pytest.raises(UnknownLabelError) as info:
        labels.lookup(name)
    message = str(info.value)
    assert repr(name) in message
    assert "secureagg/crypto/labels.py" in message  # says where to register it
    assert "secureagg/v1/test/vector" in message  # lists the known labels


def test_require_rejects_forged_and_foreign_objects() -> None:
    forged = Label(labels.TEST_VECTOR.name, labels.TEST_VECTOR.purpose)
    for bad in (
        forged,
        Label("secureagg/v1/x/y", "unregistered"),
        b"secureagg/v1/test/vector",
        None,
        1,
    ):
        with pytest.raises(UnknownLabelError, match="not a label registered"):
            labels.require(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", labels.ALL_LABELS, ids=lambda lab: lab.name)
def test_encoded_is_two_byte_length_prefix_then_name(label: Label) -> None:
    raw = label.name.encode("ascii")
    assert label.encoded == len(raw).to_bytes(2, "big") + raw
    assert int.from_bytes(label.encoded[:2], "big") == len(label.encoded) - 2


def test_encodings_are_prefix_free() -> None:
    # So that encoded(A) + context_A can never equal encoded(B) + context_B for A != B.
    for a, b in itertools.permutations(labels.ALL_LABELS, 2):
        assert not b.encoded.startswith(a.encoded), (a.name, b.name)


def test_encoded_example() -> None:
    assert labels.TEST_VECTOR.encoded == b"\x00\x18secureagg/v1/test/vector"


def test_label_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        labels.TEST_VECTOR.name = "secureagg/v1/other"  # type: ignore[misc]


def test_registration_refuses_unversioned_and_duplicate_names() -> None:
    before = dict(labels._REGISTRY)
    with pytest.raises(ValueError, match="not versioned"):
        labels._register("mask", "unversioned")
    with pytest.raises(ValueError, match="registered twice"):
        labels._register(labels.TEST_VECTOR.name, "duplicate")
    assert before == labels._REGISTRY
    assert labels.lookup(labels.TEST_VECTOR.name) is labels.TEST_VECTOR
