"""The exception hierarchy: three families, attributes, and messages that say what to do."""

from __future__ import annotations

import pytest

from secureagg import errors
from secureagg.errors import (
    ConfigurationError,
    ConsistencyError,
    CryptoError,
    HeadroomError,
    InsufficientSurvivors,
    InvalidCiphertext,
    InvalidInputError,
    InvalidKeyError,
    InvalidShareError,
    InvalidSignature,
    MissingDependencyError,
    NonFiniteInputError,
    ProtocolError,
    SecureAggError,
    TamperedShareError,
    UnknownLabelError,
)

MISUSE = [
    ConfigurationError,
    HeadroomError,
    UnknownLabelError,
    InvalidInputError,
    NonFiniteInputError,
    InvalidKeyError,
    InvalidShareError,
]
CRYPTO = [InvalidCiphertext, InvalidSignature, TamperedShareError]
PROTOCOL = [ProtocolError, InsufficientSurvivors, ConsistencyError]


def test_all_exports_exist_and_derive_from_base() -> None:
    assert set(errors.__all__) >= {cls.__name__ for cls in MISUSE + CRYPTO + PROTOCOL}
    # besides the hierarchy, exactly the helpers for what a party says of its own failure
    helpers = {"describe_exception", "failure_report", "fixed_message"}
    assert {n for n in errors.__all__ if not isinstance(getattr(errors, n), type)} == helpers
    for name in set(errors.__all__) - helpers:
        cls = getattr(errors, name)
        assert isinstance(cls, type)
        assert issubclass(cls, SecureAggError), name
        assert issubclass(cls, Exception)


@pytest.mark.parametrize("cls", MISUSE, ids=lambda c: c.__name__)
def test_misuse_errors_are_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ValueError)
    assert not issubclass(cls, CryptoError)
    assert not issubclass(cls, ProtocolError)


def test_misuse_subfamilies() -> None:
    assert issubclass(HeadroomError, ConfigurationError)
    assert issubclass(NonFiniteInputError, InvalidInputError)


@pytest.mark.parametrize("cls", CRYPTO, ids=lambda c: c.__name__)
def test_crypto_errors_are_opaque_family(cls: type[Exception]) -> None:
    # Not a ValueError: an `except ValueError` around misuse must not swallow a forgery.
    assert issubclass(cls, CryptoError)
    assert not issubclass(cls, ValueError)
    assert not issubclass(cls, ProtocolError)


@pytest.mark.parametrize("cls", PROTOCOL, ids=lambda c: c.__name__)
def test_protocol_errors_family(cls: type[Exception]) -> None:
    assert issubclass(cls, ProtocolError)
    assert not issubclass(cls, ValueError)
    assert not issubclass(cls, CryptoError)


# ----------------------------------------------------------------------------- opaque errors


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (InvalidCiphertext, "invalid ciphertext"),
        (InvalidSignature, "invalid signature"),
        (
            TamperedShareError,
            "secret shares are inconsistent: at least one share was tampered with",
        ),
    ],
    ids=["InvalidCiphertext", "InvalidSignature", "TamperedShareError"],
)
def test_opaque_errors_have_a_constant_message(cls: type[Exception], message: str) -> None:
    first, second = cls(), cls()
    assert str(first) == str(second) == message
    assert first.args == (message,)


@pytest.mark.parametrize("cls", CRYPTO, ids=lambda c: c.__name__)
def test_opaque_errors_take_no_message(cls: type[Exception]) -> None:
    # Nothing derived from a key or plaintext can be put into an opaque error.
    with pytest.raises(TypeError):
        cls("secret key was 0x1234")


# ------------------------------------------------------------------------- configuration


def test_configuration_error_single_problem() -> None:
    err = ConfigurationError("threshold t=1 is below 2; use t >= 2")
    assert str(err) == "threshold t=1 is below 2; use t >= 2"
    assert err.problems == ("threshold t=1 is below 2; use t >= 2",)


def test_configuration_error_single_problem_in_a_list() -> None:
    err = ConfigurationError(["clip must be > 0"])
    assert str(err) == "clip must be > 0"
    assert err.problems == ("clip must be > 0",)


def test_configuration_error_joins_several_problems() -> None:
    problems = ["threshold t=1 is below 2", "num_clients=0 must be >= 2", "bits=7 not supported"]
    err = ConfigurationError(problems)
    assert err.problems == tuple(problems)
    assert str(err) == (
        "invalid parameters:\n"
        "  - threshold t=1 is below 2\n"
        "  - num_clients=0 must be >= 2\n"
        "  - bits=7 not supported"
    )


def test_configuration_error_accepts_any_sequence_and_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="  - b") as info:
        raise ConfigurationError(("a", "b"))
    assert isinstance(info.value, ConfigurationError)
    assert info.value.problems == ("a", "b")


def test_headroom_error_attributes() -> None:
    err = HeadroomError(
        "100 clients at clip 1.0 overflow 2^16", max_safe_summands=40, max_safe_clip=0.25
    )
    assert err.max_safe_summands == 40
    assert err.max_safe_clip == 0.25
    assert err.problems == ("100 clients at clip 1.0 overflow 2^16",)
    assert str(err) == "100 clients at clip 1.0 overflow 2^16"
    assert isinstance(err, ConfigurationError)
    assert isinstance(err, ValueError)


def test_headroom_error_defaults_to_none() -> None:
    err = HeadroomError(["a", "b"])
    assert err.max_safe_summands is None
    assert err.max_safe_clip is None
    assert str(err).startswith("invalid parameters:\n")


# ------------------------------------------------------------------------ missing dependency


def test_missing_dependency_is_import_error_naming_the_extra() -> None:
    err = MissingDependencyError("tenseal", "he", purpose="CKKS aggregation")
    assert isinstance(err, ImportError)
    assert isinstance(err, SecureAggError)
    assert err.package == "tenseal"
    assert err.extra == "he"
    assert str(err) == (
        "tenseal is needed for CKKS aggregation but is not installed; "
        "install it with: pip install 'secureagg[he]'"
    )


def test_missing_dependency_without_purpose() -> None:
    err = MissingDependencyError("opacus", "dp")
    assert (
        str(err)
        == "opacus is needed but is not installed; install it with: pip install 'secureagg[dp]'"
    )


def test_missing_dependency_is_caught_by_except_import_error() -> None:
    with pytest.raises(ImportError, match=r"secureagg\[flower\]"):
        raise MissingDependencyError("flwr", "flower")


# ------------------------------------------------------------------------------- protocol


def test_protocol_error_carries_stage_and_node_ids() -> None:
    err = ProtocolError("masked input arrived after dropout", stage="masked", node_ids=[3, 5])
    assert err.stage == "masked"
    assert err.node_ids == (3, 5)
    assert str(err) == "[stage masked] masked input arrived after dropout (nodes [3, 5])"


def test_protocol_error_accepts_any_iterable_of_ids() -> None:
    err = ProtocolError("x", stage="share", node_ids=(i for i in (7, 1)))
    assert err.node_ids == (7, 1)
    assert "(nodes [7, 1])" in str(err)


def test_protocol_error_without_nodes() -> None:
    err = ProtocolError("message out of stage", stage="advertise")
    assert err.node_ids == ()
    assert str(err) == "[stage advertise] message out of stage"


def test_protocol_error_stage_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x", "advertise")  # type: ignore[call-arg]


def test_insufficient_survivors_attributes_and_message() -> None:
    err = InsufficientSurvivors(stage="unmask", survivors=3, threshold=5, node_ids=[1, 2, 4])
    assert isinstance(err, ProtocolError)
    assert (err.stage, err.survivors, err.threshold, err.node_ids) == ("unmask", 3, 5, (1, 2, 4))
    message = str(err)
    assert message.startswith("[stage unmask] only 3 clients remain, fewer than the threshold 5")
    assert "no aggregate is released" in message
    assert message.endswith("(nodes [1, 2, 4])")


def test_consistency_error_is_a_protocol_error() -> None:
    err = ConsistencyError("survivor lists differ", stage="consistency", node_ids=[2])
    assert isinstance(err, ProtocolError)
    assert err.stage == "consistency"
    assert err.node_ids == (2,)
    assert str(err) == "[stage consistency] survivor lists differ (nodes [2])"
