"""Calibration of DP-SGD noise for a federated run: fast, and never above the accountant's ε.

Opacus's ``get_noise_multiplier`` bisects on its RDP accountant, whose orders include fractional
ones that are slow to evaluate (3 to 7 s per client on this machine). Here the RDP of the
Poisson-sampled Gaussian is computed exactly at *integer* orders (Mironov, Talwar, Zhang 2019,
"Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3) that are a subset of
the accountant's orders, and converted with the same bound (Balle et al. 2020, Thm 21). A minimum
over fewer orders is never smaller, so the ε computed here is an upper bound of the one the
accountant reports for the same steps: a noise multiplier calibrated here keeps the accounted ε at
or below the target (tested against Opacus), and is within ~2% of Opacus's choice.

>>> round(dp_sgd_epsilon(1.5, 0.04, 2250, 1e-5), 2)   # ANCHORS.md: Opacus RDP gives 7.3291
7.33
"""

from __future__ import annotations

import math

from secureagg.errors import ConfigurationError

__all__ = ["CALIBRATION_ORDERS", "calibrate_noise", "dp_sgd_epsilon", "sampled_gaussian_rdp"]


#: Integer Rényi orders that Opacus's RDP accountant also uses (its DEFAULT_ALPHAS contain 2..10 and
#: 12..63): an ε computed over this subset is never below the accountant's, so a noise multiplier
#: calibrated with it keeps the accounted ε at or under the target.
CALIBRATION_ORDERS: tuple[int, ...] = (*range(2, 11), *range(12, 64))


def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def sampled_gaussian_rdp(sigma: float, q: float, order: int) -> float:
    """RDP of one step of the Poisson-sampled Gaussian at integer ``order`` (exact, Mironov et
    al. 2019, Sec. 3.3): ``log(sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k)/(2 sigma^2))) / (a-1)``."""
    if q >= 1.0:
        return order / (2.0 * sigma * sigma)
    log_a = -math.inf
    for k in range(order + 1):
        term = (
            math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
            + (order - k) * math.log1p(-q) + (k * math.log(q) if k else 0.0)
            + (k * k - k) / (2.0 * sigma * sigma)
        )
        log_a = _log_add(log_a, term)
    return log_a / (order - 1)


def dp_sgd_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """ε after ``steps`` DP-SGD steps, RDP over :data:`CALIBRATION_ORDERS` (Balle et al. 2020
    conversion, as Opacus). An upper bound of the accountant's figure."""
    best = math.inf
    for a in CALIBRATION_ORDERS:
        rdp = steps * sampled_gaussian_rdp(sigma, q, a)
        eps = rdp + math.log1p(-1.0 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return max(best, 0.0)


def calibrate_noise(target: float, *, sample_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier (to 0.1%) whose :func:`dp_sgd_epsilon` is at most ``target``.

    Fast (integer orders, closed form), and conservative with respect to the accountant, which
    then reports at most ``target`` for the same steps.
    """
    lo, hi = 0.05, 1.0
    while dp_sgd_epsilon(hi, sample_rate, steps, delta) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ConfigurationError(
                f"no noise multiplier reaches ε={target} for {steps} steps at q={sample_rate}"
            )
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2.0
        if dp_sgd_epsilon(mid, sample_rate, steps, delta) > target:
            lo = mid
        else:
            hi = mid
    return hi
