"""Parameters of SecAgg / SecAgg+: graph degree ``k``, Shamir threshold ``t``, bit width.

:func:`choose_parameters` follows the analysis of Bell et al. 2020 (SecAgg+, eprint 2020/704)
for a Harary graph whose ring order is a pseudorandom permutation fixed by the session:

* **Security (2^-40, "sigma = 40" statistical security).** The adversary corrupts the server and a
  fraction ``corrupt_rate`` of the clients *before* the graph is drawn, so the number of corrupted
  neighbours of a client is (at most) Binomial(k, corrupt_rate). ``c_k`` is the smallest count with
  ``n * P[Bin(k, corrupt_rate) > c_k] <= 2^-40``. Then
  - semi-honest ("curious") server: ``t > c_k`` - the corrupted neighbours alone hold fewer than
    ``t`` shares of any secret;
  - malicious server: ``t > (k + 1 + c_k) / 2`` - the server cannot obtain ``t`` shares of both
    secrets of one client by showing different survivor sets to different honest neighbours
    (Bonawitz et al. 2017, section 6, applied to each neighbourhood of size ``k + 1``).
  The honest survivors' subgraph must also stay connected, otherwise the server learns partial
  sums: a Harary graph H(k, n) loses connectivity only if ``k/2`` consecutive ring positions are
  all dropped or corrupted, so we require ``n * (dropout_rate + corrupt_rate)^(k/2) <= 2^-40``.
* **Correctness (2^-20).** A client's secrets are recoverable when at least ``t`` of its ``k``
  neighbours survive: ``n * P[Bin(k, 1 - dropout_rate) < t] <= 2^-20``. (A client also keeps one
  share of its own secrets, so a *surviving* client's self-mask needs only ``t - 1`` surviving
  neighbours; the bound counts neighbours only and is conservative. A round with exactly ``t``
  survivors completes: ``t`` survivors hold ``t`` shares.)

The smallest even ``k`` meeting all conditions is chosen, with the smallest secure ``t``. When no
``k < n - 1`` does, the complete graph (plain SecAgg, ``k = n - 1``) is used. For the complete
graph the corrupted count is the worst case ``ceil(corrupt_rate * n)`` rather than a tail bound,
and the thresholds become the classic ones: curious ``t > c``, malicious ``t > (n + c) / 2``.
Small ``n`` cannot reach the 2^-20 correctness target; the achieved failure probability is then
reported in :attr:`SecAggParams.failure_probability` (a correctness, not a privacy, shortfall).

>>> p = choose_parameters(num_clients=100, dropout_rate=0.1, corrupt_rate=0.05)
>>> p.degree < 99 and p.threshold <= p.degree
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from secureagg.errors import ConfigurationError
from secureagg.validation import is_int, is_rate

__all__ = [
    "CORRECTNESS_BITS",
    "SECURITY_BITS",
    "SecAggParams",
    "binomial_cdf",
    "choose_parameters",
    "validate_parameters",
]

SECURITY_BITS = 40
CORRECTNESS_BITS = 20
Threat = Literal["curious", "malicious"]


@dataclass(frozen=True)
class SecAggParams:
    """Validated protocol parameters. Build with :func:`choose_parameters`."""

    num_clients: int
    degree: int  #: neighbours per client (n - 1 for the complete graph)
    threshold: int  #: Shamir threshold t: shares needed to recover a secret
    threat: Threat
    corrupted_neighbours: int  #: c_k, the assumed bound on corrupted neighbours
    failure_probability: float  #: bound on P[some client's secrets are unrecoverable]
    security_failure: float  #: bound on P[a security condition fails] (0 when worst-case)
    min_survivors: int  #: fewer clients in the sum than this aborts the round (t <= it <= n)

    @property
    def complete(self) -> bool:
        """True for plain SecAgg (every client neighbours every other)."""
        return self.degree == self.num_clients - 1


_EXACT_BINOMIAL = 1000  # up to this k, C(k, i) is an exact integer that fits a float


def _pmf(k: int, p: float, i: int) -> float:
    """P[Bin(k, p) = i]: exact coefficients for small ``k``, log space (lgamma) beyond, where
    ``C(k, i)`` no longer fits a float (it overflowed at n = 3000 in malicious mode)."""
    q = 1.0 - p
    if k <= _EXACT_BINOMIAL:
        return float(math.comb(k, i) * p**i * q ** (k - i))
    if (p == 0.0 and i > 0) or (q == 0.0 and i < k):
        return 0.0
    log = math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
    log += (i * math.log(p) if i else 0.0) + ((k - i) * math.log(q) if k - i else 0.0)
    return math.exp(log)


def binomial_cdf(k: int, p: float, x: int) -> float:
    """P[Bin(k, p) <= x], by direct summation."""
    if x < 0:
        return 0.0
    if x >= k:
        return 1.0
    return min(1.0, math.fsum(_pmf(k, p, i) for i in range(x + 1)))


def _tail_above(k: int, p: float, x: int) -> float:
    """P[Bin(k, p) > x] computed directly (no cancellation for tiny tails)."""
    if x >= k:
        return 0.0
    return min(1.0, math.fsum(_pmf(k, p, i) for i in range(max(x + 1, 0), k + 1)))


def _corrupted_bound(n: int, k: int, corrupt_rate: float, *, complete: bool) -> tuple[int, float]:
    if corrupt_rate <= 0:
        return 0, 0.0
    if complete:
        return min(math.ceil(corrupt_rate * n - 1e-9), n), 0.0
    budget = 2.0**-SECURITY_BITS / n
    for c in range(k + 1):
        tail = _tail_above(k, corrupt_rate, c)
        if tail <= budget:
            return c, n * tail
    return k, 0.0


def _min_threshold(k: int, c: int, threat: Threat) -> int:
    if threat == "curious":
        return max(2, c + 1)
    return max(2, (k + 1 + c) // 2 + 1)


def _failure(n: int, k: int, t: int, dropout_rate: float) -> float:
    # A client needs t of its k neighbours alive; union bound over the n clients.
    return min(1.0, n * binomial_cdf(k, 1.0 - dropout_rate, t - 1))


def _validate_rates(n: int, dropout_rate: float, corrupt_rate: float, threat: str) -> list[str]:
    problems = []
    if not is_int(n) or n < 2:
        problems.append(f"num_clients must be an integer >= 2, got {n!r}")
    if not is_rate(dropout_rate):
        problems.append(f"dropout_rate must be a real number in [0, 1), got {dropout_rate!r}")
    if not is_rate(corrupt_rate):
        problems.append(f"corrupt_rate must be a real number in [0, 1), got {corrupt_rate!r}")
    if threat not in ("curious", "malicious"):
        problems.append(f"threat must be 'curious' or 'malicious', got {threat!r}")
    return problems


def _probability_text(bound: float) -> str:
    """A union bound as a probability: never printed above 1."""
    return f"probability up to {bound:.2e}" if bound < 1.0 else "a probability bound of 1 (certain)"


def validate_parameters(
    *,
    num_clients: int,
    degree: int,
    threshold: int,
    corrupt_rate: float,
    dropout_rate: float,
    threat: Threat,
    min_survivors: int | None = None,
) -> SecAggParams:
    """Check explicit ``k`` and ``t``; collect every problem and raise one ConfigurationError.

    Only what the caller passed is judged: a quantity derived from an invalid parameter (the
    graph's disconnection bound for an invalid degree, a default ``min_survivors`` from an
    invalid threshold) is not reported on top of the invalid parameter itself.
    ``min_survivors`` (default ``t``) must lie in ``[t, n]``: fewer than ``t`` survivors can never
    reconstruct a self-mask seed, so a smaller value would promise rounds that always abort.
    """
    n, k, t = num_clients, degree, threshold
    problems = _validate_rates(n, dropout_rate, corrupt_rate, threat)
    if problems:
        raise ConfigurationError(problems)
    dropout_rate, corrupt_rate = float(dropout_rate), float(corrupt_rate)
    k_ok = is_int(k) and 1 <= k <= n - 1
    if not k_ok:
        problems.append(f"degree k must be an integer in [1, {n - 1}] for {n} clients, got {k!r}")
    complete = k_ok and k == n - 1
    if k_ok and not complete and k % 2:
        problems.append(f"degree k={k} must be even for the sparse Harary graph (or n - 1)")
        k_ok = False
    t_ok = is_int(t)
    if not t_ok:
        problems.append(f"threshold t must be an integer, got {t!r}")
    elif t < 2:
        problems.append(f"threshold t={t} is below 2: a single share would reveal a secret")
        t_ok = False
    elif t > n:
        problems.append(f"threshold t={t} exceeds the number of clients n={n}")
        t_ok = False
    elif k_ok and t > k:
        problems.append(
            f"threshold t={t} exceeds the degree k={k}: a client's shares go to its k neighbours "
            "and itself, and a dropped client's to its k neighbours"
        )
        t_ok = False
    c, sec_fail = (0, 0.0)
    if k_ok:
        c, sec_fail = _corrupted_bound(n, k, corrupt_rate, complete=complete)
    if k_ok and t_ok:
        group = n if complete else k + 1
        if threat == "curious" and t <= c:
            problems.append(
                f"threshold t={t} is unsafe against a curious server with up to {c} corrupted "
                f"clients in a neighbourhood: t must exceed {c} (use t >= {c + 1})"
            )
        if threat == "malicious" and 2 * t <= group + c:
            need = (group + c) // 2 + 1
            problems.append(
                f"threshold t={t} is unsafe against a malicious server: t must exceed "
                f"(group + corrupted)/2 = ({group} + {c})/2 (use t >= {need})"
            )
    if k_ok and not complete and dropout_rate + corrupt_rate > 0:
        disc = min(1.0, n * (dropout_rate + corrupt_rate) ** (k / 2))
        sec_fail = max(sec_fail, disc)
        if disc > 2.0**-SECURITY_BITS:
            problems.append(
                f"degree k={k} is too small: the honest survivors' graph may disconnect (union "
                f"bound: {_probability_text(disc)}, target 2^-{SECURITY_BITS}); raise k or use "
                "the complete graph"
            )
    ms = min_survivors
    if ms is not None:
        if not is_int(ms):
            problems.append(f"min_survivors must be an integer, got {ms!r}")
        elif ms > n:
            problems.append(f"min_survivors={ms} exceeds the number of clients n={n}")
        elif ms < 1:
            problems.append(f"min_survivors={ms} is below 1")
        elif t_ok and ms < t:
            problems.append(
                f"min_survivors={ms} is below the threshold t={t}: fewer than t survivors never "
                "hold t shares of a self-mask, so such a round always aborts (use "
                f"min_survivors >= {t})"
            )
    if problems:
        raise ConfigurationError(problems)
    return SecAggParams(
        num_clients=n,
        degree=k,
        threshold=t,
        threat=threat,
        corrupted_neighbours=c,
        failure_probability=_failure(n, k, t, dropout_rate),
        security_failure=sec_fail,
        min_survivors=t if ms is None else ms,
    )


def choose_parameters(
    *,
    num_clients: int,
    dropout_rate: float = 0.1,
    corrupt_rate: float = 0.05,
    threat: Threat = "curious",
    complete_graph: bool = False,
) -> SecAggParams:
    """Pick ``k`` and ``t`` for ``num_clients`` as described in the module docstring."""
    n = num_clients
    problems = _validate_rates(n, dropout_rate, corrupt_rate, threat)
    if problems:
        raise ConfigurationError(problems)
    target = 2.0**-CORRECTNESS_BITS
    if not complete_graph:
        for k in range(2, n - 1, 2):
            c, _ = _corrupted_bound(n, k, corrupt_rate, complete=False)
            t = _min_threshold(k, c, threat)
            if t > k:
                continue
            disc = n * (dropout_rate + corrupt_rate) ** (k / 2)
            if disc > 2.0**-SECURITY_BITS:
                continue
            if _failure(n, k, t, dropout_rate) > target:
                continue
            return validate_parameters(
                num_clients=n,
                degree=k,
                threshold=t,
                corrupt_rate=corrupt_rate,
                dropout_rate=dropout_rate,
                threat=threat,
            )
    # Complete graph: the smallest secure t maximises tolerance to dropouts.
    k = n - 1
    c, _ = _corrupted_bound(n, k, corrupt_rate, complete=True)
    t = _min_threshold(n - 1, c, threat) if threat == "curious" else max(2, (n + c) // 2 + 1)
    if t > k:
        raise ConfigurationError(
            f"no secure threshold exists for {n} clients with corrupt_rate={corrupt_rate} "
            f"under a {threat} server (need t={t} <= {k}); add clients or lower corrupt_rate"
        )
    return validate_parameters(
        num_clients=n,
        degree=k,
        threshold=t,
        corrupt_rate=corrupt_rate,
        dropout_rate=dropout_rate,
        threat=threat,
    )
