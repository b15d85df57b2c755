"""A party's votes for a batch of queries: encoding, validation, and the admissible set.

Every party (teacher) answers a batch of ``Q`` queries over ``C`` classes with a ``(Q, C)`` vote
matrix in *vote units*:

* ``"one-hot"`` - a 1 at the argmax of each row, 0 elsewhere (PATE's plurality vote);
* ``"top-k"`` - exactly ``top_k`` ones per row, at the ``top_k`` largest scores;
* ``"softmax"`` - the probability vector of each row, scaled down per row to L2 (or L1) norm at
  most ``clip`` (``clip_norm="l2"`` or ``"l1"``).

Before secure aggregation the votes become non-negative integers (:meth:`VoteSpec.to_integers`):
one-hot and top-k votes are integers already; softmax votes are multiplied by ``resolution`` and
rounded **down**. Rounding down a non-negative vector never increases any of its norms, so the
integer vote of a row keeps the bound ``||q||_2 <= resolution * clip`` (or ``||q||_1``) exactly,
with no probabilistic rounding argument.

**The admissible set** (what the accounting in :mod:`secureagg.ensemble.accounting` assumes of
one party's integer vote row): non-negative integers with ``||q||_2² <= l2_squared_bound`` and
``||q||_1 <= l1_bound``, plus the all-zero row (an abstention). :meth:`VoteSpec.validate` checks a
submitted matrix against it (and against the kind: exactly one 1 for one-hot, exactly ``top_k``
ones for top-k), *on the party's side*, before anything is sent: a malformed vote is refused
with a reason and the party takes no part in the batch. The server cannot check a masked vote;
see ``protocols/ensemble/spec.md`` for what that means against a malicious party.

>>> spec = VoteSpec("one-hot", num_classes=3)
>>> spec.encode(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])).tolist()
[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
>>> spec.validate(np.array([[0, 2, 0]]), num_queries=1)[1]
'not one-hot: a row has a value other than 0 or 1'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.validation import is_int, is_positive_real

__all__ = ["VOTE_KINDS", "VoteKind", "VoteSpec", "encode_votes"]

VoteKind = Literal["one-hot", "top-k", "softmax"]
VOTE_KINDS: tuple[str, ...] = ("one-hot", "top-k", "softmax")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MAX_RESOLUTION = 1 << 20  # keeps every integer vote and sum far inside 2^31


@dataclass(frozen=True)
class VoteSpec:
    """What a vote is: its kind, the number of classes and (softmax) its clip and resolution.

    ``top_k`` is used by ``"top-k"`` only (1 <= top_k < num_classes); ``clip``, ``clip_norm`` and
    ``resolution`` by ``"softmax"`` only: each row is scaled to ``||row||_{clip_norm} <= clip``
    (vote units), then the integer vote is ``floor(resolution * row)``.
    """

    kind: VoteKind
    num_classes: int
    top_k: int = 1
    clip: float = 1.0
    clip_norm: Literal["l2", "l1"] = "l2"
    resolution: int = 1024

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.kind not in VOTE_KINDS:
            problems.append(f"kind must be one of {VOTE_KINDS}, got {self.kind!r}")
        if not is_int(self.num_classes) or self.num_classes < 2:
            problems.append(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if self.kind == "top-k" and not (
            is_int(self.top_k) and is_int(self.num_classes) and 1 <= self.top_k < self.num_classes
        ):
            problems.append(f"top_k must be an integer in [1, num_classes), got {self.top_k!r}")
        if self.kind == "one-hot" and self.top_k != 1:
            problems.append("top_k is for kind='top-k'; one-hot votes have exactly one 1")
        if self.kind == "softmax":
            if not is_positive_real(self.clip):
                problems.append(f"clip must be a finite number > 0, got {self.clip!r}")
            if self.clip_norm not in ("l2", "l1"):
                problems.append(f"clip_norm must be 'l2' or 'l1', got {self.clip_norm!r}")
            if not is_int(self.resolution) or not 1 <= self.resolution <= _MAX_RESOLUTION:
                problems.append(
                    f"resolution must be an integer in [1, {_MAX_RESOLUTION}], got "
                    f"{self.resolution!r}"
                )
            elif is_positive_real(self.clip) and math.floor(self.resolution * self.clip) < 1:
                problems.append(
                    f"resolution * clip = {self.resolution * self.clip!r} < 1: every integer "
                    "vote would be 0; raise the resolution"
                )
        if problems:
            raise ConfigurationError(problems)

    # ----------------------------------------------------------------------------- the bounds

    @property
    def scale(self) -> int:
        """Integer units per vote unit (1 for one-hot and top-k votes, else ``resolution``)."""
        return self.resolution if self.kind == "softmax" else 1

    @property
    def l2_squared_bound(self) -> int:
        """``B2``: the largest ``||q||_2²`` of an admissible integer vote row (exact integer).

        one-hot 1; top-k ``k``; softmax with an L2 clip ``floor((resolution * clip)²)`` (an integer
        vector of real norm <= r*c has an integer squared norm <= (r*c)²); softmax with an L1 clip
        ``B1²`` (a non-negative vector's squared L2 norm is at most its squared L1 norm)."""
        if self.kind == "one-hot":
            return 1
        if self.kind == "top-k":
            return int(self.top_k)
        if self.clip_norm == "l1":
            return self.l1_bound**2
        exact = Fraction(self.resolution) * Fraction(float(self.clip))
        return math.floor(exact * exact)

    @property
    def l1_bound(self) -> int:
        """``B1``: the largest ``||q||_1`` of an admissible integer vote row (exact integer).

        one-hot 1; top-k ``k``; softmax with an L1 clip ``floor(resolution * clip)``; with an L2
        clip ``min(B2, floor(sqrt(C * B2)))`` (integers: ``|q_i| <= q_i²``; Cauchy-Schwarz)."""
        if self.kind == "one-hot":
            return 1
        if self.kind == "top-k":
            return int(self.top_k)
        if self.clip_norm == "l1":
            return math.floor(Fraction(self.resolution) * Fraction(float(self.clip)))
        b2 = self.l2_squared_bound
        return min(b2, math.isqrt(self.num_classes * b2))

    @property
    def max_value(self) -> int:
        """The largest integer of one vote coordinate (the per-value bound SecAgg encodes)."""
        if self.kind != "softmax":
            return 1
        # A probability is at most 1 and a clipped row's coordinate at most the clip.
        return min(
            self.resolution, math.floor(Fraction(self.resolution) * Fraction(float(self.clip)))
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready parameters, for ledgers and reports."""
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "top_k": self.top_k if self.kind == "top-k" else None,
            "clip": self.clip if self.kind == "softmax" else None,
            "clip_norm": self.clip_norm if self.kind == "softmax" else None,
            "resolution": self.scale,
            "l2_squared_bound_per_row": self.l2_squared_bound,
            "l1_bound_per_row": self.l1_bound,
        }

    # ---------------------------------------------------------------------------- party side

    def encode(self, outputs: npt.ArrayLike) -> FloatArray:
        """The vote matrix (vote units, ``(Q, C)`` float64) from a model's outputs ``(Q, C)``.

        For one-hot and top-k ``outputs`` are any scores (logits or probabilities; ties go to the
        lowest class index); one-hot also takes a vector of ``Q`` integer labels. For softmax they
        are probabilities (non-negative), clipped per row. Raises
        :class:`~secureagg.errors.InvalidInputError` for NaN/Inf, a wrong shape or (softmax)
        negative probabilities: nothing is sent.
        """
        x = np.asarray(outputs)
        c = self.num_classes
        if self.kind == "one-hot" and x.ndim == 1:
            if x.dtype.kind not in "iu" or ((x < 0) | (x >= c)).any():
                raise InvalidInputError(f"labels must be integers in [0, {c})")
            out = np.zeros((x.size, c), dtype=np.float64)
            out[np.arange(x.size), x.astype(np.int64)] = 1.0
            return out
        x = np.asarray(outputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != c:
            raise InvalidInputError(f"outputs must have shape (queries, {c}), got {x.shape}")
        if not np.isfinite(x).all():
            raise InvalidInputError("the model outputs contain NaN or Inf; no vote was made")
        if self.kind == "one-hot":
            out = np.zeros_like(x)
            out[np.arange(x.shape[0]), np.argmax(x, axis=1)] = 1.0
            return out
        if self.kind == "top-k":
            order = np.argsort(-x, axis=1, kind="stable")[:, : self.top_k]
            out = np.zeros_like(x)
            np.put_along_axis(out, order, 1.0, axis=1)
            return out
        if (x < 0).any():
            raise InvalidInputError("softmax votes must be non-negative probabilities")
        ord_ = 2 if self.clip_norm == "l2" else 1
        norms = np.linalg.norm(x, ord=ord_, axis=1)
        # Shrink by 2^-40 so that float rounding of ``resolution * vote`` can never lift the
        # rounded-down integer vote above the exact bound (validate() re-checks it anyway).
        limit = self.clip * (1.0 - 2.0**-40)
        factor = np.minimum(1.0, limit / np.maximum(norms, np.finfo(np.float64).tiny))
        clipped: FloatArray = x * factor[:, None]
        return clipped

    def to_integers(self, votes: FloatArray) -> IntArray:
        """``floor(scale * votes)`` as int64 (exact for one-hot and top-k)."""
        return np.floor(np.asarray(votes, dtype=np.float64) * self.scale).astype(np.int64)

    def validate(self, votes: object, *, num_queries: int) -> tuple[IntArray | None, str | None]:
        """``(integer votes, None)`` if ``votes`` is an admissible ``(num_queries, C)`` vote
        matrix, else ``(None, reason)``. Never raises for a malformed vote: the caller counts the
        party as absent (or abstaining) and records the reason.

        The reason names the rule broken, not the offending query or value.
        """
        try:
            x = np.asarray(votes, dtype=np.float64)
        except (TypeError, ValueError):
            return None, "not a numeric array"
        want = (num_queries, self.num_classes)
        if x.shape != want:
            return None, f"wrong shape: expected {want}, got {x.shape}"
        if not np.isfinite(x).all():
            return None, "non-finite value (NaN or Inf)"
        if (x < 0).any():
            return None, "negative value"
        if self.kind != "softmax":
            if not (x == np.round(x)).all() or (x > 1).any():
                kind = "one-hot" if self.kind == "one-hot" else f"top-{self.top_k}"
                return None, f"not {kind}: a row has a value other than 0 or 1"
            want_ones = 1 if self.kind == "one-hot" else self.top_k
            if not (x.sum(axis=1) == want_ones).all():
                kind = "one-hot" if self.kind == "one-hot" else f"top-{self.top_k}"
                return None, f"not {kind}: a row does not have exactly {want_ones} one(s)"
            return x.astype(np.int64), None
        if (x > 1).any():
            return None, "a probability above 1"
        q = self.to_integers(x)
        if int((q * q).sum(axis=1).max(initial=0)) > self.l2_squared_bound:
            return None, "a row exceeds the L2 bound"
        if int(q.sum(axis=1).max(initial=0)) > self.l1_bound:
            return None, "a row exceeds the L1 bound"
        return q, None


def encode_votes(
    kind: VoteKind,
    outputs: npt.ArrayLike,
    num_classes: int,
    *,
    top_k: int = 1,
    clip: float = 1.0,
    clip_norm: Literal["l2", "l1"] = "l2",
    resolution: int = 1024,
) -> FloatArray:
    """Shortcut for ``VoteSpec(kind, num_classes, ...).encode(outputs)``."""
    spec = VoteSpec(
        kind, num_classes, top_k=top_k, clip=clip, clip_norm=clip_norm, resolution=resolution
    )
    return spec.encode(outputs)
