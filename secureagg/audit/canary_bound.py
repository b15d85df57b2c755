"""The statistics of a one-run canary audit: guesses, their p-value, and an ε lower bound.

Steinke, Nasr and Jagielski, "Privacy auditing with one (1) training run" (NeurIPS 2023,
arXiv 2305.08846). ``m`` canaries are each included in the training data independently with
probability 1/2; after training, an auditor looks only at the output (the model), guesses
"included" for ``k+`` canaries and "excluded" for ``k-`` others and abstains on the rest:
``r = k+ + k-`` guesses (fixed in advance), of which ``v`` are correct.

* **Pure ε-DP** (the main theorem at δ = 0): if the training is ε-DP with respect to each canary,
  ``P[V >= v] <= f_ε(v) = P[Binomial(r, e^ε / (1 + e^ε)) >= v]``: the auditor does no better than
  ``r`` coin flips that each come up right with probability ``e^ε / (1 + e^ε)``.
* **(ε, δ)-DP** (the theorem's δ-aware form, Theorem 3 of the arXiv version; the formula is the
  one of the paper's own reference code, ``p_value_DP_audit``):
  ``P[V >= v] <= f_ε(v) + 2 m δ max_{i = 1..v} (f_ε(v - i) - f_ε(v)) / i`` (capped at 1);
  ``m`` is the number of canaries, every one of which could spend the δ.

:func:`p_value` is that bound, computed exactly: every binomial probability from
``math.comb`` in log space (``log C(r, k) + k log q + (r - k) log(1 - q)``, with ``log q`` and
``log(1 - q)`` through ``log1p`` so that large ε loses nothing), no normal approximation.

:func:`epsilon_lower_bound` is the largest ε at which the observed ``v`` would have probability at
most ``1 - confidence``: the test rejects "the training is (ε, δ)-DP" for that ε, and for every
smaller one (an (ε, δ)-DP mechanism is (ε', δ)-DP for all ε' >= ε). The search is monotone by
construction: it keeps ``lo`` with ``p(lo) <= 1 - confidence`` (checked exactly) and ``hi`` with
``p(hi) > 1 - confidence`` and bisects to a width of 1e-9. With δ = 0 the p-value increases with ε
(a binomial tail increases with its success probability), so the answer is *the* largest such ε.
With δ > 0 the p-value need not be monotone in ε; since it is at least the pure tail, every ε
with ``p <= 1 - confidence`` lies below the pure bound, which is scanned downwards on a grid of
0.01 for the last ε that passes, then refined by bisection: the answer is always an ε that passes
(a valid bound), the largest up to the grid.

Choosing ``k+, k-`` after looking at the scores would invalidate the confidence: fix them in
advance, or try several and pay for it with a union (Bonferroni) bound - each at confidence
``1 - (1 - confidence) / tries`` (:func:`best_guesses`).

>>> round(epsilon_lower_bound(100, 100), 4)     # 100 right out of 100, pure DP, 95 %
3.493
>>> epsilon_lower_bound(100, 50)                  # a coin does as well: nothing is shown
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.validation import is_int, is_real

__all__ = [
    "Guesses",
    "best_guesses",
    "count_correct",
    "epsilon_lower_bound",
    "p_value",
]

#: bisection stops when the bracket is this narrow (in ε)
TOLERANCE = 1e-9
#: the grid of the downward scan under δ > 0 (in ε)
GRID_STEP = 0.01
#: log C(r, k) from math.comb's exact integers up to this r (0.1 s at r = 2000), lgamma above
EXACT_COMB_UP_TO = 2000


def _problems(
    guesses: int, correct: int, delta: float, confidence: float, canaries: int | None
) -> list[str]:
    out = []
    if not (is_int(guesses) and guesses >= 0):
        out.append(f"guesses must be an integer >= 0, got {guesses!r}")
    elif not (is_int(correct) and 0 <= correct <= guesses):
        out.append(f"correct must be an integer in [0, guesses = {guesses}], got {correct!r}")
    if not (is_real(delta) and 0.0 <= delta < 1.0):
        out.append(f"delta must be a number in [0, 1), got {delta!r}")
    elif delta > 0.0 and canaries is None:
        out.append("with delta > 0 the bound depends on the number of canaries m: give canaries=")
    if not (is_real(confidence) and 0.0 < confidence < 1.0):
        out.append(f"confidence must be a number in (0, 1), got {confidence!r}")
    if canaries is not None and not (
        is_int(canaries) and canaries >= (guesses if is_int(guesses) else 0)
    ):
        out.append(f"canaries must be an integer >= guesses ({guesses!r}), got {canaries!r}")
    return out


class _Tails:
    """The p-value of ``v`` correct out of ``r`` guesses as a function of ε (one r, v, m, δ)."""

    def __init__(self, r: int, v: int, m: int, delta: float) -> None:
        self.r, self.v, self.m, self.delta = r, v, m, delta
        if r <= EXACT_COMB_UP_TO:
            self.log_comb = np.array([math.log(math.comb(r, k)) for k in range(r + 1)])
        else:  # exact big integers cost O(r^2) digits; lgamma is within 1e-11 of their log
            k = np.arange(r + 1)
            self.log_comb = np.array(
                [math.lgamma(r + 1) - math.lgamma(i + 1) - math.lgamma(r - i + 1) for i in k]
            )
        self.k = np.arange(r + 1, dtype=np.float64)

    def pmf(self, epsilon: float) -> npt.NDArray[np.float64]:
        log_q = -math.log1p(math.exp(-epsilon))  # q = e^ε / (1 + e^ε)
        log_not_q = -epsilon + log_q  # 1 - q = 1 / (1 + e^ε)
        logs = self.log_comb + self.k * log_q + (self.r - self.k) * log_not_q
        return np.exp(logs)

    def __call__(self, epsilon: float) -> float:
        pmf = self.pmf(epsilon)
        v = self.v
        tail = math.fsum(pmf[v:])  # f(v) = P[B >= v]
        if self.delta == 0.0 or v == 0:
            return min(1.0, tail)
        # max over i = 1..v of P[v - i <= B <= v - 1] / i
        below = np.cumsum(pmf[v - 1 :: -1])  # below[i - 1] = P[v - i <= B <= v - 1]
        ratio = float(np.max(below / np.arange(1, v + 1)))
        return min(1.0, tail + 2.0 * self.m * self.delta * ratio)


def p_value(
    guesses: int,
    correct: int,
    epsilon: float,
    *,
    delta: float = 0.0,
    canaries: int | None = None,
) -> float:
    """The probability bound of ``correct`` or more right out of ``guesses`` under (ε, δ)-DP.

    The pure-ε bound (δ = 0) or the δ-aware one (δ > 0, needs ``canaries`` = m) of Steinke,
    Nasr and Jagielski 2023; see the module docstring.

    >>> p_value(10, 10, 0.0) == 0.5 ** 10
    True
    """
    problems = _problems(guesses, correct, delta, 0.5, canaries)
    if not (is_real(epsilon) and 0.0 <= float(epsilon) < math.inf):
        problems.append(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if problems:
        raise ConfigurationError(problems)
    m = guesses if canaries is None else canaries
    return _Tails(guesses, correct, m, float(delta))(float(epsilon))


def epsilon_lower_bound(
    guesses: int,
    correct: int,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
    canaries: int | None = None,
) -> float:
    """The ε lower bound at ``confidence`` from ``correct`` right out of ``guesses``.

    The largest ε such that ``p_value(guesses, correct, ε, delta=delta) <= 1 - confidence`` (0.0
    when even ε = 0 is not rejected). ``delta > 0`` uses the δ-aware form and needs
    ``canaries`` (m, the number of canaries inserted, of which ``guesses`` were guessed on).
    Monotone search, see the module docstring.

    >>> epsilon_lower_bound(10, 10) > epsilon_lower_bound(10, 9) > 0
    True
    """
    problems = _problems(guesses, correct, delta, confidence, canaries)
    if problems:
        raise ConfigurationError(problems)
    alpha = 1.0 - float(confidence)
    m = guesses if canaries is None else canaries
    pure = _Tails(guesses, correct, m, 0.0)
    if guesses == 0 or pure(0.0) > alpha:  # p >= the pure tail >= its value at ε = 0
        return 0.0
    hi = 1.0
    while pure(hi) <= alpha:  # the tail tends to 1 as ε grows (correct <= guesses)
        hi *= 2.0
    lo, hi = _bisect(pure, 0.0, hi, alpha)
    if float(delta) == 0.0:
        return lo
    # δ > 0: nothing above the pure bound passes (p >= the pure tail > alpha there); scan down
    tails = _Tails(guesses, correct, m, float(delta))
    upper = hi  # p(upper) > alpha throughout
    below = (GRID_STEP * i for i in range(math.floor(lo / GRID_STEP), -1, -1))
    for point in [lo, *(e for e in below if e < lo)]:
        if tails(point) <= alpha:
            return _bisect(tails, point, upper, alpha)[0]
        upper = point
    return 0.0


def _bisect(p: _Tails, lo: float, hi: float, alpha: float) -> tuple[float, float]:
    """From ``p(lo) <= alpha < p(hi)``, keep it so while halving the bracket down to
    :data:`TOLERANCE`; return ``(lo, hi)``."""
    while hi - lo > TOLERANCE:
        mid = 0.5 * (lo + hi)
        if p(mid) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo, hi


# --------------------------------------------------------------------------------- guesses


@dataclass(frozen=True)
class Guesses:
    """One choice of ``k+`` / ``k-`` applied to the scores, and the bound it gives."""

    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    #: the confidence this choice was evaluated at (after the union bound over the tries)
    confidence: float
    epsilon_lower_bound: float


def count_correct(
    scores: npt.ArrayLike, included: npt.ArrayLike, *, k_plus: int, k_minus: int
) -> tuple[int, int]:
    """``(r, v)``: guess "included" for the ``k_plus`` highest scores and "excluded" for the
    ``k_minus`` lowest, abstain on the rest; ``v`` counts the right guesses.

    Ties are ordered by canary index (the order in which the canaries were drawn, independent of
    who was included), so the guesses depend on the scores alone.

    >>> count_correct([0.9, 0.1, 0.5, 0.2], [True, False, True, True], k_plus=1, k_minus=1)
    (2, 2)
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included)
    problems = []
    if s.ndim != 1 or inc.shape != s.shape or inc.dtype != np.bool_:
        problems.append(
            f"scores and included must be 1-D of one length (included boolean), got shapes "
            f"{s.shape} and {inc.shape} ({inc.dtype})"
        )
    elif not np.all(np.isfinite(s)):
        problems.append(f"scores must be finite, got {int(np.sum(~np.isfinite(s)))} NaN/Inf")
    if not (is_int(k_plus) and is_int(k_minus) and k_plus >= 0 and k_minus >= 0):
        problems.append(f"k_plus and k_minus must be integers >= 0, got {k_plus!r}, {k_minus!r}")
    elif k_plus + k_minus > s.size:
        problems.append(f"k_plus + k_minus = {k_plus + k_minus} exceeds the {s.size} canaries")
    if problems:
        raise InvalidInputError("; ".join(problems))
    order = np.lexsort((np.arange(s.size), s))  # ascending score, ties by index
    top = order[s.size - k_plus :] if k_plus else order[:0]
    bottom = order[:k_minus]
    correct = int(np.sum(inc[top])) + int(np.sum(~inc[bottom]))
    return k_plus + k_minus, correct


def best_guesses(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    choices: Sequence[tuple[int, int]],
    *,
    confidence: float = 0.95,
    delta: float = 0.0,
) -> Guesses:
    """The best of ``choices`` (``(k+, k-)`` pairs fixed before the scores were seen), each
    evaluated at confidence ``1 - (1 - confidence) / len(choices)`` (a union bound over the
    tries), so the best of them holds at ``confidence``."""
    if not choices:
        raise ConfigurationError("give at least one (k_plus, k_minus) choice")
    m = int(np.asarray(scores).size)
    each = 1.0 - (1.0 - float(confidence)) / len(choices)
    tried = []
    for k_plus, k_minus in choices:
        r, v = count_correct(scores, included, k_plus=k_plus, k_minus=k_minus)
        bound = epsilon_lower_bound(
            r, v, delta=delta, confidence=each, canaries=m if delta > 0 else None
        )
        tried.append(Guesses(k_plus, k_minus, r, v, each, bound))
    return max(tried, key=lambda g: g.epsilon_lower_bound)  # the first of equals
