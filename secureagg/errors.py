"""The whole exception hierarchy of secureagg.

Three families, so that callers can catch what they can act on:

* **Misuse** (:class:`ConfigurationError`, :class:`InvalidInputError` and friends) subclass
  :class:`ValueError` or :class:`TypeError`. Their messages say what to change.
* **Cryptographic failures** (:class:`InvalidCiphertext`, :class:`InvalidSignature`,
  :class:`TamperedShareError`) are opaque: the message is fixed and carries nothing derived from
  secret data, so that an error cannot become an oracle.
* **Protocol failures** (:class:`ProtocolError` and its subclasses) carry the protocol ``stage`` and
  the ``node_ids`` involved, so a driver can tell which party misbehaved or dropped.

Everything derives from :class:`SecureAggError`.

What a party tells another about its *own* failure (a client's or node's report, a mod's error
reply) is :func:`failure_report`: the exception's type name and the stage, never its message,
which the user's code wrote and which may quote the party's data; the full text stays in the
party's own log. Only a secureagg error marked with :func:`fixed_message` (a fixed sentence with
public facts only) keeps its text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = [
    "ConfigurationError",
    "ConsistencyError",
    "CryptoError",
    "HeadroomError",
    "InsufficientSurvivors",
    "InvalidCiphertext",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidShareError",
    "InvalidSignature",
    "MalformedMessage",
    "MissingDependencyError",
    "NonFiniteInputError",
    "PrivacyBudgetExceeded",
    "ProtocolError",
    "SecureAggError",
    "TamperedShareError",
    "UnknownLabelError",
    "describe_exception",
    "failure_report",
    "fixed_message",
]

_log = logging.getLogger(__name__)


class SecureAggError(Exception):
    """Base class of every error raised on purpose by secureagg.

    ``public_message``: the message is a fixed sentence that holds nothing but public facts, so a
    party may send it to another in :func:`failure_report` (set by :func:`fixed_message`).
    """

    public_message: bool = False


# --------------------------------------------------------------------------------------- misuse


class ConfigurationError(SecureAggError, ValueError):
    """Invalid or unsafe parameters, detected at construction time.

    Validation collects *every* problem and raises once; ``problems`` lists them, and the message
    joins them so that a user can fix all at once.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = "invalid parameters:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class HeadroomError(ConfigurationError):
    """A sum of encoded values could overflow the modulus.

    ``max_safe_summands`` and ``max_safe_clip`` say what would fit (``None`` when nothing does).
    """

    def __init__(
        self,
        problems: str | Sequence[str],
        *,
        max_safe_summands: int | None = None,
        max_safe_clip: float | None = None,
    ) -> None:
        super().__init__(problems)
        self.max_safe_summands = max_safe_summands
        self.max_safe_clip = max_safe_clip


class UnknownLabelError(SecureAggError, ValueError):
    """A KDF or PRG was called with a label that is not registered in ``crypto.labels``."""


class InvalidInputError(SecureAggError, ValueError):
    """Input data that cannot be processed (wrong shape, dtype, length, ...)."""


class MalformedMessage(InvalidInputError):  # noqa: N818 - reads as a noun, like InvalidCiphertext
    """Bytes from another party that do not decode to a valid message (codec level)."""


class NonFiniteInputError(InvalidInputError):
    """NaN or Inf in an update. Raised on the client before anything is sent."""


class InvalidKeyError(SecureAggError, ValueError):
    """A key of the wrong length or type, a low-order X25519 point, or a duplicate key."""


class InvalidShareError(SecureAggError, ValueError):
    """Malformed, duplicate, zero-index or too few secret shares, or bad sharing parameters."""


class MissingDependencyError(SecureAggError, ImportError):
    """An optional dependency is not installed. The message names the extra to install."""

    def __init__(self, package: str, extra: str, *, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is needed{what} but is not installed; "
            f"install it with: pip install 'secureagg[{extra}]'"
        )


# ------------------------------------------------------------------------------- crypto (opaque)


class CryptoError(SecureAggError):
    """Base of opaque cryptographic failures. Messages never depend on secret data."""

    public_message = True


class InvalidCiphertext(CryptoError):  # noqa: N818 - the name is part of the public contract
    """Decryption failed: wrong key, tampered, truncated or misaddressed ciphertext.

    Deliberately opaque: every failure mode gives the same type and message.
    """

    def __init__(self) -> None:
        super().__init__("invalid ciphertext")


class InvalidSignature(CryptoError):  # noqa: N818 - the name is part of the public contract
    """A signature did not verify."""

    def __init__(self) -> None:
        super().__init__("invalid signature")


class TamperedShareError(CryptoError):
    """More than ``t`` shares were given and they do not lie on one polynomial."""

    def __init__(self) -> None:
        super().__init__("secret shares are inconsistent: at least one share was tampered with")


# ------------------------------------------------------------------------------------ protocols


class ProtocolError(SecureAggError):
    """A protocol rule was broken. ``stage`` and ``node_ids`` say where and by whom."""

    def __init__(self, message: str, *, stage: str, node_ids: Iterable[int] = ()) -> None:
        self.stage = stage
        self.node_ids: tuple[int, ...] = tuple(node_ids)
        ids = f" (nodes {list(self.node_ids)})" if self.node_ids else ""
        super().__init__(f"[stage {stage}] {message}{ids}")


class InsufficientSurvivors(ProtocolError):  # noqa: N818 - the name is part of the public contract
    """Fewer than the threshold of clients remain; no aggregate is produced."""

    def __init__(
        self, *, stage: str, survivors: int, threshold: int, node_ids: Iterable[int] = ()
    ) -> None:
        self.survivors = survivors
        self.threshold = threshold
        super().__init__(
            f"only {survivors} clients remain, fewer than the threshold {threshold}; "
            "the round is aborted and no aggregate is released",
            stage=stage,
            node_ids=node_ids,
        )


class ConsistencyError(ProtocolError):
    """Parties were shown different views (survivor lists, models); the client aborts."""


# ------------------------------------------------------------------------------------- privacy


class PrivacyBudgetExceeded(SecureAggError):  # noqa: N818 - reads as what happened, like the others
    """The next DP step or round would spend more than ``max_epsilon``, so it did not run.

    Nothing was released for it. ``spent`` is ε so far and ``would_be`` ε had it run (both at
    ``delta``); ``unit`` is ``"step"`` or ``"round"`` and ``index`` its 0-based number.
    """

    def __init__(
        self,
        message: str,
        *,
        spent: float,
        would_be: float,
        max_epsilon: float,
        delta: float,
        unit: str,
        index: int,
    ) -> None:
        self.spent = spent
        self.would_be = would_be
        self.max_epsilon = max_epsilon
        self.delta = delta
        self.unit = unit
        self.index = index
        super().__init__(message)


# ------------------------------------------------------------------- what a party says of itself

_E = TypeVar("_E", bound=SecureAggError)


def fixed_message(exc: _E) -> _E:
    """Mark ``exc`` (a secureagg error) as one whose message is a fixed sentence with public facts
    only (no value, file name or row of anyone's data), so :func:`failure_report` may send it.

    >>> failure_report(fixed_message(ConfigurationError("no round in progress")), stage="step")
    'ConfigurationError at stage step: no round in progress'
    """
    exc.public_message = True
    return exc


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` on one line (``"Type"`` alone for an empty message): the full text,
    for the party's own log and for errors raised to the local user - never for another party.

    >>> describe_exception(ValueError("bad   row"))
    'ValueError: bad row'
    """
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_report(exc: BaseException, *, stage: str, party: object = None) -> str:
    """What a party may tell another party about its own failure ``exc`` at ``stage``:
    ``"<Type> at stage <stage>"``, plus ``": <message>"`` only for a secureagg error whose
    message is fixed and public (:func:`fixed_message`, :class:`CryptoError`). The message of
    anything else - the user's train function, data loader or model, and our own checks of the
    party's data, which may quote a value, a file name or a row - is logged here, in the party's
    own process (logger ``secureagg.errors``, level WARNING, with the traceback), and never
    returned. ``party`` only labels the log line.

    >>> failure_report(ValueError("SECRET-ROW-42"), stage="train")
    'ValueError at stage train'
    """
    name = type(exc).__name__
    if isinstance(exc, SecureAggError) and exc.public_message:
        text = " ".join(str(exc).split())
        return f"{name} at stage {stage}: {text}" if text else f"{name} at stage {stage}"
    who = "" if party is None else f"party {party}: "
    _log.warning("%sfailed at stage %s (%s); the report to the other parties names only the "
                 "type and the stage", who, stage, describe_exception(exc), exc_info=exc)
    return f"{name} at stage {stage}"
