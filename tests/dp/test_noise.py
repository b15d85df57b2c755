"""CSPRNG noise samplers: right distributions (statistical tests), seeds only in test mode."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from secureagg.crypto import labels, prg
from secureagg.dp import noise
from secureagg.dp.noise import CsprngGaussian, SeededNoiseWarning
from secureagg.errors import ConfigurationError

Z = 6.0  # standard errors allowed in the statistical checks (false alarm ~ 2e-9 each)


def _stream(tag: bytes = b"") -> prg.Keystream:
    return prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"dp-noise" + tag)


def _check_mean_var(x: np.ndarray, mean: float, var: float, *, kurt_excess: float = 0.0) -> None:
    n = x.size
    assert abs(x.mean() - mean) <= Z * math.sqrt(var / n), (x.mean(), mean)
    # Var of the sample variance: var^2 (2/(n-1) + kurtosis_excess/n).
    sd_var = var * math.sqrt(2.0 / (n - 1) + kurt_excess / n)
    assert abs(x.var(ddof=1) - var) <= Z * sd_var, (x.var(ddof=1), var)


def test_secure_gaussian_has_the_right_mean_variance_and_shape() -> None:
    g = CsprngGaussian()
    x = g.sample(400_000, std=2.5)
    assert x.dtype == np.float64 and x.shape == (400_000,)
    _check_mean_var(x, 0.0, 6.25)
    # Shape of a normal: P(|X| < σ) = erf(1/√2); kurtosis 3.
    p = math.erf(1 / math.sqrt(2))
    inside = float(np.mean(np.abs(x) < 2.5))
    assert abs(inside - p) <= Z * math.sqrt(p * (1 - p) / x.size)
    kurt = float(np.mean((x / x.std()) ** 4))
    assert abs(kurt - 3.0) <= Z * math.sqrt(96 / x.size)


def test_secure_gaussian_in_float32_has_the_right_distribution() -> None:
    """The precision DP-SGD uses for float32 models (Opacus's secure_mode precision)."""
    x = CsprngGaussian().sample(400_000, std=0.5, dtype=np.float32)
    assert x.dtype == np.float32
    _check_mean_var(x.astype(np.float64), 0.0, 0.25)
    p = math.erf(2 / math.sqrt(2))
    inside = float(np.mean(np.abs(x) < 1.0))
    assert abs(inside - p) <= Z * math.sqrt(p * (1 - p) / x.size)
    with pytest.raises(ConfigurationError):
        noise.standard_normal(None, 4, dtype=np.int32)


def test_secure_gaussian_zero_std_and_empty() -> None:
    g = CsprngGaussian()
    assert np.array_equal(g.sample(5, 0.0), np.zeros(5))
    assert g.sample(0, 1.0).shape == (0,)
    with pytest.raises(ConfigurationError):
        g.sample(3, -1.0)
    with pytest.raises(ConfigurationError):
        g.sample(3, math.nan)


def test_unseeded_noise_never_repeats() -> None:
    a, b = CsprngGaussian(), CsprngGaussian()
    assert not a.seeded
    assert not np.array_equal(a.sample(64, 1.0), b.sample(64, 1.0))
    assert not np.array_equal(a.sample(64, 1.0), a.sample(64, 1.0))


def test_a_seed_is_refused_outside_test_mode() -> None:
    with pytest.raises(ConfigurationError, match="test_mode=True"):
        CsprngGaussian(seed=b"fixed")


def test_a_seed_reproduces_only_in_test_mode_and_warns() -> None:
    with pytest.warns(SeededNoiseWarning):
        a = CsprngGaussian(seed=b"fixed", test_mode=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededNoiseWarning)
        b = CsprngGaussian(seed=b"fixed", test_mode=True)
        c = CsprngGaussian(seed=b"other", test_mode=True)
    assert a.seeded and b.seeded
    first = a.sample(100, 1.0)
    assert np.array_equal(first, b.sample(100, 1.0))
    assert not np.array_equal(first, c.sample(100, 1.0))


@pytest.mark.parametrize("terms", [0, 1, 3, True])
def test_the_mitigation_needs_an_even_number_of_terms(terms: int) -> None:
    with pytest.raises(ConfigurationError):
        CsprngGaussian(terms=terms)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 1001])
def test_standard_normal_returns_exactly_count(count: int) -> None:
    assert noise.standard_normal(_stream(), count).shape == (count,)


@pytest.mark.parametrize("lam", [0.5, 3.0, 9.99, 10.0, 37.5, 1e4, 1e12, 2.0**49])
def test_poisson_mean_and_variance(lam: float) -> None:
    x = noise.poisson(lam, 200_000, _stream(str(lam).encode()))
    assert x.dtype == np.int64 and (x >= 0).all()
    _check_mean_var(x.astype(np.float64), lam, lam, kurt_excess=1.0 / lam)


@pytest.mark.parametrize("lam", [3.0, 25.0])
def test_poisson_pmf_matches(lam: float) -> None:
    """Every probability mass within 4 standard deviations of the mean (small and PTRS paths)."""
    n = 200_000
    x = noise.poisson(lam, n, _stream(b"pmf" + str(lam).encode()))
    lo, hi = max(0, int(lam - 4 * math.sqrt(lam))), int(lam + 4 * math.sqrt(lam))
    for k in range(lo, hi + 1):
        p = math.exp(k * math.log(lam) - lam - math.lgamma(k + 1))
        observed = float(np.mean(x == k))
        assert abs(observed - p) <= Z * math.sqrt(p * (1 - p) / n) + 1e-6, (k, observed, p)


def test_poisson_refuses_bad_means() -> None:
    for bad in (-1.0, math.inf, 2.0**51):
        with pytest.raises(ConfigurationError):
            noise.poisson(bad, 3, _stream())
    assert np.array_equal(noise.poisson(0.0, 4, _stream()), np.zeros(4, np.int64))


@pytest.mark.parametrize("variance", [0.7, 40.0, 3e9])
def test_skellam_is_symmetric_with_the_requested_variance(variance: float) -> None:
    x = noise.skellam(variance, 200_000, _stream(str(variance).encode())).astype(np.float64)
    _check_mean_var(x, 0.0, variance, kurt_excess=1.0 / variance)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 2000.0])
def test_discrete_gaussian_pmf_and_variance(sigma: float) -> None:
    n = 200_000
    x = noise.discrete_gaussian(sigma, n, _stream(b"dg" + str(sigma).encode()))
    support = np.arange(-int(12 * sigma) - 2, int(12 * sigma) + 3)
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma * sigma))
    pmf = weights / weights.sum()
    true_var = float(np.sum(pmf * support.astype(np.float64) ** 2))
    _check_mean_var(x.astype(np.float64), 0.0, true_var, kurt_excess=0.1)
    if sigma < 10:
        for k, p in zip(support, pmf, strict=True):
            if p > 1e-3:
                observed = float(np.mean(x == k))
                assert abs(observed - p) <= Z * math.sqrt(p * (1 - p) / n), (k, observed, p)
