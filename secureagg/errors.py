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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
]


class SecureAggError(Exception):
    """Base class of every error raised on purpose by secureagg."""


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
