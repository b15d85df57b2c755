"""Rényi-DP curves of the integer mechanisms, subsampling, tail bounds and RDP -> (ε, δ).

Pure numpy and ``math``: no torch, no Opacus, so that distributed DP inside SecAgg can be accounted
on a server without the ``dp`` extra. The sampled *Gaussian* mechanism (DP-SGD, central DP) is
accounted by Opacus's own accountants in :mod:`secureagg.dp.accounting`; this module covers what
Opacus does not.

Theorems used (all RDP curves are for integer orders ``α >= 2``; ``Δ2``, ``Δ1`` are the L2 and L1
sensitivities of one client's *integer* contribution, in integer units):

* **Skellam** (Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially Private
  Federated Learning", arXiv 2110.04995, Theorem 3.5 and its corollary for sums of client
  shares): adding symmetric Skellam noise of variance ``μ`` per coordinate is ``(α, ε(α))``-RDP with
  ``ε(α) = α Δ2² / (2μ) + min(((2α - 1) Δ2² + 6 Δ1) / (4 μ²), 3 Δ1 / (2μ))``. A sum of independent
  Skellam shares is exactly Skellam, so ``μ`` is the summed variance of the shares that reached
  the aggregate.
* **Distributed discrete Gaussian** (Kairouz, Liu, Steinke 2021, arXiv 2102.06387, Theorem 1 and
  its RDP form, Proposition 14): the sum of ``n`` independent ``N_Z(0, σ²)`` shares satisfies
  ``ε(α) = min(α/2 · a² + τ d, α/2 · (a² + 2 b τ + τ² d), α/2 · (a + τ √d)²)`` with
  ``a = Δ2 / (√n σ)``, ``b = Δ1 / (√n σ)`` and ``τ = 10 Σ_{k=1}^{n-1} exp(-2π² σ² k / (k + 1))``.
  For ``σ >= 4`` integer units ``τ < 10^-130``: the curve is the Gaussian one.
* **Poisson subsampling of a general mechanism** (Zhu, Wang 2019, "Poisson Subsampled Rényi
  Differential Privacy", ICML, Theorem 6, the general upper bound for integer orders)::

      ε'(α) <= 1/(α-1) log[(1-q)^(α-1) (αq - q + 1) + C(α,2) q² (1-q)^(α-2) e^ε(2)
                           + 3 Σ_{l=3}^{α} C(α,l) q^l (1-q)^(α-l) e^((l-1) ε(l))]

  and we keep ``min(ε'(α), ε(α))``. Used for client sampling in distributed DP rounds.
* **RDP -> (ε, δ)** (Balle et al. 2020, "Hypothesis testing interpretations and Rényi DP",
  Theorem 21), the same conversion as Opacus's RDP accountant:
  ``ε = min_α ε(α) + log((α - 1)/α) - (log δ + log α)/(α - 1)``.
* **Rounding** (Kairouz et al. 2021, Theorem 2 / Agarwal et al. 2021): stochastic rounding of a
  vector of L2 norm ``c`` (integer units) in dimension ``d`` gives norm ``< c + √d`` always; the
  *conditional* rounding that retries until the norm is at most
  ``sqrt(c² + d/4 + sqrt(2 log(1/β)) (c + √d/2))`` succeeds with probability ``>= 1 - β`` per try.
  ``Δ1 <= Δ2 · min(√d, Δ2)`` for an integer vector.

>>> eps, order = rdp_to_epsilon(ORDERS, skellam_rdp(ORDERS, l2=1e6, l1=1e9, variance=1e12), 1e-5)
>>> 4.0 < eps < 5.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError

__all__ = [
    "ORDERS",
    "ddgauss_rdp",
    "poisson_subsampled_rdp",
    "rdp_to_epsilon",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "skellam_rdp",
    "skellam_tail_bound",
    "subgaussian_tail_bound",
]

#: Integer RDP orders used for the integer mechanisms (Skellam, DDG) and their compositions.
ORDERS: tuple[int, ...] = (*range(2, 129), 160, 192, 256, 384, 512)

FloatArray = npt.NDArray[np.float64]


def _orders(orders: Sequence[int]) -> list[int]:
    out = [int(a) for a in orders]
    if any(a < 2 or a != b for a, b in zip(out, orders, strict=True)):
        raise ConfigurationError(f"RDP orders here must be integers >= 2, got {list(orders)[:5]}")
    return out


def skellam_rdp(orders: Sequence[int], *, l2: float, l1: float, variance: float) -> FloatArray:
    """RDP of adding Skellam noise of total ``variance`` (Agarwal et al. 2021, Thm 3.5)."""
    out = np.empty(len(orders), dtype=np.float64)
    for i, a in enumerate(_orders(orders)):
        if variance <= 0:
            out[i] = math.inf
            continue
        mu = float(variance)
        out[i] = a * l2 * l2 / (2.0 * mu) + min(
            ((2 * a - 1) * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu), 3.0 * l1 / (2.0 * mu)
        )
    return out


def ddgauss_rdp(
    orders: Sequence[int],
    *,
    l2: float,
    l1: float,
    local_sigma: float,
    clients: int,
    dimension: int,
) -> FloatArray:
    """RDP of the sum of ``clients`` discrete Gaussian shares (Kairouz et al. 2021, Thm 1).

    The theorem holds for a local ``σ >= 1/2``; below it this returns infinity (no bound is
    claimed) rather than a figure outside the theorem's hypothesis."""
    out = np.empty(len(orders), dtype=np.float64)
    if local_sigma < 0.5 or clients < 1:
        out.fill(math.inf)
        return out
    tau = 10.0 * math.fsum(
        math.exp(-2.0 * (math.pi * local_sigma) ** 2 * (k / (k + 1))) for k in range(1, clients)
    )
    central = math.sqrt(clients) * local_sigma
    a2, b1 = l2 / central, l1 / central
    for i, a in enumerate(_orders(orders)):
        out[i] = min(
            a / 2.0 * a2 * a2 + tau * dimension,
            a / 2.0 * (a2 * a2 + 2.0 * b1 * tau + tau * tau * dimension),
            a / 2.0 * (a2 + math.sqrt(dimension) * tau) ** 2,
        )
    return out


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def poisson_subsampled_rdp(
    orders: Sequence[int], *, sample_rate: float, rdp: Callable[[int], float]
) -> FloatArray:
    """Zhu-Wang 2019 Thm 6 upper bound for Poisson subsampling at rate ``sample_rate``.

    ``rdp(α)`` is the unsampled mechanism's curve at integer ``α``. Returns
    ``min(subsampled bound, unsampled curve)`` per order; ``sample_rate == 1`` gives the curve.
    """
    q = float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise ConfigurationError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    ords = _orders(orders)
    out = np.empty(len(ords), dtype=np.float64)
    cache: dict[int, float] = {}

    def eps(order: int) -> float:
        if order not in cache:
            cache[order] = float(rdp(order))
        return cache[order]

    for i, a in enumerate(ords):
        plain = eps(a)
        if q == 1.0 or not math.isfinite(plain):
            out[i] = plain
            continue
        lq, l1q = math.log(q), math.log1p(-q)
        terms = [
            (a - 1) * l1q + math.log(a * q - q + 1),
            _log_comb(a, 2) + 2 * lq + (a - 2) * l1q + eps(2),
        ]
        terms.extend(
            math.log(3.0) + _log_comb(a, m) + m * lq + (a - m) * l1q + (m - 1) * eps(m)
            for m in range(3, a + 1)
        )
        top = max(terms)
        bound = (top + math.log(math.fsum(math.exp(t - top) for t in terms))) / (a - 1)
        out[i] = min(bound, plain)
    return out


def rdp_to_epsilon(
    orders: Sequence[float], rdp: npt.ArrayLike, delta: float
) -> tuple[float, float]:
    """``(ε, best order)`` from an RDP curve at ``delta`` (Balle et al. 2020, Thm 21).

    The same formula as Opacus's ``privacy_analysis.get_privacy_spent``; ``inf`` if every order
    is infinite.
    """
    if not 0.0 < delta < 1.0:
        raise ConfigurationError(f"delta must be in (0, 1), got {delta!r}")
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    if a.shape != r.shape:
        raise ConfigurationError(f"{a.size} orders but {r.size} RDP values")
    with np.errstate(invalid="ignore"):
        eps = r - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    if not np.isfinite(eps).any():
        return math.inf, math.nan
    idx = int(np.nanargmin(np.where(np.isfinite(eps), eps, np.inf)))
    return float(max(eps[idx], 0.0)), float(a[idx])


# ------------------------------------------------------------------------------ norms and tails


def rounded_l2_bound(scaled_norm: float, dimension: int, beta: float) -> float:
    """L2 bound of a rounded vector whose real L2 norm is ``scaled_norm`` (integer units).

    ``beta == 0``: plain stochastic rounding, ``c + √d``. ``0 < beta < 1``: conditional rounding,
    ``min(c + √d, sqrt(c² + d/4 + sqrt(2 log(1/β)) (c + √d/2)))``.
    """
    c, d = float(scaled_norm), float(dimension)
    plain = c + math.sqrt(d)
    if beta == 0:
        return plain
    squared = c * c + 0.25 * d + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + 0.5 * math.sqrt(d))
    return min(plain, math.sqrt(squared))


def rounded_l1_bound(l2_bound: float, dimension: int) -> float:
    """L1 bound of an integer vector of L2 norm at most ``l2_bound``: ``Δ2 · min(√d, Δ2)``."""
    return float(l2_bound) * min(math.sqrt(dimension), float(l2_bound))


def _skellam_log_tail(t: float, variance: float) -> float:
    """log of the Chernoff bound ``P[X >= t] <= exp(μ(√(1 + (t/μ)²) - 1) - t asinh(t/μ))``."""
    r = t / variance
    return variance * (math.sqrt(1.0 + r * r) - 1.0) - t * math.asinh(r)


def skellam_tail_bound(variance: float, probability: float) -> int:
    """Smallest integer ``t`` with ``P[|X| > t] <= probability`` for ``X`` Skellam of ``variance``.

    From the moment generating function ``E e^{λX} = exp(μ (cosh λ - 1))`` (Chernoff, both
    tails). Conservative: the true tail is smaller.
    """
    if variance <= 0:
        return 0
    target = math.log(probability / 2.0)
    lo, hi = 0.0, max(1.0, math.sqrt(variance))
    while _skellam_log_tail(hi, variance) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _skellam_log_tail(mid, variance) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 0.5:
            break
    return math.ceil(hi)


def subgaussian_tail_bound(variance: float, probability: float) -> int:
    """``t`` with ``P[|X| > t] <= probability`` for ``X`` sub-Gaussian with ``variance`` proxy.

    The discrete Gaussian ``N_Z(0, σ²)`` is σ²-sub-Gaussian (Canonne, Kamath, Steinke 2020), and so
    is a sum of independent ones with the summed proxy.
    """
    if variance <= 0:
        return 0
    return math.ceil(math.sqrt(2.0 * variance * math.log(2.0 / probability)))
